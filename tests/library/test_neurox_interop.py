"""NeuroX activation files: exact round trips, NeuroX's duplicate keys, strict errors, the
store import/export, and (when NeuroX's venv exists) agreement with NeuroX 1.0.9 itself."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest

from benchmarks.neurox_interop import (
    NEUROX_PYTHON,
    neurox_available,
    random_activations,
    run_comparison,
)
from neuro_pipeline.interop import (
    NeuroxFormatError,
    corpus_sentences,
    from_store,
    read_neurox_activations,
    to_store,
    write_neurox_hdf5,
    write_neurox_json,
)
from neuro_pipeline.interop.neurox import import_activation_set_id
from neuro_pipeline.store import Store, StoreError
from neuro_pipeline.types import sentence_hash


def bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


def assert_bit_equal(ours: list[np.ndarray], expected: list[np.ndarray]) -> None:
    assert len(ours) == len(expected)
    for a, b in zip(ours, expected):
        assert a.dtype == np.float32 and a.shape == b.shape
        np.testing.assert_array_equal(bits(a), bits(b))


@pytest.fixture
def data():
    """Six sentences: one three times, non-ASCII words, a one-word sentence, a sentence whose
    words look like NeuroX's duplicate suffix; float32 values incl. max, subnormal, -0.0."""
    return random_activations(seed=1, hidden=6, n_layers=3)


# ------------------------------------------------------------------ round trips
def test_hdf5_round_trip_is_bit_exact_and_keeps_duplicates(tmp_path, data):
    sentences, acts = data
    path = write_neurox_hdf5(tmp_path / "a.hdf5", sentences, acts)
    got = read_neurox_activations(path)
    assert got.format == "hdf5" and got.source_dtype == "float32"
    assert got.sentences == sentences
    assert_bit_equal(got.activations, acts)
    assert (got.n_layers, got.hidden_size, got.n_duplicates) == (3, 6, 2)
    assert got.keys == [str(i) for i in range(len(sentences))]
    assert "removed from 2" in got.duplicate_handling
    assert got.to_matrix().shape == (sum(map(len, sentences)), 18)


def test_hdf5_layout_is_neuroxs(tmp_path, data):
    sentences, acts = data
    path = write_neurox_hdf5(tmp_path / "a.hdf5", sentences, acts)
    with h5py.File(path, "r") as fh:
        assert fh["0"].shape == (3, 3, 6) and fh["0"].dtype == np.float32   # (layers, words, hidden)
        np.testing.assert_array_equal(fh["1"][()], np.swapaxes(acts[1], 0, 1))
        raw = fh["sentence_to_index"][0]
    text = raw.decode() if isinstance(raw, bytes) else raw
    assert "\\u00dcn\\u00efc\\u00f6d\\u00e9" in text                    # json.dumps escapes, as NeuroX
    assert json.loads(text) == {
        "The cat sat": "0", "Ünïcödé 日本語 naïve —": "1", "The cat sat (Occurrence 2)": "2", "one": "3",
        "The cat sat (Occurrence 3)": "4", "x (Occurrence 2)": "5"}


def test_json_round_trip_is_bit_exact(tmp_path, data):
    sentences, acts = data
    path = write_neurox_json(tmp_path / "a.json", sentences, acts)
    got = read_neurox_activations(path)
    assert got.format == "json" and got.sentences == sentences and got.n_duplicates == 2
    assert_bit_equal(got.activations, acts)
    first = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
    assert list(first) == ["linex_index", "features"] and first["linex_index"] == 0
    assert list(first["features"][0]) == ["token", "layers"]
    assert [layer["index"] for layer in first["features"][0]["layers"]] == [0, 1, 2]


def test_json_with_neuroxs_8_decimals_is_within_1e_8(tmp_path):
    """NeuroX's JSON writer keeps round(x, 8): |error| <= 1e-8, exact for |x| >= 0.125."""
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((400, 2, 50)) * np.exp(rng.uniform(-12, 3, (400, 2, 50)))).astype(np.float32)
    sentences = [[f"w{i}" for i in range(40)] for _ in range(10)]
    acts = list(x.reshape(10, 40, 2, 50))
    got = read_neurox_activations(write_neurox_json(tmp_path / "r.json", sentences, acts, decimals=8))
    y = np.concatenate(got.activations)
    x = np.concatenate(acts)
    assert np.abs(y.astype(np.float64) - x).max() <= 1e-8
    big = np.abs(x) >= 0.125
    np.testing.assert_array_equal(y[big], x[big])
    assert not np.array_equal(y, x)   # the small values do lose precision


def test_words_that_look_like_neuroxs_suffix_are_read_literally(tmp_path):
    sentences = [["a", "(Occurrence", "2)"], ["a"], ["a"]]
    acts = [np.full((len(s), 1, 2), i, np.float32) for i, s in enumerate(sentences)]
    got = read_neurox_activations(write_neurox_hdf5(tmp_path / "s.hdf5", sentences, acts))
    # keys: "a (Occurrence 2)" (literal, 3 words), "a", "a (Occurrence 3)" (2 is taken)
    assert got.sentences == sentences
    assert [a[0, 0, 0] for a in got.activations] == [0, 1, 2]


def test_format_is_sniffed_when_the_extension_says_nothing(tmp_path, data):
    sentences, acts = data
    h5 = write_neurox_hdf5(tmp_path / "a.hdf5", sentences, acts)
    js = write_neurox_json(tmp_path / "a.json", sentences, acts)
    assert read_neurox_activations(h5.rename(tmp_path / "a.bin")).format == "hdf5"
    assert read_neurox_activations(js.rename(tmp_path / "b.bin")).format == "json"


def test_nonfinite_values_are_kept_and_counted_or_refused(tmp_path, caplog):
    acts = [np.zeros((2, 1, 3), np.float32), np.zeros((1, 1, 3), np.float32)]
    acts[1][0, 0, :2] = [np.nan, np.inf]
    path = write_neurox_hdf5(tmp_path / "n.hdf5", [["a", "b"], ["c"]], acts)
    got = read_neurox_activations(path)
    assert got.n_nonfinite == 2 and got.nonfinite_sentences == [1]
    assert np.isnan(got.activations[1][0, 0, 0]) and np.isinf(got.activations[1][0, 0, 1])
    assert "2 non-finite" in caplog.text
    with pytest.raises(NeuroxFormatError, match=r"n\.hdf5: 2 non-finite .* sentence 1"):
        read_neurox_activations(path, nonfinite="error")
    js = read_neurox_activations(write_neurox_json(tmp_path / "n.json", [["a", "b"], ["c"]], acts))
    assert js.n_nonfinite == 2


# ------------------------------------------------------------------ errors
def _h5(path: Path, datasets: dict[str, np.ndarray], index: dict[str, str] | None) -> Path:
    with h5py.File(path, "w") as fh:
        for name, arr in datasets.items():
            fh.create_dataset(name, data=arr)
        if index is not None:
            ds = fh.create_dataset("sentence_to_index", (1,), dtype=h5py.special_dtype(vlen=str))
            ds[0] = json.dumps(index)
    return path


def test_missing_sentence_to_index_is_an_error(tmp_path):
    path = _h5(tmp_path / "m.hdf5", {"0": np.zeros((1, 2, 3), np.float32)}, None)
    with pytest.raises(NeuroxFormatError, match=r"m\.hdf5: no 'sentence_to_index' dataset"):
        read_neurox_activations(path)


def test_shape_mismatch_names_file_and_sentence(tmp_path):
    path = _h5(tmp_path / "s.hdf5", {"0": np.zeros((2, 1, 3), np.float32), "1": np.zeros((2, 2, 4), np.float32)},
               {"x": "0", "y z": "1"})
    with pytest.raises(NeuroxFormatError,
                       match=r"s\.hdf5: sentence 1 \(key 'y z', dataset '1'\): .*2 layers × 4 units.*2 × 3"):
        read_neurox_activations(path)


def test_word_count_mismatch_names_file_and_sentence(tmp_path):
    path = _h5(tmp_path / "w.hdf5", {"0": np.zeros((1, 1, 3), np.float32), "1": np.zeros((1, 2, 3), np.float32)},
               {"x": "0", "a b c": "1"})
    with pytest.raises(NeuroxFormatError, match=r"w\.hdf5: sentence 1 \(key 'a b c', dataset '1'\): "
                                                r"the key has 3 word\(s\) but .* 2 word\(s\); word count mismatch"):
        read_neurox_activations(path)


def test_missing_dataset_and_json_shape_errors_name_file_and_sentence(tmp_path):
    path = _h5(tmp_path / "d.hdf5", {"0": np.zeros((1, 1, 3), np.float32)}, {"x": "0", "y": "7"})
    with pytest.raises(NeuroxFormatError, match=r"d\.hdf5: sentence 1 \(key 'y', dataset '7'\).*does not hold"):
        read_neurox_activations(path)
    line0 = {"linex_index": 0, "features": [{"token": "a", "layers": [{"index": 0, "values": [1.0, 2.0]}]}]}
    line1 = {"linex_index": 1, "features": [{"token": "b", "layers": [{"index": 0, "values": [1.0, 2.0, 3.0]}]}]}
    js = tmp_path / "j.json"
    js.write_text(json.dumps(line0) + "\n" + json.dumps(line1) + "\n")
    with pytest.raises(NeuroxFormatError, match=r"j\.json:2: sentence 1 \(linex_index 1\), word 0 \('b'\): "
                                                r"1 layers × 3 units"):
        read_neurox_activations(js)


def test_writers_refuse_what_neurox_could_not_read_back(tmp_path):
    a = np.zeros((2, 1, 3), np.float32)
    with pytest.raises(NeuroxFormatError, match=r"sentence 0 \('a b c'\): 3 word\(s\) but activations for 2"):
        write_neurox_hdf5(tmp_path / "x.hdf5", [["a", "b", "c"]], [a])
    with pytest.raises(NeuroxFormatError, match="contains a space"):
        write_neurox_hdf5(tmp_path / "x.hdf5", [["a b", "c"]], [a])
    with pytest.raises(ValueError, match=r"name the file '\*\.json'"):
        write_neurox_json(tmp_path / "x.txt", [["a", "b"]], [a])
    assert not list(tmp_path.iterdir())   # nothing half-written


# ------------------------------------------------------------------ the store
def _raw_hdf5(path: Path) -> dict[str, object]:
    with h5py.File(path, "r") as fh:
        return {n: (fh[n][0] if n == "sentence_to_index" else bits(fh[n][()]).tobytes()) for n in fh}


@pytest.mark.parametrize("suffix", [".hdf5", ".json"])
def test_store_round_trip_gives_back_the_same_file(tmp_path, suffix):
    sentences, acts = random_activations(seed=1, hidden=6, n_layers=3, identical_repeats=True)
    writer = write_neurox_hdf5 if suffix == ".hdf5" else write_neurox_json
    original = writer(tmp_path / f"in{suffix}", sentences, acts)
    store = Store(tmp_path / "p.duckdb")
    imp = to_store(store, original, aggregation="average")
    aset = imp.activation_set
    assert aset.aggregation == "mean" and aset.dtype == "float32" and aset.long_sentences == "truncate"
    assert aset.model_dir == str(original.resolve()) and (aset.n_layers, aset.hidden_size) == (3, 6)
    assert aset.model_version == f"neurox-import:{imp.source['sha256']}"
    assert (imp.n_written, imp.n_duplicates, imp.n_conflicting_duplicates) == (4, 2, 0)
    assert imp.sentence_hashes == [sentence_hash(s) for s in sentences]
    back = from_store(store, aset.activation_set, sentences, tmp_path / f"out{suffix}")
    if suffix == ".hdf5":
        assert _raw_hdf5(back) == _raw_hdf5(original)
    else:
        assert back.read_bytes() == original.read_bytes()
    again = to_store(store, original, aggregation="average")          # idempotent
    assert (again.n_written, again.n_already_stored) == (0, 4)


def test_activation_set_id_follows_the_pipelines_formula():
    from neuro_pipeline.stages import activation_set_id

    cfg = SimpleNamespace(extraction=SimpleNamespace(aggregation="last", long_sentences="truncate",
                                                     storage_dtype="float32", storage="duckdb"),
                          model=SimpleNamespace(dtype="float32", component=None))
    assert import_activation_set_id("neurox-import:abc", "last") == activation_set_id(cfg, "neurox-import:abc")


def test_import_with_corpus_words_and_export_a_stored_corpus(tmp_path):
    from neuro_pipeline.corpus import sentences_to_table
    from neuro_pipeline.types import Sentence

    corpus = [["The", "Cat", "sat"], ["Naïve", "!"], ["The", "Cat", "sat"], ["Hi"]]
    file_words = [["the", "cat", "sat"], ["naive", "!"], ["the", "cat", "sat"], ["hi"]]   # NeuroX's normalised
    acts = [np.random.default_rng(i).standard_normal((len(s), 2, 4)).astype(np.float32)
            for i, s in enumerate(corpus)]
    acts[2] = acts[0].copy()
    nx = write_neurox_hdf5(tmp_path / "nx.hdf5", file_words, acts)
    store = Store(tmp_path / "p.duckdb")
    imp = to_store(store, nx, sentences=corpus)
    assert imp.sentence_hashes[1] == sentence_hash(["Naïve", "!"])
    table = sentences_to_table({"train": [Sentence(tuple(s), ("X",) * len(s), "demo:t", 1) for s in corpus]},
                               corpus_id="c")
    store.write_tokens(table)
    words = corpus_sentences(store, "c")
    assert words == corpus
    back = read_neurox_activations(from_store(store, imp.activation_set.activation_set, words,
                                              tmp_path / "out.hdf5"))
    assert back.sentences == corpus
    assert_bit_equal(back.activations, acts)


def test_store_import_errors_and_options(tmp_path):
    acts = [np.zeros((2, 1, 2), np.float32), np.ones((2, 1, 2), np.float32), np.zeros((1, 1, 2), np.float32)]
    nx = write_neurox_hdf5(tmp_path / "nx.hdf5", [["a", "b"], ["a", "b"], ["c"]], acts)
    store = Store(tmp_path / "p.duckdb")
    with pytest.raises(NeuroxFormatError, match=r"nx\.hdf5: sentence 1 .* repeats sentence 0 but its "
                                                r"activations differ \(max abs difference 1\)"):
        to_store(store, nx, duplicates="error")
    imp = to_store(store, nx)
    assert (imp.n_conflicting_duplicates, imp.max_duplicate_difference, imp.n_written) == (1, 1.0, 2)
    truncated = [["A", "B"], ["D", "E"], ["C", "long", "one"]]   # NeuroX kept 1 word of the last
    with pytest.raises(NeuroxFormatError, match=r"nx\.hdf5: sentence 2 \(key '2', 'C long one'\) has 3 word\(s\) "
                                                r"but the file holds activations for 1; word count mismatch"):
        to_store(store, nx, sentences=truncated)
    imp = to_store(store, nx, sentences=truncated, word_mismatch="reject", model_version="v")
    assert imp.rejected == [2]
    status = store.extracted_sentences(imp.activation_set.activation_set)
    assert sorted(status["status"].to_list()) == ["ok", "ok", "rejected"]
    with pytest.raises(StoreError, match=r"sentence 0 \('C long one', hash \w+\): recorded as rejected"):
        from_store(store, imp.activation_set.activation_set, [truncated[2]], tmp_path / "o.hdf5")
    with pytest.raises(StoreError, match=r"sentence 1 \('zz', hash \w+\): not in the set"):
        from_store(store, imp.activation_set.activation_set, [["A", "B"], ["zz"]], tmp_path / "o.hdf5")
    with pytest.raises(NeuroxFormatError, match="holds 3 sentences but 1 were given"):
        to_store(store, nx, sentences=[["a"]])


# ------------------------------------------------------------------ NeuroX itself
@pytest.mark.skipif(not neurox_available(NEUROX_PYTHON),
                    reason=f"NeuroX 1.0.9 venv not found at {NEUROX_PYTHON} (create it with "
                           "../shared/bench/setup_neurox.sh); the comparison with NeuroX itself is skipped")
def test_agrees_with_neurox_itself(tmp_path, tiny_bert_dir):
    """NeuroX's extractor writes HDF5 and JSON for a corpus with a sentence three times (once
    differing only in case), non-ASCII words and one-word sentences; our reader matches its
    load_activations, the store round trip keeps every value and the NeuroX keys, and
    NeuroX's load_activations reads our files back bit for bit."""
    checks, facts = run_comparison(tmp_path, tiny_bert_dir, python=NEUROX_PYTHON, aggregation="last")
    by_name = {c.name: c for c in checks}
    failed = [f"{c.name}: max |diff| {c.max_abs_diff:.3g} ({c.detail})" for c in checks if not c.ok]
    assert not failed, failed
    assert by_name["neurox_json_precision"].max_abs_diff <= 1e-8
    for name in ("read_neurox_hdf5", "read_neurox_json", "store_round_trip_file_words",
                 "store_round_trip_corpus_words", "neurox_reads_our_hdf5", "neurox_reads_our_json",
                 "neurox_reads_store_export", "json_bytes_decimals8"):
        assert by_name[name].max_abs_diff == 0.0, by_name[name]
    assert facts["versions"]["neurox"] == "1.0.9"
    assert facts["neurox_words"][1] == ["the", "dog", "is", "play##ing", "!"]   # NeuroX stores subword strings
    assert facts["neurox_words"][5] == facts["neurox_words"][0]               # "The …" / "the …": one key + suffix

"""Top words of a neuron: NeuroX's mean-|z|-per-type score, for one neuron and for many."""

from __future__ import annotations

import logging
import time

import numpy as np
import polars as pl
import pytest

from neuro_pipeline.analysis import top_words, top_words_table

# Deviations from the mean 10 are [2, 0, 2, -2, 1, -3] (they sum to 0). Mean |deviation| per
# type: a = (2 + 2) / 2 = 2, b = (0 + 1) / 2 = 0.5, c = 2, d = 3. Dividing by the standard
# deviation scales all types alike, so after normalising by the best type (d):
# d = 1, a = c = 2/3, b = 1/6.
WORDS = ["a", "b", "a", "c", "b", "d"]
ACTS = np.array([12.0, 10.0, 12.0, 8.0, 11.0, 7.0])


def test_hand_computed_scores_counts_and_tie_order():
    table = top_words(WORDS, ACTS)
    assert table.schema == pl.Schema({"word": pl.Utf8, "score": pl.Float64, "count": pl.Int64})
    assert table["word"].to_list() == ["d", "a", "c", "b"]  # a and c tie: word order
    assert table["score"].to_list() == pytest.approx([1.0, 2 / 3, 2 / 3, 1 / 6])
    assert table["count"].to_list() == [1, 2, 1, 2]


def test_threshold_is_strict_and_num_tokens_cuts_after_it():
    assert top_words(WORDS, ACTS, min_threshold=0.2)["word"].to_list() == ["d", "a", "c"]
    assert top_words(WORDS, ACTS, num_tokens=2)["word"].to_list() == ["d", "a"]
    assert top_words(WORDS, ACTS, num_tokens=9, min_threshold=0.5)["word"].to_list() == ["d", "a", "c"]
    # min_threshold=0 keeps every type with a positive score; a type at exactly 0 is dropped.
    zero = top_words(["x", "y", "z"], [1.0, -1.0, 0.0], min_threshold=0.0)
    assert zero["word"].to_list() == ["x", "y"]


def test_scores_ignore_scale_and_offset_of_the_neuron():
    scaled = top_words(WORDS, ACTS * -5.0 + 3.0)
    assert scaled["word"].to_list() == ["d", "a", "c", "b"]
    assert scaled["score"].to_list() == pytest.approx([1.0, 2 / 3, 2 / 3, 1 / 6])


def test_planted_word_comes_first():
    rng = np.random.default_rng(0)
    vocab = np.array([f"w{i}" for i in range(50)] + ["pizza"])
    words = rng.choice(vocab, size=3000).tolist()
    acts = rng.normal(size=3000)
    acts[np.array(words) == "pizza"] += 8.0
    table = top_words(words, acts, num_tokens=5)
    assert table["word"][0] == "pizza"
    assert table["score"][0] == 1.0
    assert table["score"][1] < 0.5


def test_constant_neuron_gives_empty_table_and_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="neuro_pipeline.analysis.corpus_search"):
        table = top_words(["a", "b", "a"], [2.5, 2.5, 2.5])
    assert table.height == 0
    assert table.schema == pl.Schema({"word": pl.Utf8, "score": pl.Float64, "count": pl.Int64})
    assert "constant" in caplog.text


def test_table_matches_top_words_for_each_neuron_in_request_order():
    rng = np.random.default_rng(1)
    words = rng.choice(["the", "cat", "sat", "on", "mat"], size=200).tolist()
    X = rng.normal(size=(200, 6))
    table = top_words_table(words, X, [4, 1], num_tokens=3)
    assert table.schema == pl.Schema(
        {"neuron": pl.Int32, "rank": pl.Int32, "word": pl.Utf8, "score": pl.Float64, "count": pl.Int64}
    )
    assert table["neuron"].to_list() == [4, 4, 4, 1, 1, 1]
    assert table["rank"].to_list() == [1, 2, 3, 1, 2, 3]
    for neuron in (4, 1):
        one = top_words(words, X[:, neuron], num_tokens=3)
        got = table.filter(pl.col("neuron") == neuron).select("word", "score", "count")
        assert got.equals(one)


def test_table_reads_only_requested_columns_of_a_readonly_memmap(tmp_path):
    X = np.column_stack([ACTS, np.full(6, np.nan), ACTS * 2]).astype(np.float32)
    np.save(tmp_path / "X.npy", X)
    mm = np.load(tmp_path / "X.npy", mmap_mode="r")  # read-only: any write would raise
    table = top_words_table(WORDS, mm, [2, 0], num_tokens=1)  # column 1 (NaN) is never read
    assert table.select("neuron", "word").rows() == [(2, "d"), (0, "d")]
    with pytest.raises(ValueError, match=r"non-finite value \(nan\) at row 0, column 1"):
        top_words_table(WORDS, mm, [1])


def test_table_with_constant_neuron_and_no_neurons():
    X = np.column_stack([ACTS, np.ones(6)])
    table = top_words_table(WORDS, X, [1, 0])
    assert table["neuron"].unique().to_list() == [0]
    assert top_words_table(WORDS, X, []).height == 0


def test_table_is_fast_on_25k_tokens_by_100_neurons():
    rng = np.random.default_rng(2)
    words = rng.choice([f"w{i}" for i in range(5000)], size=25_000).tolist()
    X = rng.normal(size=(25_000, 200)).astype(np.float32)
    start = time.perf_counter()
    table = top_words_table(words, X, list(range(0, 200, 2)))
    elapsed = time.perf_counter() - start
    assert table["neuron"].n_unique() == 100
    assert elapsed < 1.5, f"top_words_table took {elapsed:.2f}s for 25k tokens x 100 neurons"


@pytest.mark.parametrize(
    ("words", "acts", "kwargs", "error", "match"),
    [
        (["a", "b"], [1.0, 2.0, 3.0], {}, ValueError, "2 words but 3 activations"),
        (["a", "b"], [1.0, np.nan], {}, ValueError, r"non-finite value \(nan\) at token 1"),
        (["a", "b"], [np.inf, 1.0], {}, ValueError, "non-finite value"),
        (["a", "b"], [[1.0], [2.0]], {}, ValueError, "must be 1-D.*top_words_table"),
        (["a", None], [1.0, 2.0], {}, TypeError, r"words\[1\] is NoneType"),
        ("ab", [1.0, 2.0], {}, TypeError, "one str"),
        ([], [], {}, ValueError, "words is empty"),
        (["a", "b"], ["x", "y"], {}, TypeError, "real numbers"),
        (["a", "b"], [1.0, 2.0], {"min_threshold": 1.0}, ValueError, r"min_threshold must be a number in \[0, 1\)"),
        (["a", "b"], [1.0, 2.0], {"min_threshold": -0.1}, ValueError, "min_threshold"),
        (["a", "b"], [1.0, 2.0], {"min_threshold": float("nan")}, ValueError, "min_threshold"),
        (["a", "b"], [1.0, 2.0], {"num_tokens": -1}, ValueError, "num_tokens must be an int >= 0"),
        (["a", "b"], [1.0, 2.0], {"num_tokens": 2.5}, ValueError, "num_tokens"),
    ],
)
def test_top_words_rejects_bad_input(words, acts, kwargs, error, match):
    with pytest.raises(error, match=match):
        top_words(words, acts, **kwargs)


@pytest.mark.parametrize(
    ("X", "neurons", "error", "match"),
    [
        (np.zeros((5, 3)), [0], ValueError, "X has 5 rows but there are 6 words"),
        (np.zeros(6), [0], ValueError, "must be 2-D"),
        (np.zeros((6, 3)), [3], ValueError, r"neuron 3 is out of range.*0\.\.2"),
        (np.zeros((6, 3)), [-1], ValueError, "out of range"),
        (np.zeros((6, 3)), [1, 2, 1], ValueError, "neuron 1 is requested twice"),
        (np.zeros((6, 3)), [1.0], TypeError, "must be ints"),
    ],
)
def test_top_words_table_rejects_bad_input(X, neurons, error, match):
    with pytest.raises(error, match=match):
        top_words_table(WORDS, X, neurons)

"""Tests for split_sentences, sentences_to_table and label_counts."""

from __future__ import annotations

import math
import time
from pathlib import Path

import polars as pl
import pytest

from neuro_pipeline.corpus import (
    generate_demo_corpus,
    label_counts,
    read_conllu,
    sentences_to_table,
    split_sentences,
)
from neuro_pipeline.types import TOKEN_COLUMNS, Sentence

EWT_DIR = (Path(__file__).parents[2] / "../shared/data/ud-en-ewt").resolve()


def _sentence(*words: str, line: int = 1, token_lines: tuple[int, ...] = ()) -> Sentence:
    return Sentence(tuple(words), tuple(w.upper() for w in words), "toy.txt", line,
                    token_lines=token_lines)


@pytest.fixture(scope="module")
def corpus():
    return generate_demo_corpus(2000)


# ------------------------------------------------------------------------------------
# split_sentences
# ------------------------------------------------------------------------------------

def test_split_partitions_and_keeps_input_order(corpus):
    splits = split_sentences(corpus)
    assert list(splits) == ["train", "dev", "test"]
    assert sum(len(v) for v in splits.values()) == len(corpus)
    position = {id(s): i for i, s in enumerate(corpus)}
    for members in splits.values():
        indices = [position[id(s)] for s in members]
        assert indices == sorted(indices)
    # shares are met in expectation
    assert abs(len(splits["test"]) / len(corpus) - 0.2) < 0.03
    assert abs(len(splits["dev"]) / len(corpus) - 0.1) < 0.03


def test_split_is_deterministic_and_seeded(corpus):
    assert split_sentences(corpus) == split_sentences(corpus)
    assert split_sentences(corpus, seed=1) != split_sentences(corpus, seed=0)


def test_identical_sentences_share_a_split(corpus):
    duplicated = corpus[:300] + [
        Sentence(s.tokens, s.labels, "elsewhere.txt", 99) for s in corpus[:300]]
    splits = split_sentences(duplicated)
    split_of_words = {}
    for name, members in splits.items():
        for sentence in members:
            assert split_of_words.setdefault(sentence.tokens, name) == name


def test_appending_never_moves_old_sentences(corpus):
    before = split_sentences(corpus[:1000])
    after = split_sentences(corpus)
    for name in before:
        assert after[name][: len(before[name])] == before[name]


def test_zero_fractions_put_everything_in_train(corpus):
    splits = split_sentences(corpus[:50], dev_fraction=0, test_fraction=0)
    assert len(splits["train"]) == 50 and splits["dev"] == splits["test"] == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dev_fraction": -0.1}, r"dev_fraction must be a number in \[0, 1\); got -0\.1\."),
        ({"test_fraction": 1.0}, r"test_fraction must be a number in \[0, 1\); got 1\.0\."),
        ({"test_fraction": "0.2"}, r"test_fraction must be a number in \[0, 1\); got '0\.2'\."),
        ({"dev_fraction": True}, r"dev_fraction must be a number in \[0, 1\); got True\."),
        ({"dev_fraction": math.nan}, r"dev_fraction must be a number in \[0, 1\); got nan\."),
        ({"dev_fraction": 0.5, "test_fraction": 0.5},
         r"dev_fraction \+ test_fraction must be < 1 so that train is not empty; got "
         r"0\.5 \+ 0\.5 = 1\.0\."),
    ],
)
def test_split_rejects_bad_fractions(kwargs, message):
    with pytest.raises(ValueError, match=message):
        split_sentences([_sentence("a")], **kwargs)


def test_split_rejects_non_integer_seed():
    with pytest.raises(TypeError, match=r"seed must be an int; got '0'\."):
        split_sentences([_sentence("a")], seed="0")


# ------------------------------------------------------------------------------------
# sentences_to_table
# ------------------------------------------------------------------------------------

EXPECTED_SCHEMA = {
    "corpus_id": pl.Utf8, "split": pl.Utf8, "sentence_id": pl.Int32, "position": pl.Int32,
    "token": pl.Utf8, "label": pl.Utf8, "sentence_hash": pl.Utf8, "source": pl.Utf8,
    "line": pl.Int32,
}


def test_table_columns_dtypes_and_unique_key(corpus):
    table = sentences_to_table(split_sentences(corpus), corpus_id="demo")
    assert tuple(table.columns) == TOKEN_COLUMNS
    assert dict(table.schema) == EXPECTED_SCHEMA
    assert table.height == sum(len(s.tokens) for s in corpus)
    assert table.select("corpus_id", "sentence_id", "position").is_duplicated().sum() == 0
    assert table["corpus_id"].unique().to_list() == ["demo"]


def test_table_numbers_sentences_train_dev_test_then_input_order():
    a, b, c, d = _sentence("a", "b"), _sentence("c"), _sentence("d", "e", "f"), _sentence("g")
    # the mapping's own order does not matter: train, then dev, then test
    table = sentences_to_table({"test": [d], "train": [a, b], "dev": [c]}, corpus_id="toy")
    assert table.select("split", "sentence_id", "position", "token").rows() == [
        ("train", 0, 0, "a"), ("train", 0, 1, "b"), ("train", 1, 0, "c"),
        ("dev", 2, 0, "d"), ("dev", 2, 1, "e"), ("dev", 2, 2, "f"),
        ("test", 3, 0, "g"),
    ]
    assert table["label"].to_list() == ["A", "B", "C", "D", "E", "F", "G"]
    assert table["sentence_hash"].to_list()[:2] == [a.hash, a.hash]


def test_table_line_is_token_line_when_known():
    with_lines = _sentence("a", "b", line=4, token_lines=(4, 6))
    without = _sentence("c", "d", line=9)
    table = sentences_to_table({"train": [with_lines, without]}, corpus_id="toy")
    assert table["line"].to_list() == [4, 6, 9, 9]


def test_table_accepts_a_subset_of_splits_and_empty_input():
    table = sentences_to_table({"dev": [_sentence("x")]}, corpus_id="toy")
    assert table["sentence_id"].to_list() == [0]
    empty = sentences_to_table({}, corpus_id="toy")
    assert empty.height == 0 and dict(empty.schema) == EXPECTED_SCHEMA


def test_table_rejects_unknown_split():
    with pytest.raises(ValueError, match=r"Unknown split name\(s\) \['validation'\]; expected a "
                                         r"subset of \['train', 'dev', 'test'\]\."):
        sentences_to_table({"train": [], "validation": []}, corpus_id="toy")


@pytest.mark.parametrize("corpus_id", ["", None])
def test_table_rejects_empty_corpus_id(corpus_id):
    with pytest.raises(ValueError, match=r"corpus_id must be a non-empty string; got "):
        sentences_to_table({"train": [_sentence("a")]}, corpus_id=corpus_id)


@pytest.mark.slow
def test_table_from_ud_ewt_is_fast():
    paths = [EWT_DIR / f"en_ewt-ud-{split}.conllu" for split in ("dev", "test")]
    if not all(p.exists() for p in paths):
        pytest.skip(f"UD EWT data not found in {EWT_DIR}")
    splits = {"train": read_conllu(paths[0]), "test": read_conllu(paths[1])}
    start = time.perf_counter()
    table = sentences_to_table(splits, corpus_id="ewt")
    elapsed = time.perf_counter() - start
    assert table.height == 25_147 + 25_094
    assert elapsed < 0.5, f"building the table took {elapsed:.2f} s"
    first = table.row(0, named=True)
    assert (first["token"], first["label"], first["line"]) == ("From", "ADP", 5)


# ------------------------------------------------------------------------------------
# label_counts
# ------------------------------------------------------------------------------------

def test_label_counts_sorted_by_split_then_label():
    table = sentences_to_table(
        {"test": [_sentence("x", "y")], "train": [_sentence("b", "a", "b")]}, corpus_id="toy")
    counts = label_counts(table)
    assert dict(counts.schema) == {"split": pl.Utf8, "label": pl.Utf8, "n": pl.Int64}
    assert counts.rows() == [("train", "A", 1), ("train", "B", 2), ("test", "X", 1),
                             ("test", "Y", 1)]


def test_label_counts_total_matches_table(corpus):
    table = sentences_to_table(split_sentences(corpus), corpus_id="demo")
    assert label_counts(table)["n"].sum() == table.height


def test_label_counts_rejects_a_table_without_labels():
    with pytest.raises(ValueError, match=r"label_counts needs a token table with columns "
                                         r"'split' and 'label'; missing \['label'\]"):
        label_counts(pl.DataFrame({"split": ["train"]}))

"""Tests for read_text and tokenize: plain unlabelled text, one sentence per line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from neuro_pipeline.corpus.errors import CorpusFormatError
from neuro_pipeline.corpus.parallel import read_parallel
from neuro_pipeline.corpus.text import TOKENIZERS, UNLABELLED, read_text, tokenize


def _write(tmp_path: Path, content: str | bytes, name: str = "text.txt") -> Path:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


@pytest.mark.parametrize(
    ("text", "whitespace", "punct"),
    [
        ("Hello, world!", ["Hello,", "world!"], ["Hello", ",", "world", "!"]),
        ("naïve café —", ["naïve", "café", "—"], ["naïve", "café", "—"]),
        ("(hello", ["(hello"], ["(", "hello"]),
        ("pi is 3.14, not 1,000 or 2024.", ["pi", "is", "3.14,", "not", "1,000", "or", "2024."],
         ["pi", "is", "3.14", ",", "not", "1,000", "or", "2024", "."]),
        ("don't state-of-the-art l’homme", ["don't", "state-of-the-art", "l’homme"],
         ["don't", "state-of-the-art", "l’homme"]),
        ("'quoted' -dash- ...", ["'quoted'", "-dash-", "..."],
         ["'", "quoted", "'", "-", "dash", "-", ".", ".", "."]),
        # decomposed ï (i + U+0308) and Devanagari vowel signs stay inside their words
        ("nai\u0308ve नमस्ते", ["nai\u0308ve", "नमस्ते"], ["nai\u0308ve", "नमस्ते"]),
        ("a\u00a0b\tc", ["a", "b", "c"], ["a", "b", "c"]),
        ("   ", [], []),
    ],
)
def test_tokenizers(text, whitespace, punct):
    assert tokenize(text) == whitespace
    assert tokenize(text, "punct") == punct


def test_unknown_tokenizer_lists_the_valid_ones(tmp_path):
    path = _write(tmp_path, "a b\n")
    for call in (lambda: tokenize("a", "spacy"), lambda: read_text(path, tokenizer="spacy")):
        with pytest.raises(ValueError, match=r"Unknown tokenizer 'spacy'; choose one of "
                                             r"\['punct', 'whitespace'\]"):
            call()
    assert sorted(TOKENIZERS) == ["punct", "whitespace"]


def test_read_text_lines_labels_and_blank_lines(tmp_path):
    path = _write(tmp_path, "\nHello, world!\n \t \nnaïve café —\n\n")
    corpus = read_text(path, tokenizer="punct")
    assert [(s.line, s.tokens) for s in corpus.sentences] == [
        (2, ("Hello", ",", "world", "!")), (4, ("naïve", "café", "—"))]
    assert all(s.labels == (UNLABELLED,) * len(s.tokens) for s in corpus.sentences)
    assert {s.source for s in corpus.sentences} == {str(path)}
    assert (corpus.n_lines, corpus.n_blank_lines, corpus.n_tokens, len(corpus)) == (5, 3, 7, 2)
    assert corpus.tokenizer == "punct"


def test_whitespace_is_the_default_and_last_line_needs_no_newline(tmp_path):
    corpus = read_text(_write(tmp_path, "Hello, world!\nbye"))
    assert [s.tokens for s in corpus.sentences] == [("Hello,", "world!"), ("bye",)]
    assert corpus.n_blank_lines == 0


def test_long_line_is_read_whole(tmp_path):
    words = [f"w{i}" for i in range(6000)]
    corpus = read_text(_write(tmp_path, " ".join(words) + "\n"))
    assert corpus.sentences[0].tokens == tuple(words)


@pytest.mark.parametrize(
    ("content", "line", "reason"),
    [
        pytest.param(b"ok\nbad \xe9t\xe9\n", 2, r"expected UTF-8 text, got invalid byte\(s\) E9 "
                     r"at byte offset 4 of the line", id="latin1"),
        pytest.param(b"\xef\xbb\xbfhello\n", 1, r"expected UTF-8 text without a byte-order mark",
                     id="bom"),
        pytest.param(b"one\ntwo\r\n", 2, r"line ends with CRLF", id="crlf"),
        pytest.param(b"one\rtwo\n", 1, r"expected no carriage return", id="lone-cr"),
    ],
)
def test_encoding_errors_match_the_other_readers(tmp_path, content, line, reason):
    path = _write(tmp_path, content)
    pattern = rf"^{re.escape(str(path))}:{line}: {reason}"
    with pytest.raises(CorpusFormatError, match=pattern) as text_error:
        read_text(path)
    assert (text_error.value.path, text_error.value.line) == (str(path), line)
    # the parallel reader refuses the same file at the same line
    labels = _write(tmp_path, "X\n" * 2, name="labels.txt")
    with pytest.raises(CorpusFormatError) as parallel_error:
        read_parallel(path, labels)
    assert parallel_error.value.line == line


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(b"", r"text\.txt: expected at least one sentence, got an empty file",
                     id="empty"),
        pytest.param(b"\n  \n", r"text\.txt: expected at least one non-blank line, got 2 blank "
                     r"lines", id="only-blank"),
    ],
)
def test_files_without_sentences_are_refused(tmp_path, content, message):
    with pytest.raises(CorpusFormatError, match=message):
        read_text(_write(tmp_path, content))


# ------------------------------------------------------------------ sentence pairs

def test_pairs_are_read_from_tab_separated_lines(tmp_path):
    path = _write(tmp_path, "The cat sat .\tIt was tired .\n\nDogs bark\tLoudly\n")
    corpus = read_text(path, pairs=True)
    assert [(s.line, s.tokens, s.pair) for s in corpus.sentences] == [
        (1, ("The", "cat", "sat", "."), ("It", "was", "tired", ".")),
        (3, ("Dogs", "bark"), ("Loudly",)),
    ]
    assert corpus.n_blank_lines == 1
    # The pair is part of the content hash: the same sentence with another pair is another
    # input to the model.
    alone = read_text(_write(tmp_path, "Dogs bark\n", "alone.txt")).sentences[0]
    assert alone.pair is None and alone.hash != corpus.sentences[1].hash
    # Without pairs=True a TAB is whitespace like any other.
    assert read_text(path).sentences[1].tokens == ("Dogs", "bark", "Loudly")


@pytest.mark.parametrize("content, line, message", [
    ("a b\tc\nno tab here\n", 2, "expected a sentence pair, the sentence and its second segment separated by one TAB, got 0 TABs"),
    ("a\tb\tc\n", 1, "got 2 TABs"),
    ("a b\t  \n", 1, r"expected words in the second segment \(after the TAB\), got none"),
    ("\tb c\n", 1, r"expected words in the sentence \(before the TAB\), got none"),
])
def test_malformed_pairs_name_file_and_line(tmp_path, content, line, message):
    path = _write(tmp_path, content)
    with pytest.raises(CorpusFormatError, match=f"{re.escape(str(path))}:{line}: .*{message}"):
        read_text(path, pairs=True)


def test_parallel_files_with_a_pairs_file(tmp_path):
    words = _write(tmp_path, "The cat sat\nDogs bark\n", "w.txt")
    labels = _write(tmp_path, "DET NOUN VERB\nNOUN VERB\n", "l.txt")
    seconds = _write(tmp_path, "It slept\nLoudly\n", "p.txt")
    first, second = read_parallel(words, labels, seconds)
    assert first.pair == ("It", "slept") and second.pair == ("Loudly",)
    short = _write(tmp_path, "It slept\n", "short.txt")
    with pytest.raises(CorpusFormatError, match=rf"{re.escape(str(short))}: expected one second segment per "
                                                 r"line of the words file .* \(2 lines\), got 1 lines"):
        read_parallel(words, labels, short)
    blank = _write(tmp_path, "It slept\n\n", "blank.txt")
    with pytest.raises(CorpusFormatError, match=rf"{re.escape(str(blank))}:2: expected one sentence per line, got an empty line"):
        read_parallel(words, labels, blank)


def test_pairs_table_keys_pairs_like_the_token_table():
    from neuro_pipeline.corpus import pairs_table, sentences_to_table
    from neuro_pipeline.types import Sentence

    a = Sentence(("A", "b"), ("X", "Y"), "t", 1, pair=("c",))
    b = Sentence(("D",), ("X",), "t", 2, pair=("e", "f"))
    splits = {"train": [a], "test": [b]}
    tokens = sentences_to_table(splits, corpus_id="toy")
    table = pairs_table(splits, corpus_id="toy")
    assert table.rows() == [("toy", 0, ["c"]), ("toy", 1, ["e", "f"])]
    assert set(tokens["sentence_id"]) == {0, 1}
    assert tokens.filter(tokens["sentence_id"] == 1)["sentence_hash"][0] == b.hash
    with pytest.raises(ValueError, match="the sentence's pair is empty"):
        Sentence(("A",), ("X",), "t", 1, pair=())

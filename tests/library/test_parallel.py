"""Tests for read_parallel: NeuroX's one-sentence-per-line words and labels files."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from neuro_pipeline.corpus import CorpusFormatError, read_parallel


def _pair(tmp_path: Path, words: str | bytes, labels: str | bytes) -> tuple[Path, Path]:
    paths = tmp_path / "words.txt", tmp_path / "labels.txt"
    for path, content in zip(paths, (words, labels)):
        data = content if isinstance(content, bytes) else textwrap.dedent(content).encode()
        path.write_bytes(data)
    return paths


def test_reads_aligned_files(tmp_path):
    words, labels = _pair(tmp_path, """\
        The cat sleeps .
        Dogs  bark
    """, """\
        DET NOUN VERB PUNCT
        NOUN\tVERB
    """)
    first, second = read_parallel(words, labels)
    assert first.tokens == ("The", "cat", "sleeps", ".")
    assert first.labels == ("DET", "NOUN", "VERB", "PUNCT")
    # any run of whitespace separates tokens
    assert second.tokens == ("Dogs", "bark") and second.labels == ("NOUN", "VERB")
    assert (first.source, first.line, second.line) == (str(words), 1, 2)
    assert first.token_lines == ()


def test_missing_final_newline_is_accepted(tmp_path):
    words, labels = _pair(tmp_path, b"a b", b"X Y")
    assert read_parallel(words, labels)[0].labels == ("X", "Y")


@pytest.mark.parametrize(
    ("words", "labels", "message"),
    [
        pytest.param(
            "a b\nc\n", "X Y\n",
            r"labels\.txt: expected as many lines as the words file .*words\.txt \(2 lines\), "
            r"got 1 lines$", id="fewer-label-lines"),
        pytest.param(
            "a b\n", "X Y\nZ\n",
            r"labels\.txt: expected as many lines as the words file .*words\.txt \(1 lines\), "
            r"got 2 lines$", id="more-label-lines"),
        pytest.param(
            "a b\nc d e\n", "X Y\nZ Z\n",
            r"labels\.txt:2: expected 3 labels, one per word of .*words\.txt:2, got 2 labels$",
            id="token-count"),
        pytest.param(
            "a b\n\nc\n", "X Y\n\nZ\n",
            r"words\.txt:2: expected one sentence per line, got an empty line", id="empty-line"),
        pytest.param(
            "a b\n   \n", "X Y\nZ\n",
            r"words\.txt:2: expected one sentence per line, got an empty line",
            id="whitespace-line"),
        pytest.param(
            "a b\n", "X Y\n\n",
            r"labels\.txt:2: expected one sentence per line, got an empty line",
            id="trailing-blank-line"),
        pytest.param(
            b"a b\r\nc\r\n", b"X Y\r\nZ\r\n",
            r"words\.txt:1: line ends with CRLF \(\\r\\n\); the parallel words/labels format "
            r"needs LF line ends", id="crlf"),
        pytest.param(
            b"a b\n", b"\xef\xbb\xbfX Y\n",
            r"labels\.txt:1: expected UTF-8 text without a byte-order mark", id="bom"),
        pytest.param(
            b"a b\nna\xefve\n", b"X Y\nZ\n",
            r"words\.txt:2: expected UTF-8 text, got invalid byte\(s\) EF at byte offset 2 "
            r"of the line \(byte 6 of the file\)", id="non-utf8"),
        pytest.param(
            b"", b"",
            r"words\.txt: expected at least one sentence, got an empty file$", id="empty-file"),
    ],
)
def test_malformed_pairs(tmp_path, words, labels, message):
    words_path, labels_path = _pair(tmp_path, words, labels)
    with pytest.raises(CorpusFormatError, match=message):
        read_parallel(words_path, labels_path)

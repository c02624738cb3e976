"""Read a CoNLL-U treebank (Universal Dependencies) into :class:`~neuro_pipeline.types.Sentence`.

The reader is strict: a malformed file raises :class:`CorpusFormatError` naming the file and
line instead of being repaired silently, because a shifted column or a dropped word would
silently misalign every label that later stages join on.

What a CoNLL-U file holds (https://universaldependencies.org/format.html):

* sentences separated by one blank line; the last sentence also ends with a blank line;
* ``#`` comment lines before a sentence's words (``# sent_id = ...`` names the sentence);
* word lines of 10 tab-separated columns ID FORM LEMMA UPOS XPOS FEATS HEAD DEPREL DEPS MISC,
  with IDs 1, 2, 3, ... in order;
* multiword-token lines whose ID is a range (``3-4	don't``): the surface token, not a word;
  its words follow as ordinary lines (``3	do``, ``4	n't``) and are the ones we keep;
* empty-node lines whose ID is decimal (``8.1``), used only by enhanced dependencies: skipped.
"""

from __future__ import annotations

import logging
import os
import re

from neuro_pipeline.corpus.errors import CorpusFormatError, read_utf8_lines
from neuro_pipeline.types import Sentence

__all__ = ["read_conllu", "LABEL_COLUMNS"]

logger = logging.getLogger(__name__)

_COLUMN_NAMES = ("ID", "FORM", "LEMMA", "UPOS", "XPOS", "FEATS", "HEAD", "DEPREL", "DEPS", "MISC")
#: Plain label columns: name -> 0-based column index.
_PLAIN_LABEL_COLUMNS = {"lemma": 2, "upos": 3, "xpos": 4, "deprel": 7}
#: Columns whose label may not be ``_``; a lemma may legitimately be ``_`` (the word "_").
_REQUIRED_LABEL_COLUMNS = frozenset({3, 4, 7})
_FEATS_INDEX = 5
#: The accepted values of ``read_conllu(label_column=...)``.
LABEL_COLUMNS: tuple[str, ...] = ("upos", "xpos", "deprel", "lemma", "feats:<Key>")

_SENT_ID = re.compile(r"#\s*sent_id\s*=\s*(.*?)\s*$")
_EMPTY_NODE_ID = re.compile(r"[0-9]+\.[0-9]+")


def _parse_label_column(label_column: str) -> tuple[int, str | None]:
    """(column index, FEATS key or None) for a ``label_column`` argument."""
    if isinstance(label_column, str):
        name = label_column.strip()
        lowered = name.lower()
        if lowered in _PLAIN_LABEL_COLUMNS:
            return _PLAIN_LABEL_COLUMNS[lowered], None
        if lowered.startswith("feats:") and name[6:].strip():
            return _FEATS_INDEX, name[6:].strip().lower()
    raise ValueError(
        f"Unknown label_column {label_column!r}; choose one of {list(LABEL_COLUMNS)} "
        "(case-insensitive), e.g. 'upos' or 'feats:Number'."
    )


def _column_name(index: int) -> str:
    return f"{_COLUMN_NAMES[index]} column ({index + 1})"


def _feature_value(feats: str, key: str, path: str, line: int) -> str:
    """Value of FEATS ``key`` (lower-cased) in ``feats``, ``"_"`` if the word lacks it."""
    if feats == "_":
        return "_"
    for pair in feats.split("|"):
        name, sep, value = pair.partition("=")
        if not sep or not name or not value:
            raise CorpusFormatError(
                path, line, f"expected FEATS as Key=Value pairs separated by '|', got {feats!r}"
            )
        if name.lower() == key:
            return value
    return "_"


def read_conllu(path: str | os.PathLike[str], *, label_column: str = "upos") -> list[Sentence]:
    """Read the sentences of a CoNLL-U file, one label per syntactic word.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.conllu`` file (UTF-8, LF line ends, no byte-order mark).
    label_column : str, default "upos"
        Which annotation becomes the label (case-insensitive): ``"upos"``, ``"xpos"``,
        ``"deprel"``, ``"lemma"``, or ``"feats:<Key>"`` for the value of one FEATS key,
        e.g. ``"feats:Number"``; a word without that key gets the label ``"_"``.

    Returns
    -------
    list of Sentence
        In file order. Words of multiword tokens are expanded (``don't`` -> ``do``, ``n't``);
        empty nodes are skipped. ``source`` is ``str(path)``, ``line`` the line of the first
        word, ``token_lines`` the line of each word, ``sent_id`` the ``# sent_id`` comment.

    Raises
    ------
    ValueError
        If ``label_column`` is not one of the choices above.
    CorpusFormatError
        If the file is malformed: empty or without sentences; a BOM, non-UTF-8 bytes or CRLF
        line ends; a line without 10 tab-separated columns; an ID that is not an integer,
        range or decimal, or out of order; a bad multiword range; an empty column; an
        unannotated (``_``) UPOS, XPOS or DEPREL when that is the label; a sentence with no
        words; or no blank line after the last sentence.

    Examples
    --------
    >>> sentences = read_conllu("en_ewt-ud-dev.conllu")  # doctest: +SKIP
    >>> sentences[0].tokens[:3], sentences[0].labels[:3]  # doctest: +SKIP
    (('From', 'the', 'AP'), ('ADP', 'DET', 'PROPN'))
    """
    label_index, feats_key = _parse_label_column(label_column)
    source = str(path)
    lines, _ = read_utf8_lines(path, format_name="CoNLL-U")

    sentences: list[Sentence] = []
    # State of the sentence being read; `start` is the line of its first line (comment or word).
    tokens: list[str] = []
    labels: list[str] = []
    token_lines: list[int] = []
    sent_id: str | None = None
    start = 0
    range_start = range_end = 0  # word ids covered by the latest multiword token
    range_line = 0

    def fail(line: int, reason: str) -> CorpusFormatError:
        return CorpusFormatError(source, line, reason)

    def finish_sentence(line: int) -> None:
        if not tokens:
            raise fail(start, "expected at least one word line in the sentence, got only "
                              f"comment lines (the sentence ends at the blank line {line})")
        if range_end > len(tokens):
            raise fail(range_line, f"multiword token {range_start}-{range_end} is missing "
                                   f"word line(s) {len(tokens) + 1}..{range_end} before "
                                   f"the blank line {line}")
        sentences.append(Sentence(tuple(tokens), tuple(labels), source, token_lines[0],
                                  sent_id, tuple(token_lines)))

    for number, text in enumerate(lines, start=1):
        if not text:
            if start:
                finish_sentence(number)
                tokens, labels, token_lines = [], [], []
                sent_id, start, range_start, range_end = None, 0, 0, 0
            continue
        if not start:
            start = number
        if text[0] == "#":
            if tokens:
                raise fail(number, "expected comment lines only before the first word line "
                                   "of a sentence, got a comment after word lines")
            match = _SENT_ID.match(text)
            if match:
                sent_id = match.group(1)
            continue

        columns = text.split("\t")
        if len(columns) != 10:
            hint = " (are the columns separated by spaces instead of tabs?)" if (
                len(columns) < 10 and " " in text) else ""
            raise fail(number, f"expected 10 tab-separated columns, got {len(columns)}{hint}")
        if "" in columns:
            index = columns.index("")
            raise fail(number, f"expected a value or '_' in every column, got an empty "
                               f"{_column_name(index)}")
        word_id = columns[0]
        expected = len(tokens) + 1

        if word_id.isdigit() and word_id.isascii():
            if int(word_id) != expected:
                raise fail(number, f"expected word id {expected}, got {word_id} (word ids "
                                   "must be consecutive integers starting at 1 in a sentence)")
            label = columns[label_index]
            if feats_key is not None:
                label = _feature_value(label, feats_key, source, number)
            elif label == "_" and label_index in _REQUIRED_LABEL_COLUMNS:
                raise fail(number, f"{_column_name(label_index)} is unannotated ('_'); "
                                   f"expected a label for every word (form {columns[1]!r})")
            tokens.append(columns[1])
            labels.append(label)
            token_lines.append(number)
            continue

        first, dash, last = word_id.partition("-")
        if dash:
            if not (first.isdigit() and first.isascii() and last.isdigit() and last.isascii()):
                raise fail(number, f"expected a multiword range like '3-4', got {word_id!r}")
            low, high = int(first), int(last)
            if low >= high:
                raise fail(number, f"expected a multiword range start < end, got {word_id}")
            if low != expected:
                raise fail(number, f"expected multiword range starting at the next word id "
                                   f"{expected}, got {word_id}")
            if range_end >= expected:
                raise fail(number, f"multiword range {word_id} overlaps the range "
                                   f"{range_start}-{range_end} of line {range_line}")
            range_start, range_end, range_line = low, high, number
            continue
        if _EMPTY_NODE_ID.fullmatch(word_id):
            if int(first.split(".")[0]) != expected - 1:
                raise fail(number, f"expected empty node {expected - 1}.N after word "
                                   f"{expected - 1}, got {word_id}")
            continue
        raise fail(number, f"expected an integer word id (or a range '3-4' or an empty node "
                           f"'8.1'), got {word_id!r}")

    if start and not tokens:
        raise fail(start, "expected at least one word line in the sentence, got only comment "
                          "lines (up to the end of the file)")
    if start:
        raise fail(len(lines), "expected a blank line after the last sentence, got the end "
                               "of the file; CoNLL-U ends every sentence, including the last, "
                               "with a blank line: add an empty line at the end of the file "
                               "(the file must end with two newlines)")
    if not sentences:
        raise CorpusFormatError(source, None, "expected at least one sentence, got only "
                                              "blank lines")
    logger.debug("read %d sentences (%d words) from %s", len(sentences),
                 sum(len(s.tokens) for s in sentences), source)
    return sentences

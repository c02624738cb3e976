"""Read NeuroX's parallel text format: a words file and a labels file, one sentence per line.

Line *i* of the words file holds the words of sentence *i* separated by spaces; line *i* of
the labels file holds one label per word in the same order::

    words.txt                 labels.txt
    The cat sleeps .          DET NOUN VERB PUNCT
    Dogs bark                 NOUN VERB

The files must line up exactly: same number of lines, same number of tokens on each line.
Nothing is padded or truncated; a mismatch raises :class:`CorpusFormatError`.
"""

from __future__ import annotations

import logging
import os

from neuro_pipeline.corpus.errors import CorpusFormatError, read_utf8_lines
from neuro_pipeline.types import Sentence

__all__ = ["read_parallel"]

logger = logging.getLogger(__name__)

_FORMAT = "the parallel words/labels format"


def _read_rows(path: str | os.PathLike[str]) -> list[list[str]]:
    """Whitespace-split tokens of each line, rejecting lines without tokens."""
    lines, _ = read_utf8_lines(path, format_name=_FORMAT)
    rows = []
    for number, text in enumerate(lines, start=1):
        row = text.split()
        if not row:
            raise CorpusFormatError(
                path, number, "expected one sentence per line, got an empty line "
                "(a sentence with no tokens); remove the blank line"
            )
        rows.append(row)
    return rows


def read_parallel(
    words_path: str | os.PathLike[str], labels_path: str | os.PathLike[str],
    pairs_path: str | os.PathLike[str] | None = None,
) -> list[Sentence]:
    """Read a NeuroX-style pair of parallel files into sentences.

    Parameters
    ----------
    words_path : str or os.PathLike
        One sentence per line, words separated by whitespace.
    labels_path : str or os.PathLike
        One line per line of ``words_path``, one whitespace-separated label per word.
    pairs_path : str or os.PathLike, optional
        One line per line of ``words_path``: the second segment of each sentence pair
        (words separated by whitespace, no labels; see :attr:`Sentence.pair`).

    Returns
    -------
    list of Sentence
        In file order; ``source`` is ``str(words_path)`` and ``line`` the sentence's line
        (``token_lines`` is empty: every word of a sentence sits on that line).

    Raises
    ------
    CorpusFormatError
        If either file is empty, has an empty line, a byte-order mark, non-UTF-8 bytes or
        CRLF line ends; if the files have different numbers of lines; or if a line has a
        different number of labels than words. The same holds for ``pairs_path``.

    Examples
    --------
    >>> sentences = read_parallel("words.txt", "labels.txt")  # doctest: +SKIP
    >>> sentences[0].tokens, sentences[0].labels  # doctest: +SKIP
    (('The', 'cat', 'sleeps', '.'), ('DET', 'NOUN', 'VERB', 'PUNCT'))
    """
    words = _read_rows(words_path)
    labels = _read_rows(labels_path)
    if len(words) != len(labels):
        raise CorpusFormatError(
            labels_path, None, f"expected as many lines as the words file {words_path} "
            f"({len(words)} lines), got {len(labels)} lines"
        )
    seconds: list[list[str]] | list[None] = [None] * len(words)
    if pairs_path is not None:
        seconds = _read_rows(pairs_path)
        if len(seconds) != len(words):
            raise CorpusFormatError(
                pairs_path, None, f"expected one second segment per line of the words file "
                f"{words_path} ({len(words)} lines), got {len(seconds)} lines"
            )
    source = str(words_path)
    sentences = []
    for number, (tokens, tags, pair) in enumerate(zip(words, labels, seconds), start=1):
        if len(tokens) != len(tags):
            raise CorpusFormatError(
                labels_path, number, f"expected {len(tokens)} labels, one per word of "
                f"{words_path}:{number}, got {len(tags)} labels"
            )
        sentences.append(Sentence(tuple(tokens), tuple(tags), source, number,
                                  pair=None if pair is None else tuple(pair)))
    logger.debug("read %d sentences from %s and %s", len(sentences), words_path, labels_path)
    return sentences

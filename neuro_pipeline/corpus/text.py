"""Read plain, unlabelled text: one sentence per line, split into words by a named tokenizer.

This is the starting point for a concept without a treebank: read any text, then label it
with :func:`neuro_pipeline.corpus.concepts.annotate`. Until then every word carries the
placeholder label :data:`UNLABELLED` (``"_"``).

Tokenizers (pick by name, see :data:`TOKENIZERS`):

* ``"whitespace"``: :meth:`str.split`, i.e. any run of Unicode whitespace separates words;
  punctuation stays attached (``"Hello,"``).
* ``"punct"``: words and punctuation split apart, Unicode-aware. A token is, in order of
  preference at each position:

  1. a number with inner ``.`` or ``,`` between digits: ``3.14``, ``1,000``;
  2. a word: letters, digits, ``_`` and combining marks (so Devanagari vowel signs or a
     decomposed ``ï`` stay inside the word), plus zero-width (non-)joiners, with inner
     ``-``, ``'`` or ``’`` between word characters: ``naïve``, ``don't``, ``state-of-the-art``;
  3. any other single non-space character with its combining marks, or an emoji sequence
     joined by U+200D: ``,``, ``(``, ``—``, ``€``.

  Roughly the regex ``\\d+(?:[.,]\\d+)+|\\w+(?:[-'’]\\w+)*|[^\\w\\s]`` with ``\\w`` widened
  to combining marks. ``"Hello, world!"`` becomes ``Hello , world !``.

Files are read like every other corpus (:func:`~neuro_pipeline.corpus.errors.read_utf8_lines`):
UTF-8 without byte-order mark, LF line ends; a BOM, CRLF or bytes that are not UTF-8 raise
:class:`~neuro_pipeline.corpus.errors.CorpusFormatError` naming the file and line. Blank
lines (empty or whitespace only) are skipped and counted in
:attr:`TextCorpus.n_blank_lines`. Long lines are read whole, never truncated.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import sys
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

from neuro_pipeline.corpus.errors import CorpusFormatError, read_utf8_lines
from neuro_pipeline.types import Sentence

__all__ = ["TOKENIZERS", "UNLABELLED", "TextCorpus", "read_text", "tokenize"]

logger = logging.getLogger(__name__)

#: Label of every word of a text that has not been annotated yet.
UNLABELLED = "_"
_FORMAT = "plain text"


@functools.lru_cache(maxsize=1)
def _punct_pattern() -> re.Pattern[str]:
    # Python's \w leaves out combining marks (category M), which would cut words of many
    # scripts apart (Hindi नमस्ते -> नमस, त). Build the missing class from this Python's own
    # Unicode database, so it always agrees with \w; it takes ~0.2 s, once, on first use.
    marks = []
    start = None
    for code in range(sys.maxunicode + 2):
        is_mark = code <= sys.maxunicode and unicodedata.category(chr(code))[0] == "M"
        if is_mark and start is None:
            start = code
        elif not is_mark and start is not None:
            marks.append(f"{re.escape(chr(start))}-{re.escape(chr(code - 1))}")
            start = None
    mark_class = "".join(marks)
    word_char = f"[\\w{mark_class}\u200c\u200d]"
    symbol = f"[^\\w\\s{mark_class}\u200c\u200d][{mark_class}]*"
    return re.compile(
        r"\d+(?:[.,]\d+)+"
        f"|{word_char}+(?:[-'’]{word_char}+)*"
        f"|{symbol}(?:\u200d{symbol})*"
    )


def _whitespace(text: str) -> list[str]:
    return text.split()


def _punct(text: str) -> list[str]:
    return _punct_pattern().findall(text)


#: Tokenizer name -> function from a line of text to its words.
TOKENIZERS: dict[str, Callable[[str], list[str]]] = {
    "whitespace": _whitespace,
    "punct": _punct,
}


def _get_tokenizer(tokenizer: str) -> Callable[[str], list[str]]:
    try:
        return TOKENIZERS[tokenizer]
    except (KeyError, TypeError):
        raise ValueError(
            f"Unknown tokenizer {tokenizer!r}; choose one of {sorted(TOKENIZERS)}."
        ) from None


def tokenize(text: str, tokenizer: str = "whitespace") -> list[str]:
    """Split one line of text into words with a named tokenizer.

    Parameters
    ----------
    text : str
        One sentence.
    tokenizer : {"whitespace", "punct"}, default "whitespace"
        See the module docstring.

    Returns
    -------
    list of str
        The words; empty for blank text.

    Raises
    ------
    ValueError
        If ``tokenizer`` is not one of :data:`TOKENIZERS` (the message lists them).

    Examples
    --------
    >>> tokenize("Hello, world!")
    ['Hello,', 'world!']
    >>> tokenize("Hello, world!", "punct")
    ['Hello', ',', 'world', '!']
    >>> tokenize("(don't) pay 1,000.50 €", "punct")
    ['(', "don't", ')', 'pay', '1,000.50', '€']
    """
    return _get_tokenizer(tokenizer)(text)


def _split_pair(path, number: int, text: str, split: Callable[[str], list[str]]) -> tuple[str, tuple[str, ...]]:
    """The sentence part of a ``sentence<TAB>pair`` line and the pair's words."""
    n_tabs = text.count("\t")
    if n_tabs != 1:
        raise CorpusFormatError(
            path, number, f"expected a sentence pair, the sentence and its second segment "
            f"separated by one TAB, got {n_tabs} TABs"
        )
    first, second = text.split("\t")
    for name, segment in (("sentence (before the TAB)", first), ("second segment (after the TAB)", second)):
        if not split(segment):
            raise CorpusFormatError(path, number, f"expected words in the {name}, got none")
    return first, tuple(split(second))


@dataclass(frozen=True)
class TextCorpus:
    """The sentences of a plain text file and what was skipped while reading it.

    Attributes
    ----------
    sentences : tuple of Sentence
        One per non-blank line, in file order; every label is :data:`UNLABELLED`, ``line``
        is the 1-based line number, ``token_lines`` is empty.
    source : str
        The file, as given.
    tokenizer : str
        Name of the tokenizer used.
    n_lines : int
        Lines in the file.
    n_blank_lines : int
        Lines skipped because they are empty or whitespace only.
    """

    sentences: tuple[Sentence, ...]
    source: str
    tokenizer: str
    n_lines: int
    n_blank_lines: int

    @property
    def n_tokens(self) -> int:
        """Total number of words."""
        return sum(len(sentence.tokens) for sentence in self.sentences)

    def __len__(self) -> int:
        return len(self.sentences)


def read_text(path: str | os.PathLike[str], *, tokenizer: str = "whitespace", pairs: bool = False) -> TextCorpus:
    """Read a plain text file, one sentence per line, with placeholder labels.

    Parameters
    ----------
    path : str or os.PathLike
        UTF-8 text without byte-order mark, LF line ends.
    tokenizer : {"whitespace", "punct"}, default "whitespace"
        How a line is split into words; see the module docstring.
    pairs : bool, default False
        Every line is a sentence pair: the sentence, one TAB, then its second segment
        (context for models trained on pairs; see :attr:`Sentence.pair`). Each segment is
        split by ``tokenizer``; a line without exactly one TAB, or with an empty segment,
        is an error.

    Returns
    -------
    TextCorpus
        ``.sentences`` (labels ``"_"``), and ``.n_blank_lines`` skipped.

    Raises
    ------
    ValueError
        If ``tokenizer`` is unknown (the message lists the valid names).
    CorpusFormatError
        If the file is empty or has only blank lines, starts with a byte-order mark, has
        bytes that are not UTF-8 or CRLF line ends (the message names file and line); with
        ``pairs``, if a non-blank line has no TAB, more than one, or an empty segment.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "notes.txt"
    >>> _ = path.write_text("Hello, world!\\n\\nBye.\\n", encoding="utf-8")
    >>> corpus = read_text(path, tokenizer="punct")
    >>> [(s.line, s.tokens) for s in corpus.sentences]
    [(1, ('Hello', ',', 'world', '!')), (3, ('Bye', '.'))]
    >>> corpus.n_blank_lines, corpus.sentences[1].labels
    (1, ('_', '_'))
    """
    split = _get_tokenizer(tokenizer)
    source = str(path)
    lines, _ = read_utf8_lines(path, format_name=_FORMAT)
    sentences = []
    n_blank = 0
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            n_blank += 1
            continue
        pair = None
        if pairs:
            text, pair = _split_pair(path, number, text, split)
        tokens = split(text)
        if not tokens:  # only when the line was whitespace; reached with pairs=False
            n_blank += 1
            continue
        sentences.append(Sentence(tuple(tokens), (UNLABELLED,) * len(tokens), source, number, pair=pair))
    if not sentences:
        raise CorpusFormatError(
            path, None, f"expected at least one non-blank line, got {len(lines)} blank lines"
        )
    if n_blank:
        logger.info("%s: skipped %d blank line(s) of %d", source, n_blank, len(lines))
    logger.debug("read %d sentences from %s (tokenizer %r)", len(sentences), source, tokenizer)
    return TextCorpus(tuple(sentences), source, tokenizer, len(lines), n_blank)

"""Plain data types shared by every stage of the library.

Start here: a corpus is a list of :class:`Sentence` (words plus one label per word, with
provenance), which :func:`neuro_pipeline.corpus.sentences_to_table` turns into the keyed
token table that every later stage joins on.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

#: Columns of the token table, in order. The key is (corpus_id, sentence_id, position).
TOKEN_COLUMNS: tuple[str, ...] = (
    "corpus_id",      # str: which analysis corpus the row belongs to
    "split",          # str: "train", "dev" or "test"
    "sentence_id",    # int32: running index of the sentence within the corpus, 0-based
    "position",       # int32: index of the word within its sentence, 0-based
    "token",          # str: the word form
    "label",          # str: the label of the word for the task
    "sentence_hash",  # str: content hash of the sentence's words (see sentence_hash())
    "source",         # str: file the sentence came from (or "demo:<name>")
    "line",           # int32: 1-based line of the word in its source file
)


@dataclass(frozen=True)
class Sentence:
    """One sentence of an annotated corpus: its words, one label per word, and provenance.

    Parameters
    ----------
    tokens : tuple of str
        The words (syntactic words for CoNLL-U, i.e. multiword-token ranges are expanded).
    labels : tuple of str
        One label per word, same length as ``tokens``.
    source : str
        Path of the file the sentence was read from, or ``"demo:<name>"``.
    line : int
        1-based line number of the sentence's first word in ``source``.
    sent_id : str or None
        The ``# sent_id`` of a CoNLL-U sentence, where present.
    token_lines : tuple of int
        1-based line number of each word in ``source`` (empty when not known).
    pair : tuple of str or None
        A second segment fed to the model after the sentence (``[CLS] words [SEP] pair
        [SEP]``) for models trained on sentence pairs; it is context only and has no labels.
        Part of the sentence's :attr:`hash`.
    """

    tokens: tuple[str, ...]
    labels: tuple[str, ...]
    source: str
    line: int
    sent_id: str | None = None
    token_lines: tuple[int, ...] = field(default=())
    pair: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if len(self.tokens) != len(self.labels):
            raise ValueError(
                f"{self.source}:{self.line}: sentence has {len(self.tokens)} tokens but "
                f"{len(self.labels)} labels; expected one label per token."
            )
        if self.token_lines and len(self.token_lines) != len(self.tokens):
            raise ValueError(
                f"{self.source}:{self.line}: token_lines has {len(self.token_lines)} entries "
                f"for {len(self.tokens)} tokens."
            )
        if self.pair is not None and not self.pair:
            raise ValueError(f"{self.source}:{self.line}: the sentence's pair is empty; expected "
                             "at least one word in the second segment (or no pair at all).")

    @property
    def hash(self) -> str:
        return sentence_hash(self.tokens, self.pair)


def sentence_hash(tokens: tuple[str, ...] | list[str], pair: tuple[str, ...] | list[str] | None = None) -> str:
    """Content hash of a sentence's words (and of its pair, where it has one): 16 hex
    digits of SHA-256. A sentence seen with two different pairs has two hashes, because
    its activations differ.

    Activations are stored under this hash, so an unchanged sentence is never extracted
    twice for the same model version, wherever it sits in the corpus.

    Examples
    --------
    >>> sentence_hash(["The", "cat"]) == sentence_hash(("The", "cat"))
    True
    >>> sentence_hash(["The", "cat"]) == sentence_hash(["The cat"])
    False
    >>> sentence_hash(["The", "cat"]) == sentence_hash(["The", "cat"], ["It", "sat"])
    False
    """
    digest = hashlib.sha256("\x1f".join(tokens).encode("utf-8"))
    digest.update(f"\x1e{len(tokens)}".encode())
    if pair is not None:
        digest.update(("\x1d" + "\x1f".join(pair)).encode("utf-8"))
        digest.update(f"\x1e{len(pair)}".encode())
    return digest.hexdigest()[:16]

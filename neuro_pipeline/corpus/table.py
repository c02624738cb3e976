"""Split sentences into train/dev/test and lay them out as the keyed token table.

The token table (columns :data:`~neuro_pipeline.types.TOKEN_COLUMNS`) has one row per word,
keyed by ``(corpus_id, sentence_id, position)``; every later stage joins on that key.

Splits are decided by sentence *content*, not by position: a sentence's split is a function
of its hash and the seed only. Identical sentences therefore always land in the same split
(no train/test leakage through duplicates), and appending sentences to a corpus never moves
the old ones, so their stored activations stay valid.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from numbers import Real

import polars as pl

from neuro_pipeline.types import TOKEN_COLUMNS, Sentence

__all__ = ["SPLITS", "split_sentences", "sentences_to_table", "pairs_table", "label_counts"]

logger = logging.getLogger(__name__)

#: Split names, in the order their sentences are numbered in the token table.
SPLITS: tuple[str, ...] = ("train", "dev", "test")

_SCHEMA: dict[str, pl.DataType] = {
    "corpus_id": pl.Utf8,
    "split": pl.Utf8,
    "sentence_id": pl.Int32,
    "position": pl.Int32,
    "token": pl.Utf8,
    "label": pl.Utf8,
    "sentence_hash": pl.Utf8,
    "source": pl.Utf8,
    "line": pl.Int32,
}
assert tuple(_SCHEMA) == TOKEN_COLUMNS, "table schema out of sync with TOKEN_COLUMNS"


def _check_fraction(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not (
        math.isfinite(value) and 0.0 <= value < 1.0
    ):
        raise ValueError(f"{name} must be a number in [0, 1); got {value!r}.")
    return float(value)


def _unit_interval(seed: int, sentence: Sentence) -> float:
    """Map a sentence's content (and the seed) to a deterministic number in [0, 1)."""
    digest = hashlib.sha256(f"{seed}:{sentence.hash}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def split_sentences(
    sentences: Iterable[Sentence],
    *,
    dev_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> dict[str, list[Sentence]]:
    """Assign each sentence to train, dev or test by a hash of its words.

    Parameters
    ----------
    sentences : iterable of Sentence
        The corpus.
    dev_fraction, test_fraction : float, default 0.1 and 0.2
        Expected share of sentences in dev and test; each in [0, 1) and their sum < 1.
        Train gets the rest. Shares are met in expectation, not exactly.
    seed : int, default 0
        Changes the assignment; the same seed always gives the same split.

    Returns
    -------
    dict of str to list of Sentence
        Keys ``"train"``, ``"dev"``, ``"test"`` (always all three, possibly empty); within
        each split the sentences keep their input order.

    Raises
    ------
    ValueError
        If a fraction is outside [0, 1) or the two add up to 1 or more.

    Examples
    --------
    >>> from neuro_pipeline.types import Sentence
    >>> corpus = [Sentence(("Hi", str(i)), ("INTJ", "NUM"), "demo:x", i) for i in range(100)]
    >>> splits = split_sentences(corpus)
    >>> sorted(splits), sum(len(v) for v in splits.values())
    (['dev', 'test', 'train'], 100)
    >>> split_sentences(corpus + corpus[:3])["test"][:2] == splits["test"][:2]
    True
    """
    dev_fraction = _check_fraction("dev_fraction", dev_fraction)
    test_fraction = _check_fraction("test_fraction", test_fraction)
    if dev_fraction + test_fraction >= 1.0:
        raise ValueError(
            f"dev_fraction + test_fraction must be < 1 so that train is not empty; got "
            f"{dev_fraction} + {test_fraction} = {dev_fraction + test_fraction}."
        )
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int; got {seed!r}.")
    splits: dict[str, list[Sentence]] = {name: [] for name in SPLITS}
    for sentence in sentences:
        u = _unit_interval(seed, sentence)
        if u < test_fraction:
            splits["test"].append(sentence)
        elif u < test_fraction + dev_fraction:
            splits["dev"].append(sentence)
        else:
            splits["train"].append(sentence)
    logger.debug("split sentences: %s", {name: len(v) for name, v in splits.items()})
    return splits


def sentences_to_table(
    splits: Mapping[str, Sequence[Sentence]], *, corpus_id: str
) -> pl.DataFrame:
    """Lay out split sentences as the token table, one row per word.

    Parameters
    ----------
    splits : mapping of str to sequence of Sentence
        Split name (a subset of ``"train"``, ``"dev"``, ``"test"``) to its sentences, e.g.
        the output of :func:`split_sentences`.
    corpus_id : str
        Name of the analysis corpus; fills the ``corpus_id`` column.

    Returns
    -------
    polars.DataFrame
        Columns :data:`~neuro_pipeline.types.TOKEN_COLUMNS` with dtypes corpus_id, split,
        token, label, sentence_hash, source: Utf8; sentence_id, position, line: Int32.
        ``sentence_id`` runs from 0 over the splits in the order train, dev, test, then
        input order; ``position`` from 0 within a sentence; ``line`` is the word's own
        line where known, else the sentence's line.

    Raises
    ------
    ValueError
        If a split name is not train, dev or test, or ``corpus_id`` is empty.

    Examples
    --------
    >>> from neuro_pipeline.types import Sentence
    >>> s = Sentence(("Dogs", "bark"), ("NOUN", "VERB"), "demo:x", 1)
    >>> table = sentences_to_table({"train": [s]}, corpus_id="toy")
    >>> table.select("sentence_id", "position", "token", "label").rows()
    [(0, 0, 'Dogs', 'NOUN'), (0, 1, 'bark', 'VERB')]
    """
    unknown = sorted(set(splits) - set(SPLITS))
    if unknown:
        raise ValueError(
            f"Unknown split name(s) {unknown}; expected a subset of {list(SPLITS)}."
        )
    if not isinstance(corpus_id, str) or not corpus_id:
        raise ValueError(f"corpus_id must be a non-empty string; got {corpus_id!r}.")

    split_col: list[str] = []
    sentence_ids: list[int] = []
    positions: list[int] = []
    tokens: list[str] = []
    labels: list[str] = []
    hashes: list[str] = []
    sources: list[str] = []
    lines: list[int] = []
    sentence_id = 0
    for name in SPLITS:
        for sentence in splits.get(name, ()):
            n = len(sentence.tokens)
            split_col.extend([name] * n)
            sentence_ids.extend([sentence_id] * n)
            positions.extend(range(n))
            tokens.extend(sentence.tokens)
            labels.extend(sentence.labels)
            hashes.extend([sentence.hash] * n)
            sources.extend([sentence.source] * n)
            lines.extend(sentence.token_lines or [sentence.line] * n)
            sentence_id += 1
    columns = {
        "corpus_id": [corpus_id] * len(tokens),
        "split": split_col,
        "sentence_id": sentence_ids,
        "position": positions,
        "token": tokens,
        "label": labels,
        "sentence_hash": hashes,
        "source": sources,
        "line": lines,
    }
    table = pl.DataFrame(columns, schema=_SCHEMA)
    logger.debug("token table %r: %d sentences, %d rows", corpus_id, sentence_id, table.height)
    return table


def pairs_table(splits: Mapping[str, Sequence[Sentence]], *, corpus_id: str) -> pl.DataFrame:
    """The second segments of sentence pairs, keyed like :func:`sentences_to_table`'s rows.

    Returns
    -------
    polars.DataFrame
        Columns corpus_id (Utf8), sentence_id (Int32), pair (List[Utf8]): one row per
        sentence that has a pair, with the ``sentence_id`` that sentence gets in the token
        table. Empty (with these columns) when no sentence has a pair.

    Examples
    --------
    >>> from neuro_pipeline.types import Sentence
    >>> a = Sentence(("Dogs", "bark"), ("NOUN", "VERB"), "demo:x", 1, pair=("Cats", "purr"))
    >>> pairs_table({"train": [a]}, corpus_id="toy").rows()
    [('toy', 0, ['Cats', 'purr'])]
    """
    ids: list[int] = []
    pairs: list[list[str]] = []
    sentence_id = 0
    for name in SPLITS:
        for sentence in splits.get(name, ()):
            if sentence.pair is not None:
                ids.append(sentence_id)
                pairs.append(list(sentence.pair))
            sentence_id += 1
    return pl.DataFrame({"corpus_id": [corpus_id] * len(ids), "sentence_id": ids, "pair": pairs},
                        schema={"corpus_id": pl.Utf8, "sentence_id": pl.Int32, "pair": pl.List(pl.Utf8)})


def label_counts(table: pl.DataFrame) -> pl.DataFrame:
    """Count words per (split, label) in a token table.

    Parameters
    ----------
    table : polars.DataFrame
        A token table with at least the columns ``split`` and ``label``.

    Returns
    -------
    polars.DataFrame
        Columns ``split`` (Utf8), ``label`` (Utf8), ``n`` (Int64), sorted by split in the
        order train, dev, test, then by label.

    Raises
    ------
    ValueError
        If ``table`` lacks the ``split`` or ``label`` column.

    Examples
    --------
    >>> from neuro_pipeline.types import Sentence
    >>> s = Sentence(("Dogs", "bark", "loudly"), ("NOUN", "VERB", "ADV"), "demo:x", 1)
    >>> label_counts(sentences_to_table({"dev": [s, s]}, corpus_id="toy")).rows()
    [('dev', 'ADV', 2), ('dev', 'NOUN', 2), ('dev', 'VERB', 2)]
    """
    missing = [name for name in ("split", "label") if name not in table.columns]
    if missing:
        raise ValueError(
            f"label_counts needs a token table with columns 'split' and 'label'; "
            f"missing {missing} (got columns {table.columns})."
        )
    order = {name: rank for rank, name in enumerate(SPLITS)}
    return (
        table.group_by("split", "label")
        .agg(pl.len().cast(pl.Int64).alias("n"))
        .with_columns(
            pl.col("split").replace_strict(order, default=len(SPLITS),
                                           return_dtype=pl.Int32).alias("_order")
        )
        .sort("_order", "split", "label")
        .drop("_order")
    )

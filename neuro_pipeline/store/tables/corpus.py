"""The corpus stage's tables: every word with its label, keyed by (corpus_id, sentence_id,
position), the labels of each concept task, the balancing counts and the second segments of
a sentence-pair corpus.

``tokens``          corpus_id, sentence_id, position → split, token, label, sentence_hash, source, line
``sentence_pairs``  corpus_id, sentence_id → pair (the second segment of a sentence-pair corpus)
``task_labels``     corpus_id, task, sentence_id, position → label (the words' labels of each concept task)
``task_balance``    corpus_id, task, label → training words before and after undersampling, seed, target
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from neuro_pipeline.types import TOKEN_COLUMNS

SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    corpus_id VARCHAR NOT NULL, split VARCHAR NOT NULL, sentence_id INTEGER NOT NULL,
    position INTEGER NOT NULL, token VARCHAR NOT NULL, label VARCHAR NOT NULL,
    sentence_hash VARCHAR NOT NULL, source VARCHAR NOT NULL, line INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS sentence_pairs (
    corpus_id VARCHAR NOT NULL, sentence_id INTEGER NOT NULL, pair VARCHAR[] NOT NULL);
CREATE TABLE IF NOT EXISTS task_labels (
    corpus_id VARCHAR NOT NULL, task VARCHAR NOT NULL, sentence_id INTEGER NOT NULL, position INTEGER NOT NULL,
    label VARCHAR NOT NULL);
CREATE TABLE IF NOT EXISTS task_balance (
    corpus_id VARCHAR NOT NULL, task VARCHAR NOT NULL, label VARCHAR NOT NULL, n_before INTEGER NOT NULL,
    n_after INTEGER NOT NULL, seed INTEGER NOT NULL, target VARCHAR NOT NULL);
"""
#: Written by :func:`write_tokens` only (the corpus is replaced as a whole).
TABLES: tuple[str, ...] = ()


def write_tokens(store, table: pl.DataFrame, task_labels: pl.DataFrame | None = None,
                 balance: pl.DataFrame | None = None, pairs: pl.DataFrame | None = None) -> None:
    """Replace the token rows of the corpus ids present in ``table`` (and, in the same
    transaction, their concept-task labels, balancing counts and sentence pairs)."""
    missing = [c for c in TOKEN_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"token table lacks columns {missing}; expected {list(TOKEN_COLUMNS)}.")
    frame = table.select(TOKEN_COLUMNS)  # noqa: F841 (read by DuckDB by name)
    corpus_ids = frame["corpus_id"].unique().to_list()
    with store.transaction() as con:
        for name in ("tokens", "task_labels", "task_balance", "sentence_pairs"):
            con.execute(f"DELETE FROM {name} WHERE corpus_id IN (SELECT unnest(?))", [corpus_ids])
        con.execute("INSERT INTO tokens SELECT * FROM frame")
        if task_labels is not None and task_labels.height:
            labels = task_labels.select("corpus_id", "task", "sentence_id", "position", "label")  # noqa: F841
            con.execute("INSERT INTO task_labels SELECT * FROM labels")
        if balance is not None and balance.height:
            counts = balance.select("corpus_id", "task", "label", "n_before", "n_after", "seed",  # noqa: F841
                                    pl.col("target").cast(pl.String))
            con.execute("INSERT INTO task_balance SELECT * FROM counts")
        if pairs is not None and pairs.height:
            second = pairs.select("corpus_id", "sentence_id", "pair")  # noqa: F841
            con.execute("INSERT INTO sentence_pairs SELECT * FROM second")


def read_tokens(store, corpus_id: str, *, splits: Sequence[str] | None = None) -> pl.DataFrame:
    """The token rows of one corpus (:data:`~neuro_pipeline.types.TOKEN_COLUMNS`), ordered by
    sentence and position; empty when there are none."""
    sql = f"SELECT {', '.join(TOKEN_COLUMNS)} FROM tokens WHERE corpus_id = $cid"
    params: dict = {"cid": corpus_id}
    if splits is not None:
        sql += " AND split IN (SELECT unnest($splits))"
        params["splits"] = list(splits)
    return store.query(sql + " ORDER BY sentence_id, position", params)


def read_pairs(store, corpus_id: str) -> pl.DataFrame:
    """The second segments of the corpus's sentence pairs: sentence_id, pair (list of words);
    empty when the corpus has none."""
    return store.query("SELECT sentence_id, pair FROM sentence_pairs WHERE corpus_id = $cid ORDER BY sentence_id",
                       {"cid": corpus_id})


def task_labels(store, corpus_id: str, task: str) -> pl.DataFrame:
    """The labels of one concept task: sentence_id, position, label."""
    return store.query("SELECT sentence_id, position, label FROM task_labels WHERE corpus_id = ? AND task = ?",
                       [corpus_id, task])


def corpus_keys(store, corpus_id: str) -> pl.DataFrame:
    """The distinct (sentence_hash, position) words of the corpus."""
    return store.query("SELECT DISTINCT sentence_hash, position FROM tokens WHERE corpus_id = ?", [corpus_id])


def split_names(store, corpus_id: str) -> list[str]:
    """The splits the corpus has (train, dev, test), in any order."""
    return store.query("SELECT DISTINCT split FROM tokens WHERE corpus_id = ?", [corpus_id])["split"].to_list()


def first_occurrences(store, corpus_id: str) -> pl.DataFrame:
    """Where each distinct sentence first occurs: sentence_hash, sentence_id, source, line."""
    return store.query("SELECT sentence_hash, min(sentence_id) AS sentence_id, any_value(source) AS source, "
                       "min(line) AS line FROM tokens WHERE corpus_id = ? GROUP BY sentence_hash", [corpus_id])

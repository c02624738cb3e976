"""The store: one DuckDB file holding every stage's tables, and the only package that imports
duckdb or holds SQL text.

Start here: :class:`Store` wraps one DuckDB file. It is the engine
(:mod:`neuro_pipeline.store.engine`: connections per operation, one writer at a time, every
write one transaction that replaces rows) plus the activation sets
(:mod:`neuro_pipeline.store.activations`: content-addressed activations in Parquet files or
DuckDB rows). Each stage's tables, their schema and their reads are in
:mod:`neuro_pipeline.store.tables`, one module per stage; :mod:`neuro_pipeline.store.compare`
compares two stores table by table.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from neuro_pipeline.store.activations import (
    STORAGE_DTYPES,
    ActivationBatch,
    ActivationSet,
    ActivationStorage,
    decode_activations,
    encode_activations,
)
from neuro_pipeline.store.engine import Engine, StoreError, check_identifier, to_json
from neuro_pipeline.store.tables import corpus as _corpus


class Store(ActivationStorage, Engine):
    """One DuckDB file holding every stage's tables.

    Parameters
    ----------
    path : str or Path
        The database file; created (with its folder) on first write.
    lock_timeout : float, optional
        Seconds to wait while another process holds the file (default 600, or
        ``NEURO_PIPELINE_LOCK_TIMEOUT``).
    """

    def write_tokens(self, table: pl.DataFrame, task_labels: pl.DataFrame | None = None,
                     balance: pl.DataFrame | None = None, pairs: pl.DataFrame | None = None) -> None:
        """Replace the token rows of the corpus ids present in ``table`` (and, in the same
        transaction, their concept-task labels, balancing counts and sentence pairs)."""
        _corpus.write_tokens(self, table, task_labels, balance, pairs)

    def read_tokens(self, corpus_id: str, *, splits: Sequence[str] | None = None) -> pl.DataFrame:
        """The token rows of one corpus, ordered by sentence and position."""
        frame = _corpus.read_tokens(self, corpus_id, splits=splits)
        if frame.is_empty():
            raise StoreError(f"{self.path}: no tokens for corpus '{corpus_id}'"
                             + (f" in splits {list(splits)}" if splits else "")
                             + "; materialize annotated_corpus first.")
        return frame

    def read_pairs(self, corpus_id: str) -> pl.DataFrame:
        """The second segments of the corpus's sentence pairs: sentence_id, pair (list of
        words); empty when the corpus has none."""
        return _corpus.read_pairs(self, corpus_id)


__all__ = ["STORAGE_DTYPES", "ActivationBatch", "ActivationSet", "Store", "StoreError", "check_identifier",
           "decode_activations", "encode_activations", "to_json"]

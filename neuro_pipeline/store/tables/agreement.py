"""The agreement stage's table: top-n overlap of every pair of methods and of each
method with the NeuronVote of the others (the consensus ranking itself is stored in
``rankings`` as method ``neuron_vote``).

``agreement``  analysis, activation_set, task, kind, method_a, method_b, n → overlap, jaccard
"""

from __future__ import annotations

import polars as pl

from neuro_pipeline.store.tables import key_where

SCHEMA = """
CREATE TABLE IF NOT EXISTS agreement (
    analysis VARCHAR NOT NULL, activation_set VARCHAR NOT NULL, task VARCHAR NOT NULL,
    kind VARCHAR NOT NULL, method_a VARCHAR NOT NULL, method_b VARCHAR NOT NULL, n INTEGER NOT NULL,
    overlap INTEGER NOT NULL, jaccard DOUBLE NOT NULL);
"""
TABLES = ("agreement",)


def read(store, key: dict) -> pl.DataFrame:
    """kind, method_a, method_b, n, overlap, jaccard."""
    return store.query(f"SELECT kind, method_a, method_b, n, overlap, jaccard FROM agreement WHERE {key_where(key)} "
                       "ORDER BY kind, method_a, method_b, n", key)


def jaccards(store, analysis: str, activation_set: str) -> pl.DataFrame:
    """Every task's Jaccard overlaps (for the quality suite)."""
    return store.query("SELECT jaccard FROM agreement WHERE analysis = ? AND activation_set = ?",
                       [analysis, activation_set])

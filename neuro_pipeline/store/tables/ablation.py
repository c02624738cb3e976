"""The ablation stage's table: probe accuracy when the top, random or bottom neurons
are kept or removed, retrained or zeroed in the full probe.

``ablation``  analysis, activation_set, task, method, mode, selection, k, draw, zero_value → accuracy
"""

from __future__ import annotations

import polars as pl

from neuro_pipeline.store.tables import key_where

SCHEMA = """
CREATE TABLE IF NOT EXISTS ablation (
    analysis VARCHAR NOT NULL, activation_set VARCHAR NOT NULL, task VARCHAR NOT NULL,
    method VARCHAR NOT NULL, mode VARCHAR NOT NULL, selection VARCHAR NOT NULL, fraction DOUBLE,
    k INTEGER NOT NULL, draw INTEGER, accuracy DOUBLE, zero_value VARCHAR);
"""
TABLES = ("ablation",)


def summary(store, key: dict) -> pl.DataFrame:
    """Mean and spread over draws: method, mode, selection, fraction, k, accuracy, std, zero_value."""
    return store.query(
        "SELECT method, mode, selection, fraction, k, avg(accuracy) AS accuracy, stddev_samp(accuracy) AS std, "
        f"zero_value FROM ablation WHERE {key_where(key)} GROUP BY ALL ORDER BY method, k, mode, selection, zero_value",
        key)


def accuracies(store, analysis: str, activation_set: str) -> pl.DataFrame:
    """Every task's rows (for the quality suite): accuracy, k."""
    return store.query("SELECT accuracy, k FROM ablation WHERE analysis = ? AND activation_set = ?",
                       [analysis, activation_set])

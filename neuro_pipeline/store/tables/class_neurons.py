"""The class-neurons stage's tables: where each class's top neurons are, and the
fewest neurons that detect each class.

``layer_distribution``  analysis, activation_set, task, method, label, layer → n_neurons, share
``minimal_neurons``     analysis, activation_set, task, method, label → n_neurons, F1s, neurons
"""

from __future__ import annotations

import polars as pl

from neuro_pipeline.store.tables import key_where

SCHEMA = """
CREATE TABLE IF NOT EXISTS layer_distribution (
    analysis VARCHAR NOT NULL, activation_set VARCHAR NOT NULL, task VARCHAR NOT NULL,
    method VARCHAR NOT NULL, label VARCHAR NOT NULL, layer INTEGER NOT NULL, n_neurons INTEGER NOT NULL,
    share DOUBLE);
CREATE TABLE IF NOT EXISTS minimal_neurons (
    analysis VARCHAR NOT NULL, activation_set VARCHAR NOT NULL, task VARCHAR NOT NULL,
    method VARCHAR NOT NULL, label VARCHAR NOT NULL, n_neurons INTEGER, reached_f1 DOUBLE,
    target_f1 DOUBLE, full_f1 DOUBLE, neurons INTEGER[]);
"""
TABLES = ("layer_distribution", "minimal_neurons")


def distribution(store, key: dict) -> pl.DataFrame:
    """method, label, layer, n_neurons, share."""
    return store.query("SELECT method, label, layer, n_neurons, share FROM layer_distribution "
                       f"WHERE {key_where(key)} ORDER BY method, label, layer", key)


def minimal(store, key: dict) -> pl.DataFrame:
    """method, label, n_neurons, reached_f1, target_f1, full_f1, by label."""
    return store.query("SELECT method, label, n_neurons, reached_f1, target_f1, full_f1 FROM minimal_neurons "
                       f"WHERE {key_where(key)} ORDER BY label", key)


def shares(store, analysis: str, activation_set: str) -> pl.DataFrame:
    """Every task's layer shares (for the quality suite)."""
    return store.query("SELECT share FROM layer_distribution WHERE analysis = ? AND activation_set = ?",
                       [analysis, activation_set])

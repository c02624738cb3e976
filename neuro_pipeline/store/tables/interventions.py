"""The interventions stage's table: masked-word accuracy and log-likelihood of the
live model with each method's top neurons of a class ablated, against random neurons.

``interventions``  analysis, activation_set, task, method, label, top_k, group, metric → n_words, n_neurons,
                   baseline, top, random mean and interval, drops, ranking, layer_counts, mode
"""

from __future__ import annotations

import polars as pl

from neuro_pipeline.store.tables import key_where

SCHEMA = """
CREATE TABLE IF NOT EXISTS interventions (
    analysis VARCHAR NOT NULL, activation_set VARCHAR NOT NULL, task VARCHAR NOT NULL, method VARCHAR NOT NULL,
    label VARCHAR NOT NULL, top_k INTEGER NOT NULL, "group" VARCHAR NOT NULL, metric VARCHAR NOT NULL,
    n_words BIGINT, n_neurons INTEGER, n_random INTEGER, baseline DOUBLE, top DOUBLE, random_mean DOUBLE,
    random_low DOUBLE, random_high DOUBLE, top_drop DOUBLE, random_drop DOUBLE, random_share_below_top DOUBLE,
    ranking VARCHAR, layer_counts VARCHAR, mode VARCHAR);
"""
TABLES = ("interventions",)


def read(store, key: dict) -> pl.DataFrame:
    """Every column but the key."""
    return store.query(f"SELECT * EXCLUDE (analysis, activation_set, task) FROM interventions WHERE {key_where(key)}",
                       key)


def accuracies(store, key: dict) -> pl.DataFrame:
    """The accuracy rows (for the quality suite): baseline, top, random_mean, random_low, random_high."""
    return store.query("SELECT baseline, top, random_mean, random_low, random_high FROM interventions "
                       f"WHERE {key_where(key)} AND metric = 'accuracy'", key)

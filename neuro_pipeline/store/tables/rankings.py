"""The ranking stage's tables: each method's global and per-class rankings, its
hyperparameters, the top words of its best neurons and, for a linear probe, the fitted probe.

``rankings``        analysis, activation_set, task, method, params_hash, neuron → layer, unit, score, rank
``class_rankings``  analysis, activation_set, task, method, params_hash, label, neuron → rank, weight
``ranking_runs``    analysis, activation_set, task, method, params_hash → params, fitted, n_train, seconds
``ranking_probes``  analysis, activation_set, task, method, params_hash → the fitted probe of a linear-probe
                    ranking: classes (JSON), n_train, n_features, coef/intercept (float32 bytes),
                    mean/scale (float64 bytes)
``top_words``       analysis, activation_set, task, method, source, neuron, rank → layer, unit, word, score, count

A key is ``{"analysis", "activation_set", "task"}``; the consensus ranking of the agreement
stage is stored in ``rankings`` too, as method ``neuron_vote``.
"""

from __future__ import annotations

import polars as pl

from neuro_pipeline.store.tables import key_where

SCHEMA = """
CREATE TABLE IF NOT EXISTS rankings (
    analysis VARCHAR NOT NULL, activation_set VARCHAR NOT NULL, model_version VARCHAR NOT NULL,
    task VARCHAR NOT NULL, method VARCHAR NOT NULL, params_hash VARCHAR NOT NULL,
    neuron INTEGER NOT NULL, layer INTEGER NOT NULL, unit INTEGER NOT NULL,
    score DOUBLE, rank INTEGER);
CREATE TABLE IF NOT EXISTS class_rankings (
    analysis VARCHAR NOT NULL, activation_set VARCHAR NOT NULL, task VARCHAR NOT NULL,
    method VARCHAR NOT NULL, params_hash VARCHAR NOT NULL, label VARCHAR NOT NULL,
    neuron INTEGER NOT NULL, layer INTEGER NOT NULL, unit INTEGER NOT NULL,
    rank INTEGER NOT NULL, weight DOUBLE);
CREATE TABLE IF NOT EXISTS ranking_runs (
    analysis VARCHAR NOT NULL, activation_set VARCHAR NOT NULL, task VARCHAR NOT NULL,
    method VARCHAR NOT NULL, params_hash VARCHAR NOT NULL, params VARCHAR NOT NULL,
    fitted VARCHAR NOT NULL, n_train INTEGER NOT NULL, seconds DOUBLE NOT NULL,
    created_at TIMESTAMP DEFAULT current_timestamp);
CREATE TABLE IF NOT EXISTS ranking_probes (
    analysis VARCHAR NOT NULL, activation_set VARCHAR NOT NULL, task VARCHAR NOT NULL,
    method VARCHAR NOT NULL, params_hash VARCHAR NOT NULL, classes VARCHAR NOT NULL,
    n_train INTEGER NOT NULL, n_features INTEGER NOT NULL, coef BLOB NOT NULL, intercept BLOB NOT NULL,
    mean BLOB NOT NULL, scale BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS top_words (
    analysis VARCHAR NOT NULL, activation_set VARCHAR NOT NULL, task VARCHAR NOT NULL,
    method VARCHAR NOT NULL, source VARCHAR NOT NULL, neuron INTEGER NOT NULL, layer INTEGER NOT NULL,
    unit INTEGER NOT NULL, rank INTEGER NOT NULL, word VARCHAR NOT NULL, score DOUBLE NOT NULL,
    count BIGINT NOT NULL);
"""
TABLES = ("rankings", "class_rankings", "ranking_runs", "ranking_probes", "top_words")


def global_order(store, key: dict, method: str) -> pl.DataFrame:
    """One method's global ranking, best first (neurons a greedy method did not rank last):
    neuron, rank."""
    return store.query(f"SELECT neuron, rank FROM rankings WHERE {key_where(key)} AND method = $method "
                       "ORDER BY rank NULLS LAST, neuron", {**key, "method": method})


def global_scores(store, key: dict, method: str) -> pl.DataFrame:
    """One method's global ranking as stored: neuron, score, rank."""
    return store.query(f"SELECT neuron, score, rank FROM rankings WHERE {key_where(key)} AND method = $method",
                       {**key, "method": method})


def all_global(store, key: dict) -> pl.DataFrame:
    """Every method's global ranking: method, neuron, score, rank."""
    return store.query(f"SELECT method, neuron, score, rank FROM rankings WHERE {key_where(key)}", key)


def runs(store, key: dict, method: str) -> pl.DataFrame:
    """The recorded fit of one method: params, fitted (JSON)."""
    return store.query(f"SELECT params, fitted FROM ranking_runs WHERE {key_where(key)} AND method = $method",
                       {**key, "method": method})


def probes(store, key: dict, method: str) -> pl.DataFrame:
    """The fitted probe a linear-probe ranking stored (at most one row)."""
    return store.query(f"SELECT * FROM ranking_probes WHERE {key_where(key)} AND method = $method",
                       {**key, "method": method})


def class_orders(store, key: dict, *, max_rank: int | None = None, method: str | None = None) -> pl.DataFrame:
    """Per method and class, the class's neurons best first: method, label, neurons (a list),
    ordered by method and label; at most ``max_rank`` of each, of one ``method`` if given."""
    extra, params = "", dict(key)
    if max_rank is not None:
        extra, params["max_rank"] = extra + " AND rank <= $max_rank", max_rank
    if method is not None:
        extra, params["method"] = extra + " AND method = $method", method
    return store.query(f"SELECT method, label, list(neuron ORDER BY rank) AS neurons FROM class_rankings "
                       f"WHERE {key_where(key)}{extra} GROUP BY method, label ORDER BY method, label", params)


def class_top(store, key: dict, max_rank: int) -> pl.DataFrame:
    """The best ``max_rank`` neurons of every method and class: method, label, neuron, rank."""
    return store.query(f"SELECT method, label, neuron, rank FROM class_rankings WHERE {key_where(key)} "
                       "AND rank <= $max_rank ORDER BY method, label, rank", {**key, "max_rank": max_rank})


def all_class(store, key: dict) -> pl.DataFrame:
    """Every method's per-class rankings: method, label, neuron, rank."""
    return store.query(f"SELECT method, label, neuron, rank FROM class_rankings WHERE {key_where(key)}", key)


def global_top_words(store, key: dict) -> pl.DataFrame:
    """The top words of each method's best neurons: method, neuron, words (best first)."""
    return store.query(f"SELECT method, neuron, list(word ORDER BY rank) AS words FROM top_words "
                       f"WHERE {key_where(key)} AND source = 'global' GROUP BY method, neuron", key)

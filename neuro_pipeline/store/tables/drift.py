"""The drift stage's tables: what moved inside the model since the previous version.

``drift_runs``      analysis, activation_set, task → previous_activation_set, labels, versions, n_alerts
``drift_rankings``  analysis, activation_set, task, method, k → overlap, jaccard, entered, left, spearman, …
``drift_classes``   analysis, activation_set, task, method, label, k → overlap, jaccard, entered, left, …
``drift_metrics``   analysis, activation_set, task, label → accuracy/F1/selectivity before, after, delta
``drift_layers``    analysis, activation_set, task, layer → correlation of each unit with itself in the previous
                    version
``drift_alerts``    analysis, activation_set, task → kind, method, label, k, value, threshold, message
"""

from __future__ import annotations

import polars as pl

from neuro_pipeline.store.tables import key_where

SCHEMA = """
CREATE TABLE IF NOT EXISTS drift_runs (
    analysis VARCHAR NOT NULL, activation_set VARCHAR NOT NULL, task VARCHAR NOT NULL,
    previous_activation_set VARCHAR, label VARCHAR NOT NULL, previous_label VARCHAR,
    model_version VARCHAR NOT NULL, previous_model_version VARCHAR, n_alerts INTEGER NOT NULL,
    created_at TIMESTAMP DEFAULT current_timestamp);
CREATE TABLE IF NOT EXISTS drift_rankings (
    analysis VARCHAR NOT NULL, activation_set VARCHAR NOT NULL, task VARCHAR NOT NULL,
    previous_activation_set VARCHAR NOT NULL, method VARCHAR NOT NULL, k INTEGER NOT NULL,
    n_previous INTEGER, n_current INTEGER, overlap INTEGER, jaccard DOUBLE, entered INTEGER[], "left" INTEGER[],
    n_entered INTEGER, n_left INTEGER, spearman DOUBLE, n_scored INTEGER, status VARCHAR NOT NULL);
CREATE TABLE IF NOT EXISTS drift_classes (
    analysis VARCHAR NOT NULL, activation_set VARCHAR NOT NULL, task VARCHAR NOT NULL,
    previous_activation_set VARCHAR NOT NULL, method VARCHAR NOT NULL, label VARCHAR NOT NULL, k INTEGER NOT NULL,
    n_previous INTEGER, n_current INTEGER, overlap INTEGER, jaccard DOUBLE, entered INTEGER[], "left" INTEGER[],
    n_entered INTEGER, n_left INTEGER, status VARCHAR NOT NULL);
CREATE TABLE IF NOT EXISTS drift_metrics (
    analysis VARCHAR NOT NULL, activation_set VARCHAR NOT NULL, task VARCHAR NOT NULL,
    previous_activation_set VARCHAR NOT NULL, label VARCHAR NOT NULL,
    support_previous INTEGER, support_current INTEGER, accuracy_previous DOUBLE, accuracy_current DOUBLE,
    accuracy_delta DOUBLE, f1_previous DOUBLE, f1_current DOUBLE, f1_delta DOUBLE,
    selectivity_previous DOUBLE, selectivity_current DOUBLE, selectivity_delta DOUBLE, status VARCHAR NOT NULL);
CREATE TABLE IF NOT EXISTS drift_layers (
    analysis VARCHAR NOT NULL, activation_set VARCHAR NOT NULL, task VARCHAR NOT NULL,
    previous_activation_set VARCHAR NOT NULL, layer INTEGER NOT NULL, n_neurons INTEGER NOT NULL,
    n_constant INTEGER NOT NULL, corr_median DOUBLE, corr_p05 DOUBLE, corr_p95 DOUBLE, corr_mean DOUBLE,
    n_words INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS drift_alerts (
    analysis VARCHAR NOT NULL, activation_set VARCHAR NOT NULL, task VARCHAR NOT NULL,
    previous_activation_set VARCHAR NOT NULL, kind VARCHAR NOT NULL, method VARCHAR, label VARCHAR, k INTEGER,
    value DOUBLE, threshold DOUBLE, message VARCHAR NOT NULL);
"""
TABLES = ("drift_runs", "drift_rankings", "drift_classes", "drift_metrics", "drift_alerts", "drift_layers")


def run(store, key: dict) -> pl.DataFrame:
    """The drift record of one version and task (no row when none)."""
    return store.query(f"SELECT * FROM drift_runs WHERE {key_where(key)}", key)


def comparisons(store, key: dict) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """The stored drift_rankings, drift_classes and drift_metrics rows without their keys."""
    return tuple(store.query(f"SELECT * EXCLUDE (analysis, activation_set, task, previous_activation_set) "
                             f"FROM {table} WHERE {key_where(key)}", key)
                 for table in ("drift_rankings", "drift_classes", "drift_metrics"))


def version_metrics(store, analysis: str, activation_set: str, task: str) -> pl.DataFrame:
    """Per class and for all words ('(all)') of one version: label, support, accuracy, f1,
    selectivity (from the report's and the selectivity stage's tables)."""
    return store.query(
        """
        SELECT c.label, c.support, c.accuracy, c.f1, s.selectivity FROM class_metrics c
        LEFT JOIN class_selectivity s USING (analysis, activation_set, task, label)
        WHERE c.analysis = $analysis AND c.activation_set = $aset AND c.task = $task
        UNION ALL BY NAME
        SELECT '(all)' AS label,
               (SELECT sum(support) FROM class_metrics c WHERE c.analysis = $analysis AND c.activation_set = $aset
                AND c.task = $task)::INTEGER AS support,
               (SELECT avg(value) FROM metrics m WHERE m.analysis = $analysis AND m.activation_set = $aset
                AND m.task = $task AND m.selection = 'all' AND m.metric = 'accuracy' AND m.scope = 'overall')
               AS accuracy, NULL::DOUBLE AS f1,
               (SELECT max(selectivity) FROM selectivity s WHERE s.analysis = $analysis AND s.activation_set = $aset
                AND s.task = $task AND s.method = 'all') AS selectivity
        """, {"analysis": analysis, "aset": activation_set, "task": task})


def versions_overview(store, analysis: str, task: str) -> pl.DataFrame:
    """One row per model version the analysis has seen, oldest first: label, model_version,
    activation_set, registered_at, accuracy, selectivity, previous_label, n_alerts,
    accuracy_delta, html_path."""
    return store.query(
        """
        SELECT v.label, v.model_version, v.activation_set, v.registered_at,
               (SELECT avg(value) FROM metrics m WHERE m.analysis = v.analysis AND m.activation_set = v.activation_set
                AND m.task = $task AND m.selection = 'all' AND m.metric = 'accuracy' AND m.scope = 'overall')
               AS accuracy,
               (SELECT max(selectivity) FROM selectivity s WHERE s.analysis = v.analysis
                AND s.activation_set = v.activation_set AND s.task = $task AND s.method = 'all') AS selectivity,
               d.previous_label, d.n_alerts,
               (SELECT accuracy_delta FROM drift_metrics x WHERE x.analysis = v.analysis
                AND x.activation_set = v.activation_set AND x.task = $task AND x.label = '(all)') AS accuracy_delta,
               (SELECT html_path FROM reports r WHERE r.analysis = v.analysis AND r.activation_set = v.activation_set
                AND r.task = $task) AS html_path
        FROM model_versions v LEFT JOIN drift_runs d
          ON d.analysis = v.analysis AND d.activation_set = v.activation_set AND d.task = $task
        WHERE v.analysis = $analysis ORDER BY v.registered_at, v.label
        """, {"analysis": analysis, "task": task})


def top_k_jaccards(store, analysis: str, task: str, k: int) -> pl.DataFrame:
    """Every version's Jaccard of each method's top ``k`` with its predecessor: activation_set, method, jaccard."""
    return store.query(
        "SELECT activation_set, method, jaccard FROM drift_rankings WHERE analysis = ? AND task = ? AND k = ? "
        "AND status = 'both' ORDER BY method", [analysis, task, k])

"""The evaluation report's tables: probe accuracy with all neurons and with each
method's selections, per-class metrics, the confusion matrix, and where the page is.

``metrics``        analysis, activation_set, task, method, scope, label, selection, fraction, draw, metric → value
``class_metrics``  analysis, activation_set, task, label → support, accuracy, precision, f1
``confusion``      analysis, activation_set, task, true_label, predicted_label → count
``reports``        analysis, activation_set, task → model_version, html_path, markdown_path
"""

from __future__ import annotations

import polars as pl

from neuro_pipeline.store.tables import key_where

SCHEMA = """
CREATE TABLE IF NOT EXISTS metrics (
    analysis VARCHAR NOT NULL, activation_set VARCHAR NOT NULL, task VARCHAR NOT NULL,
    method VARCHAR NOT NULL, scope VARCHAR NOT NULL, label VARCHAR, selection VARCHAR NOT NULL,
    fraction DOUBLE, k INTEGER, draw INTEGER, metric VARCHAR NOT NULL, value DOUBLE);
CREATE TABLE IF NOT EXISTS class_metrics (
    analysis VARCHAR NOT NULL, activation_set VARCHAR NOT NULL, task VARCHAR NOT NULL,
    label VARCHAR NOT NULL, support INTEGER NOT NULL, n_predicted INTEGER NOT NULL, accuracy DOUBLE,
    precision DOUBLE, f1 DOUBLE);
CREATE TABLE IF NOT EXISTS confusion (
    analysis VARCHAR NOT NULL, activation_set VARCHAR NOT NULL, task VARCHAR NOT NULL,
    true_label VARCHAR NOT NULL, predicted_label VARCHAR NOT NULL, count INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS reports (
    analysis VARCHAR NOT NULL, activation_set VARCHAR NOT NULL, task VARCHAR NOT NULL,
    model_version VARCHAR NOT NULL, html_path VARCHAR NOT NULL, markdown_path VARCHAR NOT NULL,
    created_at TIMESTAMP DEFAULT current_timestamp);
"""
TABLES = ("metrics", "class_metrics", "confusion", "reports")


def metrics(store, key: dict) -> pl.DataFrame:
    """scope, label, selection, fraction, k, draw, metric, value."""
    return store.query("SELECT scope, label, selection, fraction, k, draw, metric, value FROM metrics "
                       f"WHERE {key_where(key)}", key)


def overall_accuracies(store, key: dict) -> pl.DataFrame:
    """Mean overall accuracy per method, selection and fraction: method, selection, fraction, accuracy."""
    return store.query(
        "SELECT method, selection, fraction, avg(value) AS accuracy FROM metrics WHERE "
        f"{key_where(key)} AND scope = 'overall' AND metric = 'accuracy' "
        "GROUP BY ALL ORDER BY method, fraction NULLS FIRST, selection", key)


def report_paths(store, key: dict) -> pl.DataFrame:
    """html_path of the stored report (no row when there is none)."""
    return store.query(f"SELECT html_path FROM reports WHERE {key_where(key)}", key)


def latest_report(store, analysis: str) -> pl.DataFrame:
    """The analysis's newest report row with its activation set's hidden_size (no row when none)."""
    return store.query("SELECT r.*, s.hidden_size FROM reports r JOIN activation_sets s USING (activation_set) "
                       "WHERE analysis = ? ORDER BY created_at DESC LIMIT 1", [analysis])

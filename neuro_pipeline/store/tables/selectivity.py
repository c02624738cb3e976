"""The selectivity stage's tables: control-task selectivity (Hewitt & Liang 2019) of
all neurons, of each method's top neurons, of each layer, and per class.

``selectivity``        analysis, activation_set, task, method (or 'all') → k, task/control accuracy, selectivity
``layer_probes``       analysis, activation_set, task, layer → n_neurons, accuracy, control_accuracy, selectivity
``class_selectivity``  analysis, activation_set, task, label → support, task/control accuracy, selectivity
"""

from __future__ import annotations

import polars as pl

from neuro_pipeline.store.tables import key_where

SCHEMA = """
CREATE TABLE IF NOT EXISTS selectivity (
    analysis VARCHAR NOT NULL, activation_set VARCHAR NOT NULL, task VARCHAR NOT NULL,
    method VARCHAR NOT NULL, k INTEGER NOT NULL, task_accuracy DOUBLE, control_accuracy DOUBLE,
    selectivity DOUBLE, control_seed INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS layer_probes (
    analysis VARCHAR NOT NULL, activation_set VARCHAR NOT NULL, task VARCHAR NOT NULL,
    layer INTEGER NOT NULL, n_neurons INTEGER NOT NULL, accuracy DOUBLE, control_accuracy DOUBLE,
    selectivity DOUBLE, control_seed INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS class_selectivity (
    analysis VARCHAR NOT NULL, activation_set VARCHAR NOT NULL, task VARCHAR NOT NULL, label VARCHAR NOT NULL,
    support INTEGER NOT NULL, task_accuracy DOUBLE, control_accuracy DOUBLE, selectivity DOUBLE,
    control_seed INTEGER NOT NULL);
"""
TABLES = ("selectivity", "layer_probes", "class_selectivity")


def read(store, key: dict) -> pl.DataFrame:
    """method, k, task_accuracy, control_accuracy, selectivity."""
    return store.query("SELECT method, k, task_accuracy, control_accuracy, selectivity FROM selectivity "
                       f"WHERE {key_where(key)}", key)


def layer_probes(store, key: dict) -> pl.DataFrame:
    """layer, n_neurons, accuracy, control_accuracy, selectivity, by layer."""
    return store.query("SELECT layer, n_neurons, accuracy, control_accuracy, selectivity FROM layer_probes "
                       f"WHERE {key_where(key)} ORDER BY layer", key)


def accuracies(store, analysis: str, activation_set: str) -> pl.DataFrame:
    """Every task's rows (for the quality suite): task_accuracy, control_accuracy, selectivity."""
    return store.query("SELECT task_accuracy, control_accuracy, selectivity FROM selectivity WHERE analysis = ? "
                       "AND activation_set = ?", [analysis, activation_set])

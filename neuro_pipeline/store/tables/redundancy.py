"""The redundancy stage's tables (per activation set, the same for every task):
correlation clusters of the neurons on the training split.

``redundancy_layers``   analysis, activation_set, layer → threshold, n_neurons, n_constant, n_clusters,
                        n_independent, largest_cluster, mean_cluster_size
``redundancy_neurons``  analysis, activation_set, neuron → layer, unit, cluster, is_constant, is_representative
"""

from __future__ import annotations

import polars as pl

SCHEMA = """
CREATE TABLE IF NOT EXISTS redundancy_layers (
    analysis VARCHAR NOT NULL, activation_set VARCHAR NOT NULL, layer INTEGER NOT NULL,
    threshold DOUBLE NOT NULL, n_neurons BIGINT NOT NULL, n_constant BIGINT NOT NULL,
    n_clusters BIGINT NOT NULL, n_independent BIGINT NOT NULL, largest_cluster BIGINT,
    mean_cluster_size DOUBLE);
CREATE TABLE IF NOT EXISTS redundancy_neurons (
    analysis VARCHAR NOT NULL, activation_set VARCHAR NOT NULL, neuron INTEGER NOT NULL,
    layer INTEGER NOT NULL, unit INTEGER NOT NULL, cluster INTEGER NOT NULL,
    is_constant BOOLEAN NOT NULL, is_representative BOOLEAN NOT NULL);
"""
TABLES = ("redundancy_layers", "redundancy_neurons")


def layers(store, analysis: str, activation_set: str) -> pl.DataFrame:
    """Per layer: everything but the key columns."""
    return store.query("SELECT * EXCLUDE (analysis, activation_set) FROM redundancy_layers WHERE analysis = ? "
                       "AND activation_set = ? ORDER BY layer", [analysis, activation_set])


def clusters(store, analysis: str, activation_set: str) -> pl.DataFrame:
    """neuron, cluster, by neuron."""
    return store.query("SELECT neuron, cluster FROM redundancy_neurons WHERE analysis = ? AND activation_set = ? "
                       "ORDER BY neuron", [analysis, activation_set])


def independence(store, analysis: str, activation_set: str) -> pl.DataFrame:
    """n_neurons, n_independent of every layer (for the quality suite)."""
    return store.query("SELECT n_neurons, n_independent FROM redundancy_layers WHERE analysis = ? "
                       "AND activation_set = ?", [analysis, activation_set])

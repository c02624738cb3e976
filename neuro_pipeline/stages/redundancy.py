"""Neuron redundancy (Dalvi et al. 2020): correlation clusters of all neurons on the training
split and one independent neuron per cluster (tables ``redundancy_layers``,
``redundancy_neurons``; per activation set, the same for every task)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import polars as pl

from neuro_pipeline.config import PipelineConfig
from neuro_pipeline.stages.common import current_activation_set, keyed, load_split
from neuro_pipeline.stages.metadata import Metadata, Table
from neuro_pipeline.store import ActivationSet, Store
from neuro_pipeline.store.tables import redundancy as tables


@dataclass
class RedundancySummary:
    activation_set: str
    threshold: float
    layers: list[dict[str, Any]]
    n_neurons: int
    n_independent: int
    n_constant: int
    seconds: float


def materialize_redundancy(cfg: PipelineConfig, store: Store) -> RedundancySummary:
    """Correlation clustering of all neurons on the training split, and one independent
    neuron per cluster (Dalvi et al. 2020): tables ``redundancy_layers`` (per layer: clusters
    with members in it, independent neurons, constant neurons) and ``redundancy_neurons``.

    Clusters may span layers: on MiniLM almost no neuron is redundant within its own layer
    (UD EWT: 379-382 clusters of 384 per layer) but the residual stream carries units from
    layer to layer (872 clusters of all 2,688 neurons)."""
    from neuro_pipeline.analysis import neuron_clusters_by_layer, summarize_clusters

    start = time.perf_counter()
    aset = current_activation_set(cfg, store)
    train = load_split(cfg, store, aset, "train")
    threshold = float(cfg.ranking.redundancy_threshold)
    neurons = neuron_clusters_by_layer(train.X, n_layers=aset.n_layers, hidden_size=aset.hidden_size,
                                       threshold=threshold, across_layers=True)
    layers = summarize_clusters(neurons)
    key = {"analysis": cfg.name, "activation_set": aset.activation_set}
    store.replace_tables({
        "redundancy_layers": keyed(layers, key, threshold=threshold),
        "redundancy_neurons": keyed(neurons, key),
    }, key)
    rows = layers.to_dicts()
    return RedundancySummary(
        activation_set=aset.activation_set, threshold=threshold, layers=rows, n_neurons=aset.n_neurons,
        n_independent=int(sum(r["n_independent"] for r in rows)),
        n_constant=int(sum(r["n_constant"] for r in rows)), seconds=round(time.perf_counter() - start, 3))


def read_redundancy(cfg: PipelineConfig, store: Store, aset: ActivationSet) -> pl.DataFrame:
    """Per layer: layer, threshold, n_neurons, n_constant, n_clusters, n_independent, ..."""
    return tables.layers(store, cfg.name, aset.activation_set)


def read_clusters(cfg: PipelineConfig, store: Store, aset: ActivationSet) -> pl.DataFrame:
    """The cluster of every neuron: neuron, cluster (by neuron)."""
    return tables.clusters(store, cfg.name, aset.activation_set)


def check_redundancy(cfg: PipelineConfig, store: Store):
    """great-expectations suite: a row per layer, independent neurons between 0 and the width."""
    from neuro_pipeline.quality import validate_table

    aset = current_activation_set(cfg, store)
    frame = tables.independence(store, cfg.name, aset.activation_set)
    return validate_table("neuron_redundancy", frame, ranges={"n_independent": (0, aset.hidden_size)},
                          not_null=("n_independent",))


def metadata(s: RedundancySummary) -> Metadata:
    return {
        "threshold": s.threshold,
        "n_neurons": s.n_neurons,
        "n_independent": s.n_independent,
        "n_constant": s.n_constant,
        "seconds": s.seconds,
        "layers": Table(["layer", "neurons", "constant", "clusters", "independent", "largest cluster"],
                        [[r["layer"], r["n_neurons"], r["n_constant"], r["n_clusters"], r["n_independent"],
                          r["largest_cluster"]] for r in s.layers]),
    }

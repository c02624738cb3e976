"""Where each class's neurons are: the layers of each class's top neurons for every method
with per-class rankings, and per class the fewest neurons whose probe detects it (tables
``layer_distribution``, ``minimal_neurons``)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import polars as pl

from neuro_pipeline.config import PipelineConfig
from neuro_pipeline.stages.common import (
    Progress,
    current_activation_set,
    keyed,
    ranking_names,
    selection_probe_params,
    stage_key,
    train_test,
)
from neuro_pipeline.stages.metadata import Metadata, Table
from neuro_pipeline.stages.rankings import read_class_orders
from neuro_pipeline.store import ActivationSet, Store
from neuro_pipeline.store.tables import class_neurons as tables


@dataclass
class ClassNeuronsSummary:
    activation_set: str
    task: str
    method: str
    distribution: list[dict[str, Any]]
    minimal: list[dict[str, Any]]
    seconds: float


def materialize_class_neurons(cfg: PipelineConfig, store: Store, *,
                              progress: Progress | None = None) -> ClassNeuronsSummary:
    """Where the neurons are: the layers of each class's top 10 neurons for every method with
    per-class rankings (table ``layer_distribution``), and per class the fewest of the first
    such method's neurons whose probe reaches ``evaluation.minimal_share`` of the full
    probe's F1 (table ``minimal_neurons``)."""
    from neuro_pipeline.evaluation.layers import layer_distribution, minimal_neuron_sets

    start = time.perf_counter()
    aset = current_activation_set(cfg, store)
    key = stage_key(cfg, aset)
    by_method = read_class_orders(cfg, store, aset)
    names = [n for n in ranking_names(cfg) if n in by_method]
    distribution = pl.concat([
        layer_distribution(by_method[n], hidden_size=aset.hidden_size, n_layers=aset.n_layers)
        .with_columns(pl.lit(n).alias("method")) for n in names]) if names else pl.DataFrame()
    minimal = pl.DataFrame()
    method = names[0] if names else ""
    if names:
        train, test, _ = train_test(cfg, store, aset)
        minimal = minimal_neuron_sets(train.X, train.labels, test.X, test.labels, by_method[method],
                                      target_share=cfg.evaluation.minimal_share,
                                      probe_params=selection_probe_params(cfg)).with_columns(
            pl.lit(method).alias("method"))
    if progress is not None:
        progress(1, 1)
    store.replace_tables({
        "layer_distribution": keyed(distribution, key),
        "minimal_neurons": keyed(minimal, key),
    }, key)
    return ClassNeuronsSummary(activation_set=aset.activation_set, task=cfg.task, method=method,
                               distribution=distribution.to_dicts(), minimal=minimal.to_dicts(),
                               seconds=round(time.perf_counter() - start, 3))


def read_distribution(cfg: PipelineConfig, store: Store, aset: ActivationSet) -> pl.DataFrame:
    """method, label, layer, n_neurons, share."""
    return tables.distribution(store, stage_key(cfg, aset))


def read_minimal(cfg: PipelineConfig, store: Store, aset: ActivationSet) -> pl.DataFrame:
    """method, label, n_neurons, reached_f1, target_f1, full_f1."""
    return tables.minimal(store, stage_key(cfg, aset))


def check_class_neurons(cfg: PipelineConfig, store: Store):
    """great-expectations suite: every layer share in [0, 1]."""
    from neuro_pipeline.quality import validate_table

    aset = current_activation_set(cfg, store)
    frame = tables.shares(store, cfg.name, aset.activation_set)
    return validate_table("class_neurons", frame, min_rows=0, ranges={"share": (0.0, 1.0)})


def metadata(s: ClassNeuronsSummary) -> Metadata:
    return {"method": s.method, "seconds": s.seconds,
            "minimal_neurons": Table(["label", "neurons", "F1 reached", "target", "full F1"],
                                     [[r["label"], r["n_neurons"] if r["n_neurons"] is not None else "not reached",
                                       f"{r['reached_f1']:.3f}" if r["reached_f1"] is not None else "–",
                                       f"{r['target_f1']:.3f}" if r["target_f1"] is not None else "–",
                                       f"{r['full_f1']:.3f}" if r["full_f1"] is not None else "–"]
                                      for r in s.minimal])}

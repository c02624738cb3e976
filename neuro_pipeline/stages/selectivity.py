"""Control-task selectivity (Hewitt & Liang 2019): task accuracy, control accuracy and
selectivity of a probe on all neurons (overall and per class), on each method's top
neurons, and on each layer alone (tables ``selectivity``, ``class_selectivity``,
``layer_probes``)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from neuro_pipeline.config import PipelineConfig
from neuro_pipeline.stages.common import (
    Progress,
    current_activation_set,
    keyed,
    selection_probe_params,
    stage_key,
    train_test,
)
from neuro_pipeline.stages.metadata import Metadata, Table
from neuro_pipeline.stages.rankings import read_rankings
from neuro_pipeline.store import ActivationSet, Store
from neuro_pipeline.store.tables import selectivity as tables


@dataclass
class SelectivitySummary:
    activation_set: str
    task: str
    k: int
    rows: list[dict[str, Any]]
    layers: list[dict[str, Any]]
    seconds: float


def materialize_selectivity(cfg: PipelineConfig, store: Store, *,
                            progress: Progress | None = None) -> SelectivitySummary:
    """Control task (Hewitt & Liang 2019): task accuracy, control accuracy and selectivity
    of a probe on all neurons, on each method's top ``evaluation.selectivity_fraction``,
    and on each layer alone: tables ``selectivity`` and ``layer_probes``."""
    from neuro_pipeline.evaluation.control import control_labels, evaluate_selectivity
    from neuro_pipeline.evaluation.layers import layerwise_probing

    start = time.perf_counter()
    aset = current_activation_set(cfg, store)
    stored = read_rankings(cfg, store, aset)
    train, test, _ = train_test(cfg, store, aset)
    seed = cfg.evaluation.control_seed
    k = math.ceil(cfg.evaluation.selectivity_fraction * aset.n_neurons)
    selections = {"all": np.arange(aset.n_neurons)}
    selections.update({r.name: r.order[:min(k, r.n_ranked)] for r in stored})
    total = len(selections) + 1
    if progress is not None:
        progress(0, total)
    rows = []
    by_class = None
    for i, (name, columns) in enumerate(selections.items()):
        result = evaluate_selectivity(train.X, train.words, train.labels, test.X, test.words, test.labels,
                                      {name: columns}, seed=seed, by_class=name == "all",
                                      probe_params=selection_probe_params(cfg))
        if name == "all":
            result, by_class = result
        rows.append(result)
        if progress is not None:
            progress(i + 1, total)
    table = pl.concat(rows).rename({"selection": "method"})
    control_train = control_labels(train.words, train.labels, train.words, seed=seed)
    control_test = control_labels(train.words, train.labels, test.words, seed=seed)
    layers = layerwise_probing(train.X, train.labels, test.X, test.labels, n_layers=aset.n_layers,
                               hidden_size=aset.hidden_size, control_train=control_train, control_test=control_test,
                               probe_params=selection_probe_params(cfg))
    if progress is not None:
        progress(total, total)
    key = stage_key(cfg, aset)
    store.replace_tables({
        "selectivity": keyed(table, key, control_seed=seed),
        "layer_probes": keyed(layers, key, control_seed=seed),
        "class_selectivity": keyed(by_class.drop("selection"), key, control_seed=seed),
    }, key)
    return SelectivitySummary(activation_set=aset.activation_set, task=cfg.task, k=k, rows=table.to_dicts(),
                              layers=layers.to_dicts(), seconds=round(time.perf_counter() - start, 3))


def read_selectivity(cfg: PipelineConfig, store: Store, aset: ActivationSet) -> pl.DataFrame:
    """method (or 'all'), k, task_accuracy, control_accuracy, selectivity."""
    return tables.read(store, stage_key(cfg, aset))


def read_layer_probes(cfg: PipelineConfig, store: Store, aset: ActivationSet) -> pl.DataFrame:
    """layer, n_neurons, accuracy, control_accuracy, selectivity."""
    return tables.layer_probes(store, stage_key(cfg, aset))


def check_selectivity(cfg: PipelineConfig, store: Store):
    """great-expectations suite: rows exist, accuracies in [0, 1], selectivity in [-1, 1]."""
    from neuro_pipeline.quality import validate_table

    aset = current_activation_set(cfg, store)
    frame = tables.accuracies(store, cfg.name, aset.activation_set)
    return validate_table("probe_selectivity", frame, ranges={"task_accuracy": (0.0, 1.0),
                                                              "control_accuracy": (0.0, 1.0),
                                                              "selectivity": (-1.0, 1.0)},
                          not_null=("task_accuracy", "control_accuracy", "selectivity"))


def metadata(s: SelectivitySummary) -> Metadata:
    md: Metadata = {"k": s.k, "seconds": s.seconds}
    for r in s.rows:
        md[f"selectivity_{r['method']}"] = float(r["selectivity"])
    md["selectivity"] = Table(["neurons", "k", "task", "control", "selectivity"],
                              [[r["method"], r["k"], f"{r['task_accuracy']:.4f}", f"{r['control_accuracy']:.4f}",
                                f"{r['selectivity']:.4f}"] for r in s.rows])
    md["layers"] = Table(["layer", "accuracy", "control", "selectivity"],
                         [[r["layer"], f"{r['accuracy']:.4f}", f"{r['control_accuracy']:.4f}",
                           f"{r['selectivity']:.4f}"] for r in s.layers])
    return md

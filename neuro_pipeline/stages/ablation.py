"""Ablation at the probe, as NeuroX reports it: keep or remove the top, random and bottom
neurons, retraining the probe or zeroing the rest in the full probe (table ``ablation``)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import polars as pl

from neuro_pipeline.config import PipelineConfig
from neuro_pipeline.options import ABLATION_ZERO_VALUES
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
from neuro_pipeline.stages.rankings import read_ranking
from neuro_pipeline.store import ActivationSet, Store
from neuro_pipeline.store.tables import ablation as tables


@dataclass
class AblationSummary:
    activation_set: str
    task: str
    methods: list[str]
    rows: list[dict[str, Any]]
    seconds: float


def materialize_ablation(cfg: PipelineConfig, store: Store, *, progress: Progress | None = None) -> AblationSummary:
    """Ablation at the probe, as NeuroX reports it: keep or remove the top / random / bottom
    neurons, retraining the probe or zeroing the rest in the full probe, for the rankings in
    ``evaluation.ablation_methods`` (default: the first method): table ``ablation``."""
    from neuro_pipeline.evaluation.ablation import ablate

    start = time.perf_counter()
    aset = current_activation_set(cfg, store)
    names = list(cfg.evaluation.ablation_methods) or ranking_names(cfg)[:1]
    train, test, _ = train_test(cfg, store, aset)
    if progress is not None:
        progress(0, len(names))
    frames = []
    for i, name in enumerate(names):
        r = read_ranking(cfg, store, aset, name)
        frames.append(ablate(train.X, train.labels, test.X, test.labels, r.order,
                             fractions=cfg.evaluation.ablation_fractions, ks=cfg.evaluation.ablation_ks,
                             n_random=cfg.evaluation.n_random, seed=cfg.evaluation.seed, n_ranked=r.n_ranked,
                             zero_value=ABLATION_ZERO_VALUES, modes=cfg.evaluation.ablation_modes,
                             probe_params=selection_probe_params(cfg))
                      .with_columns(pl.lit(name).alias("method")))
        if progress is not None:
            progress(i + 1, len(names))
    table = pl.concat(frames)
    key = stage_key(cfg, aset)
    store.replace_rows("ablation", keyed(table, key), key)
    return AblationSummary(activation_set=aset.activation_set, task=cfg.task, methods=names,
                           rows=table.to_dicts(), seconds=round(time.perf_counter() - start, 3))


def read_ablation(cfg: PipelineConfig, store: Store, aset: ActivationSet) -> pl.DataFrame:
    """Mean accuracy (and its spread over random draws) per method, mode, selection, k and fill."""
    return tables.summary(store, stage_key(cfg, aset))


def check_ablation(cfg: PipelineConfig, store: Store):
    """great-expectations suite: rows exist, every accuracy in [0, 1]."""
    from neuro_pipeline.quality import validate_table

    aset = current_activation_set(cfg, store)
    frame = tables.accuracies(store, cfg.name, aset.activation_set)
    return validate_table("probe_ablation", frame, ranges={"accuracy": (0.0, 1.0)}, not_null=("accuracy", "k"))


def metadata(s: AblationSummary) -> Metadata:
    rows = [r for r in s.rows if r["mode"] != "full"]
    agg: dict = {}
    for r in rows:
        cell = (r["method"], r["k"], r["mode"], r["zero_value"] or "", r["selection"])
        agg.setdefault(cell, []).append(r["accuracy"])
    return {"methods": ", ".join(s.methods), "seconds": s.seconds,
            "ablation": Table(["method", "k", "mode", "fill", "selection", "accuracy"],
                              [[m, k, mode, fill, sel, f"{sum(v) / len(v):.4f}"]
                               for (m, k, mode, fill, sel), v in agg.items()])}

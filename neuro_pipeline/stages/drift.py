"""Stage 5, model drift: what moved inside the model since the previous version (top-k
overlap and rank correlation of every ranking, per-class neuron sets, per-class accuracy and
selectivity, per-unit correlation), threshold alerts, and the drift section of the report
(tables ``drift_runs``, ``drift_rankings``, ``drift_classes``, ``drift_metrics``,
``drift_layers``, ``drift_alerts``)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from neuro_pipeline.config import PipelineConfig
from neuro_pipeline.stages.common import (
    current_activation_set,
    eval_split_name,
    keyed,
    load_split,
    neuron_name,
    stage_key,
)
from neuro_pipeline.stages.metadata import FilePath, Markdown, Metadata, Table
from neuro_pipeline.stages.rankings import read_global_and_class
from neuro_pipeline.stages.report import read_report_path
from neuro_pipeline.store import ActivationSet, Store
from neuro_pipeline.store.tables import drift as drift_tables

log = logging.getLogger(__name__)


@dataclass
class DriftSummary:
    activation_set: str
    task: str
    label: str
    previous_activation_set: str | None
    previous_label: str | None
    ks: list[int]
    n_alerts: int
    alerts: list[dict[str, Any]]
    ranking: list[dict[str, Any]]
    metrics: list[dict[str, Any]]
    summary: dict[str, Any]
    html_path: str | None
    seconds: float
    layers: list[dict[str, Any]] = field(default_factory=list)


def drift_thresholds(cfg: PipelineConfig):
    from neuro_pipeline.monitoring import DriftThresholds

    m = cfg.monitoring
    return DriftThresholds(max_accuracy_drop=m.max_accuracy_drop, max_selectivity_drop=m.max_selectivity_drop,
                           min_jaccard=m.min_jaccard, alert_k=m.alert_k, min_support=m.min_support)


def model_versions(cfg: PipelineConfig, store: Store) -> pl.DataFrame:
    """The model versions this analysis has seen, oldest first: activation_set, model_version,
    label, model_dir, registered_at, aggregation, dtype, long_sentences, has_report."""
    from neuro_pipeline.stages.activations import read_model_versions

    return read_model_versions(cfg, store)


def previous_version(cfg: PipelineConfig, store: Store, aset: ActivationSet) -> dict[str, Any] | None:
    """The version analysed before ``aset`` (in the order versions were first seen) with the same
    extraction settings and a finished report; None for the first version."""
    versions = model_versions(cfg, store)
    mine = versions.filter(pl.col("activation_set") == aset.activation_set)
    if mine.is_empty():
        raise ValueError(f"{store.path}: activation set {aset.activation_set} is not registered for analysis "
                         f"'{cfg.name}'; materialize token_activations first.")
    me = mine.row(0, named=True)
    earlier = versions.filter(
        (pl.col("registered_at") < me["registered_at"]) & (pl.col("model_version") != aset.model_version)
        & (pl.col("aggregation") == aset.aggregation) & (pl.col("dtype") == aset.dtype)
        & (pl.col("long_sentences") == aset.long_sentences) & pl.col("has_report"))
    return earlier.row(-1, named=True) if earlier.height else None


def materialize_drift(cfg: PipelineConfig, store: Store) -> DriftSummary:
    """Stage 5: what moved inside the model since the previous version: top-k overlap and
    rank correlation of every ranking, per-class neuron sets, per-class accuracy and
    selectivity; threshold alerts; the drift section of the report page. Tables
    ``drift_runs``, ``drift_rankings``, ``drift_classes``, ``drift_metrics``, ``drift_alerts``."""
    from neuro_pipeline.monitoring import (
        class_metric_drift,
        class_ranking_drift,
        drift_alerts,
        ranking_drift,
        summarize_drift,
    )
    from neuro_pipeline.report.drift import drift_html, drift_markdown
    from neuro_pipeline.report.render import insert_drift_section

    start = time.perf_counter()
    aset = current_activation_set(cfg, store)
    key = stage_key(cfg, aset)
    me = model_versions(cfg, store).filter(pl.col("activation_set") == aset.activation_set).row(0, named=True)
    prev = previous_version(cfg, store, aset)
    ks = sorted(cfg.monitoring.drift_ks)
    html_path = read_report_path(store, key)

    def name(n) -> str:
        return neuron_name(int(n), aset.hidden_size)

    if prev is None:
        store.replace_tables({
            "drift_runs": pl.DataFrame([{**key, "previous_activation_set": None, "label": me["label"],
                                         "previous_label": None, "model_version": aset.model_version,
                                         "previous_model_version": None, "n_alerts": 0}],
                                       schema_overrides={"previous_activation_set": pl.String,
                                                         "previous_label": pl.String,
                                                         "previous_model_version": pl.String}),
            **{t: pl.DataFrame() for t in ("drift_rankings", "drift_classes", "drift_metrics", "drift_alerts",
                                           "drift_layers")},
        }, key)
        if html_path:
            insert_drift_section(Path(html_path).parent, drift_html(None, me["label"], None, None, None, None),
                                 drift_markdown(None, me["label"], None, None, None, None))
        return DriftSummary(activation_set=aset.activation_set, task=cfg.task, label=me["label"],
                            previous_activation_set=None,
                            previous_label=None, ks=ks, n_alerts=0, alerts=[], ranking=[], metrics=[], summary={},
                            html_path=html_path, seconds=round(time.perf_counter() - start, 3))

    keys = [{**key, "activation_set": a} for a in (prev["activation_set"], aset.activation_set)]
    (rankings_before, classes_before), (rankings_now, classes_now) = (read_global_and_class(store, k) for k in keys)
    rankings, classes = (rankings_before, rankings_now), (classes_before, classes_now)
    metrics = tuple(drift_tables.version_metrics(store, cfg.name, a, cfg.task)
                    for a in (prev["activation_set"], aset.activation_set))
    ranking = ranking_drift(*rankings, ks)
    layers = _layer_drift(cfg, store, prev, aset)
    class_drift = class_ranking_drift(*classes, ks)
    metric_drift = class_metric_drift(*metrics)
    alerts = drift_alerts(ranking, class_drift, metric_drift, drift_thresholds(cfg))
    summary = summarize_drift(ranking, class_drift, metric_drift, alerts)
    prev_key = {"previous_activation_set": prev["activation_set"]}
    store.replace_tables({
        "drift_runs": pl.DataFrame([{**key, **prev_key, "label": me["label"], "previous_label": prev["label"],
                                     "model_version": aset.model_version,
                                     "previous_model_version": prev["model_version"], "n_alerts": alerts.height}]),
        "drift_rankings": keyed(ranking, key, **prev_key),
        "drift_classes": keyed(class_drift, key, **prev_key),
        "drift_metrics": keyed(metric_drift, key, **prev_key),
        "drift_alerts": keyed(alerts, key, **prev_key),
        "drift_layers": keyed(layers, key, **prev_key),
    }, key)
    if html_path:
        from neuro_pipeline.report.drift import layer_drift_html, layer_drift_markdown

        args = (prev["label"], me["label"], ranking, class_drift, metric_drift, alerts)
        options = dict(neuron_name=name, k=cfg.monitoring.alert_k, method=cfg.ranking.methods[0].name)
        insert_drift_section(Path(html_path).parent,
                             drift_html(*args, **options) + layer_drift_html(layers),
                             drift_markdown(*args, **options) + layer_drift_markdown(layers))
    return DriftSummary(
        activation_set=aset.activation_set, task=cfg.task, label=me["label"],
        previous_activation_set=prev["activation_set"],
        previous_label=prev["label"], ks=ks, n_alerts=alerts.height, alerts=alerts.to_dicts(),
        ranking=ranking.drop("entered", "left").to_dicts(), metrics=metric_drift.to_dicts(), summary=summary,
        html_path=html_path, seconds=round(time.perf_counter() - start, 3), layers=layers.to_dicts())


def _layer_drift(cfg: PipelineConfig, store: Store, prev: dict[str, Any], aset: ActivationSet) -> pl.DataFrame:
    """Per layer, how well each unit's activations in this version correlate with the same
    unit's in ``prev``, over the evaluation words both versions extracted (joined on keys).
    Empty when the two versions do not share a neuron layout."""
    from neuro_pipeline.monitoring import activation_drift

    before = store.activation_set(prev["activation_set"])
    if (before.n_layers, before.hidden_size) != (aset.n_layers, aset.hidden_size):
        log.info("drift: %s and %s have different layouts; no per-unit correlation", before.activation_set,
                 aset.activation_set)
        return pl.DataFrame()
    split = eval_split_name(cfg, store)
    a, b = load_split(cfg, store, before, split), load_split(cfg, store, aset, split)
    rows = (a.keys.with_row_index("ia").join(b.keys.with_row_index("ib"), on=["sentence_id", "position"])
            .sort("ia"))
    if rows.height < 2:
        return pl.DataFrame()
    return activation_drift(a.X[rows["ia"].to_numpy()], b.X[rows["ib"].to_numpy()], n_layers=aset.n_layers,
                            hidden_size=aset.hidden_size).with_columns(pl.lit(rows.height).alias("n_words"))


def check_drift(cfg: PipelineConfig, store: Store) -> tuple[bool, pl.DataFrame, dict[str, Any]]:
    """Re-judge the stored drift of the current version against the thresholds in the config
    now (so changing a threshold needs no recomputation). Returns (passed, alerts, info)."""
    from neuro_pipeline.monitoring import drift_alerts

    aset = current_activation_set(cfg, store)
    key = stage_key(cfg, aset)
    run = drift_tables.run(store, key)
    if run.is_empty():
        raise ValueError(f"{store.path}: no drift record for this model version; materialize model_drift first.")
    info = run.drop("analysis", "activation_set", "task", "created_at").row(0, named=True)
    if info["previous_activation_set"] is None:
        return True, pl.DataFrame(), info
    alerts = drift_alerts(*drift_tables.comparisons(store, key), drift_thresholds(cfg))
    return alerts.is_empty(), alerts, info


def versions_summary(cfg: PipelineConfig) -> list[dict[str, Any]]:
    """One row per model version this analysis has seen, oldest first: label, version,
    full-probe accuracy, selectivity, and the drift against its predecessor (the Jaccard of
    each method's top sets at the alert k, the accuracy change, the number of alerts)."""
    store = Store(cfg.store_path)
    rows = drift_tables.versions_overview(store, cfg.name, cfg.task)
    k = cfg.monitoring.alert_k or max(cfg.monitoring.drift_ks)
    jaccard = drift_tables.top_k_jaccards(store, cfg.name, cfg.task, k)
    out = []
    for r in rows.iter_rows(named=True):
        mine = jaccard.filter(pl.col("activation_set") == r["activation_set"])
        out.append({**r, "k": k, "jaccard": dict(zip(mine["method"].to_list(), mine["jaccard"].to_list()))})
    return out


def metadata(s: DriftSummary) -> Metadata:
    md: Metadata = {"model_label": s.label, "previous_label": s.previous_label or "(none: first version)",
                    "n_alerts": s.n_alerts, "drift_seconds": s.seconds}
    if s.html_path:
        md["report_html"] = FilePath(s.html_path)
    if s.previous_label is None:
        return md
    ks = sorted({r["k"] for r in s.ranking if r.get("k") is not None})
    both = [r for r in s.ranking if r.get("status") == "both"]
    for r in both:
        if r["k"] == ks[-1] and r.get("jaccard") is not None:
            md[f"jaccard_{r['method']}_top{r['k']}"] = float(r["jaccard"])
        if r["k"] == ks[0] and r.get("spearman") is not None:
            md[f"spearman_{r['method']}"] = float(r["spearman"])
    overall = next((r for r in s.metrics if r["label"] == "(all)"), None)
    if overall and overall.get("accuracy_delta") is not None:
        md["accuracy_delta"] = float(overall["accuracy_delta"])
    if overall and overall.get("selectivity_delta") is not None:
        md["selectivity_delta"] = float(overall["selectivity_delta"])
    for r in s.layers:
        if r.get("corr_median") is not None:
            md[f"unit_correlation_layer{r['layer']}"] = float(r["corr_median"])
    methods = list(dict.fromkeys(r["method"] for r in both))
    md["ranking_drift"] = Table(
        ["method", *[f"Jaccard top {k}" for k in ks], "Spearman"],
        [[m, *[next((f"{r['jaccard']:.2f}" for r in both if r["method"] == m and r["k"] == k
                     and r.get("jaccard") is not None), "–") for k in ks],
          next((f"{r['spearman']:.3f}" for r in both if r["method"] == m and r.get("spearman") is not None), "–")]
         for m in methods])
    md["alerts"] = Table(["kind", "method", "label", "k", "message"],
                         [[a["kind"], a.get("method") or "", a.get("label") or "", a.get("k") or "", a["message"]]
                          for a in s.alerts]) if s.alerts else Markdown("No threshold crossed.")
    return md

"""Stage 3, neuron rankings: one configured method fitted on the training split; its global
and per-class rankings, hyperparameters, the top words of its best neurons and, for a linear
probe, the fitted probe (which the report scores as its full probe).

Start here: :func:`materialize_ranking` fits and stores one method; :func:`read_ranking` is
what later stages read of it; :func:`ranking_probe` gives back the stored probe."""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from neuro_pipeline.config import PipelineConfig
from neuro_pipeline.stages.common import (
    Split,
    current_activation_set,
    keyed,
    layer_unit,
    load_split,
    neuron_name,
    ranking_names,
    stage_key,
)
from neuro_pipeline.stages.metadata import Json, Metadata, Table
from neuro_pipeline.store import ActivationSet, Store, to_json
from neuro_pipeline.store.tables import rankings as tables

log = logging.getLogger(__name__)

#: Best neurons of each class whose top words are stored (besides the global top neurons).
TOP_WORDS_PER_CLASS = 3


@dataclass
class RankingSummary:
    activation_set: str
    model_version: str
    task: str
    name: str
    method: str
    params_hash: str
    n_train: int
    n_neurons: int
    n_ranked: int
    seconds: float
    fitted: dict[str, Any]
    top_neurons: list[dict[str, Any]]
    top_per_class: dict[str, list[str]]
    top_words: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class StoredRanking:
    """What later stages read of a ranking: its global order (best first), how much of it a
    greedy method ranked, and the hyperparameters it chose."""

    name: str
    method: str
    order: np.ndarray
    n_ranked: int
    fitted: dict[str, Any]


def materialize_ranking(cfg: PipelineConfig, store: Store, name: str) -> RankingSummary:
    """Fit the configured method ``name`` on the training split and store its global and
    per-class rankings, its hyperparameters, the top words of its best neurons, and the fitted
    probe of a linear probe."""
    from neuro_pipeline.ranking import get_ranker, ranking_table

    spec = cfg.ranking.method(name)
    aset = current_activation_set(cfg, store)
    train = load_split(cfg, store, aset, "train")
    ranker = get_ranker(spec.method, **spec.params)
    params_json = to_json({"method": spec.method, **ranker.get_params()})
    params_hash = hashlib.sha256(params_json.encode()).hexdigest()[:12]
    start = time.perf_counter()
    if "groups" in inspect.signature(ranker.fit).parameters:
        # held-out data for hyperparameter choices is split by sentence, never inside one
        ranker.fit(train.X, train.labels, groups=train.keys["sentence_id"].to_numpy())
    else:
        ranker.fit(train.X, train.labels)
    seconds = time.perf_counter() - start
    fitted = fitted_summary(ranker)
    if spec.diversify:
        _diversify(cfg, store, aset, ranker, fitted)
    hsz = aset.hidden_size
    key = {**stage_key(cfg, aset), "method": name}
    table = keyed(ranking_table(ranker).with_columns(*layer_unit(hsz)), key,
                  model_version=aset.model_version, params_hash=params_hash)
    class_rows = []
    for label, order in (getattr(ranker, "class_rankings_", None) or {}).items():
        order = np.asarray(order)
        class_rows.append(pl.DataFrame({
            "label": str(label), "neuron": order.astype(np.int32),
            "rank": np.arange(1, len(order) + 1, dtype=np.int32)}))
    class_table = (pl.concat(class_rows) if class_rows else
                   pl.DataFrame(schema={"label": pl.Utf8, "neuron": pl.Int32, "rank": pl.Int32}))
    class_table = keyed(class_table.with_columns(*layer_unit(hsz)), key, params_hash=params_hash)
    run = pl.DataFrame([{**key, "params_hash": params_hash, "params": params_json,
                         "fitted": to_json(fitted), "n_train": int(train.X.shape[0]), "seconds": seconds}])
    words = keyed(_top_words(cfg, train, ranker, class_table, hsz), key)
    probes = keyed(_probe_frame(getattr(ranker, "probe_", None), int(train.X.shape[0])), key,
                   params_hash=params_hash)
    store.replace_tables({"rankings": table, "class_rankings": class_table, "ranking_runs": run,
                          "top_words": words, "ranking_probes": probes}, key)
    top = table.sort("rank").head(10)
    return RankingSummary(
        activation_set=aset.activation_set, model_version=aset.model_version, task=cfg.task, name=name,
        method=spec.method, params_hash=params_hash, n_train=int(train.X.shape[0]),
        n_neurons=int(train.X.shape[1]), n_ranked=int(ranker.n_ranked_), seconds=round(seconds, 3), fitted=fitted,
        top_neurons=[{"neuron": neuron_name(r["neuron"], hsz), "score": r["score"]} for r in top.iter_rows(named=True)],
        top_per_class={lab: [neuron_name(n, hsz) for n in grp.sort("rank")["neuron"].head(5).to_list()]
                       for (lab,), grp in class_table.group_by("label", maintain_order=True)},
        top_words={neuron_name(n, hsz): grp.sort("rank")["word"].to_list()
                   for (n,), grp in words.filter(pl.col("source") == "global")
                   .group_by("neuron", maintain_order=True)},
    )


def materialize_rankings(cfg: PipelineConfig, store: Store) -> list[RankingSummary]:
    """Every configured method, in config order."""
    return [materialize_ranking(cfg, store, name) for name in ranking_names(cfg)]


def _diversify(cfg: PipelineConfig, store: Store, aset: ActivationSet, ranker: Any, fitted: dict[str, Any]) -> None:
    """Reorder the ranker's global ranking by the stored correlation clusters (one neuron per
    cluster first); scores become ``n_neurons - position`` so that they sort into the new order."""
    from neuro_pipeline.analysis import diversify_ranking
    from neuro_pipeline.stages.redundancy import read_clusters

    clusters = read_clusters(cfg, store, aset)
    if clusters.height != aset.n_neurons:
        raise ValueError(f"ranking with diversify: true needs the correlation clusters of activation set "
                         f"{aset.activation_set}; materialize neuron_redundancy first.")
    order = diversify_ranking(ranker.ranking_[:ranker.n_ranked_], clusters["cluster"].to_numpy())
    order = np.concatenate([order, ranker.ranking_[ranker.n_ranked_:]])
    scores = np.full(len(order), -np.inf)
    scores[order[:ranker.n_ranked_]] = len(order) - np.arange(ranker.n_ranked_, dtype=np.float64)
    ranker.set_scores(scores)
    fitted["diversified"] = True
    fitted["n_clusters"] = int(clusters["cluster"].n_unique())


def _top_words(cfg: PipelineConfig, train: Split, ranker: Any, class_table: pl.DataFrame, hsz: int) -> pl.DataFrame:
    """Corpus search (NeuroX's get_top_words) over the training words for the method's best
    neurons (``source = 'global'``) and the best few of each class (``source = <label>``)."""
    from neuro_pipeline.analysis import top_words_table

    r = cfg.ranking
    wanted = [("global", int(n)) for n in ranker.ranking_[:min(r.top_words_neurons, ranker.n_ranked_)]]
    if r.top_words_neurons:
        for (label,), grp in class_table.group_by("label", maintain_order=True):
            wanted += [(str(label), int(n)) for n in grp.sort("rank")["neuron"].head(TOP_WORDS_PER_CLASS).to_list()]
    schema = {"source": pl.Utf8, "neuron": pl.Int32, "layer": pl.Int32, "unit": pl.Int32, "rank": pl.Int32,
              "word": pl.Utf8, "score": pl.Float64, "count": pl.Int64}
    if not wanted or not r.top_words:
        return pl.DataFrame(schema=schema)
    neurons = sorted({n for _, n in wanted})
    found = top_words_table(train.words, train.X, neurons, num_tokens=r.top_words,
                            min_threshold=r.top_words_min_threshold)
    sources = pl.DataFrame({"source": [s for s, _ in wanted], "neuron": [n for _, n in wanted]},
                           schema={"source": pl.Utf8, "neuron": pl.Int32})
    return (sources.join(found.with_columns(pl.col("neuron").cast(pl.Int32)), on="neuron", how="inner")
            .with_columns(*layer_unit(hsz))
            .select(list(schema)).cast(schema))


_PROBE_SCHEMA = {"classes": pl.Utf8, "n_train": pl.Int32, "n_features": pl.Int32, "coef": pl.Binary,
                 "intercept": pl.Binary, "mean": pl.Binary, "scale": pl.Binary}


def _probe_frame(probe: Any, n_train: int) -> pl.DataFrame:
    """The fitted probe of a linear-probe ranking as one ``ranking_probes`` row (none for
    other methods), so that the report scores the very probe the ranking came from instead
    of fitting it again (on EWT with the default elastic net, a 16 s fit)."""
    from neuro_pipeline.probe import LinearProbe

    if not isinstance(probe, LinearProbe) or not hasattr(probe, "coef_"):
        return pl.DataFrame(schema=_PROBE_SCHEMA)
    state = probe.get_state()
    return pl.DataFrame([{
        "classes": json.dumps([str(c) for c in state["classes"]]), "n_train": n_train,
        "n_features": int(state["coef"].shape[1]),
        "coef": np.ascontiguousarray(state["coef"], dtype="<f4").tobytes(),
        "intercept": np.ascontiguousarray(state["intercept"], dtype="<f4").tobytes(),
        "mean": np.ascontiguousarray(state["mean"], dtype="<f8").tobytes(),
        "scale": np.ascontiguousarray(state["scale"], dtype="<f8").tobytes()}], schema=_PROBE_SCHEMA)


def ranking_probe(store: Store, key: dict[str, Any], method: str, params: dict[str, Any], train: Split) -> Any:
    """The probe stored by the linear-probe ranking ``method`` (see :func:`_probe_frame`) as a
    fitted ``LinearProbe(**params)``, or None when none is stored or it was not fitted on
    these training words (their count, the neurons or the classes differ): the caller then
    fits one. ``key``: analysis, activation_set, task."""
    from neuro_pipeline.probe import LinearProbe

    rows = tables.probes(store, key, method)
    if rows.height != 1:
        return None
    row = rows.row(0, named=True)
    classes = np.unique(train.labels)
    if (row["n_train"] != train.X.shape[0] or row["n_features"] != train.X.shape[1]
            or json.loads(row["classes"]) != [str(c) for c in classes]):
        log.info("the probe stored by ranking '%s' was fitted on other training words; fitting the full probe",
                 method)
        return None
    return LinearProbe.from_state({
        "classes": classes, "coef": np.frombuffer(row["coef"], dtype="<f4").reshape(len(classes), -1),
        "intercept": np.frombuffer(row["intercept"], dtype="<f4"), "mean": np.frombuffer(row["mean"], dtype="<f8"),
        "scale": np.frombuffer(row["scale"], dtype="<f8")}, **params)


def fitted_summary(ranker: Any) -> dict[str, Any]:
    """The fitted hyperparameters worth recording (e.g. the regularisation chosen on held-out data)."""
    out: dict[str, Any] = {}
    for name in ("l1_", "l2_", "n_ranked_"):
        if hasattr(ranker, name):
            out[name.rstrip("_")] = getattr(ranker, name)
    search = getattr(ranker, "lambda_search_", None)
    if isinstance(search, pl.DataFrame):
        out["lambda_search"] = search.to_dicts()
    return out


def read_ranking(cfg: PipelineConfig, store: Store, aset: ActivationSet, name: str) -> StoredRanking:
    """The stored global ranking (best first) of one configured method, with its fitted hyperparameters."""
    key = stage_key(cfg, aset)
    ranked = tables.global_order(store, key, name)
    runs = tables.runs(store, key, name)
    if ranked.is_empty() or runs.is_empty():
        raise ValueError(f"no '{name}' ranking stored for analysis '{cfg.name}' and activation set "
                         f"{aset.activation_set}; materialize its neuron_rankings asset first.")
    return StoredRanking(name=name, method=json.loads(runs["params"][0]).get("method", name),
                         order=ranked["neuron"].to_numpy(), n_ranked=int(ranked["rank"].count()),
                         fitted=json.loads(runs["fitted"][0]))


def read_rankings(cfg: PipelineConfig, store: Store, aset: ActivationSet) -> list[StoredRanking]:
    """Every configured ranking, in config order (see :func:`read_ranking`)."""
    return [read_ranking(cfg, store, aset, name) for name in ranking_names(cfg)]


def read_class_orders(cfg: PipelineConfig, store: Store, aset: ActivationSet, *,
                      max_rank: int | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Per method and class, the class's neurons best first (at most ``max_rank`` of each):
    ``{method: {label: neurons}}``, for the methods with per-class rankings."""
    rows = tables.class_orders(store, stage_key(cfg, aset), max_rank=max_rank)
    out: dict[str, dict[str, np.ndarray]] = {}
    for row in rows.iter_rows(named=True):
        out.setdefault(row["method"], {})[row["label"]] = np.asarray(row["neurons"])
    return out


def read_global_and_class(store: Store, key: dict[str, Any]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Every method's stored rankings under ``key`` (analysis, activation_set, task), e.g. of
    an earlier model version: (method, neuron, score, rank) and (method, label, neuron, rank)."""
    return tables.all_global(store, key), tables.all_class(store, key)


def read_class_lists(store: Store, key: dict[str, Any], method: str, max_rank: int) -> pl.DataFrame:
    """One method's best ``max_rank`` neurons of every class under ``key``: label, neurons."""
    return tables.class_orders(store, key, max_rank=max_rank, method=method).select("label", "neurons")


def read_class_top(cfg: PipelineConfig, store: Store, aset: ActivationSet, max_rank: int = 5) -> pl.DataFrame:
    """The best ``max_rank`` neurons of every method and class: method, label, neuron, rank."""
    return tables.class_top(store, stage_key(cfg, aset), max_rank)


def read_top_words(cfg: PipelineConfig, store: Store, aset: ActivationSet) -> dict[tuple[str, int], list[str]]:
    """The top words of each method's best neurons: ``{(method, neuron): words}``."""
    rows = tables.global_top_words(store, stage_key(cfg, aset))
    return {(r["method"], int(r["neuron"])): r["words"] for r in rows.iter_rows(named=True)}


def check_ranking(cfg: PipelineConfig, store: Store, name: str):
    """great-expectations suite over one method's stored global ranking: a permutation of the
    neurons with finite scores, and its hyperparameters recorded."""
    from neuro_pipeline.quality import validate_rankings

    aset = current_activation_set(cfg, store)
    key = stage_key(cfg, aset)
    ranking = tables.global_scores(store, key, name)
    runs = tables.runs(store, key, name)
    report = validate_rankings(ranking, n_neurons=aset.n_neurons)
    recorded = runs.height == 1 and bool(runs["params"][0]) and runs["params"][0] != "{}"
    report.results.append({"expectation": "hyperparameters_recorded", "column": "params", "success": recorded,
                           "unexpected_count": 0 if recorded else 1, "unexpected_examples": [],
                           "observed_value": runs.height})
    report.success = report.success and recorded
    return report


def metadata(s: RankingSummary) -> Metadata:
    return {
        "method": s.method,
        "name": s.name,
        "task": s.task,
        "params_hash": s.params_hash,
        "n_train_words": s.n_train,
        "n_neurons": s.n_neurons,
        "n_ranked": s.n_ranked,
        "fit_seconds": s.seconds,
        "fitted": Json({k: v for k, v in s.fitted.items() if not isinstance(v, (list, dict))}),
        "top_neurons": Table(["rank", "neuron", "score", "top words"],
                             [[i + 1, t["neuron"], f"{t['score']:.4g}", ", ".join(s.top_words.get(t["neuron"], []))]
                              for i, t in enumerate(s.top_neurons)]),
        "top_neurons_per_class": Table(["label", "top neurons (layer:unit)"],
                                       [[k, ", ".join(v)] for k, v in s.top_per_class.items()]),
    }

"""Stage 4, the evaluation report: probe accuracy with all neurons and with each method's
top, random and bottom neurons, per class, and the HTML and Markdown report, which gathers
every other stage's results through their ``read_*`` functions (tables ``metrics``,
``class_metrics``, ``confusion``, ``reports``)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from neuro_pipeline.config import PipelineConfig
from neuro_pipeline.hashing import short_version
from neuro_pipeline.stages import ablation, agreement, class_neurons, interventions, redundancy, selectivity
from neuro_pipeline.stages.common import (
    Progress,
    Split,
    current_activation_set,
    eval_split_name,
    keyed,
    load_split,
    neuron_name,
    ranking_names,
    selection_probe_params,
    stage_key,
)
from neuro_pipeline.stages.metadata import FilePath, Markdown, Metadata
from neuro_pipeline.stages.rankings import (
    StoredRanking,
    ranking_probe,
    read_class_lists,
    read_class_top,
    read_rankings,
    read_top_words,
)
from neuro_pipeline.stages.versions import corpus_version
from neuro_pipeline.store import ActivationSet, Store
from neuro_pipeline.store.tables import report as tables


@dataclass
class ReportSummary:
    activation_set: str
    model_version: str
    task: str
    methods: list[str]
    n_train: int
    n_test: int
    eval_split: str
    accuracy: float
    majority_baseline: float
    n_test_unseen_label: int
    selections: list[dict[str, Any]]
    per_class: list[dict[str, Any]]
    html_path: str
    markdown_path: str
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


def materialize_report(cfg: PipelineConfig, store: Store, *, progress: Progress | None = None) -> ReportSummary:
    """Probe accuracy with all neurons, and with each method's top and bottom neurons against
    random ones; the report.

    The full probe is the first linear-probe ranking's own fitted probe, stored by that
    ranking (:func:`~neuro_pipeline.stages.rankings.ranking_probe`): its settings, the
    regularisation it chose on held-out training data, the same training words. It is
    fitted here with those settings only when none is stored for these words, and with the
    selection-probe default when no linear probe is configured. Every selection retrains a
    probe on its neurons only (NeuroX's keep-neurons protocol); the random draws
    (``evaluation.n_random`` per size) do not depend on the method and are evaluated once.
    """
    from neuro_pipeline.evaluation import evaluate_probe
    from neuro_pipeline.evaluation.metrics import class_metrics, confusion_table
    from neuro_pipeline.evaluation.selection import DEFAULT_SELECTION_PROBE_PARAMS, fit_selections, score_selections
    from neuro_pipeline.probe import LinearProbe, column_stats
    from neuro_pipeline.report.render import staged_report

    start = time.perf_counter()
    aset = current_activation_set(cfg, store)
    stored = read_rankings(cfg, store, aset)
    eval_split = eval_split_name(cfg, store)
    key = stage_key(cfg, aset)
    class_top = read_class_top(cfg, store, aset, max_rank=5)
    n_fractions = len(cfg.evaluation.fractions)
    total = 1 + n_fractions * (cfg.evaluation.n_random + 2 * len(stored))
    done = [0]

    def tick() -> None:
        done[0] += 1
        if progress is not None:
            progress(min(done[0], total), total)

    if progress is not None:
        progress(0, total)

    # Every probe is trained before the test split is loaded, and the training matrix is
    # dropped first: the stage holds one split's matrix at a time (on EWT with MiniLM its
    # peak fell by the test matrix, 258 MB).
    train = load_split(cfg, store, aset, "train")
    lca = next((r for r in stored if r.method == "linear_probe" and "l1" in r.fitted), None)
    full_params = (_full_probe_params(cfg, lca) if lca is not None else dict(DEFAULT_SELECTION_PROBE_PARAMS))
    # One standardisation of the training matrix serves the full probe and every retrained one.
    stats = column_stats(train.X)
    # The full probe is the linear-probe ranking's own (the same settings and penalties, on
    # the same words), scored rather than fitted again.
    probe = None if lca is None else ranking_probe(store, key, lca.name, full_params, train)
    if probe is None:
        probe = LinearProbe(**full_params).fit(train.X, train.labels, column_stats=stats)
    tick()
    common = dict(fractions=cfg.evaluation.fractions, n_random=cfg.evaluation.n_random, seed=cfg.evaluation.seed,
                  probe_params=selection_probe_params(cfg), column_stats=stats)
    random_fits = fit_selections(train.X, train.labels, stored[0].order, selections=("random",), on_probe=tick,
                                 **common)
    method_fits = [fit_selections(train.X, train.labels, r.order, selections=("top", "bottom"), n_ranked=r.n_ranked,
                                  on_probe=tick, **common) for r in stored]
    flips = _heatmap_flips(train, class_top, stored[0].name)
    train_labels, n_train, n_skipped_train = train.labels, int(train.X.shape[0]), train.n_skipped_rejected
    del train, stats

    test = load_split(cfg, store, aset, eval_split)
    full = evaluate_probe(probe, test.X, test.labels)
    labels, counts = np.unique(train_labels, return_counts=True)
    majority = str(labels[np.argmax(counts)])
    baseline = float(np.mean(test.labels == majority))
    random_rows = score_selections(random_fits, test.X, test.labels)
    per_method = [pl.concat([score_selections(fits, test.X, test.labels), random_rows])
                  .with_columns(pl.lit(r.name).alias("method")) for r, fits in zip(stored, method_fits)]
    selections = pl.concat(per_method)
    if progress is not None:
        progress(total, total)  # skipped selections (partial rankings) never ticked
    metrics = pl.concat([metrics_table(full, sel.drop("method"), baseline).with_columns(pl.lit(r.name).alias("method"))
                         for r, sel in zip(stored, per_method)])

    predicted = probe.predict(test.X)
    labels_all = sorted(set(map(str, np.unique(train_labels))) | set(map(str, np.unique(test.labels))))
    cm = class_metrics(test.labels.astype(str), predicted.astype(str), labels=labels_all)
    confusion = confusion_table(test.labels.astype(str), predicted.astype(str), labels=labels_all)
    per_class = cm.to_dicts()
    sections = gather_sections(cfg, store, aset)
    hsz = aset.hidden_size
    top_words = read_top_words(cfg, store, aset)
    heatmaps = _class_heatmaps(cfg, test, flips, stored[0].name, hsz, top_words)
    out_dir = cfg.reports_dir / cfg.name / short_version(aset.model_version)
    if cfg.task != cfg.tasks[0]:
        out_dir = out_dir / cfg.task  # each further task (a concept) gets its own page
    summary = ReportSummary(
        activation_set=aset.activation_set, model_version=aset.model_version, task=cfg.task,
        methods=[r.name for r in stored], n_train=n_train, n_test=int(test.X.shape[0]),
        eval_split=eval_split, accuracy=float(full["accuracy"]), majority_baseline=baseline,
        n_test_unseen_label=int(full["n_unseen"]), selections=selection_rows(selections),
        per_class=per_class, html_path=str(out_dir / "report.html"), markdown_path=str(out_dir / "report.md"),
        seconds=0.0,
        extra={"full_probe": full_params, "fitted": {r.name: r.fitted for r in stored},
               "hidden_size": hsz, "n_layers": aset.n_layers,
               "model_dir": aset.model_dir, "aggregation": aset.aggregation, "dtype": aset.dtype,
               "corpus_version": corpus_version(cfg), "config_source": cfg.source,
               "top_per_class": {(m, lab): [neuron_name(n, hsz) for n in grp["neuron"].to_list()]
                                 for (m, lab), grp in class_top.group_by("method", "label", maintain_order=True)},
               "top_neurons": {r.name: [(neuron_name(int(n), hsz), top_words.get((r.name, int(n)), []))
                                        for n in r.order[:min(5, r.n_ranked)]] for r in stored},
               **sections, "confusion": confusion.to_dicts(), "heatmaps": heatmaps,
               "n_skipped_rejected": n_skipped_train + test.n_skipped_rejected,
               "selection_probe": ", ".join(f"{k}={v:g}" for k, v in DEFAULT_SELECTION_PROBE_PARAMS.items())},
    )
    summary.seconds = round(time.perf_counter() - start, 3)
    # Metrics and the report row are replaced in one transaction once the page is rendered,
    # and the page is renamed into place only after that commit: a failure anywhere leaves
    # the previous report's rows and files as they were.
    with staged_report(summary, out_dir):
        store.replace_tables({
            "metrics": keyed(metrics, key), "class_metrics": keyed(cm, key), "confusion": keyed(confusion, key),
            "reports": pl.DataFrame([{**key, "model_version": aset.model_version,
                                      "html_path": summary.html_path, "markdown_path": summary.markdown_path}]),
        }, key)
    return summary


def gather_sections(cfg: PipelineConfig, store: Store, aset: ActivationSet) -> dict[str, Any]:
    """The report's sections from the other stages' stored results, each through that stage's
    ``read_*``. A stage that is off contributes an empty section, even if old rows of it are
    stored."""
    on = cfg.stages

    def rows(enabled: bool, read) -> list[dict[str, Any]]:
        return read(cfg, store, aset).to_dicts() if enabled else []

    intervention_rows, head = ([], interventions.head_text({}))
    if cfg.interventions.enabled:
        frame, head = interventions.read_interventions(cfg, store, aset)
        intervention_rows = frame.to_dicts()
    return {
        "agreement": rows(on.method_agreement, agreement.read_agreement),
        "redundancy": rows(on.neuron_redundancy, redundancy.read_redundancy),
        "selectivity": rows(on.probe_selectivity, selectivity.read_selectivity),
        "layer_probes": rows(on.probe_selectivity, selectivity.read_layer_probes),
        "ablation": rows(on.probe_ablation, ablation.read_ablation),
        "layer_distribution": rows(on.class_neurons, class_neurons.read_distribution),
        "minimal_neurons": rows(on.class_neurons, class_neurons.read_minimal),
        "interventions": intervention_rows,
        "mlm_head": {"source": head},
    }


def _full_probe_params(cfg: PipelineConfig, lca: StoredRanking) -> dict[str, Any]:
    """The full probe of the report: the linear-probe ranking's probe settings (solver and
    budget as configured) with the penalties it chose."""
    from neuro_pipeline.probe import LinearProbe
    from neuro_pipeline.ranking import get_ranker

    probe_keys = set(LinearProbe().get_params()) - {"l1", "l2", "warm_start"}
    configured = get_ranker("linear_probe", **cfg.ranking.method(lca.name).params).get_params()
    defaults = LinearProbe().get_params()
    # Only what differs from the probe's defaults, so the report's record stays short.
    return {"l1": lca.fitted["l1"], "l2": lca.fitted["l2"],
            **{k: v for k, v in configured.items() if k in probe_keys and v != defaults[k]}}


def _heatmap_flips(train: Split, class_top: pl.DataFrame, method: str) -> dict[str, tuple[int, bool]]:
    """Per class, the strongest neuron by ``method`` and whether its heatmap flips its sign:
    a neuron can encode a class by firing negatively on it, decided on the training words
    (the class's mean activation below the others'), so that the class's words are blue on
    every heatmap (see :func:`_class_heatmaps`)."""
    best = class_top.filter((pl.col("method") == method) & (pl.col("rank") == 1))
    train_labels = train.labels.astype(str)
    flips = {}
    for label, neuron in best.select("label", "neuron").iter_rows():
        column = train.X[:, int(neuron)]
        is_class = train_labels == label
        flips[label] = (int(neuron), bool(is_class.any() and (~is_class).any()
                                          and column[is_class].mean() < column[~is_class].mean()))
    return flips


def _class_heatmaps(cfg: PipelineConfig, test: Split, flips: dict[str, tuple[int, bool]], method: str, hsz: int,
                    top_words: dict) -> list[dict[str, Any]]:
    """For the strongest neuron of each class (``flips``, from :func:`_heatmap_flips`), its
    activations over the first ``evaluation.heatmap_sentences`` test sentences that contain
    the class, as SVG; a flipped neuron is shown with its sign flipped, and its title says so."""
    from neuro_pipeline.report.heatmap import neuron_heatmaps_svg
    from neuro_pipeline.report.render import short_word

    n_sentences = cfg.evaluation.heatmap_sentences
    if not n_sentences or not flips:
        return []
    keys = test.keys.with_columns(pl.Series("label", test.labels.astype(str)), pl.int_range(pl.len()).alias("row"))
    out = []
    for label, (neuron, flip) in flips.items():
        ids = keys.filter(pl.col("label") == label)["sentence_id"].unique(maintain_order=True).head(n_sentences)
        sentences, values, marked = [], [], []
        for sid in ids.to_list():
            rows = keys.filter(pl.col("sentence_id") == sid).sort("position")["row"].to_numpy()
            sentences.append([str(w) for w in test.words[rows]])
            values.append((-1.0 if flip else 1.0) * np.asarray(test.X[rows, int(neuron)], dtype=np.float64))
            marked.append((test.labels[rows].astype(str) == label).tolist())
        if sentences:
            name = neuron_name(int(neuron), hsz)
            title = f"−{name} ({label}, sign flipped)" if flip else f"{name} ({label})"
            out.append({"label": label, "neuron": name, "flipped": flip,
                        "svg": neuron_heatmaps_svg(sentences, values, neuron_name=title, marked=marked,
                                                   top_words=[short_word(w, 16) for w in
                                                              top_words.get((method, int(neuron)), [])[:8]] or None)})
    return out


def metrics_table(full: dict[str, Any], selections: pl.DataFrame, baseline: float) -> pl.DataFrame:
    """Tidy metric rows: scope (overall/class), label, selection, fraction, k, draw, metric, value."""
    rows: list[dict[str, Any]] = [
        {"scope": "overall", "label": None, "selection": "all", "fraction": 1.0, "k": None, "draw": None,
         "metric": "accuracy", "value": float(full["accuracy"])},
        {"scope": "overall", "label": None, "selection": "majority_baseline", "fraction": None, "k": None,
         "draw": None, "metric": "accuracy", "value": baseline},
    ]
    for lab, vals in full["per_class"].items():
        for metric, value in vals.items():
            rows.append({"scope": "class", "label": str(lab), "selection": "all", "fraction": 1.0, "k": None,
                         "draw": None, "metric": metric, "value": float(value)})
    for r in selections.iter_rows(named=True):
        rows.append({"scope": "overall", "label": None, "selection": r["selection"], "fraction": float(r["fraction"]),
                     "k": int(r["k"]), "draw": r.get("draw"), "metric": "accuracy", "value": float(r["accuracy"])})
    return pl.DataFrame(rows, schema={"scope": pl.Utf8, "label": pl.Utf8, "selection": pl.Utf8,
                                      "fraction": pl.Float64, "k": pl.Int32, "draw": pl.Int32,
                                      "metric": pl.Utf8, "value": pl.Float64})


def selection_rows(selections: pl.DataFrame) -> list[dict[str, Any]]:
    """Mean (and spread over random draws) accuracy per method, selection and fraction, for display."""
    agg = (selections.group_by("method", "selection", "fraction", "k", maintain_order=True)
           .agg(pl.col("accuracy").mean().alias("accuracy"), pl.col("accuracy").std().alias("std"),
                pl.len().alias("n_draws"))
           .sort("method", "fraction",
                 pl.col("selection").replace_strict({"top": 0, "random": 1, "bottom": 2}, default=3),
                 maintain_order=True))
    return agg.to_dicts()


def read_metrics(cfg: PipelineConfig, store: Store, aset: ActivationSet) -> pl.DataFrame:
    """The stored metric rows: scope, label, selection, fraction, k, draw, metric, value."""
    return tables.metrics(store, stage_key(cfg, aset))


def read_report_path(store: Store, key: dict[str, Any]) -> str | None:
    """Where the report page of ``key`` (analysis, activation_set, task) is, if one is stored."""
    rows = tables.report_paths(store, key)
    return rows["html_path"][0] if rows.height else None


def check_report(cfg: PipelineConfig, store: Store):
    """great-expectations suite over the stored metrics: accuracies in [0, 1], probe above baseline."""
    from neuro_pipeline.quality import validate_metrics

    metrics = read_metrics(cfg, store, current_activation_set(cfg, store))
    baseline = metrics.filter(pl.col("selection") == "majority_baseline")["value"]
    return validate_metrics(metrics.filter(pl.col("selection") != "majority_baseline"),
                            majority_baseline=float(baseline[0]) if len(baseline) else 0.0)


def latest_summary(cfg: PipelineConfig) -> dict[str, Any]:
    """What the last successful run stored for this analysis: accuracy, top neurons, file paths."""
    store = Store(cfg.store_path)
    reports = tables.latest_report(store, cfg.name)
    if reports.is_empty():
        raise ValueError(f"{cfg.store_path}: no report for analysis '{cfg.name}' yet; run the pipeline first.")
    rep = reports.row(0, named=True)
    key = {"analysis": cfg.name, "activation_set": rep["activation_set"], "task": rep["task"]}
    metrics = tables.overall_accuracies(store, key)
    first = ranking_names(cfg)[0]
    top = read_class_lists(store, key, first, max_rank=3)
    return {
        "report": rep, "metrics": metrics.to_dicts(), "top_per_class_method": first,
        "top_per_class": {r["label"]: [neuron_name(n, rep["hidden_size"]) for n in r["neurons"]]
                          for r in top.iter_rows(named=True)},
        "store": str(cfg.store_path),
    }


def metadata(s: ReportSummary) -> Metadata:
    from neuro_pipeline.report import report_markdown

    md: Metadata = {
        "accuracy": float(s.accuracy),
        "majority_baseline": float(s.majority_baseline),
        "methods": ", ".join(s.methods),
        "n_test_words": s.n_test,
        "n_test_unseen_label": s.n_test_unseen_label,
        "report_html": FilePath(s.html_path),
        "report": Markdown(report_markdown(s)),
        "evaluation_seconds": s.seconds,
    }
    for r in s.selections:
        who = "random" if r["selection"] == "random" else f"{r['method']}_{r['selection']}"
        md[f"accuracy_{who}_{100 * r['fraction']:g}pct"] = float(r["accuracy"])
    for r in s.extra.get("selectivity", []):
        md[f"selectivity_{r['method']}"] = float(r["selectivity"])
    for r in s.per_class:
        if r.get("f1") is not None:
            md[f"f1_{r['label']}"] = float(r["f1"])
    return md

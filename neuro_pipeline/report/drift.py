"""The report's drift section: what changed since the previous model version.

Start here: :func:`drift_html` returns an HTML fragment (``<h2 id="drift">`` and what
follows, from the template ``templates/sections/drift.html.j2``) for
:func:`~neuro_pipeline.report.render.report_html`'s page, and :func:`drift_markdown` the same
essentials as Markdown. Both take the tables of
:mod:`neuro_pipeline.monitoring` (ranking drift, per-class ranking drift, per-class metric
drift, alerts); any of them may be None when it was not computed, and its part is left out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import polars as pl

from neuro_pipeline.report.format import Table, markdown_table, num, pct
from neuro_pipeline.report.templating import render

TITLE = "Drift since the previous version"
FIRST_VERSION_NOTE = "This is the first version: there is no earlier version to compare with."
_OVERALL_LABEL = "(all)"


class _Movement(NamedTuple):
    """Neurons that entered and left each method's top ``k`` (rows: method, entered, left)."""

    k: int | None
    rows: list[list[str]]


class _ClassDrift(NamedTuple):
    """Per-class ranking drift of one method at one top-k size."""

    method: str
    k: int
    table: Table


def _points(delta: float | None) -> str:
    if delta is None:
        return "–"
    text = f"{100 * delta:+.1f}"
    return "+0.0" if text == "-0.0" else text


def _names(neurons: list[int] | None, neuron_name: Callable[[int], str]) -> str:
    return "–" if not neurons else ", ".join(neuron_name(n) for n in neurons)


def _label_text(label: str) -> str:
    return "overall" if label == _OVERALL_LABEL else label


def _ranking_rows(ranking: pl.DataFrame) -> Table:
    """Jaccard per k and Spearman of every method compared in both versions."""
    ks = sorted(set(ranking["k"].to_list()))
    rows = []
    for (method,), group in ranking.filter(pl.col("status") == "both").sort("method", "k").group_by(
            ["method"], maintain_order=True):
        by_k = dict(zip(group["k"].to_list(), group["jaccard"].to_list()))
        first = group.row(0, named=True)
        rows.append([method, *[num(by_k.get(k), 2) for k in ks], num(first["spearman"], 3),
                     str(first["n_scored"])])
    return Table(["method", *[f"top {k}" for k in ks], "Spearman (scores)", "neurons scored"], rows)


def _one_side(ranking: pl.DataFrame, status: str) -> list[str]:
    return sorted(set(ranking.filter(pl.col("status") == status)["method"].to_list()))


def _movement_rows(ranking: pl.DataFrame, neuron_name: Callable[[int], str]) -> _Movement:
    """Neurons that entered and left each method's top k at the smallest k."""
    both = ranking.filter(pl.col("status") == "both")
    if not len(both):
        return _Movement(None, [])
    k = both["k"].min()
    rows = [[r["method"], _names(r["entered"], neuron_name), _names(r["left"], neuron_name)]
            for r in both.filter(pl.col("k") == k).sort("method").iter_rows(named=True)]
    return _Movement(k, rows)


def _metric_rows(metrics: pl.DataFrame) -> Table:
    with_selectivity = metrics.select(
        pl.col("selectivity_previous").is_not_null().any() | pl.col("selectivity_current").is_not_null().any()
    ).item()
    header = ["label", "support", "accuracy", "Δ accuracy (points)", "Δ F1 (points)"]
    if with_selectivity:
        header += ["selectivity (points)", "Δ selectivity (points)"]
    rows = []
    for r in metrics.iter_rows(named=True):
        before, after = r["support_previous"], r["support_current"]
        support = ("–" if after is None else str(after)) if before == after else (
            f"{'–' if before is None else before} → {'–' if after is None else after}")
        row = [_label_text(r["label"]), support, f"{pct(r['accuracy_previous'])} → {pct(r['accuracy_current'])}",
               _points(r["accuracy_delta"]), _points(r["f1_delta"])]
        if with_selectivity:
            row += [f"{_points_plain(r['selectivity_previous'])} → {_points_plain(r['selectivity_current'])}",
                    _points(r["selectivity_delta"])]
        rows.append(row)
    return Table(header, rows)


def _points_plain(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def _class_method(classes: pl.DataFrame, method: str | None) -> str | None:
    methods = sorted(set(classes.filter(pl.col("status") == "both")["method"].to_list()))
    if method is not None:
        if method not in set(classes["method"].to_list()):
            raise ValueError(f"drift report: method {method!r} has no per-class drift; methods are {methods}.")
        return method
    return methods[0] if methods else None


def _class_rows(classes: pl.DataFrame, method: str, k: int | None) -> tuple[int | None, list[list[str]]]:
    """Per-class Jaccard, kept, entered and left at ``k`` (default: the largest k) for one method."""
    mine = classes.filter(pl.col("method") == method)
    ks = sorted(set(mine["k"].to_list()))
    if not ks:
        return None, []
    if k is None:
        k = ks[-1]
    elif k not in ks:
        raise ValueError(f"drift report: per-class drift has k in {ks}, not k={k}.")
    rows = []
    for r in mine.filter(pl.col("k") == k).sort("label").iter_rows(named=True):
        if r["status"] != "both":
            note = "previous version only" if r["status"] == "only_previous" else "current version only"
            rows.append([r["label"], "–", "–", "–", "–", note])
            continue
        rows.append([r["label"], num(r["jaccard"], 2), str(r["overlap"]), str(r["n_entered"]), str(r["n_left"]), ""])
    return k, rows


def _class_header(k: int) -> list[str]:
    return ["label", f"Jaccard top {k}", "kept", "entered", "left", "note"]


#: Alerts listed on the page before the rest fold into a "more" element (metric alerts come first).
_ALERTS_SHOWN = 8


def _parts(ranking, classes, metrics, alerts, neuron_name, method, k) -> dict:
    """Everything both renderings show, as plain text and tables; a part that was not computed is None."""
    name = neuron_name or str
    parts: dict = {"alerts": None if alerts is None else alerts["message"].to_list(), "ranking": None,
                   "only_previous": None, "only_current": None, "movement": None, "metrics": None, "classes": None}
    if ranking is not None and len(ranking):
        parts["ranking"] = _ranking_rows(ranking)
        parts["only_previous"] = _one_side(ranking, "only_previous")
        parts["only_current"] = _one_side(ranking, "only_current")
        parts["movement"] = _movement_rows(ranking, name)
    if metrics is not None and len(metrics):
        parts["metrics"] = _metric_rows(metrics)
    if classes is not None and len(classes):
        chosen = _class_method(classes, method)
        if chosen is not None:
            class_k, rows = _class_rows(classes, chosen, k)
            if rows:
                parts["classes"] = _ClassDrift(chosen, class_k, Table(_class_header(class_k), rows))
    return parts


def _fragment(template: str, **context) -> str:
    """A template rendered as an HTML fragment, without a trailing newline, so that fragments
    join without blank lines (the drift stage appends :func:`layer_drift_html` to :func:`drift_html`)."""
    return render(template, **context).rstrip("\n")


def drift_html(
    previous_label: str | None,
    current_label: str,
    ranking: pl.DataFrame | None = None,
    classes: pl.DataFrame | None = None,
    metrics: pl.DataFrame | None = None,
    alerts: pl.DataFrame | None = None,
    *,
    neuron_name: Callable[[int], str] | None = None,
    method: str | None = None,
    k: int | None = None,
) -> str:
    """The drift section of the HTML report, as a fragment.

    Parameters
    ----------
    previous_label : str or None
        Name of the previous version (e.g. a short model hash); None for the first
        version, which gives only a note.
    current_label : str
        Name of the current version.
    ranking, classes, metrics, alerts : polars.DataFrame, optional
        Outputs of :func:`~neuro_pipeline.monitoring.ranking_drift`,
        :func:`~neuro_pipeline.monitoring.class_ranking_drift`,
        :func:`~neuro_pipeline.monitoring.class_metric_drift` and
        :func:`~neuro_pipeline.monitoring.drift_alerts`; a None table's part is left out.
    neuron_name : callable, optional
        Neuron id -> display name (e.g. ``"3:117"``); default ``str``.
    method : str, optional
        The method whose per-class drift is shown; default the first by name.
    k : int, optional
        The top-k size of the per-class table (pass ``DriftThresholds.alert_k``); default
        the largest k.

    Returns
    -------
    str
        HTML starting with ``<h2 id="drift">``; all text is escaped.
    """
    parts = {} if previous_label is None else _parts(ranking, classes, metrics, alerts, neuron_name, method, k)
    return _fragment("sections/drift.html.j2", title=TITLE, first_version_note=FIRST_VERSION_NOTE,
                     previous_label=previous_label, current_label=current_label, alerts_shown=_ALERTS_SHOWN, **parts)


def _md(text: object) -> str:
    """Text safe in a Markdown table cell: backslash, pipe and '<' escaped."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("<", "\\<")


def _md_rows(rows: list[list[str]]) -> list[list[str]]:
    return [[_md(c) for c in r] for r in rows]


def drift_markdown(
    previous_label: str | None,
    current_label: str,
    ranking: pl.DataFrame | None = None,
    classes: pl.DataFrame | None = None,
    metrics: pl.DataFrame | None = None,
    alerts: pl.DataFrame | None = None,
    *,
    neuron_name: Callable[[int], str] | None = None,
    method: str | None = None,
    k: int | None = None,
) -> str:
    """The drift section as Markdown (``## Drift since the previous version``); arguments as :func:`drift_html`."""
    out = [f"## {TITLE}", ""]
    if previous_label is None:
        out += [f"{FIRST_VERSION_NOTE} Version `{current_label}`.", ""]
        return "\n".join(out)
    p = _parts(ranking, classes, metrics, alerts, neuron_name, method, k)
    out += [f"Version `{current_label}` compared with the previous version `{previous_label}`.", ""]
    if p["alerts"] is not None:
        if p["alerts"]:
            out += [f"**{len(p['alerts'])} threshold(s) crossed:**", ""]
            out += [f"- {_md(m)}" for m in p["alerts"]] + [""]
        else:
            out += ["No threshold crossed.", ""]
    if p["ranking"] is not None:
        header, rows = p["ranking"]
        out += [("Jaccard overlap of each method's top-k neurons between the versions; Spearman correlation "
                 "of the scores."), ""]
        if rows:
            out += [markdown_table(header, _md_rows(rows)), ""]
        for status, text in (("only_previous", "Only in the previous version"),
                             ("only_current", "Only in the current version")):
            if p[status]:
                out += [f"{text}: {_md(', '.join(p[status]))}.", ""]
        top_k, moves = p["movement"]
        if moves:
            out += [f"Neurons that entered or left each method's top {top_k}:", "",
                    markdown_table(["method", "entered", "left"], _md_rows(moves)), ""]
    if p["metrics"] is not None:
        header, rows = p["metrics"]
        out += ["Probe scores per class, previous → current; Δ = current − previous.", "",
                markdown_table(header, _md_rows(rows)), ""]
    if p["classes"] is not None:
        chosen, class_k, (header, rows) = p["classes"]
        out += [f"Per-class rankings of {_md(chosen)}: Jaccard overlap of each class's top {class_k} neurons.", "",
                markdown_table(header, _md_rows(rows)), ""]
    return "\n".join(out)


_LAYER_HEADER = ["layer", "median r", "5th percentile", "95th percentile", "constant units"]


def _layer_rows(layers: pl.DataFrame) -> list[list[object]]:
    return [[r["layer"], num(r["corr_median"]), num(r["corr_p05"]), num(r["corr_p95"]), r["n_constant"]]
            for r in layers.iter_rows(named=True)]


def layer_drift_html(layers: pl.DataFrame | None) -> str:
    """The per-layer unit correlation between the versions (:func:`~neuro_pipeline.monitoring.activation_drift`)."""
    if layers is None or layers.is_empty():
        return ""
    return _fragment("sections/layer_drift.html.j2", n_words=layers["n_words"][0], header=_LAYER_HEADER,
                     rows=_layer_rows(layers))


def layer_drift_markdown(layers: pl.DataFrame | None) -> str:
    if layers is None or layers.is_empty():
        return ""
    return ("\n\nCorrelation of each unit with itself in the previous version, per layer:\n\n"
            + markdown_table(_LAYER_HEADER, _layer_rows(layers)) + "\n")

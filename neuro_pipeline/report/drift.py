"""The report's drift section: what changed since the previous model version.

Start here: :func:`drift_html` returns an HTML fragment (``<h2 id="drift">`` and what
follows) for :func:`~neuro_pipeline.report.render.report_html`'s page, and
:func:`drift_markdown` the same essentials as Markdown. Both take the tables of
:mod:`neuro_pipeline.monitoring` (ranking drift, per-class ranking drift, per-class metric
drift, alerts); any of them may be None when it was not computed, and its part is left out.
"""

from __future__ import annotations

import html
from collections.abc import Callable

import polars as pl

from neuro_pipeline.report.render import _html_table, _num, _pct, markdown_table

TITLE = "Drift since the previous version"
FIRST_VERSION_NOTE = "This is the first version: there is no earlier version to compare with."
_OVERALL_LABEL = "(all)"


def _points(delta: float | None) -> str:
    if delta is None:
        return "–"
    text = f"{100 * delta:+.1f}"
    return "+0.0" if text == "-0.0" else text


def _names(neurons: list[int] | None, neuron_name: Callable[[int], str]) -> str:
    return "–" if not neurons else ", ".join(neuron_name(n) for n in neurons)


def _label_text(label: str) -> str:
    return "overall" if label == _OVERALL_LABEL else label


def _ranking_rows(ranking: pl.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Jaccard per k and Spearman of every method compared in both versions."""
    ks = sorted(set(ranking["k"].to_list()))
    rows = []
    for (method,), group in ranking.filter(pl.col("status") == "both").sort("method", "k").group_by(
            ["method"], maintain_order=True):
        by_k = dict(zip(group["k"].to_list(), group["jaccard"].to_list()))
        first = group.row(0, named=True)
        rows.append([method, *[_num(by_k.get(k), 2) for k in ks], _num(first["spearman"], 3),
                     str(first["n_scored"])])
    return ["method", *[f"top {k}" for k in ks], "Spearman (scores)", "neurons scored"], rows


def _one_side(ranking: pl.DataFrame, status: str) -> list[str]:
    return sorted(set(ranking.filter(pl.col("status") == status)["method"].to_list()))


def _movement_rows(ranking: pl.DataFrame, neuron_name: Callable[[int], str]) -> tuple[int | None, list[list[str]]]:
    """Neurons that entered and left each method's top k at the smallest k."""
    both = ranking.filter(pl.col("status") == "both")
    if not len(both):
        return None, []
    k = both["k"].min()
    rows = [[r["method"], _names(r["entered"], neuron_name), _names(r["left"], neuron_name)]
            for r in both.filter(pl.col("k") == k).sort("method").iter_rows(named=True)]
    return k, rows


def _metric_rows(metrics: pl.DataFrame) -> tuple[list[str], list[list[str]]]:
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
        row = [_label_text(r["label"]), support, f"{_pct(r['accuracy_previous'])} → {_pct(r['accuracy_current'])}",
               _points(r["accuracy_delta"]), _points(r["f1_delta"])]
        if with_selectivity:
            row += [f"{_points_plain(r['selectivity_previous'])} → {_points_plain(r['selectivity_current'])}",
                    _points(r["selectivity_delta"])]
        rows.append(row)
    return header, rows


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
        rows.append([r["label"], _num(r["jaccard"], 2), str(r["overlap"]), str(r["n_entered"]), str(r["n_left"]), ""])
    return k, rows


_CLASS_HEADER_TAIL = ["kept", "entered", "left", "note"]


#: Alerts listed on the page before the rest fold into a "more" element (metric alerts come first).
_ALERTS_SHOWN = 8


def _parts(ranking, classes, metrics, alerts, neuron_name, method, k) -> dict:
    """Everything both renderings show, as plain text and table rows."""
    name = neuron_name or str
    parts: dict = {"alerts": None if alerts is None else alerts["message"].to_list()}
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
                parts["classes"] = (chosen, class_k, rows)
    return parts


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
    e = html.escape
    out = [f'<h2 id="drift">{TITLE}</h2>']
    if previous_label is None:
        out.append(f"<p class='note'>{e(FIRST_VERSION_NOTE)} Version <code>{e(current_label)}</code>.</p>")
        return "\n".join(out)
    p = _parts(ranking, classes, metrics, alerts, neuron_name, method, k)
    out.append(f"<p>Version <code>{e(current_label)}</code> compared with the previous version "
               f"<code>{e(previous_label)}</code>.</p>")
    if p["alerts"] is not None:
        if p["alerts"]:
            shown, rest = p["alerts"][:_ALERTS_SHOWN], p["alerts"][_ALERTS_SHOWN:]
            items = "".join(f"<li>{e(m)}</li>" for m in shown)
            more = ("<details><summary>" + f"{len(rest)} more (table drift_alerts)</summary><ul class='alerts'>"
                    + "".join(f"<li>{e(m)}</li>" for m in rest) + "</ul></details>") if rest else ""
            out.append(f"<p><b>{len(p['alerts'])} threshold(s) crossed:</b></p><ul class='alerts'>{items}</ul>{more}")
        else:
            out.append("<p>No threshold crossed.</p>")
    if "ranking" in p:
        header, rows = p["ranking"]
        out.append("<p>Jaccard overlap of each method's top-k neurons between the two versions (1 = same "
                   "neurons), and the Spearman correlation of the neurons' scores.</p>")
        if rows:
            out.append(_html_table(header, rows))
        for status, text in (("only_previous", "Only in the previous version"),
                             ("only_current", "Only in the current version")):
            if p[status]:
                out.append(f"<p class='note'>{text}: {e(', '.join(p[status]))}.</p>")
        top_k, moves = p["movement"]
        if moves:
            out.append(f"<p>Neurons that entered or left each method's top {top_k}:</p>")
            out.append(_html_table(["method", "entered", "left"], moves))
    if "metrics" in p:
        header, rows = p["metrics"]
        out.append("<p>Probe scores per class, previous → current; Δ = current − previous.</p>")
        out.append(_html_table(header, rows))
    if "classes" in p:
        chosen, class_k, rows = p["classes"]
        out.append(f"<p>Per-class rankings of {e(chosen)}: Jaccard overlap of each class's top {class_k} "
                   "neurons between the versions.</p>")
        out.append(_html_table(["label", f"Jaccard top {class_k}", *_CLASS_HEADER_TAIL], rows))
    return "\n".join(out)


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
    if "ranking" in p:
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
    if "metrics" in p:
        header, rows = p["metrics"]
        out += ["Probe scores per class, previous → current; Δ = current − previous.", "",
                markdown_table(header, _md_rows(rows)), ""]
    if "classes" in p:
        chosen, class_k, rows = p["classes"]
        out += [f"Per-class rankings of {_md(chosen)}: Jaccard overlap of each class's top {class_k} neurons.", "",
                markdown_table(["label", f"Jaccard top {class_k}", *_CLASS_HEADER_TAIL], _md_rows(rows)), ""]
    return "\n".join(out)


_LAYER_HEADER = ["layer", "median r", "5th percentile", "95th percentile", "constant units"]


def _layer_rows(layers: pl.DataFrame) -> list[list[object]]:
    return [[r["layer"], _num(r["corr_median"]), _num(r["corr_p05"]), _num(r["corr_p95"]), r["n_constant"]]
            for r in layers.iter_rows(named=True)]


def layer_drift_html(layers: pl.DataFrame | None) -> str:
    """The per-layer unit correlation between the versions (:func:`~neuro_pipeline.monitoring.activation_drift`)."""
    if layers is None or layers.is_empty():
        return ""
    return ("<p>Does each unit still compute the same thing? Pearson correlation of every unit's activations in the "
            f"two versions over the same {layers['n_words'][0]:,} evaluation words, per layer (1 = unchanged; "
            "a moved top set over high correlations means the ranking changed its mind among similar units).</p>"
            + _html_table(_LAYER_HEADER, _layer_rows(layers)))


def layer_drift_markdown(layers: pl.DataFrame | None) -> str:
    if layers is None or layers.is_empty():
        return ""
    return ("\n\nCorrelation of each unit with itself in the previous version, per layer:\n\n"
            + markdown_table(_LAYER_HEADER, _layer_rows(layers)) + "\n")

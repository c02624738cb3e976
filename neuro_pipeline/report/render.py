"""Render a report summary (the pipeline's ``ReportSummary``) as Markdown and as an HTML page.

The Markdown is built here, line by line (it is also shown as Dagster metadata). The HTML page
is the template ``templates/report.html.j2``, which includes one partial per section from
``templates/sections/``; :func:`report_html` computes the tables and plots the templates show.
The summary is duck-typed: any object with the fields of ``ReportSummary`` will do.
"""

from __future__ import annotations

import contextlib
import io
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from neuro_pipeline.heap import collector_paused
from neuro_pipeline.report.format import Table, markdown_table, num, pct
from neuro_pipeline.report.templating import render, trusted

_RANDOM_COLOR = "#888888"
_METHOD_COLORS = ("#1b6ca8", "#c0392b", "#27ae60", "#8e44ad", "#d35400", "#16a085", "#2c3e50", "#b8860b")


def selection_table_rows(summary: Any) -> list[list[str]]:
    """One row per method and fraction: method, share, k, top, random (mean ± std over
    draws), bottom. Random draws are shared by all methods."""
    by_key: dict[tuple[str, float], dict[str, dict]] = {}
    for r in summary.selections:
        by_key.setdefault((r["method"], r["fraction"]), {})[r["selection"]] = r
    rows = []
    for method in summary.methods:
        for fraction in sorted(f for m, f in by_key if m == method):
            sel = by_key[(method, fraction)]
            k = next(iter(sel.values()))["k"]
            rnd = sel.get("random")
            rnd_text = "–" if rnd is None else (
                pct(rnd["accuracy"]) + (f" ± {100 * rnd['std']:.1f}" if rnd.get("std") is not None else ""))
            rows.append([method, f"{100 * fraction:g}%", str(k), pct(sel.get("top", {}).get("accuracy")), rnd_text,
                         pct(sel.get("bottom", {}).get("accuracy"))])
    return rows


def agreement_rows(summary: Any) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the agreement table: Jaccard overlap of the top-n neurons of each
    pair of methods, and of each method with the NeuronVote of the others."""
    table: dict[tuple[str, str], dict[int, float]] = {}
    ns: set[int] = set()
    for r in summary.extra.get("agreement", []):
        table.setdefault((r["method_a"], r["method_b"]), {})[r["n"]] = r["jaccard"]
        ns.add(r["n"])
    order = sorted(ns)
    return (["method", "compared with", *[f"top {n}" for n in order]],
            [[a, b, *[f"{v[n]:.2f}" if n in v else "–" for n in order]] for (a, b), v in table.items()])


def _redundancy_rows(summary: Any) -> list[list[object]]:
    return [[r["layer"], r["n_neurons"], r["n_constant"], r["n_clusters"], r["n_independent"], r["largest_cluster"]]
            for r in summary.extra.get("redundancy", [])]


_REDUNDANCY_HEADER = ["layer", "neurons", "constant", "clusters", "independent", "largest cluster"]


def short_word(word: str, limit: int = 24) -> str:
    """A corpus token cut to ``limit`` characters (URLs and rulers in web text are long)."""
    return word if len(word) <= limit else word[: limit - 1] + "…"


def _top_neuron_rows(summary: Any) -> list[list[str]]:
    return [[method, name, ", ".join(short_word(w) for w in words) or "–"]
            for method, neurons in summary.extra.get("top_neurons", {}).items() for name, words in neurons]


def selectivity_rows(summary: Any) -> list[list[str]]:
    """Task accuracy, control accuracy and selectivity (points) of all neurons and each method's top k."""
    return [[r["method"], str(r["k"]), pct(r["task_accuracy"]), pct(r["control_accuracy"]),
             f"{100 * r['selectivity']:.1f}"] for r in summary.extra.get("selectivity", [])]


_SELECTIVITY_HEADER = ["neurons", "k", "task", "control task", "selectivity (points)"]


def layer_rows(summary: Any) -> list[list[str]]:
    return [[str(r["layer"]), pct(r["accuracy"]), pct(r.get("control_accuracy")),
             "–" if r.get("selectivity") is None else f"{100 * r['selectivity']:.1f}"]
            for r in summary.extra.get("layer_probes", [])]


_LAYER_HEADER = ["layer", "accuracy", "control task", "selectivity (points)"]


def ablation_rows(summary: Any) -> list[list[str]]:
    """Ablation at the probe: per method and size, the accuracy when the selection is kept
    or removed, retrained or zeroed (mean-filled) in the full probe; random = mean of draws."""
    table: dict[tuple, dict[tuple, float]] = {}
    for r in summary.extra.get("ablation", []):
        if r["mode"] == "full" or (r["zero_value"] not in (None, "mean")):
            continue
        table.setdefault((r["method"], r["k"], r["selection"]), {})[r["mode"]] = r["accuracy"]
    modes = _ablation_modes(summary)
    order = {"top": 0, "random": 1, "bottom": 2}
    return [[m, str(k), sel, *[pct(v.get(mode)) for mode in modes]]
            for (m, k, sel), v in sorted(table.items(), key=lambda kv: (kv[0][0], kv[0][1], order.get(kv[0][2], 3)))]


_ABLATION_MODES = {"keep_retrain": "keep, retrained", "keep_zero": "keep, rest zeroed",
                   "remove_retrain": "remove, retrained", "remove_zero": "remove, zeroed"}


def _ablation_modes(summary: Any) -> list[str]:
    """The ablation modes that were run, in a fixed order (remove_retrain is off by default)."""
    present = {r["mode"] for r in summary.extra.get("ablation", [])}
    return [m for m in _ABLATION_MODES if m in present]


def _ablation_header(summary: Any) -> list[str]:
    return ["method", "k", "neurons", *[_ABLATION_MODES[m] for m in _ablation_modes(summary)]]


def minimal_rows(summary: Any) -> list[list[str]]:
    return [[r["label"], "not reached" if r["n_neurons"] is None else str(r["n_neurons"]), num(r["reached_f1"]),
             num(r["target_f1"]), num(r["full_f1"])] for r in summary.extra.get("minimal_neurons", [])]


_MINIMAL_HEADER = ["label", "fewest neurons", "F1 reached", "target F1", "full-probe F1"]


def intervention_rows(summary: Any, metric: str) -> list[list[str]]:
    """Masked-word scores of the model itself with each method's top-k neurons of a class
    ablated, against random neurons of the same per-layer counts (mean [95% interval])."""
    rows = [r for r in summary.extra.get("interventions", []) if r["metric"] == metric]
    if rows:  # accuracy@k for the smallest k; the log-likelihood does not depend on k
        smallest = min(r["top_k"] for r in rows)
        rows = [r for r in rows if r["top_k"] == smallest]
    scale, digits = (100.0, 1) if metric == "accuracy" else (1.0, 2)

    def f(x: float | None) -> str:
        return "–" if x is None else f"{scale * x:.{digits}f}"

    return [[r["label"], r["method"], r["group"], str(r["n_words"]), str(r["n_neurons"]), f(r["baseline"]), f(r["top"]),
             f"{f(r['random_mean'])} [{f(r['random_low'])}, {f(r['random_high'])}]",
             num(r["random_share_below_top"], 2)]
            for r in sorted(rows, key=lambda r: (r["label"], r["method"], r["group"]))]


def _intervention_header(summary: Any, metric: str) -> list[str]:
    rows = summary.extra.get("interventions", [])
    what = (f"accuracy@{min(r['top_k'] for r in rows)} (%)" if metric == "accuracy" and rows
            else "log-likelihood (nats)")
    return ["class", "method", "words", "n", "neurons", f"baseline {what}", "top-k ablated",
            "random-k ablated [95%]", "random ≤ top"]


_INTERVENTION_TEXT = (
    "The model's own masked-word predictions (masked-LM head: {head}) on words of the class and on other words, "
    "with each method's top neurons of the class set to their {mode} inside the live model, against random "
    "neurons with the same count per layer ({n_random} draws; interval over draws). A probe shows that neurons "
    "encode a class; this shows whether the model uses them (Antverg & Belinkov 2022).")


def report_markdown(summary: Any) -> str:
    """The report as Markdown (also used as Dagster metadata)."""
    x = summary.extra
    first = summary.methods[0]
    head = [
        f"# Neuron analysis: {summary.task}",
        "",
        f"- Methods: {', '.join(summary.methods)}",
        f"- Model: `{x['model_dir']}` (version `{summary.model_version[:12]}`), {x['n_layers']} layers "
        f"× {x['hidden_size']} units, aggregation `{x['aggregation']}`, {x['dtype']}",
        f"- Corpus version `{x['corpus_version']}`; config {x['config_source']}",
        f"- Probe trained on {summary.n_train:,} words, evaluated on {summary.n_test:,} words ({summary.eval_split})",
        f"- **Full-probe accuracy {pct(summary.accuracy)}** "
        f"(majority-class baseline {pct(summary.majority_baseline)}), probe {_fitted_text(x['full_probe'])}",
    ]
    full_sel = next((r for r in x.get("selectivity", []) if r["method"] == "all"), None)
    if full_sel is not None:
        head.append(f"- **Selectivity {100 * full_sel['selectivity']:.1f} points** (control task "
                    f"{pct(full_sel['control_accuracy'])}, Hewitt & Liang 2019)")
    if summary.n_test_unseen_label:
        head.append(f"- {summary.n_test_unseen_label} test words carry a label never seen in training; "
                    "they count as errors.")
    if x.get("n_skipped_rejected"):
        head.append(f"- {x['n_skipped_rejected']} words skipped: their sentences exceeded the model's "
                    "length limit and extraction.long_sentences is 'reject'.")
    sel = markdown_table(["method", "neurons", "k", "top", "random", "bottom"], selection_table_rows(summary))
    per_class = markdown_table(
        ["label", "support", "accuracy", "F1", f"top neurons by {first} (layer:unit)"],
        [[r["label"], str(int(r.get("support", 0))), pct(r.get("accuracy")), num(r.get("f1")),
          ", ".join(x["top_per_class"].get((first, r["label"]), []))] for r in summary.per_class])
    parts = head + ["", DRIFT_START, x.get("drift_md") or "", DRIFT_END, "",
                    "## Probe accuracy with selected neurons (retrained)", "", sel, ""]
    if selectivity_rows(summary):
        parts += ["## Selectivity (control task)", "", markdown_table(_SELECTIVITY_HEADER, selectivity_rows(summary)),
                  ""]
    if layer_rows(summary):
        parts += ["## One probe per layer", "", markdown_table(_LAYER_HEADER, layer_rows(summary)), ""]
    if ablation_rows(summary):
        parts += ["## Ablation at the probe", "", markdown_table(_ablation_header(summary), ablation_rows(summary)), ""]
    if minimal_rows(summary):
        parts += ["## Fewest neurons per class", "", markdown_table(_MINIMAL_HEADER, minimal_rows(summary)), ""]
    if intervention_rows(summary, "accuracy"):
        parts += ["## Interventions in the model", "", _intervention_text(summary), ""]
        for metric in ("accuracy", "log_likelihood"):
            parts += [markdown_table(_intervention_header(summary, metric), intervention_rows(summary, metric)), ""]
    header, rows = agreement_rows(summary)
    if rows:
        parts += ["## Agreement between methods (Jaccard overlap of the top-n neurons)", "",
                  markdown_table(header, rows), ""]
    if _top_neuron_rows(summary):
        parts += ["## Strongest neurons and their top words", "",
                  markdown_table(["method", "neuron", "top words"], _top_neuron_rows(summary)), ""]
    if _redundancy_rows(summary):
        parts += ["## Redundancy: correlation clusters per layer", "",
                  markdown_table(_REDUNDANCY_HEADER, _redundancy_rows(summary)), ""]
    parts += ["## Per class", "", per_class, ""]
    return "\n".join(parts)


def _fitted_text(fitted: dict) -> str:
    parts = [f"{k}={fitted[k]:g}" for k in ("l1", "l2") if isinstance(fitted.get(k), (int, float))]
    return ", ".join(parts) or "n/a"


def _pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend, imported on first use with the garbage collector
    paused (its import set off a 0.4 s full collection of a run's heap; see
    :mod:`neuro_pipeline.heap`)."""
    with collector_paused():
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

    return plt


def accuracy_curve_svg(summary: Any) -> str:
    """Accuracy versus number of neurons: each method's top (solid) and bottom (dashed)
    selections, and the random draws (grey band), as inline SVG."""
    plt = _pyplot()
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(7.2, 4.0), dpi=100)
    random_rows = sorted({r["k"]: r for r in summary.selections if r["selection"] == "random"}.values(),
                         key=lambda r: r["k"])
    if random_rows:
        ks = [r["k"] for r in random_rows]
        acc = [r["accuracy"] for r in random_rows]
        ax.plot(ks, acc, marker="s", color=_RANDOM_COLOR, label="random")
        lo = [a - (r.get("std") or 0) for a, r in zip(acc, random_rows)]
        hi = [a + (r.get("std") or 0) for a, r in zip(acc, random_rows)]
        ax.fill_between(ks, lo, hi, color=_RANDOM_COLOR, alpha=0.2, linewidth=0)
    for i, method in enumerate(summary.methods):
        color = _METHOD_COLORS[i % len(_METHOD_COLORS)]
        for selection, style, marker, alpha in (("top", "-", "o", 1.0), ("bottom", "--", "v", 0.45)):
            rows = sorted((r for r in summary.selections if r["method"] == method and r["selection"] == selection),
                          key=lambda r: r["k"])
            if rows:
                # One legend entry per method (its top line); bottom lines are the faded dashes.
                ax.plot([r["k"] for r in rows], [r["accuracy"] for r in rows], linestyle=style, marker=marker,
                        color=color, alpha=alpha, label=method if selection == "top" else f"_{method} bottom")
    ax.axhline(summary.accuracy, color="black", linestyle="--", linewidth=1, label="all neurons")
    ax.axhline(summary.majority_baseline, color="black", linestyle=":", linewidth=1, label="majority class")
    ax.set_xscale("log")
    ticks = sorted({r["k"] for r in summary.selections})
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_xticks(ticks, [str(k) for k in ticks])
    ax.set_xlabel("neurons kept (retrained probe); solid: top, dashed: bottom")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.04)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=9, frameon=False)
    fig.tight_layout()
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    plt.close(fig)
    svg = buf.getvalue()
    return svg[svg.index("<svg"):]


def layer_plot_svg(summary: Any) -> str:
    """Accuracy of a probe per layer on the task and on the control task, as inline SVG."""
    plt = _pyplot()
    rows = summary.extra.get("layer_probes", [])
    fig, ax = plt.subplots(figsize=(7.2, 3.2), dpi=100)
    layers = [r["layer"] for r in rows]
    ax.plot(layers, [r["accuracy"] for r in rows], marker="o", color=_METHOD_COLORS[0], label="task")
    handles = []
    if rows and rows[0].get("control_accuracy") is not None:
        ax.plot(layers, [r["control_accuracy"] for r in rows], marker="s", color=_RANDOM_COLOR, label="control task")
        ax2 = ax.twinx()
        ax2.bar(layers, [100 * r["selectivity"] for r in rows], color=_METHOD_COLORS[2], alpha=0.3,
                label="selectivity (points, right axis)")
        ax2.set_ylabel("selectivity (points)")
        ax2.set_ylim(0, max(1.0, 1.15 * max(100 * r["selectivity"] for r in rows)))
        ax.set_zorder(ax2.get_zorder() + 1)
        ax.patch.set_visible(False)
        handles = ax2.get_legend_handles_labels()
    ax.set_xticks(layers, [f"{i}" + (" (emb.)" if i == 0 else "") for i in layers])
    ax.set_xlabel("layer")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.04)
    ax.grid(True, alpha=0.3)
    h, lab = ax.get_legend_handles_labels()
    if handles:
        h, lab = h + handles[0], lab + handles[1]
    ax.legend(h, lab, loc="center left", bbox_to_anchor=(1.12, 0.5), fontsize=9, frameon=False)
    fig.tight_layout()
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    plt.close(fig)
    svg = buf.getvalue()
    return svg[svg.index("<svg"):]


def _shaded_rows(rows: list[tuple[str, list[float]]], fmt: Any) -> list[tuple[str, list[tuple[str, str]]]]:
    """Rows of a shaded grid: each value as (text, opacity of the blue), 0 → white and the
    largest value → 0.75 (``shaded_table`` in ``templates/macros.html.j2``)."""
    top = max((v for _, vals in rows for v in vals), default=0) or 1
    return [(name, [(fmt(v), f"{0.75 * v / top:.2f}") for v in vals]) for name, vals in rows]


def _distribution_table(summary: Any) -> Table:
    rows = [r for r in summary.extra.get("layer_distribution", []) if r["method"] == summary.methods[0]]
    if not rows:
        return Table([], [])
    layers = sorted({r["layer"] for r in rows})
    by_label: dict[str, dict[int, int]] = {}
    for r in rows:
        by_label.setdefault(r["label"], {})[r["layer"]] = r["n_neurons"]
    return Table(["label", *[f"L{i}" for i in layers]],
                 _shaded_rows([(lab, [float(v.get(i, 0)) for i in layers]) for lab, v in by_label.items()],
                              fmt=lambda v: str(int(v))))


def _confusion_table(summary: Any) -> Table:
    rows = summary.extra.get("confusion", [])
    if not rows:
        return Table([], [])
    labels = list(dict.fromkeys(r["true_label"] for r in rows))
    counts = {(r["true_label"], r["predicted_label"]): r["count"] for r in rows}
    return Table(["true \\ predicted", *labels],
                 _shaded_rows([(t, [float(counts.get((t, p), 0)) for p in labels]) for t in labels],
                              fmt=lambda v: str(int(v)) if v else ""))


#: The drift section sits between these markers: the model_drift stage, which runs after
#: the report, fills it in with :func:`insert_drift_section`.
DRIFT_START, DRIFT_END = "<!-- drift -->", "<!-- /drift -->"


def insert_drift_section(out_dir: str | Path, html_fragment: str, markdown: str) -> None:
    """Put the drift section into an existing report (both files, written atomically)."""
    out_dir = Path(out_dir)
    for name, text in (("report.html", html_fragment), ("report.md", markdown)):
        path = out_dir / name
        page = path.read_text(encoding="utf-8")
        start, end = page.find(DRIFT_START), page.find(DRIFT_END)
        if start < 0 or end < start:
            raise ValueError(f"{path}: no drift markers {DRIFT_START} … {DRIFT_END}; re-materialize "
                             "evaluation_report (it was written by an older version).")
        tmp = out_dir / f".{name}.tmp"
        tmp.write_text(page[:start + len(DRIFT_START)] + text + page[end:], encoding="utf-8")
        tmp.replace(path)


def _intervention_text(summary: Any) -> str:
    rows = summary.extra.get("interventions", [])
    head = summary.extra.get("mlm_head", {}) or {}
    source = head.get("source", "the checkpoint's own")
    return _INTERVENTION_TEXT.format(head=source, mode="mean" if rows and rows[0].get("mode") == "mean" else "zero",
                                     n_random=rows[0]["n_random"] if rows else 0)


def report_html(summary: Any) -> str:
    """The report as one self-contained HTML page: ``templates/report.html.j2`` with the
    tables, plots and headline numbers computed here. The plots, the heatmaps and a drift
    section already in ``summary.extra["drift_html"]`` are inserted as they are (generated by
    the pipeline); all other text is escaped."""
    x = summary.extra
    first = summary.methods[0]
    tops = [r for r in summary.selections if r["selection"] == "top"]
    smallest = min((r["k"] for r in tops), default=None)
    layers = Table(_LAYER_HEADER, layer_rows(summary))
    interventions = [Table(_intervention_header(summary, m), intervention_rows(summary, m))
                     for m in ("accuracy", "log_likelihood")] if intervention_rows(summary, "accuracy") else []
    per_class = Table(
        ["label", "support", "accuracy", "precision", "F1", f"top neurons by {first} (layer:unit)"],
        [[r["label"], int(r.get("support", 0)), pct(r.get("accuracy")), pct(r.get("precision")), pct(r.get("f1")),
          ", ".join(x["top_per_class"].get((first, r["label"]), []))] for r in summary.per_class])
    return render(
        "report.html.j2", summary=summary, x=x, first=first,
        best=max((r for r in tops if r["k"] == smallest), key=lambda r: r["accuracy"], default=None),
        full_selectivity=next((r for r in x.get("selectivity", []) if r["method"] == "all"), None),
        drift_start=trusted(DRIFT_START), drift_end=trusted(DRIFT_END),
        drift=trusted(x["drift_html"]) if x.get("drift_html") else None,
        fitted=_fitted_text(x["full_probe"]), accuracy_curve=trusted(accuracy_curve_svg(summary)),
        selections=Table(["method", "neurons", "k", "top", "random", "bottom"], selection_table_rows(summary)),
        selectivity=Table(_SELECTIVITY_HEADER, selectivity_rows(summary)),
        layers=layers, layer_plot=trusted(layer_plot_svg(summary)) if layers.rows else None,
        distribution=_distribution_table(summary),
        ablation=Table(_ablation_header(summary), ablation_rows(summary)),
        interventions=interventions, intervention_text=_intervention_text(summary),
        agreement=Table(*agreement_rows(summary)),
        top_words=Table(["method", "neuron", "top words"], _top_neuron_rows(summary)),
        heatmaps=[trusted(h["svg"]) for h in x.get("heatmaps", [])],
        minimal=Table(_MINIMAL_HEADER, minimal_rows(summary)),
        redundancy=Table(_REDUNDANCY_HEADER, _redundancy_rows(summary)),
        per_class=per_class, confusion=_confusion_table(summary))


def render_report(summary: Any, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.html`` into ``out_dir`` (written to a temporary name, then renamed)."""
    with staged_report(summary, out_dir) as paths:
        pass
    return paths


@contextlib.contextmanager
def staged_report(summary: Any, out_dir: str | Path) -> Iterator[tuple[Path, Path]]:
    """Render the report into temporary files, yield the final paths, and rename the files
    into place only if the ``with`` block succeeds (e.g. the database rows that point at
    the report were committed); on an error the temporary files are removed and the
    previous report stays as it was."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    staged = []
    try:
        for name, text in (("report.md", report_markdown(summary)), ("report.html", report_html(summary))):
            # A name of its own per render: two runs writing the same report at once must
            # not rename each other's file (seen: FileNotFoundError in the two-runs test).
            tmp = out_dir / f".{name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
            staged.append((tmp, out_dir / name))
            tmp.write_text(text, encoding="utf-8")
        yield staged[0][1], staged[1][1]
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise
    for tmp, final in staged:
        tmp.replace(final)

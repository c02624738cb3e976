"""Render a :class:`~neuro_pipeline.pipeline.ReportSummary` as Markdown and as an HTML page."""

from __future__ import annotations

import html
import io
from pathlib import Path
from typing import Any

_RANDOM_COLOR = "#888888"
_METHOD_COLORS = ("#1b6ca8", "#c0392b", "#27ae60", "#8e44ad", "#d35400", "#16a085", "#2c3e50", "#b8860b")


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


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
                _pct(rnd["accuracy"]) + (f" ± {100 * rnd['std']:.1f}" if rnd.get("std") is not None else ""))
            rows.append([method, f"{100 * fraction:g}%", str(k), _pct(sel.get("top", {}).get("accuracy")), rnd_text,
                         _pct(sel.get("bottom", {}).get("accuracy"))])
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


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    """A Markdown table; cells are formatted with ``str``."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _redundancy_rows(summary: Any) -> list[list[object]]:
    return [[r["layer"], r["n_neurons"], r["n_constant"], r["n_clusters"], r["n_independent"], r["largest_cluster"]]
            for r in summary.extra.get("redundancy", [])]


_REDUNDANCY_HEADER = ["layer", "neurons", "constant", "clusters", "independent", "largest cluster"]


def _top_neuron_rows(summary: Any) -> list[list[str]]:
    return [[method, name, ", ".join(words) or "–"]
            for method, neurons in summary.extra.get("top_neurons", {}).items() for name, words in neurons]


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
        f"- **Full-probe accuracy {_pct(summary.accuracy)}** (majority-class baseline {_pct(summary.majority_baseline)}), "
        f"probe {_fitted_text(x['full_probe'])}",
    ]
    if summary.n_test_unseen_label:
        head.append(f"- {summary.n_test_unseen_label} test words carry a label never seen in training; "
                    "they count as errors.")
    if x.get("n_skipped_rejected"):
        head.append(f"- {x['n_skipped_rejected']} words skipped: their sentences exceeded the model's "
                    "length limit and extraction.long_sentences is 'reject'.")
    sel = markdown_table(["method", "neurons", "k", "top", "random", "bottom"], selection_table_rows(summary))
    per_class = markdown_table(
        ["label", "support", "accuracy", f"top neurons by {first} (layer:unit)"],
        [[r["label"], str(int(r.get("support", 0))), _pct(r.get("accuracy")),
          ", ".join(x["top_per_class"].get((first, r["label"]), []))] for r in summary.per_class])
    parts = head + ["", "## Probe accuracy with selected neurons (retrained)", "", sel, ""]
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


def accuracy_curve_svg(summary: Any) -> str:
    """Accuracy versus number of neurons: each method's top (solid) and bottom (dashed)
    selections, and the random draws (grey band), as inline SVG."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
        for selection, style, marker in (("top", "-", "o"), ("bottom", "--", "v")):
            rows = sorted((r for r in summary.selections if r["method"] == method and r["selection"] == selection),
                          key=lambda r: r["k"])
            if rows:
                ax.plot([r["k"] for r in rows], [r["accuracy"] for r in rows], linestyle=style, marker=marker,
                        color=color, label=f"{method} {selection}")
    ax.axhline(summary.accuracy, color="black", linestyle="--", linewidth=1, label="all neurons")
    ax.axhline(summary.majority_baseline, color="black", linestyle=":", linewidth=1, label="majority class")
    ax.set_xscale("log")
    ticks = sorted({r["k"] for r in summary.selections})
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_xticks(ticks, [str(k) for k in ticks])
    ax.set_xlabel("neurons kept (retrained probe)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7)
    fig.tight_layout()
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    plt.close(fig)
    svg = buf.getvalue()
    return svg[svg.index("<svg"):]


def _html_table(header: list[str], rows: list[list[object]]) -> str:
    e = html.escape
    head = "".join(f"<th>{e(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.92em}td,th{border:1px solid #ddd;padding:.25em .6em;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child,td.names{text-align:left}
.kpi{display:flex;gap:1.5em;margin:1em 0}.kpi div{background:#f4f8fb;padding:.6em 1em;border-radius:6px}
.kpi b{display:block;font-size:1.4em}code{background:#f4f4f4;padding:0 .2em}
"""


def report_html(summary: Any) -> str:
    """The report as one self-contained HTML page."""
    x = summary.extra
    e = html.escape
    first = summary.methods[0]
    classes = _html_table(
        ["label", "support", "accuracy", f"top neurons by {first} (layer:unit)"],
        [[r["label"], int(r.get("support", 0)), _pct(r.get("accuracy")),
          ", ".join(x["top_per_class"].get((first, r["label"]), []))] for r in summary.per_class])
    tops = [r for r in summary.selections if r["selection"] == "top"]
    smallest = min((r["k"] for r in tops), default=None)
    best = max((r for r in tops if r["k"] == smallest), key=lambda r: r["accuracy"], default=None)
    header, rows = agreement_rows(summary)
    agreement = ("<h2>Agreement between methods</h2><p>Jaccard overlap of the top-n neurons of two methods, and of "
                 "each method with the NeuronVote consensus of the others (Fan et al. 2023).</p>"
                 + _html_table(header, rows)) if rows else ""
    top_rows = _top_neuron_rows(summary)
    top_words = ("<h2>Strongest neurons and their top words</h2>"
                 + _html_table(["method", "neuron", "top words"], top_rows)) if top_rows else ""
    red_rows = _redundancy_rows(summary)
    redundancy = ("<h2>Redundancy</h2><p>Neurons clustered per layer by correlation (average linkage, "
                  "distance 1 − |r|); one independent neuron per cluster (Dalvi et al. 2020).</p>"
                  + _html_table(_REDUNDANCY_HEADER, red_rows)) if red_rows else ""
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Neuron analysis: {e(summary.task)}</title><style>{_CSS}</style></head><body>
<h1>Neuron analysis: {e(summary.task)} <small>({e(', '.join(summary.methods))})</small></h1>
<p>Model <code>{e(x['model_dir'])}</code> version <code>{e(summary.model_version[:12])}</code>:
{x['n_layers']} layers × {x['hidden_size']} units, aggregation <code>{e(x['aggregation'])}</code>, {e(x['dtype'])}.
Corpus version <code>{e(x['corpus_version'])}</code>; config {e(str(x['config_source']))}.
Probe trained on {summary.n_train:,} words and evaluated on {summary.n_test:,} words ({e(summary.eval_split)}).</p>
<div class="kpi"><div><b>{_pct(summary.accuracy)}</b>full-probe accuracy</div>
<div><b>{_pct(summary.majority_baseline)}</b>majority-class baseline</div>
<div><b>{_pct(best['accuracy']) if best else '–'}</b>top {best['k'] if best else ''} neurons only
({e(best['method']) if best else ''})</div></div>
<h2>Probe accuracy with selected neurons</h2>
<p>A probe is retrained on each selection ({e(x.get('selection_probe', ''))}); random selections are averaged
over draws (± one standard deviation) and shared by all methods.
Full probe: {e(_fitted_text(x['full_probe']))}.</p>
{accuracy_curve_svg(summary)}
{_html_table(["method", "neurons", "k", "top", "random", "bottom"], selection_table_rows(summary))}
{agreement}
{top_words}
{redundancy}
<h2>Per class</h2>
{classes}
<p><small>Layer 0 is the embedding layer. Generated by neuro-pipeline.</small></p>
</body></html>
"""


def render_report(summary: Any, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.html`` into ``out_dir`` (written to a temporary name, then renamed)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in (("report.md", report_markdown(summary)), ("report.html", report_html(summary))):
        tmp = out_dir / f".{name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(out_dir / name)
        paths.append(out_dir / name)
    return paths[0], paths[1]

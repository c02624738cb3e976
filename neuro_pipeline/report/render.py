"""Render a :class:`~neuro_pipeline.pipeline.ReportSummary` as Markdown and as an HTML page."""

from __future__ import annotations

import html
import io
from pathlib import Path
from typing import Any

_SELECTION_STYLE = {"top": ("#1b6ca8", "o"), "random": ("#888888", "s"), "bottom": ("#c0392b", "v")}


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def selection_table_rows(summary: Any) -> list[list[str]]:
    """One row per fraction: k, top, random (mean ± std over draws), bottom."""
    by_fraction: dict[float, dict[str, dict]] = {}
    for r in summary.selections:
        by_fraction.setdefault(r["fraction"], {})[r["selection"]] = r
    rows = []
    for fraction in sorted(by_fraction):
        sel = by_fraction[fraction]
        k = next(iter(sel.values()))["k"]
        rnd = sel.get("random")
        rnd_text = "–" if rnd is None else (
            _pct(rnd["accuracy"]) + (f" ± {100 * rnd['std']:.1f}" if rnd.get("std") is not None else ""))
        rows.append([f"{100 * fraction:g}%", str(k), _pct(sel.get("top", {}).get("accuracy")), rnd_text,
                     _pct(sel.get("bottom", {}).get("accuracy"))])
    return rows


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    """A Markdown table; cells are formatted with ``str``."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def report_markdown(summary: Any) -> str:
    """The report as Markdown (also used as Dagster metadata)."""
    x = summary.extra
    head = [
        f"# Neuron analysis: {summary.task} ({summary.method})",
        "",
        f"- Model: `{x['model_dir']}` (version `{summary.model_version[:12]}`), {x['n_layers']} layers "
        f"× {x['hidden_size']} units, aggregation `{x['aggregation']}`, {x['dtype']}",
        f"- Corpus version `{x['corpus_version']}`; config {x['config_source']}",
        f"- Probe trained on {summary.n_train:,} words, evaluated on {summary.n_test:,} words ({summary.eval_split})",
        f"- **Full-probe accuracy {_pct(summary.accuracy)}** (majority-class baseline {_pct(summary.majority_baseline)})",
        f"- Regularisation chosen on held-out training data: {_fitted_text(x['fitted'])}",
    ]
    if summary.n_test_unseen_label:
        head.append(f"- {summary.n_test_unseen_label} test words carry a label never seen in training; "
                    "they count as errors.")
    if x.get("n_skipped_rejected"):
        head.append(f"- {x['n_skipped_rejected']} words skipped: their sentences exceeded the model's "
                    "length limit and extraction.long_sentences is 'reject'.")
    sel = markdown_table(["neurons", "k", "top", "random", "bottom"], selection_table_rows(summary))
    per_class = markdown_table(
        ["label", "support", "accuracy", "top neurons (layer:unit)"],
        [[r["label"], str(int(r.get("support", 0))), _pct(r.get("accuracy")),
          ", ".join(x["top_per_class"].get(r["label"], []))] for r in summary.per_class])
    return "\n".join(head + ["", "## Probe accuracy with selected neurons (retrained)", "", sel, "",
                             "## Per class", "", per_class, ""])


def _fitted_text(fitted: dict) -> str:
    parts = [f"{k}={fitted[k]:g}" for k in ("l1", "l2") if isinstance(fitted.get(k), (int, float))]
    return ", ".join(parts) or "n/a"


def accuracy_curve_svg(summary: Any) -> str:
    """Accuracy versus number of neurons for top, random and bottom selections, as inline SVG."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    for selection, (color, marker) in _SELECTION_STYLE.items():
        rows = sorted((r for r in summary.selections if r["selection"] == selection), key=lambda r: r["k"])
        if not rows:
            continue
        ks = [r["k"] for r in rows]
        acc = [r["accuracy"] for r in rows]
        ax.plot(ks, acc, marker=marker, color=color, label=selection)
        if selection == "random":
            lo = [a - (r.get("std") or 0) for a, r in zip(acc, rows)]
            hi = [a + (r.get("std") or 0) for a, r in zip(acc, rows)]
            ax.fill_between(ks, lo, hi, color=color, alpha=0.2, linewidth=0)
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
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    plt.close(fig)
    svg = buf.getvalue()
    return svg[svg.index("<svg"):]


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
    rows = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in selection_table_rows(summary))
    classes = "".join(
        f"<tr><td>{e(r['label'])}</td><td>{int(r.get('support', 0))}</td><td>{_pct(r.get('accuracy'))}</td>"
        f"<td class='names'>{e(', '.join(x['top_per_class'].get(r['label'], [])))}</td></tr>" for r in summary.per_class)
    top1 = next((r for r in summary.selections if r["selection"] == "top"), None)
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Neuron analysis: {e(summary.task)}</title><style>{_CSS}</style></head><body>
<h1>Neuron analysis: {e(summary.task)} <small>({e(summary.method)})</small></h1>
<p>Model <code>{e(x['model_dir'])}</code> version <code>{e(summary.model_version[:12])}</code>:
{x['n_layers']} layers × {x['hidden_size']} units, aggregation <code>{e(x['aggregation'])}</code>, {e(x['dtype'])}.
Corpus version <code>{e(x['corpus_version'])}</code>; config {e(str(x['config_source']))}.
Probe trained on {summary.n_train:,} words and evaluated on {summary.n_test:,} words ({e(summary.eval_split)}).</p>
<div class="kpi"><div><b>{_pct(summary.accuracy)}</b>full-probe accuracy</div>
<div><b>{_pct(summary.majority_baseline)}</b>majority-class baseline</div>
<div><b>{_pct(top1['accuracy']) if top1 else '–'}</b>top {top1['k'] if top1 else ''} neurons only</div></div>
<h2>Probe accuracy with selected neurons</h2>
<p>A probe is retrained on each selection ({e(x.get('selection_probe', ''))}); random selections are averaged
over draws (± one standard deviation).
Regularisation chosen on held-out training data: {e(_fitted_text(x['fitted']))}.</p>
{accuracy_curve_svg(summary)}
<table><tr><th>neurons</th><th>k</th><th>top</th><th>random</th><th>bottom</th></tr>{rows}</table>
<h2>Per class</h2>
<table><tr><th>label</th><th>support</th><th>accuracy</th><th>top neurons (layer:unit)</th></tr>{classes}</table>
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

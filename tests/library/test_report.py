"""The report renders to self-contained Markdown and HTML (from the templates) with the numbers it was given."""

from __future__ import annotations

import re

import pytest

from neuro_pipeline.report import render_report, report_markdown
from neuro_pipeline.report.render import insert_drift_section, report_html, staged_report
from neuro_pipeline.report.templating import TEMPLATES
from neuro_pipeline.stages.report import ReportSummary


def _rows(method, numbers):
    out = []
    for (fraction, k), (top, bottom) in numbers.items():
        out.append({"method": method, "selection": "top", "fraction": fraction, "k": k, "accuracy": top,
                    "std": None, "n_draws": 1})
        out.append({"method": method, "selection": "random", "fraction": fraction, "k": k,
                    "accuracy": {27: 0.52, 135: 0.86}[k], "std": {27: 0.05, 135: 0.01}[k], "n_draws": 3})
        if bottom is not None:
            out.append({"method": method, "selection": "bottom", "fraction": fraction, "k": k, "accuracy": bottom,
                        "std": None, "n_draws": 1})
    return out


def _summary(tmp_path) -> ReportSummary:
    selections = (_rows("linear_probe", {(0.01, 27): (0.78, 0.29), (0.05, 135): (0.92, 0.69)})
                  + _rows("gaussian", {(0.01, 27): (0.61, None)}))
    return ReportSummary(
        activation_set="abc", model_version="f" * 64, task="upos", methods=["linear_probe", "gaussian"], n_train=100,
        n_test=50, eval_split="test", accuracy=0.9423, majority_baseline=0.1643, n_test_unseen_label=2,
        selections=selections,
        per_class=[{"label": "NOUN", "accuracy": 0.92, "support": 30, "precision": 0.9, "f1": 0.91},
                   {"label": "X", "accuracy": 0.0, "support": 1, "precision": None, "f1": None}],
        html_path=str(tmp_path / "report.html"), markdown_path=str(tmp_path / "report.md"), seconds=1.0,
        extra={"full_probe": {"l1": 1e-3, "l2": 1e-4}, "fitted": {}, "hidden_size": 384, "n_layers": 7,
               "model_dir": "/m", "aggregation": "last", "dtype": "float32", "corpus_version": "cv",
               "config_source": "p.yaml",
               "top_per_class": {("linear_probe", "NOUN"): ["L2:266", "L1:252"], ("gaussian", "NOUN"): ["L6:1"]},
               "top_neurons": {"linear_probe": [("L2:266", ["cat", "dog"])], "gaussian": [("L6:1", [])]},
               "agreement": [{"kind": "pair", "method_a": "gaussian", "method_b": "linear_probe", "n": 10,
                              "overlap": 3, "jaccard": 3 / 17}],
               "redundancy": [{"layer": 0, "n_neurons": 384, "n_constant": 3, "n_clusters": 200,
                               "n_independent": 199, "largest_cluster": 12, "mean_cluster_size": 1.9}],
               "n_skipped_rejected": 3, "selection_probe": "l1=0, l2=0.001",
               "selectivity": [{"method": "all", "k": 2688, "task_accuracy": 0.94, "control_accuracy": 0.71,
                                "selectivity": 0.23},
                               {"method": "linear_probe", "k": 269, "task_accuracy": 0.936, "control_accuracy": 0.5,
                                "selectivity": 0.436}],
               "layer_probes": [{"layer": 0, "n_neurons": 384, "accuracy": 0.8, "control_accuracy": 0.7,
                                 "selectivity": 0.1},
                                {"layer": 1, "n_neurons": 384, "accuracy": 0.9, "control_accuracy": 0.6,
                                 "selectivity": 0.3}],
               "ablation": [{"method": "linear_probe", "mode": "full", "selection": "all", "fraction": None,
                             "k": 2688, "accuracy": 0.94, "std": None, "zero_value": None},
                            {"method": "linear_probe", "mode": "keep_retrain", "selection": "top", "fraction": 0.1,
                             "k": 269, "accuracy": 0.936, "std": None, "zero_value": None},
                            {"method": "linear_probe", "mode": "keep_zero", "selection": "top", "fraction": 0.1,
                             "k": 269, "accuracy": 0.61, "std": None, "zero_value": "mean"},
                            {"method": "linear_probe", "mode": "keep_zero", "selection": "top", "fraction": 0.1,
                             "k": 269, "accuracy": 0.2, "std": None, "zero_value": "zero"}],
               "layer_distribution": [{"method": "linear_probe", "label": "NOUN", "layer": 0, "n_neurons": 3,
                                       "share": 0.3},
                                      {"method": "linear_probe", "label": "NOUN", "layer": 1, "n_neurons": 7,
                                       "share": 0.7}],
               "minimal_neurons": [{"method": "linear_probe", "label": "NOUN", "n_neurons": 8, "reached_f1": 0.85,
                                    "target_f1": 0.82, "full_f1": 0.91},
                                   {"method": "linear_probe", "label": "X", "n_neurons": None, "reached_f1": 0.1,
                                    "target_f1": 0.5, "full_f1": 0.55}],
               "confusion": [{"true_label": "NOUN", "predicted_label": "NOUN", "count": 28},
                             {"true_label": "NOUN", "predicted_label": "X", "count": 2},
                             {"true_label": "X", "predicted_label": "NOUN", "count": 1},
                             {"true_label": "X", "predicted_label": "X", "count": 0}],
               "heatmaps": [{"label": "NOUN", "neuron": "L2:266", "svg": "<svg id='hm'></svg>"}]})


def test_markdown_has_headline_selections_and_classes(tmp_path):
    md = report_markdown(_summary(tmp_path))
    assert "**Full-probe accuracy 94.2%**" in md and "probe l1=0.001, l2=0.0001" in md
    assert "| linear_probe | 1% | 27 | 78.0% | 52.0% ± 5.0 | 29.0% |" in md
    # A method that ranked a prefix has no bottom selection: shown as a dash, not a number.
    assert "| gaussian | 1% | 27 | 61.0% | 52.0% ± 5.0 | – |" in md
    assert "| NOUN | 30 | 92.0% | 0.910 | L2:266, L1:252 |" in md
    assert "**Selectivity 23.0 points** (control task 71.0%" in md
    assert "| linear_probe | 269 | 93.6% | 50.0% | 43.6 |" in md
    assert "| 1 | 90.0% | 60.0% | 30.0 |" in md
    # Ablation rows show the mean-filled zeroing; the full row is the reference, not a row.
    # Only the modes that ran get a column (remove_retrain is off by default).
    assert "| method | k | neurons | keep, retrained | keep, rest zeroed |" in md
    assert "| linear_probe | 269 | top | 93.6% | 61.0% |" in md
    assert "| X | not reached | 0.100 | 0.500 | 0.550 |" in md
    assert "| gaussian | linear_probe | 0.18 |" in md
    assert "| linear_probe | L2:266 | cat, dog |" in md and "| gaussian | L6:1 | – |" in md
    assert "| 0 | 384 | 3 | 200 | 199 | 12 |" in md
    assert "2 test words carry a label never seen in training" in md
    assert "3 words skipped" in md


def test_html_is_self_contained_with_plot(tmp_path):
    md_path, html_path = render_report(_summary(tmp_path), tmp_path / "out")
    html = html_path.read_text(encoding="utf-8")
    assert md_path.read_text(encoding="utf-8").startswith("# Neuron analysis: upos")
    assert "78.0%" in html and "l1=0, l2=0.001" in html
    assert "solid: top, dashed: bottom" in html and "<!-- linear_probe -->" in html  # axis label, legend entry
    assert html.count("<svg") == 3  # accuracy curves, layer plot, one heatmap
    for section in ("selectivity", "layers", "where", "ablation", "heatmaps", "minimal", "per-class", "confusion"):
        assert f"id='{section}'" in html, section
    assert "rgba(27,108,168,0.75)" in html  # the largest confusion count is fully shaded
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//|url\(\s*["']?(https?:)?//|@import""", html)
    assert not list((tmp_path / "out").glob(".*.tmp"))


def _full_summary(tmp_path) -> ReportSummary:
    """The fixture with every section filled, and text that HTML must escape (<, &, quotes)."""
    s = _summary(tmp_path)
    s.per_class.append({"label": "<i>&", "accuracy": 0.5, "support": 2, "precision": 0.5, "f1": 0.5})
    x = s.extra
    x["top_neurons"]["linear_probe"] = [("L2:266", ["a<b&c", "don't"])]
    x["confusion"].append({"true_label": "<i>&", "predicted_label": "NOUN", "count": 2})
    x["interventions"] = [
        {"label": "NOUN", "method": "linear_probe", "group": group, "n_words": 30, "n_neurons": 10, "metric": metric,
         "top_k": 1, "baseline": 0.6, "top": 0.4, "random_mean": 0.58, "random_low": 0.55, "random_high": 0.61,
         "random_share_below_top": 0.0, "mode": "mean", "n_random": 20}
        for group in ("class", "other") for metric in ("accuracy", "log_likelihood")]
    x["mlm_head"] = {"source": "trained <head> & co"}
    return s


def test_html_has_every_section_and_escapes_text_from_the_summary(tmp_path):
    page = report_html(_full_summary(tmp_path))
    for heading in ("Probe accuracy with selected neurons", "Selectivity (control task)", "One probe per layer",
                    "Where the top neurons are", "Ablation at the probe", "Interventions in the model",
                    "Agreement between methods", "Strongest neurons and their top words",
                    "Strongest neuron of each class over real sentences", "Fewest neurons per class", "Redundancy",
                    "Per class", "Confusion matrix of the full probe"):
        assert re.search(rf"<h2( id='[a-z-]+')?>{re.escape(heading)}</h2>", page), heading
    assert "id='drift-pending'" in page and page.count("<!-- drift -->") == 1
    # Text from the corpus, the labels and the config is escaped ...
    assert "a&lt;b&amp;c, don&#x27;t" in page and "a<b" not in page
    assert "<td class='names'>&lt;i&gt;&amp;</td>" in page and "<i>&" not in page
    assert "trained &lt;head&gt; &amp; co" in page
    # ... and the SVG the pipeline generated is inserted as it is.
    assert "<div class='heatmap'><svg id='hm'></svg></div>" in page


def test_drift_section_replaces_the_pending_note(tmp_path):
    _, html_path = render_report(_summary(tmp_path), tmp_path / "out")
    insert_drift_section(tmp_path / "out", "<h2 id='drift'>Drift</h2>", "## Drift")
    page = html_path.read_text(encoding="utf-8")
    assert "<!-- drift --><h2 id='drift'>Drift</h2><!-- /drift -->" in page and "drift-pending" not in page
    assert "<!-- drift -->## Drift<!-- /drift -->" in (tmp_path / "out" / "report.md").read_text(encoding="utf-8")


def test_a_failed_block_leaves_the_previous_report(tmp_path):
    out = tmp_path / "out"
    md_path, _ = render_report(_summary(tmp_path), out)
    before = md_path.read_text(encoding="utf-8")
    changed = _summary(tmp_path)
    changed.task = "xpos"
    with pytest.raises(RuntimeError), staged_report(changed, out):
        raise RuntimeError("the database rows were not committed")
    assert md_path.read_text(encoding="utf-8") == before and not list(out.glob(".*.tmp"))


def test_every_section_partial_is_included_in_the_page():
    page = (TEMPLATES / "report.html.j2").read_text(encoding="utf-8")
    fragments = {"drift.html.j2", "layer_drift.html.j2"}  # rendered on their own by report.drift
    for partial in sorted((TEMPLATES / "sections").glob("*.html.j2")):
        if partial.name not in fragments:
            assert f'{{% include "sections/{partial.name}" %}}' in page, partial.name

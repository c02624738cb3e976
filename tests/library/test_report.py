"""The report renders to self-contained Markdown and HTML with the numbers it was given."""

from __future__ import annotations

import re

from neuro_pipeline.pipeline import ReportSummary
from neuro_pipeline.report import render_report, report_markdown


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

"""The report renders to self-contained Markdown and HTML with the numbers it was given."""

from __future__ import annotations

import re

from neuro_pipeline.pipeline import ReportSummary
from neuro_pipeline.report import render_report, report_markdown


def _summary(tmp_path) -> ReportSummary:
    selections = [
        {"selection": "top", "fraction": 0.01, "k": 27, "accuracy": 0.78, "std": None, "n_draws": 1},
        {"selection": "random", "fraction": 0.01, "k": 27, "accuracy": 0.52, "std": 0.05, "n_draws": 3},
        {"selection": "bottom", "fraction": 0.01, "k": 27, "accuracy": 0.29, "std": None, "n_draws": 1},
        {"selection": "top", "fraction": 0.05, "k": 135, "accuracy": 0.92, "std": None, "n_draws": 1},
        {"selection": "random", "fraction": 0.05, "k": 135, "accuracy": 0.86, "std": 0.01, "n_draws": 3},
        {"selection": "bottom", "fraction": 0.05, "k": 135, "accuracy": 0.69, "std": None, "n_draws": 1},
    ]
    return ReportSummary(
        activation_set="abc", model_version="f" * 64, task="upos", method="linear_probe", n_train=100,
        n_test=50, eval_split="test", accuracy=0.9423, majority_baseline=0.1643, n_test_unseen_label=2,
        selections=selections,
        per_class=[{"label": "NOUN", "accuracy": 0.92, "support": 30}, {"label": "X", "accuracy": 0.0, "support": 1}],
        html_path=str(tmp_path / "report.html"), markdown_path=str(tmp_path / "report.md"), seconds=1.0,
        extra={"fitted": {"l1": 1e-3, "l2": 1e-4}, "hidden_size": 384, "n_layers": 7, "model_dir": "/m",
               "aggregation": "last", "dtype": "float32", "corpus_version": "cv", "config_source": "p.yaml",
               "top_per_class": {"NOUN": ["L2:266", "L1:252"]}, "n_skipped_rejected": 3,
               "selection_probe": "l1=0, l2=0.001"})


def test_markdown_has_headline_selections_and_classes(tmp_path):
    md = report_markdown(_summary(tmp_path))
    assert "**Full-probe accuracy 94.2%**" in md
    assert "| 1% | 27 | 78.0% | 52.0% ± 5.0 | 29.0% |" in md
    assert "| NOUN | 30 | 92.0% | L2:266, L1:252 |" in md
    assert "2 test words carry a label never seen in training" in md
    assert "3 words skipped" in md


def test_html_is_self_contained_with_plot(tmp_path):
    md_path, html_path = render_report(_summary(tmp_path), tmp_path / "out")
    html = html_path.read_text(encoding="utf-8")
    assert md_path.read_text(encoding="utf-8").startswith("# Neuron analysis: upos")
    assert html.count("<svg") == 1 and "78.0%" in html and "l1=0, l2=0.001" in html
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//|url\(\s*["']?(https?:)?//|@import""", html)
    assert not list((tmp_path / "out").glob(".*.tmp"))

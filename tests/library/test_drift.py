"""Neuron drift between two model versions: ranking and metric drift, alerts, report section."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from neuro_pipeline.monitoring import (
    DriftThresholds,
    class_metric_drift,
    class_ranking_drift,
    drift_alerts,
    ranking_drift,
    summarize_drift,
)
from neuro_pipeline.report.drift import drift_html, drift_markdown


def rankings(method: str, order: list[int], n_neurons: int, scores: list[float] | None = None) -> pl.DataFrame:
    """One method's table: ``order`` lists neurons best first; the others are unranked."""
    rank = {n: i + 1 for i, n in enumerate(order)}
    if scores is None:
        scores = [float(n_neurons - rank[n]) if n in rank else None for n in range(n_neurons)]
    return pl.DataFrame({
        "method": [method] * n_neurons,
        "neuron": list(range(n_neurons)),
        "score": scores,
        "rank": [rank.get(n) for n in range(n_neurons)],
    }, schema={"method": pl.Utf8, "neuron": pl.Int32, "score": pl.Float64, "rank": pl.Int32})


def class_rankings(rows: dict[tuple[str, str], list[int]]) -> pl.DataFrame:
    out = [(method, label, n, i + 1) for (method, label), order in rows.items() for i, n in enumerate(order)]
    return pl.DataFrame(out, schema={"method": pl.Utf8, "label": pl.Utf8, "neuron": pl.Int32, "rank": pl.Int32},
                        orient="row")


def metrics(rows: list[tuple], selectivity: bool = False) -> pl.DataFrame:
    schema = {"label": pl.Utf8, "support": pl.Int32, "accuracy": pl.Float64, "f1": pl.Float64}
    if selectivity:
        schema["selectivity"] = pl.Float64
    return pl.DataFrame(rows, schema=schema, orient="row")


BASE = pl.concat([rankings("probeless", [0, 1, 2, 3, 4, 5], 6), rankings("linear", [5, 4, 3, 2, 1, 0], 6)])
BASE_CLASSES = class_rankings({("probeless", "NOUN"): [0, 1, 2, 3], ("probeless", "VERB"): [3, 2, 1, 0]})
BASE_METRICS = metrics([("(all)", 100, 0.90, 0.88, 0.40), ("NOUN", 60, 0.92, 0.91, 0.50),
                        ("VERB", 40, 0.875, 0.85, 0.30)], selectivity=True)


def test_identical_versions_have_jaccard_1_spearman_1_and_no_alert():
    ranking = ranking_drift(BASE, BASE.clone(), ks=[4, 2])
    assert ranking.columns == ["method", "k", "n_previous", "n_current", "overlap", "jaccard", "entered", "left",
                               "n_entered", "n_left", "spearman", "n_scored", "status"]
    assert ranking.select("method", "k", "overlap", "jaccard", "n_entered", "n_left", "status").rows() == [
        ("linear", 2, 2, 1.0, 0, 0, "both"), ("linear", 4, 4, 1.0, 0, 0, "both"),
        ("probeless", 2, 2, 1.0, 0, 0, "both"), ("probeless", 4, 4, 1.0, 0, 0, "both"),
    ]
    assert ranking["entered"].to_list() == [[]] * 4 == ranking["left"].to_list()
    assert ranking["spearman"].to_list() == pytest.approx([1.0] * 4)
    assert ranking["n_scored"].to_list() == [6] * 4
    classes = class_ranking_drift(BASE_CLASSES, BASE_CLASSES, ks=[2])
    assert classes["jaccard"].to_list() == [1.0, 1.0]
    metric = class_metric_drift(BASE_METRICS, BASE_METRICS)
    assert metric["accuracy_delta"].to_list() == [0.0, 0.0, 0.0]
    alerts = drift_alerts(ranking, classes, metric, DriftThresholds(min_jaccard=1.0))
    assert alerts.is_empty()
    assert alerts.schema == pl.Schema({"kind": pl.Utf8, "method": pl.Utf8, "label": pl.Utf8, "k": pl.Int64,
                                       "value": pl.Float64, "threshold": pl.Float64, "message": pl.Utf8})


def test_moved_neurons_give_the_hand_computed_sets_in_rank_order():
    previous = rankings("m", [0, 1, 2, 3, 4, 5], 6)
    current = rankings("m", [5, 4, 0, 1, 2, 3], 6)
    table = ranking_drift(previous, current, ks=[1, 3, 6])
    # k=1: {0} vs {5}. k=3: {0,1,2} vs {5,4,0}: 1 shared of 5; 5 and 4 entered (current order),
    # 1 and 2 left (previous order). k=6: all neurons on both sides.
    assert table.select("k", "n_previous", "n_current", "overlap", "jaccard", "entered", "left",
                        "n_entered", "n_left").rows() == [
        (1, 1, 1, 0, 0.0, [5], [0], 1, 1),
        (3, 3, 3, 1, 0.2, [5, 4], [1, 2], 2, 2),
        (6, 6, 6, 6, 1.0, [], [], 0, 0),
    ]
    # Ranks of the scores (1 = lowest) for neurons 0..5: previous 6, 5, 4, 3, 2, 1; current
    # 4, 3, 2, 1, 5, 6. d = 2, 2, 2, 2, -3, -5 -> sum d^2 = 50; rho = 1 - 6 * 50 / (6 * 35).
    assert table["spearman"].to_list() == pytest.approx([1 - 6 * 50 / 210] * 3)


def test_methods_in_one_version_keep_their_status_and_null_metrics():
    previous = pl.concat([rankings("both", [0, 1, 2], 3), rankings("gone", [2, 1], 3)])
    current = pl.concat([rankings("both", [0, 1, 2], 3), rankings("new", [1], 3)])
    table = ranking_drift(previous, current, ks=[2])
    assert table.select("method", "status", "n_previous", "n_current", "overlap", "jaccard", "entered",
                        "spearman", "n_scored").rows() == [
        ("both", "both", 2, 2, 2, 1.0, [], pytest.approx(1.0), 3),
        ("gone", "only_previous", 2, None, None, None, None, None, None),
        ("new", "only_current", None, 1, None, None, None, None, None),
    ]


def test_partial_rankings_compare_what_was_ranked():
    # A greedy method ranks 2 of 5 neurons before and 3 after; ranks may have gaps.
    previous = rankings("gauss", [4, 1], 5)
    current = rankings("gauss", [1, 0, 3], 5).with_columns(pl.col("rank") * 10)
    table = ranking_drift(previous, current, ks=[1, 3])
    assert table.select("k", "n_previous", "n_current", "overlap", "jaccard", "entered", "left").rows() == [
        (1, 1, 1, 0, 0.0, [1], [4]),
        (3, 2, 3, 1, 0.25, [0, 3], [4]),
    ]
    # Unranked neurons have null scores: only neurons 1 is scored on both sides.
    assert table["n_scored"].to_list() == [1, 1]
    assert table["spearman"].to_list() == [None, None]
    # No ranked neuron on either side: two empty sets, Jaccard undefined.
    empty = rankings("none", [], 4)
    row = ranking_drift(empty, empty, ks=[2]).row(0, named=True)
    assert (row["n_previous"], row["overlap"], row["jaccard"], row["entered"]) == (0, 0, None, [])


def test_spearman_gives_ties_average_ranks():
    stats = pytest.importorskip("scipy.stats")
    prev_scores = [1.0, 2.0, 2.0, 3.0, 5.0, 5.0, 5.0, None, float("nan")]
    cur_scores = [2.0, 1.0, 4.0, 4.0, 3.0, 9.0, 0.5, 1.0, 2.0]
    previous = rankings("m", list(range(9)), 9, scores=prev_scores)
    current = rankings("m", list(range(9)), 9, scores=cur_scores)
    row = ranking_drift(previous, current, ks=[3]).row(0, named=True)
    expected = stats.spearmanr(prev_scores[:7], cur_scores[:7]).statistic
    assert row["n_scored"] == 7  # null and NaN scores are left out
    assert row["spearman"] == pytest.approx(expected, abs=1e-12)
    # By hand: ranks 1, 2.5, 2.5, 4, 6, 6, 6 vs 3, 2, 5.5, 5.5, 4, 7, 1.
    a = np.array([1, 2.5, 2.5, 4, 6, 6, 6]) - 4
    b = np.array([3, 2, 5.5, 5.5, 4, 7, 1]) - 4
    assert row["spearman"] == pytest.approx(a @ b / np.sqrt((a @ a) * (b @ b)))


def test_spearman_is_null_for_a_constant_side_or_fewer_than_3_neurons():
    flat = rankings("m", [0, 1, 2, 3], 4, scores=[1.0, 1.0, 1.0, 1.0])
    assert ranking_drift(flat, rankings("m", [0, 1, 2, 3], 4), ks=[2])["spearman"].to_list() == [None]
    two = rankings("m", [0, 1], 2)
    assert ranking_drift(two, two, ks=[1]).select("spearman", "n_scored").row(0) == (None, 2)


def test_ranking_input_validation_names_the_problem():
    with pytest.raises(ValueError, match=r"ranking_drift: current is missing column 'score'"):
        ranking_drift(BASE, BASE.drop("score"), ks=[2])
    twice = pl.concat([BASE, BASE.filter((pl.col("method") == "linear") & (pl.col("neuron") == 3))])
    with pytest.raises(ValueError, match=r"previous has 2 rows for method 'linear' and neuron 3"):
        ranking_drift(twice, BASE, ks=[2])
    same_rank = BASE.with_columns(rank=pl.when(pl.col("neuron") == 1).then(1).otherwise(pl.col("rank")))
    with pytest.raises(ValueError, match=r"gives rank 1 to 2 neurons in method 'probeless'"):
        ranking_drift(BASE, same_rank, ks=[2])
    for ks in ([], [0], [2, 2], [1.5], [True]):
        with pytest.raises(ValueError, match="ks"):
            ranking_drift(BASE, BASE, ks=ks)
    with pytest.raises(TypeError, match=r"previous\['neuron'\] must hold integers"):
        ranking_drift(BASE.with_columns(pl.col("neuron").cast(pl.Float64)), BASE, ks=[2])
    with pytest.raises(ValueError, match=r"class_ranking_drift: previous is missing column 'label'"):
        class_ranking_drift(BASE_CLASSES.drop("label"), BASE_CLASSES, ks=[2])


def test_class_ranking_drift_per_label_with_status():
    current = class_rankings({("probeless", "NOUN"): [0, 9, 2, 3], ("probeless", "ADJ"): [7]})
    table = class_ranking_drift(BASE_CLASSES, current, ks=[2, 3])
    assert table.columns == ["method", "label", "k", "n_previous", "n_current", "overlap", "jaccard", "entered",
                             "left", "n_entered", "n_left", "status"]
    assert table.select("label", "k", "overlap", "jaccard", "entered", "left", "status").rows() == [
        ("ADJ", 2, None, None, None, None, "only_current"),
        ("ADJ", 3, None, None, None, None, "only_current"),
        ("NOUN", 2, 1, 1 / 3, [9], [1], "both"),
        ("NOUN", 3, 2, 0.5, [9], [1], "both"),
        ("VERB", 2, None, None, None, None, "only_previous"),
        ("VERB", 3, None, None, None, None, "only_previous"),
    ]


def test_class_metric_drift_joins_labels_and_keeps_overall_first():
    current = metrics([("VERB", 40, 0.75, 0.80), ("ADJ", 5, 0.5, 0.4), ("(all)", 105, 0.875, 0.86)])
    table = class_metric_drift(BASE_METRICS, current)
    assert list(table.columns) == [
        "label", "support_previous", "support_current", "accuracy_previous", "accuracy_current", "accuracy_delta",
        "f1_previous", "f1_current", "f1_delta", "selectivity_previous", "selectivity_current",
        "selectivity_delta", "status"]
    assert table.select("label", "support_previous", "support_current", "accuracy_delta", "status").rows() == [
        ("(all)", 100, 105, pytest.approx(-0.025), "both"),
        ("ADJ", None, 5, None, "only_current"),
        ("NOUN", 60, None, None, "only_previous"),
        ("VERB", 40, 40, -0.125, "both"),
    ]
    # The current version has no selectivity column: its side and the deltas are null.
    assert table["selectivity_previous"].to_list() == [0.40, None, 0.50, 0.30]
    assert table["selectivity_delta"].null_count() == 4
    with pytest.raises(ValueError, match="previous has 2 rows for label 'NOUN'"):
        class_metric_drift(pl.concat([BASE_METRICS, BASE_METRICS[1:2]]), current)


def test_accuracy_drop_beyond_the_threshold_is_exactly_one_alert():
    current = BASE_METRICS.with_columns(
        accuracy=pl.when(pl.col("label") == "NOUN").then(0.889)
        # VERB falls exactly the allowed 2 points (0.875 -> 0.855): no alert.
        .when(pl.col("label") == "VERB").then(0.855).otherwise(pl.col("accuracy")))
    ranking = ranking_drift(BASE, BASE, ks=[2])
    alerts = drift_alerts(ranking, None, class_metric_drift(BASE_METRICS, current), DriftThresholds())
    assert alerts.select("kind", "method", "label", "k").rows() == [("accuracy_drop", None, "NOUN", None)]
    assert alerts["value"][0] == pytest.approx(0.031)
    assert alerts["threshold"][0] == 0.02
    assert alerts["message"][0] == "NOUN: probe accuracy fell 3.1 points (92.0% → 88.9%), more than the allowed 2.0"


def test_selectivity_and_neuron_movement_alerts():
    current_metrics = BASE_METRICS.with_columns(
        selectivity=pl.when(pl.col("label") == "(all)").then(0.30).otherwise(pl.col("selectivity")))
    current = pl.concat([rankings("probeless", [5, 4, 0, 1, 2, 3], 6), rankings("linear", [5, 4, 3, 2, 1, 0], 6)])
    classes_now = class_rankings({("probeless", "NOUN"): [3, 2, 1, 0], ("probeless", "VERB"): [3, 2, 1, 0]})
    ranking = ranking_drift(BASE, current, ks=[1, 3])
    classes = class_ranking_drift(BASE_CLASSES, classes_now, ks=[1, 2])
    alerts = drift_alerts(ranking, classes, class_metric_drift(BASE_METRICS, current_metrics),
                          DriftThresholds(min_jaccard=0.5))
    # Global: probeless top 3 {0,1,2} vs {5,4,0} -> 0.2; linear unchanged. Per class at k=2
    # (the largest): NOUN {0,1} vs {3,2} -> 0; VERB unchanged.
    assert alerts.select("kind", "method", "label", "k", "value").rows() == [
        ("selectivity_drop", None, "(all)", None, pytest.approx(0.10)),
        ("neurons_moved", "probeless", None, 3, pytest.approx(0.2)),
        ("neurons_moved", "probeless", "NOUN", 2, 0.0),
    ]
    assert alerts["message"].to_list() == [
        "overall: selectivity fell 10.0 points (40.0 → 30.0 points), more than the allowed 5.0",
        "probeless: the top 3 neurons moved, Jaccard 0.20 below the allowed 0.50 (1 kept, 2 entered, 2 left)",
        "probeless, NOUN: the top 2 neurons moved, Jaccard 0.00 below the allowed 0.50 (0 kept, 2 entered, 2 left)",
    ]
    at_1 = drift_alerts(ranking, classes, None, DriftThresholds(alert_k=1))
    assert at_1.select("method", "label", "k").rows() == [("probeless", None, 1), ("probeless", "NOUN", 1)]
    with pytest.raises(ValueError, match=r"alert_k=2 but ranking has k in \[1, 3\]"):
        drift_alerts(ranking, classes, None, DriftThresholds(alert_k=2))

    summary = summarize_drift(ranking, classes, class_metric_drift(BASE_METRICS, current_metrics), alerts)
    assert json.loads(json.dumps(summary)) == summary
    assert summary["n_alerts"] == 3
    assert summary["alerts_by_kind"] == {"selectivity_drop": 1, "neurons_moved": 2}
    assert summary["k"] == 3
    assert summary["jaccard"] == {"linear": 1.0, "probeless": pytest.approx(0.2)}
    assert summary["min_jaccard"] == {"linear": 1.0, "probeless": 0.0}
    assert summary["accuracy_delta"] == 0.0
    assert summary["largest_accuracy_drop"] is None
    assert summary["largest_selectivity_drop"] is None  # only the overall row fell
    assert summary["min_class_jaccard"] == {"method": "probeless", "label": "NOUN", "k": 2, "jaccard": 0.0}


@pytest.mark.parametrize("kwargs, message", [
    ({"max_accuracy_drop": 2}, r"max_accuracy_drop must be a number in \[0, 1\] \(accuracy is a fraction"),
    ({"max_accuracy_drop": -0.01}, "max_accuracy_drop"),
    ({"max_selectivity_drop": float("nan")}, "max_selectivity_drop"),
    ({"min_jaccard": 1.5}, r"min_jaccard must be a number in \[0, 1\]; got 1.5"),
    ({"min_jaccard": True}, "min_jaccard"),
    ({"alert_k": 0}, "alert_k must be None or a positive int; got 0"),
    ({"alert_k": 10.0}, "alert_k"),
])
def test_thresholds_are_validated(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DriftThresholds(**kwargs)


def _report_inputs():
    current = pl.concat([rankings("probeless", [5, 4, 0, 1, 2, 3], 6), rankings("linear", [5, 4, 3, 2, 1, 0], 6),
                         rankings("new<i>", [0], 6)])
    classes_now = class_rankings({("probeless", "<b>"): [3, 2], ("probeless", "NOUN"): [0, 1]})
    now = metrics([("(all)", 100, 0.85, 0.88), ("<b>", 10, 0.5, 0.4), ("NOUN", 60, 0.92, 0.91)])
    ranking = ranking_drift(BASE, current, ks=[2, 3])
    classes = class_ranking_drift(BASE_CLASSES, classes_now, ks=[2])
    metric = class_metric_drift(BASE_METRICS, now)
    return ranking, classes, metric, drift_alerts(ranking, classes, metric, DriftThresholds())


def test_html_section_escapes_text_and_names_neurons():
    ranking, classes, metric, alerts = _report_inputs()
    page = drift_html("v1", "v2<x>", ranking, classes, metric, alerts, neuron_name=lambda n: f"3:{100 + n}")
    assert page.startswith('<h2 id="drift">Drift since the previous version</h2>')
    assert "&lt;b&gt;" in page and "<b><" not in page and "<td class='names'><b>" not in page
    assert "v2&lt;x&gt;" in page and "new&lt;i&gt;" in page and "<i>" not in page
    assert "overall: probe accuracy fell 5.0 points (90.0% → 85.0%)" in page
    # probeless top 2 {0,1} -> {5,4}: entered 3:105, 3:104; left 3:100, 3:101.
    assert "<td class='names'>3:105, 3:104</td><td class='names'>3:100, 3:101</td>" in page
    assert "<td>+0.0</td>" in page and "<td>-5.0</td>" in page  # Δ accuracy in points, signed
    assert "Only in the current version: new&lt;i&gt;." in page
    assert "<script" not in page and "http" not in page and "<link" not in page

    first = drift_html(None, "v1")
    assert first.startswith('<h2 id="drift">') and "<p class='note'>" in first and "no earlier version" in first
    quiet = drift_html("v1", "v2", ranking_drift(BASE, BASE, ks=[2]), None, None,
                       drift_alerts(ranking_drift(BASE, BASE, ks=[2]), None, None, DriftThresholds()))
    assert "No threshold crossed." in quiet


def test_markdown_section_has_the_tables():
    ranking, classes, metric, alerts = _report_inputs()
    text = drift_markdown("v1", "v2", ranking, classes, metric, alerts)
    assert text.startswith("## Drift since the previous version")
    assert "| method | top 2 | top 3 | Spearman (scores) | neurons scored |" in text
    assert "| linear | 1.00 | 1.00 | 1.000 | 6 |" in text
    assert "| probeless | 0.00 | 0.20 |" in text
    assert "| overall | 100 | 90.0% → 85.0% | -5.0 | +0.0 |" in text
    assert "| \\<b> | – → 10 | – → 50.0% |" in text  # labels escaped for Markdown
    assert "| label | Jaccard top 2 | kept | entered | left | note |" in text
    assert "- overall: probe accuracy fell 5.0 points" in text
    assert "no earlier version" in drift_markdown(None, "v1")


def test_activation_drift_per_layer_correlation():
    from neuro_pipeline.monitoring import activation_drift

    rng = np.random.default_rng(1)
    a = rng.normal(size=(200, 6))
    b = a.copy()
    b[:, 3:] = -a[:, 3:]                        # layer 1 flips sign
    b[:, 2] = 5.0                               # one constant unit in layer 0
    table = activation_drift(a, b, n_layers=2, hidden_size=3)
    rows = {r["layer"]: r for r in table.iter_rows(named=True)}
    assert rows[0]["n_constant"] == 1 and rows[0]["corr_median"] == pytest.approx(1.0)
    assert rows[1]["n_constant"] == 0 and rows[1]["corr_median"] == pytest.approx(-1.0)
    noise = activation_drift(a, rng.normal(size=(200, 6)), n_layers=2, hidden_size=3)
    assert noise["corr_median"].abs().max() < 0.3
    with pytest.raises(ValueError, match="expected 2 × 4 = 8 columns, got 6"):
        activation_drift(a, a, n_layers=2, hidden_size=4)
    with pytest.raises(ValueError, match="same shape"):
        activation_drift(a, a[:10], n_layers=2, hidden_size=3)


def test_small_classes_are_not_judged_on_accuracy_below_min_support():
    small = BASE_METRICS.with_columns(support=pl.when(pl.col("label") == "NOUN").then(16).otherwise(pl.col("support")))
    current = small.with_columns(accuracy=pl.when(pl.col("label") == "NOUN").then(0.80).otherwise(pl.col("accuracy")))
    ranking = ranking_drift(BASE, BASE, ks=[2])
    drift = class_metric_drift(small, current)
    assert drift_alerts(ranking, None, drift, DriftThresholds()).is_empty()              # 16 < 30 words
    alerts = drift_alerts(ranking, None, drift, DriftThresholds(min_support=10))
    assert alerts.select("kind", "label").rows() == [("accuracy_drop", "NOUN")]
    with pytest.raises(ValueError, match="min_support must be an int >= 0"):
        DriftThresholds(min_support=-1)

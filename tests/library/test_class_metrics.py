"""Per-class metrics and the long-format confusion table, checked against hand counts."""

import numpy as np
import polars as pl
import pytest

from neuro_pipeline.evaluation.metrics import class_metrics, confusion_table

# 6 tokens. By hand:
#   DET : support 2, predicted 2 (rows 0, 1), tp 2 -> accuracy 1, precision 1, f1 1
#   NOUN: support 3, predicted 2 (rows 2, 4), tp 2 -> accuracy 2/3, precision 1, f1 4/5
#   VERB: support 1, predicted 2 (rows 3, 5), tp 1 -> accuracy 1, precision 1/2, f1 2/3
Y_TRUE = ["DET", "DET", "NOUN", "NOUN", "NOUN", "VERB"]
Y_PRED = ["DET", "DET", "NOUN", "VERB", "NOUN", "VERB"]


def test_class_metrics_by_hand():
    table = class_metrics(Y_TRUE, Y_PRED)
    assert table.schema == pl.Schema(
        {"label": pl.String, "support": pl.Int32, "n_predicted": pl.Int32,
         "accuracy": pl.Float64, "precision": pl.Float64, "f1": pl.Float64}
    )
    assert table["label"].to_list() == ["DET", "NOUN", "VERB"]
    assert table["support"].to_list() == [2, 3, 1]
    assert table["n_predicted"].to_list() == [2, 2, 2]
    assert table["accuracy"].to_list() == pytest.approx([1.0, 2 / 3, 1.0])
    assert table["precision"].to_list() == pytest.approx([1.0, 1.0, 0.5])
    assert table["f1"].to_list() == pytest.approx([1.0, 0.8, 2 / 3])


def test_class_metrics_agrees_with_sklearn():
    from sklearn.metrics import precision_recall_fscore_support

    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 5, size=300)
    y_pred = np.where(rng.random(300) < 0.7, y_true, rng.integers(0, 5, size=300))
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=[0, 1, 2, 3, 4])
    table = class_metrics(y_true, y_pred)
    assert table["label"].to_list() == ["0", "1", "2", "3", "4"]  # written as strings
    assert table["support"].to_list() == support.tolist()
    assert table["accuracy"].to_list() == pytest.approx(recall)
    assert table["precision"].to_list() == pytest.approx(precision)
    assert table["f1"].to_list() == pytest.approx(f1)


def test_undefined_scores_are_null_not_zero():
    # "ADJ" occurs but is never predicted (a class the probe never saw): accuracy 0, f1 0,
    # precision undefined. "X" is listed but absent: everything undefined.
    table = class_metrics(["ADJ", "N"], ["N", "N"], labels=["ADJ", "N", "X"])
    rows = {r["label"]: r for r in table.iter_rows(named=True)}
    assert rows["ADJ"] == {"label": "ADJ", "support": 1, "n_predicted": 0, "accuracy": 0.0, "precision": None, "f1": 0.0}
    assert rows["N"]["precision"] == 0.5 and rows["N"]["f1"] == pytest.approx(2 / 3)
    assert rows["X"] == {"label": "X", "support": 0, "n_predicted": 0, "accuracy": None, "precision": None, "f1": None}


def test_unlisted_true_labels_still_count_as_false_positives():
    # Row 1 is a VERB predicted as NOUN: a false positive for NOUN even though VERB has no row.
    table = class_metrics(["NOUN", "VERB"], ["NOUN", "NOUN"], labels=["NOUN"])
    assert table.rows() == [("NOUN", 1, 2, 1.0, 0.5, pytest.approx(2 / 3))]


def test_confusion_table_by_hand_is_the_full_square():
    table = confusion_table(Y_TRUE, Y_PRED)
    assert table.schema == pl.Schema({"true_label": pl.String, "predicted_label": pl.String, "count": pl.Int32})
    assert table.height == 9
    assert table.filter(pl.col("count") > 0).rows() == [
        ("DET", "DET", 2), ("NOUN", "NOUN", 2), ("NOUN", "VERB", 1), ("VERB", "VERB", 1)
    ]
    assert table["count"].sum() == len(Y_TRUE)


def test_confusion_table_matches_sklearn_and_ignores_unlisted_labels():
    from sklearn.metrics import confusion_matrix

    rng = np.random.default_rng(1)
    y_true = rng.integers(0, 4, size=200)
    y_pred = rng.integers(0, 4, size=200)
    labels = [3, 0, 1]  # custom order, label 2 left out
    table = confusion_table(y_true, y_pred, labels=labels)
    expected = confusion_matrix(y_true, y_pred, labels=labels)
    assert table["count"].to_numpy().reshape(3, 3).tolist() == expected.tolist()
    assert table["true_label"].to_list()[:3] == ["3", "3", "3"]
    assert table["predicted_label"].to_list()[:3] == ["3", "0", "1"]


@pytest.mark.parametrize(
    "y_true, y_pred, labels, match",
    [
        (["a", "b"], ["a"], None, "one prediction per token"),  # lengths differ
        ([], [], None, "empty"),
        ([["a"]], [["a"]], None, "1-D"),
        (["a", "b"], [0, 1], None, "both must be strings or both numbers"),
        (["a", "b"], ["a", "b"], [], "non-empty"),
        (["a", "b"], ["a", "b"], ["a", "a"], "repeat"),
        ([0, 1], [0, 1], ["0", "1"], "same kind"),  # string labels for integer data
    ],
)
def test_bad_inputs_raise(y_true, y_pred, labels, match):
    for function in (class_metrics, confusion_table):
        with pytest.raises(ValueError, match=match):
            function(y_true, y_pred, labels=labels)

"""Evaluation of rankings: retrained probes on top / random / bottom neurons, per-class
accuracy, and honest accounting of test labels never seen in training."""

import numpy as np
import polars as pl
import pytest

from neuro_pipeline.evaluation import (
    evaluate_probe,
    evaluate_selections,
    fit_selections,
    random_neurons,
    score_selections,
    summarize_selections,
)
from neuro_pipeline.probe import LinearProbe


@pytest.fixture(scope="module")
def graded():
    """3 classes, 40 neurons: neuron j < 20 carries the class with strength 1.5 - 0.07 j;
    neurons 20..39 are noise. The true ranking is 0, 1, 2, ..., 39."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, size=1600)
    X = rng.normal(size=(1600, 40)).astype(np.float32)
    code = rng.normal(size=(3, 20))
    X[:, :20] += (1.5 - 0.07 * np.arange(20)) * code[y]
    return X[:1000], y[:1000], X[1000:], y[1000:]


def test_top_beats_random_beats_bottom(graded):
    X_train, y_train, X_test, y_test = graded
    table = evaluate_selections(
        X_train, y_train, X_test, y_test, np.arange(40), fractions=(0.05, 0.1, 0.2), n_random=3
    )
    assert table.height == 3 * 5
    assert table.columns == ["selection", "fraction", "k", "draw", "accuracy", "n_test", "n_unseen_test", "fit_seconds"]
    assert table["k"].unique().sort().to_list() == [2, 4, 8]
    summary = summarize_selections(table)
    for fraction in (0.05, 0.1, 0.2):
        acc = dict(summary.filter(pl.col("fraction") == fraction).select("selection", "accuracy_mean").iter_rows())
        assert acc["top"] > acc["random"] > acc["bottom"], (fraction, acc)
    # Bottom neurons are pure noise: chance level for 3 classes.
    assert table.filter(pl.col("selection") == "bottom")["accuracy"].max() < 0.45


def test_fitting_then_scoring_gives_evaluate_selections_table(graded):
    """The two halves (training matrix gone before the test one is needed) score the same
    probes as the single call; a test matrix narrower than the selections is refused."""
    X_train, y_train, X_test, y_test = graded
    ranking = np.random.default_rng(3).permutation(40)
    whole = evaluate_selections(X_train, y_train, X_test, y_test, ranking, fractions=(0.1, 0.25), n_random=2)
    fitted = fit_selections(X_train, y_train, ranking, fractions=(0.1, 0.25), n_random=2)
    halves = score_selections(fitted, X_test, y_test)
    assert [f.selection for f in fitted] == whole["selection"].to_list()
    assert all(np.array_equal(f.columns, np.sort(f.columns)) for f in fitted)
    assert halves.drop("fit_seconds").equals(whole.drop("fit_seconds"))
    with pytest.raises(ValueError, match="score_selections: X_test has 5 neurons, fewer than the selections"):
        score_selections(fitted, X_test[:, :5], y_test)


def test_summary_has_mean_and_std_over_draws(graded):
    X_train, y_train, X_test, y_test = graded
    table = evaluate_selections(X_train, y_train, X_test, y_test, np.arange(40), fractions=(0.1,), n_random=4)
    random_rows = table.filter(pl.col("selection") == "random")
    assert random_rows["draw"].to_list() == [0, 1, 2, 3]
    assert table.filter(pl.col("selection") != "random")["draw"].null_count() == 2
    summary = summarize_selections(table)
    assert summary["selection"].to_list() == ["top", "random", "bottom"]
    row = summary.filter(pl.col("selection") == "random").row(0, named=True)
    assert row["n_draws"] == 4
    assert row["accuracy_mean"] == pytest.approx(random_rows["accuracy"].mean())
    assert row["accuracy_std"] == pytest.approx(random_rows["accuracy"].std())


def test_does_not_mutate_inputs(graded):
    X_train, y_train, X_test, y_test = graded
    before = X_train.copy(), X_test.copy()
    evaluate_selections(X_train, y_train, X_test, y_test, np.arange(40), fractions=(0.05,), n_random=1)
    np.testing.assert_array_equal(X_train, before[0])
    np.testing.assert_array_equal(X_test, before[1])


def test_unseen_test_labels_are_counted_and_scored_as_errors(graded):
    X_train, y_train, X_test, y_test = graded
    y_test = y_test.copy()
    y_test[:60] = 7  # a label the training data never has
    table = evaluate_selections(X_train, y_train, X_test, y_test, np.arange(40), fractions=(1.0,), n_random=0)
    assert table["n_unseen_test"].to_list() == [60, 60]
    assert table["n_test"].to_list() == [600, 600]
    assert table["accuracy"].max() <= 540 / 600
    probe = LinearProbe(l1=0.0, l2=1e-4).fit(X_train, y_train)
    report = evaluate_probe(probe, X_test, y_test)
    assert report["n_unseen"] == 60 and report["n_tokens"] == 600
    assert report["per_class"][7] == {"accuracy": 0.0, "support": 60}
    assert report["accuracy"] == pytest.approx(probe.score(X_test, y_test))


def test_evaluate_probe_per_class_by_hand():
    X = np.array([[0.0], [0.1], [1.0], [1.1], [0.05], [1.05]], dtype=np.float32)
    probe = LinearProbe(l1=0.0, l2=1e-3).fit(X, ["a", "a", "b", "b", "a", "b"])
    report = evaluate_probe(probe, X[:4], ["a", "b", "b", "b"])  # one "b" sits among the "a"s
    assert report["accuracy"] == 0.75
    assert report["per_class"] == {"a": {"accuracy": 1.0, "support": 1}, "b": {"accuracy": 2 / 3, "support": 3}}


def test_random_neurons_depend_only_on_seed_draw_and_k():
    a = random_neurons(100, 10, seed=0, draw=1)
    assert len(set(a.tolist())) == 10 and np.all(np.diff(a) > 0)
    np.testing.assert_array_equal(a, random_neurons(100, 10, seed=0, draw=1))
    assert not np.array_equal(a, random_neurons(100, 10, seed=0, draw=2))
    assert not np.array_equal(a, random_neurons(100, 10, seed=1, draw=1))


@pytest.mark.parametrize(
    "ranking, kwargs, match",
    [
        (np.arange(39), {}, r"ranking must be a permutation of 0..39"),
        (np.r_[np.arange(39), 0], {}, r"ranking must be a permutation of 0..39"),
        (np.arange(40), {"fractions": (0.0,)}, r"every fraction must be in \(0, 1\]; got 0.0"),
        (np.arange(40), {"n_random": -1}, r"n_random must be >= 0"),
    ],
)
def test_rejects_bad_arguments(graded, ranking, kwargs, match):
    X_train, y_train, X_test, y_test = graded
    with pytest.raises(ValueError, match=match):
        evaluate_selections(X_train, y_train, X_test, y_test, ranking, **kwargs)


def test_rejects_mismatched_test_data(graded):
    X_train, y_train, X_test, y_test = graded
    with pytest.raises(ValueError, match="X_test has 39 neurons but X_train has 40"):
        evaluate_selections(X_train, y_train, X_test[:, :39], y_test, np.arange(40))
    with pytest.raises(ValueError, match=r"y_test must have shape \(600,\)"):
        evaluate_selections(X_train, y_train, X_test, y_test[:5], np.arange(40))


def test_selections_of_a_partial_ranking_skip_what_was_not_ranked():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=300)
    X = rng.normal(size=(300, 20)).astype(np.float32)
    X[:, 7] += 3 * y
    ranking = np.r_[7, 3, np.setdiff1d(np.arange(20), [7, 3])]
    table = evaluate_selections(X, y, X, y, ranking, fractions=(0.1, 0.2), n_random=1, n_ranked=2)
    # top 2 (k <= 2 ranked) is evaluated, top 4 is not; a partial ranking has no bottom.
    assert table.filter(pl.col("selection") == "top")["k"].to_list() == [2]
    assert "bottom" not in table["selection"].to_list()
    only_random = evaluate_selections(X, y, X, y, ranking, fractions=(0.1,), n_random=2, selections=("random",))
    assert only_random["selection"].to_list() == ["random", "random"]
    with pytest.raises(ValueError, match=r"unknown selection 'best'"):
        evaluate_selections(X, y, X, y, ranking, selections=("best",))
    with pytest.raises(ValueError, match=r"n_ranked must be in \[0, 20\]"):
        evaluate_selections(X, y, X, y, ranking, n_ranked=21)

"""Ablation at the probe: keep / remove neurons by retraining or by filling them with the
mean or raw zero, checked on a hand-built example and against explicit copies."""

import logging

import numpy as np
import polars as pl
import pytest
import torch

from neuro_pipeline.evaluation import (
    DEFAULT_SELECTION_PROBE_PARAMS,
    evaluate_selections,
    random_neurons,
)
from neuro_pipeline.evaluation.ablation import (
    ABLATION_MODES,
    _filled_logits,
    ablate,
    summarize_ablation,
)
from neuro_pipeline.probe import LinearProbe, effective_weights

NOISE_CYCLE = [[1, 1], [1, 3], [3, 1], [3, 3]]


@pytest.fixture(scope="module")
def planted():
    """Neuron 0 is -6 for class 0 and -5 for class 1; neurons 1 and 2 cycle through the same
    four value pairs in both classes, so their weights stay at 0 (up to rounding).

    Training: 24 tokens of class 0, 8 of class 1, so the bias alone predicts class 0.
    Test: 6 tokens of class 0, 4 of class 1 (majority share 0.6, minority 0.4), with noise
    values the probe never saw.
    """
    y_train = np.repeat([0, 1], [24, 8])
    X_train = np.c_[y_train - 6, np.tile(NOISE_CYCLE, (8, 1))].astype(np.float32)
    y_test = np.array([0, 1, 0, 1, 0, 1, 0, 1, 0, 0])
    noise = np.array([[1, 3], [3, 1], [0, 0], [2, 2], [3, 3], [1, 1], [1, 3], [3, 1], [2, 0], [0, 2]])
    X_test = np.c_[y_test - 6, noise].astype(np.float32)
    return X_train, y_train, X_test, y_test


@pytest.fixture(scope="module")
def graded():
    """3 classes, 20 neurons with nonzero means: neuron j < 10 carries the class with
    strength 1.5 - 0.12 j, neurons 10..19 are noise; every neuron is offset by up to +-8."""
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, size=700)
    X = rng.normal(size=(700, 20))
    X[:, :10] += (1.5 - 0.12 * np.arange(10)) * rng.normal(size=(3, 10))[y]
    X = (X + rng.uniform(-8, 8, size=20)).astype(np.float32)
    return X[:400], y[:400], X[400:], y[400:]


def _accuracies(table: pl.DataFrame) -> dict:
    """(mode, selection, k, zero_value) -> accuracy, for tables without random rows."""
    return {(m, s, k, z): a for m, s, k, z, a in table.select("mode", "selection", "k", "zero_value", "accuracy").rows()}


def test_planted_neuron_hand_checked(planted):
    table = ablate(*planted, [0, 1, 2], fractions=(), ks=(1,), n_random=0, zero_value=("mean", "zero"))
    assert table.columns == ["mode", "selection", "fraction", "k", "draw", "accuracy", "zero_value"]
    assert table.schema["k"] == pl.Int32 and table.schema["draw"] == pl.Int32
    assert table["fraction"].null_count() == table.height  # explicit ks and the full row
    assert _accuracies(table) == {
        ("full", "all", 3, None): 1.0,
        # Top = [0]: neuron 0 alone is perfect, retrained or not.
        ("keep_retrain", "top", 1, None): 1.0,
        ("keep_zero", "top", 1, "mean"): 1.0,
        ("keep_zero", "top", 1, "zero"): 1.0,  # the filled noise neurons have weight 0
        # Without neuron 0 only the bias is left: it predicts class 0, 6 of 10 test tokens.
        ("remove_retrain", "top", 1, None): 0.6,
        ("remove_zero", "top", 1, "mean"): 0.6,
        # Raw 0 lies beyond class 1's value -5: every token is called class 1.
        ("remove_zero", "top", 1, "zero"): 0.4,
        # Bottom = [2], a noise neuron: the mirror image.
        ("keep_retrain", "bottom", 1, None): 0.6,
        ("keep_zero", "bottom", 1, "mean"): 0.6,
        ("keep_zero", "bottom", 1, "zero"): 0.4,
        ("remove_retrain", "bottom", 1, None): 1.0,
        ("remove_zero", "bottom", 1, "mean"): 1.0,
        ("remove_zero", "bottom", 1, "zero"): 1.0,
    }


def test_removing_every_neuron_leaves_the_training_majority(planted):
    table = ablate(*planted, [0, 1, 2], fractions=(1.0,), n_random=0, modes=("remove_retrain", "remove_zero"))
    top = _accuracies(table.filter(pl.col("selection") == "top"))
    # No column left to retrain on: the intercept-only probe, i.e. the training majority
    # (class 0, 0.6 of the test tokens), which is also what the full probe's bias says.
    assert top == {("remove_retrain", "top", 3, None): 0.6, ("remove_zero", "top", 3, "mean"): 0.6}


def test_rows_are_ordered_and_default_fill_is_mean(graded):
    table = ablate(*graded, np.arange(20), fractions=(0.1, 0.2), ks=(3,), n_random=2)
    assert table.row(0, named=True) == {
        "mode": "full", "selection": "all", "fraction": None, "k": 20, "draw": None,
        "accuracy": table["accuracy"][0], "zero_value": None,
    }
    body = table.slice(1)
    # Sizes: fractions then ks; per size top, 2 random draws, bottom; per selection 4 modes.
    assert body["k"].to_list() == [2] * 16 + [4] * 16 + [3] * 16
    assert body["fraction"].to_list()[::16] == [0.1, 0.2, None]
    assert body["selection"].to_list()[:16] == ["top"] * 4 + ["random"] * 8 + ["bottom"] * 4
    assert body["draw"].to_list()[:16] == [None] * 4 + [0] * 4 + [1] * 4 + [None] * 4
    assert body["mode"].to_list()[:4] == list(ABLATION_MODES)
    filled = body.filter(pl.col("mode").str.ends_with("zero"))
    assert filled["zero_value"].unique().to_list() == ["mean"]
    assert body.filter(pl.col("mode").str.ends_with("retrain"))["zero_value"].null_count() == 24


def test_filled_rows_equal_the_full_probe_on_an_explicit_copy(graded):
    X_train, y_train, X_test, y_test = graded
    table = ablate(*graded, np.arange(20)[::-1], fractions=(0.1, 0.5, 0.8), n_random=2,
                   zero_value=("mean", "zero"), modes=("keep_zero", "remove_zero"))
    full = LinearProbe(**DEFAULT_SELECTION_PROBE_PARAMS).fit(X_train, y_train)
    ranking = np.arange(20)[::-1]
    checked = 0
    for row in table.filter(pl.col("mode") != "full").iter_rows(named=True):
        k = row["k"]
        columns = {"top": ranking[:k], "bottom": ranking[20 - k:]}.get(row["selection"])
        if columns is None:
            columns = random_neurons(20, k, seed=0, draw=row["draw"])
        filled = np.setdiff1d(np.arange(20), columns) if row["mode"] == "keep_zero" else columns
        copy = X_test.copy()
        copy[:, filled] = full.mean_[filled] if row["zero_value"] == "mean" else 0.0
        assert row["accuracy"] == full.score(copy, y_test), row
        checked += 1
    assert checked == 3 * 4 * 2 * 2
    # Raw zero is far from these neurons' means: it must change some results.
    pivot = table.filter(pl.col("mode") == "remove_zero", pl.col("selection") == "top")
    assert pivot.filter(pl.col("zero_value") == "zero")["accuracy"].to_list() != \
        pivot.filter(pl.col("zero_value") == "mean")["accuracy"].to_list()


@pytest.mark.parametrize("n_filled", [1, 7, 13, 20], ids=["one", "under-half", "over-half", "all"])
@pytest.mark.parametrize("fill_name", ["mean", "zero"])
def test_fast_logits_equal_logits_of_a_filled_copy(graded, n_filled, fill_name):
    # Under half the columns: subtract their contribution; over half: rebuild from the rest.
    X_train, y_train, X_test, _ = graded
    full = LinearProbe(**DEFAULT_SELECTION_PROBE_PARAMS).fit(X_train, y_train)
    W_eff, offset = (t.numpy() for t in effective_weights(
        torch.from_numpy(full.coef_), torch.from_numpy(full.intercept_), full.mean_, full.scale_
    ))
    filled = np.zeros(20, dtype=bool)
    filled[np.random.default_rng(n_filled).choice(20, n_filled, replace=False)] = True
    fill = full.mean_.astype(np.float32) if fill_name == "mean" else np.zeros(20, dtype=np.float32)
    fast = _filled_logits(X_test, full.decision_function(X_test), W_eff, offset, filled, fill)
    copy = X_test.copy()
    copy[:, filled] = fill[filled]
    np.testing.assert_allclose(fast, full.decision_function(copy), rtol=1e-5, atol=1e-4)


def test_read_only_memmaps_work_and_inputs_are_untouched(graded, tmp_path):
    X_train, y_train, X_test, y_test = graded
    before = X_train.copy(), X_test.copy()
    in_memory = ablate(X_train, y_train, X_test, y_test, np.arange(20), fractions=(0.1, 0.6), n_random=1)
    np.testing.assert_array_equal(X_train, before[0])
    np.testing.assert_array_equal(X_test, before[1])
    np.save(tmp_path / "train.npy", X_train)
    np.save(tmp_path / "test.npy", X_test)
    X_train_map = np.load(tmp_path / "train.npy", mmap_mode="r")
    X_test_map = np.load(tmp_path / "test.npy", mmap_mode="r")
    mapped = ablate(X_train_map, y_train, X_test_map, y_test, np.arange(20), fractions=(0.1, 0.6), n_random=1)
    assert mapped.equals(in_memory)


def test_keep_retrain_rows_equal_evaluate_selections(graded):
    # Same seed, same k, same probe: the random draws (and so the accuracies) must match.
    ranking = np.argsort(np.random.default_rng(5).normal(size=20))
    table = ablate(*graded, ranking, fractions=(0.1, 0.25), n_random=3, seed=7, modes=("keep_retrain",))
    reference = evaluate_selections(*graded, ranking, fractions=(0.1, 0.25), n_random=3, seed=7)
    columns = ["selection", "fraction", "k", "draw", "accuracy"]
    assert table.filter(pl.col("mode") == "keep_retrain").select(columns).equals(reference.select(columns))
    # And the draws are not all alike, so the comparison can tell draws apart.
    assert reference.filter(pl.col("selection") == "random")["accuracy"].n_unique() > 1


def test_partial_ranking_skips_bottom_and_oversized_top(graded, caplog):
    with caplog.at_level(logging.INFO, logger="neuro_pipeline.evaluation.ablation"):
        table = ablate(*graded, np.arange(20), fractions=(0.1, 0.25), n_random=1, n_ranked=3,
                       modes=("keep_zero",))
    assert "bottom" not in table["selection"].to_list()
    assert table.filter(pl.col("selection") == "top")["k"].to_list() == [2]  # top 5 > 3 ranked
    assert table.filter(pl.col("selection") == "random")["k"].to_list() == [2, 5]
    assert "top 5 skipped; the method ranked only 3 neurons" in caplog.text
    assert "bottom 2 skipped; a partial ranking has no bottom" in caplog.text


def test_summary_averages_random_draws(graded):
    table = ablate(*graded, np.arange(20), fractions=(0.2,), ks=(4,), n_random=3, modes=("keep_zero", "keep_retrain"))
    summary = summarize_ablation(table)
    assert summary.columns == [
        "mode", "zero_value", "selection", "fraction", "k", "n_draws",
        "accuracy_mean", "accuracy_std", "accuracy_min", "accuracy_max",
    ]
    assert summary.select("mode", "selection", "fraction").rows() == [
        ("full", "all", None),
        ("keep_retrain", "top", 0.2), ("keep_retrain", "random", 0.2), ("keep_retrain", "bottom", 0.2),
        ("keep_retrain", "top", None), ("keep_retrain", "random", None), ("keep_retrain", "bottom", None),
        ("keep_zero", "top", 0.2), ("keep_zero", "random", 0.2), ("keep_zero", "bottom", 0.2),
        ("keep_zero", "top", None), ("keep_zero", "random", None), ("keep_zero", "bottom", None),
    ]
    draws = table.filter(pl.col("mode") == "keep_zero", pl.col("selection") == "random", pl.col("fraction") == 0.2)
    row = summary.filter(pl.col("mode") == "keep_zero", pl.col("selection") == "random",
                         pl.col("fraction") == 0.2).row(0, named=True)
    assert row["n_draws"] == 3 and row["k"] == 4
    assert row["accuracy_mean"] == pytest.approx(draws["accuracy"].mean())
    assert row["accuracy_std"] == pytest.approx(draws["accuracy"].std())
    assert summary.filter(pl.col("selection") == "top")["accuracy_std"].null_count() == 4


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"fractions": (0.0,)}, r"every fraction must be in \(0, 1\]; got 0.0"),
        ({"fractions": (1.5,)}, r"every fraction must be in \(0, 1\]; got 1.5"),
        ({"fractions": (True,)}, r"every fraction must be in \(0, 1\]; got True"),
        ({"fractions": ("0.1",)}, r"every fraction must be in \(0, 1\]; got '0.1'"),
        ({"fractions": (), "ks": (0,)}, r"every k must be an int in \[1, 20\] \(the number of neurons\); got 0"),
        ({"ks": (21,)}, r"every k must be an int in \[1, 20\].*got 21"),
        ({"ks": (2.5,)}, r"every k must be an int.*got 2.5"),
        ({"ks": (True,)}, r"every k must be an int.*got True"),
        ({"fractions": (), "ks": ()}, "no size to ablate; give at least one fraction or k"),
        ({"ranking": np.r_[0, np.arange(19)]}, r"ranking must be a permutation of 0..19"),
        ({"ranking": np.arange(19)}, r"ranking must be a permutation of 0..19 .*got shape \(19,\)"),
        ({"zero_value": "median"}, r"unknown zero_value 'median'; choose from \['mean', 'zero'\]"),
        ({"zero_value": ()}, r"unknown zero_value \(\)"),
        ({"modes": ("keep",)}, r"unknown mode 'keep'; choose from \['keep_retrain', 'keep_zero'"),
        ({"n_random": -1}, r"n_random must be an int >= 0; got -1"),
        ({"n_ranked": 21}, r"n_ranked must be in \[0, 20\]; got 21"),
    ],
)
def test_bad_arguments_are_rejected(graded, kwargs, match):
    X_train, y_train, X_test, y_test = graded
    kwargs = {"ranking": np.arange(20), **kwargs}
    with pytest.raises(ValueError, match=match):
        ablate(X_train, y_train, X_test, y_test, **kwargs)


def test_mismatched_test_split_is_rejected(graded):
    X_train, y_train, X_test, y_test = graded
    with pytest.raises(ValueError, match="X_test has 19 neurons but X_train has 20"):
        ablate(X_train, y_train, X_test[:, :19], y_test, np.arange(20))
    with pytest.raises(ValueError, match=r"y_test must have shape \(300,\).*got \(299,\)"):
        ablate(X_train, y_train, X_test, y_test[:-1], np.arange(20))

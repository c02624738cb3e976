"""Layer-wise probing, layer distribution of top neurons, and minimal neuron sets per class."""

import numpy as np
import polars as pl
import pytest

import neuro_pipeline.evaluation.layers as layers_module
from neuro_pipeline.evaluation.control import control_labels
from neuro_pipeline.evaluation.layers import (
    layer_distribution,
    layerwise_probing,
    minimal_neuron_sets,
)
from neuro_pipeline.probe import LinearProbe

# ---------------------------------------------------------------- layerwise_probing

# Layer 0 is the label itself; layer 1 is a constant, so its probes can only predict the
# majority training label.
X_TRAIN = np.array([[0, 5], [0, 5], [0, 5], [1, 5]], dtype=np.float32)
X_TEST = np.array([[0, 5], [0, 5], [1, 5], [1, 5]], dtype=np.float32)
Y_TRAIN, Y_TEST = [0, 0, 0, 1], [0, 0, 1, 1]


def test_layerwise_by_hand_with_control():
    # Control labels: 1 - y in training, so layer 0 learns "control = 1 - x"; on the test
    # tokens x = 0, 0, 1, 1 it predicts 1, 1, 0, 0 against 1, 1, 1, 0: 3/4.
    # Layer 1 predicts the majority everywhere: task 0 -> 2/4 right, control 1 -> 3/4 right.
    table = layerwise_probing(
        X_TRAIN, Y_TRAIN, X_TEST, Y_TEST, n_layers=2, hidden_size=1,
        control_train=[1, 1, 1, 0], control_test=[1, 1, 1, 0],
    )
    assert table.schema == pl.Schema(
        {"layer": pl.Int32, "n_neurons": pl.Int32, "accuracy": pl.Float64,
         "control_accuracy": pl.Float64, "selectivity": pl.Float64}
    )
    assert table.rows() == [(0, 1, 1.0, 0.75, 0.25), (1, 1, 0.5, 0.75, -0.25)]


def test_planted_signal_in_layer_1_is_found():
    rng = np.random.default_rng(0)
    n, hidden = 1200, 8
    y = rng.integers(0, 4, size=n)
    X = rng.normal(size=(n, 3 * hidden)).astype(np.float32)
    X[:, hidden : 2 * hidden] += 1.5 * rng.normal(size=(4, hidden))[y]  # only layer 1 knows y
    words = [f"w{i}" for i in rng.integers(0, 300, size=n)]
    control = control_labels(words[:600], y[:600], words)
    table = layerwise_probing(
        X[:600], y[:600], X[600:], y[600:], n_layers=3, hidden_size=hidden,
        control_train=control[:600], control_test=control[600:],
    )
    accuracy = table["accuracy"].to_list()
    assert table["layer"].to_list() == [0, 1, 2] and table["n_neurons"].to_list() == [8, 8, 8]
    assert accuracy[1] > 0.9
    assert max(accuracy[0], accuracy[2]) < 0.4  # chance is 0.25
    assert int(np.argmax(table["selectivity"].to_list())) == 1


def test_layerwise_without_control_has_no_control_columns():
    table = layerwise_probing(X_TRAIN, Y_TRAIN, X_TEST, Y_TEST, n_layers=2, hidden_size=1)
    assert table.columns == ["layer", "n_neurons", "accuracy"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_layers": 3, "hidden_size": 1}, "2 columns but n_layers \\* hidden_size = 3 \\* 1 = 3"),
        ({"n_layers": 0, "hidden_size": 1}, "n_layers must be an int >= 1"),
        ({"n_layers": 2, "hidden_size": 1.0}, "hidden_size must be an int >= 1"),
        ({"n_layers": 2, "hidden_size": 1, "control_train": [0, 1, 0, 1]}, "both control_train and control_test"),
        ({"n_layers": 2, "hidden_size": 1, "control_train": [0, 1], "control_test": [0, 1, 0, 1]},
         "control_train must have shape \\(4,\\)"),
    ],
)
def test_layerwise_bad_inputs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        layerwise_probing(X_TRAIN, Y_TRAIN, X_TEST, Y_TEST, **kwargs)


# ---------------------------------------------------------------- layer_distribution


def test_layer_distribution_by_hand():
    # hidden_size 4: neurons 0-3 layer 0, 4-7 layer 1, 8-11 layer 2.
    table = layer_distribution(
        {"NOUN": [5, 0, 9, 6, 1], "VERB": np.array([11, 10])}, hidden_size=4, n_layers=3, top=4
    )
    assert table.schema == pl.Schema(
        {"label": pl.String, "layer": pl.Int32, "n_neurons": pl.Int32, "share": pl.Float64}
    )
    # NOUN top 4 = 5, 0, 9, 6 -> layers 1, 0, 2, 1. VERB has only 2 neurons, both layer 2.
    assert table.rows() == [
        ("NOUN", 0, 1, 0.25), ("NOUN", 1, 2, 0.5), ("NOUN", 2, 1, 0.25),
        ("VERB", 0, 0, 0.0), ("VERB", 1, 0, 0.0), ("VERB", 2, 2, 1.0),
    ]


def test_layer_distribution_writes_integer_labels_as_strings():
    table = layer_distribution({np.int64(3): [0]}, hidden_size=1, n_layers=1)
    assert table.rows() == [("3", 0, 1, 1.0)]


@pytest.mark.parametrize(
    "rankings, kwargs, match",
    [
        ({"N": [12]}, {}, "neuron 12 outside 0..11"),
        ({"N": [1, 1]}, {}, "repeats a neuron"),
        ({"N": []}, {}, "non-empty 1-D array"),
        ({}, {}, "non-empty mapping"),
        ({"N": [1]}, {"top": 0}, "top must be an int >= 1"),
    ],
)
def test_layer_distribution_bad_inputs(rankings, kwargs, match):
    with pytest.raises(ValueError, match=match):
        layer_distribution(rankings, hidden_size=4, n_layers=3, **kwargs)


# ---------------------------------------------------------------- minimal_neuron_sets


@pytest.fixture(scope="module")
def marked():
    """Neuron 0 marks class "a", neuron 1 class "b", neurons 2 and 3 are noise; class "c"
    is "neither mark", so it needs both marking neurons."""
    rng = np.random.default_rng(0)
    y = np.array(["a", "b", "c"] * 200)
    X = np.column_stack([y == "a", y == "b", rng.random(600), rng.random(600)]).astype(np.float32)
    X[:, :2] += 0.05 * rng.normal(size=(600, 2))
    return X[:300], y[:300], X[300:], y[300:]


RANKINGS = {"a": [0, 2, 3, 1], "b": [2, 3, 1, 0], "c": [2, 0, 1, 3]}


def test_minimal_sets_by_hand(marked):
    table = minimal_neuron_sets(*marked, RANKINGS, sizes=(1, 2, 3, 4))
    assert table.schema == pl.Schema(
        {"label": pl.String, "n_neurons": pl.Int32, "reached_f1": pl.Float64, "target_f1": pl.Float64,
         "full_f1": pl.Float64, "neurons": pl.List(pl.Int32)}
    )
    # a: its mark comes first. b: two noise neurons first, its mark third. c: needs both
    # marks, the second of which is third in its ranking. Clean data: every F1 is 1.
    assert table.select("label", "n_neurons", "neurons").rows() == [
        ("a", 1, [0]), ("b", 3, [2, 3, 1]), ("c", 3, [2, 0, 1])
    ]
    assert table["full_f1"].to_list() == [1.0, 1.0, 1.0]
    assert table["target_f1"].to_list() == pytest.approx([0.9, 0.9, 0.9])
    assert table["reached_f1"].to_list() == [1.0, 1.0, 1.0]


def test_never_reached_is_null_with_best_f1(marked):
    table = minimal_neuron_sets(*marked, {"b": RANKINGS["b"]}, sizes=(1, 2))
    row = table.row(0, named=True)
    assert row["n_neurons"] is None and row["neurons"] == []
    assert row["reached_f1"] < row["target_f1"]  # best of two noise-only probes


def test_stops_at_the_first_size_that_reaches(marked, monkeypatch):
    fits = []

    class CountingProbe(LinearProbe):
        def fit(self, X, y, **kwargs):
            fits.append(X.shape[1])
            return super().fit(X, y, **kwargs)

    monkeypatch.setattr(layers_module, "LinearProbe", CountingProbe)
    minimal_neuron_sets(*marked, {"a": RANKINGS["a"], "b": RANKINGS["b"]}, sizes=(1, 2, 3, 4))
    # The full probe (4 neurons), then a: size 1 only; b: sizes 1, 2, 3.
    assert fits == [4, 1, 1, 2, 3]


def test_reuses_a_fitted_full_probe(marked):
    X_train, y_train, _, _ = marked
    full = LinearProbe(l1=0.0, l2=1e-3).fit(X_train, y_train)
    given = minimal_neuron_sets(*marked, RANKINGS, sizes=(1, 2, 3), full_probe=full)
    trained = minimal_neuron_sets(*marked, RANKINGS, sizes=(1, 2, 3))
    assert given.equals(trained)
    with pytest.raises(ValueError, match="fitted on all 4 neurons"):
        minimal_neuron_sets(*marked, RANKINGS, full_probe=LinearProbe().fit(X_train[:, :2], y_train))


def test_class_without_test_tokens_gets_nulls(marked):
    X_train, y_train, X_test, y_test = marked
    keep = y_test != "c"
    table = minimal_neuron_sets(X_train, y_train, X_test[keep], y_test[keep], {"c": RANKINGS["c"]}, sizes=(1,))
    assert table.rows() == [("c", None, None, None, None, [])]


@pytest.mark.parametrize(
    "rankings, kwargs, match",
    [
        ({"z": [0]}, {}, "class 'z' of class_rankings does not occur in y_train"),
        ({"a": [4]}, {}, "neuron 4 outside 0..3"),
        ({"a": [0]}, {"target_share": 0.0}, "target_share must be in \\(0, 1\\]"),
        ({"a": [0]}, {"target_share": 1.5}, "target_share must be in \\(0, 1\\]"),
        ({"a": [0]}, {"sizes": ()}, "sizes must be a non-empty sequence"),
        ({"a": [0]}, {"sizes": (1, 0)}, "every size must be an int >= 1"),
        ({}, {}, "non-empty mapping"),
    ],
)
def test_minimal_sets_bad_inputs(marked, rankings, kwargs, match):
    with pytest.raises(ValueError, match=match):
        minimal_neuron_sets(*marked, rankings, **kwargs)

"""Control tasks (Hewitt & Liang 2019): hash-drawn labels per word type, and selectivity."""

import hashlib

import numpy as np
import polars as pl
import pytest

from neuro_pipeline.evaluation.control import (
    control_labels,
    evaluate_selectivity,
    selectivity,
)


def _expected_label(seed, word, cumulative, classes):
    """The documented draw, written out independently: u = blake2b-64(seed, word) / 2**64,
    label = first class whose cumulative share exceeds u."""
    digest = hashlib.blake2b(seed.to_bytes(8, "little", signed=True) + word.encode("utf-8"), digest_size=8).digest()
    u = int.from_bytes(digest, "big") / 2**64
    total = cumulative[-1]
    return next(c for c, cum in zip(classes, cumulative) if u < cum / total)


def test_labels_follow_the_documented_hash_draw():
    # Training distribution: A 1/4, B 3/4 -> A when u < 0.25, else B.
    train_words = ["w1", "w2", "w3", "w4"]
    train_labels = ["B", "A", "B", "B"]
    words = [f"word{i}" for i in range(50)] + ["Ünïcödé", ""]
    got = control_labels(train_words, train_labels, words, seed=7)
    assert got.tolist() == [_expected_label(7, w, [1, 4], ["A", "B"]) for w in words]


def test_mapping_is_pinned():
    # Stored control results depend on this mapping: it must never change silently.
    words = ["the", "dog", "The", "cat", "a", "ran"]
    train_labels = ["A", "B", "B", "B"]
    assert control_labels(["x"] * 4, train_labels, words).tolist() == ["A", "B", "B", "A", "B", "B"]
    assert control_labels(["x"] * 4, train_labels, words, seed=1).tolist() == ["B", "A", "B", "B", "B", "A"]


def test_single_label_task_gives_that_label_to_every_word():
    assert control_labels(["a", "b"], [3, 3], ["x", "y", "z"]).tolist() == [3, 3, 3]


def test_one_label_per_type_across_splits():
    rng = np.random.default_rng(0)
    vocabulary = [f"w{i}" for i in range(300)]
    train_words = list(rng.choice(vocabulary[:200], size=2000))
    test_words = list(rng.choice(vocabulary[100:], size=1000))  # half seen in training, half unseen
    train_labels = rng.choice(["N", "V", "D"], size=2000, p=[0.5, 0.3, 0.2])
    on_train = control_labels(train_words, train_labels, train_words)
    on_test = control_labels(train_words, train_labels, test_words)
    mapping = {}
    for word, label in zip(train_words + test_words, np.concatenate([on_train, on_test])):
        assert mapping.setdefault(word, label) == label, word


def test_mapping_does_not_depend_on_corpus_order():
    rng = np.random.default_rng(1)
    words = [f"w{i}" for i in rng.integers(0, 500, size=3000)]
    labels = rng.choice(["N", "V", "D"], size=3000)
    order = rng.permutation(3000)
    shuffled_words = [words[i] for i in order]
    # Same tokens in another order (train and query): each token keeps its label.
    original = control_labels(words, labels, words, seed=5)
    shuffled = control_labels(shuffled_words, labels[order], shuffled_words, seed=5)
    assert shuffled.tolist() == original[order].tolist()


def test_seeds_give_independent_mappings():
    words = [f"w{i}" for i in range(2000)]
    labels = ["a", "b"] * 1000  # uniform over 2 labels: independent draws agree half the time
    agree = np.mean(control_labels(words, labels, words, seed=0) == control_labels(words, labels, words, seed=1))
    assert 0.4 < agree < 0.6


def test_control_distribution_matches_training_distribution():
    # 20 000 word types, each drawn once. The share of each label has a standard deviation
    # of at most sqrt(0.25 / 20000) = 0.0035, so 0.015 is over 4 sigma; the hash and seed
    # are fixed, so the outcome is deterministic.
    shares = {"A": 0.5, "B": 0.3, "C": 0.15, "D": 0.05}
    train_labels = np.repeat(list(shares), [int(p * 1000) for p in shares.values()])
    vocabulary = [f"type{i}" for i in range(20000)]
    drawn = control_labels(["x"] * len(train_labels), train_labels, vocabulary, seed=3)
    for label, p in shares.items():
        assert np.mean(drawn == label) == pytest.approx(p, abs=0.015), label


def test_word_types_are_case_sensitive():
    lower = [f"word{i}" for i in range(200)]
    upper = [w.capitalize() for w in lower]
    train = ["x"] * 4
    labels = ["a", "b", "c", "d"]
    # Independent draws over 4 equally likely labels: about 3/4 of pairs differ.
    assert np.mean(control_labels(train, labels, lower) != control_labels(train, labels, upper)) > 0.5


def test_keeps_the_label_dtype():
    got = control_labels(["a", "b", "c"], np.array([4, 7, 7]), ["x", "y"])
    assert got.dtype == np.int64 and set(got.tolist()) <= {4, 7}


@pytest.mark.parametrize(
    "args, kwargs, error, match",
    [
        ((["a", "b"], ["N"], ["a"]), {}, ValueError, "one label per training word"),
        (([], [], ["a"]), {}, ValueError, "empty"),
        ((["a", "b"], ["N", None], ["a"]), {}, ValueError, "missing label"),
        ((["a", 3], ["N", "V"], ["a"]), {}, TypeError, "str; got int 3 at position 1"),
        ((["a"], ["N"], "abc"), {}, TypeError, "not a single string"),
        ((["a"], ["N"], ["a"]), {"seed": 1.5}, ValueError, "seed must be an int"),
        ((["a"], ["N"], ["a"]), {"seed": 2**64}, ValueError, "seed must be an int"),
    ],
)
def test_control_labels_bad_inputs(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        control_labels(*args, **kwargs)


def test_selectivity_by_hand():
    assert selectivity(0.9, 0.6) == pytest.approx(0.3)
    assert selectivity(0.5, 0.75) == pytest.approx(-0.25)
    for bad in ((1.2, 0.5), (0.5, -0.1), (float("nan"), 0.5), ("0.9", 0.5)):
        with pytest.raises(ValueError, match="accuracy in \\[0, 1\\]"):
            selectivity(*bad)


@pytest.fixture(scope="module")
def identity_vs_signal():
    """60 word types; each type's task label is its index mod 3. Columns 0..59 are a
    (noisy) one-hot of the word type, so a probe can memorise any per-type labelling;
    columns 60..62 encode only the task label (class code plus noise), so a probe on them
    can do the task but cannot know a word's random control label."""
    rng = np.random.default_rng(0)
    n = 3000
    types = rng.integers(0, 60, size=n)
    words = [f"w{t}" for t in types]
    y = types % 3
    identity = np.eye(60)[types] + 0.05 * rng.normal(size=(n, 60))
    signal = 2.0 * np.eye(3)[y] + 0.5 * rng.normal(size=(n, 3))
    X = np.hstack([identity, signal]).astype(np.float32)
    half = n // 2
    return X[:half], words[:half], y[:half], X[half:], words[half:], y[half:]


def test_memorisable_identity_is_less_selective_than_real_signal(identity_vs_signal):
    X_train, w_train, y_train, X_test, w_test, y_test = identity_vs_signal
    table = evaluate_selectivity(
        X_train, w_train, y_train, X_test, w_test, y_test,
        {"identity": np.arange(60), "signal": np.arange(60, 63)},
    )
    assert table.schema == pl.Schema(
        {"selection": pl.String, "k": pl.Int32, "task_accuracy": pl.Float64,
         "control_accuracy": pl.Float64, "selectivity": pl.Float64}
    )
    rows = {r["selection"]: r for r in table.iter_rows(named=True)}
    assert rows["identity"]["k"] == 60 and rows["signal"]["k"] == 3
    # Word identity solves the task and the control task alike: no selectivity.
    assert rows["identity"]["task_accuracy"] > 0.95
    assert rows["identity"]["control_accuracy"] > 0.95
    assert rows["identity"]["selectivity"] < 0.05
    # The task signal solves the task but says nothing about control labels.
    assert rows["signal"]["task_accuracy"] > 0.9
    assert rows["signal"]["control_accuracy"] < 0.7
    assert rows["signal"]["selectivity"] > rows["identity"]["selectivity"] + 0.3
    for r in rows.values():
        assert r["selectivity"] == pytest.approx(r["task_accuracy"] - r["control_accuracy"])


def test_default_selection_is_all_neurons_and_inputs_are_untouched(identity_vs_signal):
    X_train, w_train, y_train, X_test, w_test, y_test = identity_vs_signal
    before = X_train.copy()
    table = evaluate_selectivity(X_train[:, 60:], w_train, y_train, X_test[:, 60:], w_test, y_test, seed=1)
    assert table.select("selection", "k").rows() == [("all", 3)]
    np.testing.assert_array_equal(X_train, before)


@pytest.mark.parametrize(
    "selections, match",
    [
        ({"bad": [0, 99]}, "neuron 99 outside 0..62"),
        ({"bad": [-1]}, "neuron -1 outside"),
        ({"bad": [1, 1]}, "repeats a neuron"),
        ({"bad": []}, "non-empty 1-D array"),
        ({"bad": [0.5]}, "ints"),
        ({}, "non-empty mapping"),
    ],
)
def test_bad_selections_raise(identity_vs_signal, selections, match):
    X_train, w_train, y_train, X_test, w_test, y_test = identity_vs_signal
    with pytest.raises(ValueError, match=match):
        evaluate_selectivity(X_train, w_train, y_train, X_test, w_test, y_test, selections)


def test_bad_shapes_raise(identity_vs_signal):
    X_train, w_train, y_train, X_test, w_test, y_test = identity_vs_signal
    with pytest.raises(ValueError, match="words_test has 1499 words but X has 1500 rows"):
        evaluate_selectivity(X_train, w_train, y_train, X_test, w_test[:-1], y_test)
    with pytest.raises(ValueError, match="X_test has 3 neurons but X_train has 63"):
        evaluate_selectivity(X_train, w_train, y_train, X_test[:, :3], w_test, y_test)
    with pytest.raises(ValueError, match="y_test must have shape"):
        evaluate_selectivity(X_train, w_train, y_train, X_test, w_test, y_test[:-1])


def test_too_few_word_types_for_a_control_task():
    X = np.arange(8, dtype=np.float32).reshape(4, 2)
    # One word type: every token draws the same control label.
    with pytest.raises(ValueError, match="same control label"):
        evaluate_selectivity(X, ["w"] * 4, [0, 1, 0, 1], X, ["w"] * 4, [0, 1, 0, 1])

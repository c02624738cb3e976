"""Tests for balance_labels: undersampling majority classes of training rows."""

from __future__ import annotations

import json

import numpy as np
import pytest

from neuro_pipeline.corpus.balance import balance_labels


def _labels() -> list[str]:
    # 50 OTHER, 10 date, 3 time, interleaved
    labels = ["OTHER"] * 50 + ["date"] * 10 + ["time"] * 3
    return list(np.random.default_rng(7).permutation(labels))


def _check_consistent(labels, result):
    labels = np.asarray(labels)
    kept = labels[result.indices]
    assert np.all(np.diff(result.indices) > 0), "indices must be sorted and unique"
    assert result.indices.dtype == np.int64
    values, counts = np.unique(kept, return_counts=True)
    assert dict(zip(values.tolist(), counts.tolist())) == {
        k: v for k, v in result.counts_after.items() if v}


def test_minority_target_equalises_every_class():
    labels = _labels()
    result = balance_labels(labels, seed=0)
    assert result.counts_before == {"OTHER": 50, "date": 10, "time": 3}
    assert result.counts_after == {"OTHER": 3, "date": 3, "time": 3}
    assert result.target == "minority" and result.target_size == 3
    _check_consistent(labels, result)
    # the minority class keeps every one of its rows
    time_rows = [i for i, label in enumerate(labels) if label == "time"]
    assert set(time_rows) <= set(result.indices.tolist())


def test_binary_integer_labels():
    labels = np.array([0] * 8 + [1] * 2)
    result = balance_labels(labels, seed=1)
    assert result.counts_after == {0: 2, 1: 2}
    assert {8, 9} <= set(result.indices.tolist())
    _check_consistent(labels, result)


def test_int_target_caps_large_classes_and_leaves_small_ones():
    labels = _labels()
    result = balance_labels(labels, seed=0, target=5)
    assert result.counts_after == {"OTHER": 5, "date": 5, "time": 3}
    _check_consistent(labels, result)
    everything = balance_labels(labels, seed=0, target=1000)
    assert everything.counts_after == everything.counts_before
    assert everything.indices.tolist() == list(range(len(labels)))


def test_deterministic_and_seed_sensitive():
    labels = _labels()
    first = balance_labels(labels, seed=3).indices
    assert np.array_equal(first, balance_labels(labels, seed=3).indices)
    assert not np.array_equal(first, balance_labels(labels, seed=4).indices)


def _date_rows(result, labels) -> list[int]:
    return [int(i) for i in result.indices if labels[i] == "date"]


def test_a_class_sample_does_not_depend_on_the_other_classes():
    labels = list(np.random.default_rng(1).permutation(["a"] * 20 + ["date"] * 10 + ["z"] * 30))
    base = balance_labels(labels, seed=5, target=4)
    # renaming "a" moves it from before "date" to after it in the class order
    renamed = ["zz" if label == "a" else label for label in labels]
    moved = balance_labels(renamed, seed=5, target=4)
    assert _date_rows(base, labels) == _date_rows(moved, renamed)
    # dropping a whole (sampled) class leaves the sample of "date" unchanged
    kept = [i for i, label in enumerate(labels) if label != "a"]
    fewer = [labels[i] for i in kept]
    subset = balance_labels(fewer, seed=5, target=4)
    assert [kept[i] for i in _date_rows(subset, fewer)] == _date_rows(base, labels)


def test_indices_are_read_only_and_provenance_is_json():
    result = balance_labels(["a", "a", "b"], seed=0)
    with pytest.raises(ValueError):
        result.indices[0] = 1
    record = json.loads(result.to_json())
    assert record["counts_before"] == {"a": 2, "b": 1}
    assert (record["n_rows_before"], record["n_rows_after"], record["seed"]) == (3, 2, 0)
    assert len(record["indices_sha256"]) == 16
    ints = json.loads(balance_labels(np.array([1, 1, 2]), seed=0).to_json())
    assert ints["counts_after"] == {"1": 1, "2": 1}


@pytest.mark.parametrize(
    ("labels", "kwargs", "error", "message"),
    [
        pytest.param([], {"seed": 0}, ValueError, r"labels is empty", id="empty"),
        pytest.param([["a"]], {"seed": 0}, ValueError, r"labels must be 1-D", id="2d"),
        pytest.param("ab", {"seed": 0}, TypeError, r"not a single string", id="string"),
        pytest.param(["a", None], {"seed": 0}, TypeError, r"labels must be strings or integers",
                     id="none-label"),
        pytest.param([0.5, 1.0], {"seed": 0}, TypeError, r"got dtype float64", id="float"),
        pytest.param(["a"], {"seed": 1.5}, TypeError, r"seed must be an int; got float",
                     id="float-seed"),
        pytest.param(["a"], {"seed": True}, TypeError, r"seed must be an int; got bool",
                     id="bool-seed"),
        pytest.param(["a"], {"seed": -1}, ValueError, r"seed must be >= 0", id="negative-seed"),
        pytest.param(["a"], {"seed": 0, "target": 0}, ValueError, r"target must be >= 1",
                     id="zero-target"),
        pytest.param(["a"], {"seed": 0, "target": "majority"}, ValueError,
                     r"Unknown target 'majority'; choose 'minority' or a positive int",
                     id="bad-target"),
        pytest.param(["a"], {"seed": 0, "target": 2.0}, TypeError, r"target must be 'minority'",
                     id="float-target"),
    ],
)
def test_invalid_input(labels, kwargs, error, message):
    with pytest.raises(error, match=message):
        balance_labels(labels, **kwargs)

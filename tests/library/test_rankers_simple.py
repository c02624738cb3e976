"""Probeless, IoU and Mean Select: scores on toy arrays computed by hand, agreement with
brute-force and sklearn oracles, and inputs left unchanged."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

import neuro_pipeline.ranking.iou as iou_module
from neuro_pipeline.ranking import (
    IoURanker,
    MeanSelectRanker,
    ProbelessRanker,
    get_ranker,
)
from neuro_pipeline.ranking.iou import average_precision_per_class

LABELS = np.array(["DET", "DET", "NOUN", "NOUN", "VERB", "VERB"])

# Class means, by column: (1, 4, 1), (1, 1, 3) and (7, 7, 7).
TOY = np.array(
    [
        [0.0, 1.0, 7.0],
        [2.0, 1.0, 7.0],
        [4.0, 1.0, 7.0],
        [4.0, 1.0, 7.0],
        [1.0, 1.0, 7.0],
        [1.0, 5.0, 7.0],
    ]
)


def _ranks(ranker):
    return {label: order.tolist() for label, order in ranker.class_rankings_.items()}


# ------------------------------------------------------------------ registry
@pytest.mark.parametrize(
    "name, cls", [("probeless", ProbelessRanker), ("iou", IoURanker), ("mean_select", MeanSelectRanker)]
)
def test_methods_are_registered(name, cls):
    assert type(get_ranker(name)) is cls


# ------------------------------------------------------------------ probeless
def test_probeless_scores_by_hand():
    X = TOY.copy()
    ranker = ProbelessRanker().fit(X, LABELS)
    # Column 0: |1-4| + |1-1| + |4-1| = 6; column 1: 0 + 2 + 2 = 4; column 2: constant.
    np.testing.assert_allclose(ranker.scores_, [6.0, 4.0, 0.0], atol=1e-12)
    np.testing.assert_array_equal(ranker.ranking_, [0, 1, 2])
    np.testing.assert_allclose(ranker.class_means_, [[1, 1, 7], [4, 1, 7], [1, 3, 7]], atol=1e-12)
    # Per class t: sum over c != t of |mu_t - mu_c|.
    np.testing.assert_allclose(ranker.class_scores_, [[3, 2, 0], [6, 2, 0], [3, 4, 0]], atol=1e-12)
    assert _ranks(ranker) == {"DET": [0, 1, 2], "NOUN": [0, 1, 2], "VERB": [1, 0, 2]}
    np.testing.assert_array_equal(X, TOY)


def test_probeless_matches_brute_force_pairs():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 9, size=500)
    X = rng.normal(size=(500, 30)).astype(np.float32)
    ranker = ProbelessRanker().fit(X, y)
    means = np.stack([X[y == c].astype(np.float64).mean(axis=0) for c in range(9)])
    pairwise = np.abs(means[:, None, :] - means[None, :, :])  # (C, C, D)
    np.testing.assert_allclose(ranker.class_means_, means, atol=1e-6)
    np.testing.assert_allclose(ranker.class_scores_, pairwise.sum(axis=1), atol=1e-5)
    np.testing.assert_allclose(ranker.scores_, np.triu(pairwise.transpose(2, 0, 1), k=1).sum(axis=(1, 2)), atol=1e-5)


# ------------------------------------------------------------------ mean select
def test_mean_select_scores_by_hand():
    X = TOY.copy()
    ranker = MeanSelectRanker().fit(X, LABELS)
    # Column 0 (range 4): DET 1 vs rest 2.5, NOUN 4 vs 1, VERB 1 vs 2.5.
    # Column 1 (range 4): DET 1 vs 2, NOUN 1 vs 2, VERB 3 vs 1. Column 2 is constant.
    expected = np.array([[-1.5 / 4, -1 / 4, 0], [3 / 4, -1 / 4, 0], [-1.5 / 4, 2 / 4, 0]])
    np.testing.assert_allclose(ranker.class_scores_, expected, rtol=1e-6)
    np.testing.assert_allclose(ranker.scores_, [0.75, 0.5, 0.0], rtol=1e-6)
    np.testing.assert_array_equal(ranker.ranking_, [0, 1, 2])
    assert _ranks(ranker) == {"DET": [0, 1, 2], "NOUN": [0, 1, 2], "VERB": [1, 0, 2]}
    np.testing.assert_array_equal(X, TOY)


def test_mean_select_binary_is_neurox_formula():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, size=300)
    X = rng.normal(size=(300, 12))
    ranker = MeanSelectRanker().fit(X, y)
    neurox = (X[y == 1].mean(axis=0) - X[y == 0].mean(axis=0)) / (X.max(axis=0) - X.min(axis=0) + 1e-7)
    np.testing.assert_allclose(ranker.scores_, np.abs(neurox), rtol=1e-9)
    np.testing.assert_allclose(ranker.class_scores_[1], neurox, rtol=1e-9)


# ------------------------------------------------------------------ IoU
IOU_X = np.array(
    [
        [0.9, 0.1],
        [0.03, 0.2],
        [0.5, 0.3],
        [0.5, 0.4],
        [0.2, 0.5],
        [-0.04, 0.6],
    ]
)


def test_iou_scores_by_hand_with_threshold():
    X = IOU_X.copy()
    ranker = IoURanker(threshold=0.05).fit(X, LABELS)
    # Column 0 becomes (0.9, 0, 0.5, 0.5, 0.2, 0). AP = mean over positives of
    # #positives >= v / #tokens >= v:
    #   DET (0.9, 0): (1/1 + 2/6) / 2; NOUN (0.5, 0.5 tied): (2/3 + 2/3) / 2;
    #   VERB (0.2, 0): (1/4 + 2/6) / 2.
    # Column 1 increases down the rows:
    #   DET (0.1, 0.2): (2/6 + 1/5) / 2; NOUN (0.3, 0.4): (2/4 + 1/3) / 2; VERB: 1.
    expected = np.array([[2 / 3, 4 / 15], [2 / 3, 5 / 12], [7 / 24, 1.0]])
    np.testing.assert_allclose(ranker.class_scores_, expected, atol=1e-12)
    np.testing.assert_allclose(ranker.scores_, [2 / 3, 1.0], atol=1e-12)  # max over classes
    np.testing.assert_array_equal(ranker.ranking_, [1, 0])
    assert _ranks(ranker) == {"DET": [0, 1], "NOUN": [0, 1], "VERB": [1, 0]}
    np.testing.assert_array_equal(X, IOU_X)  # the near-zero activations were not zeroed in place


def test_iou_threshold_zero_keeps_small_activations():
    ranker = IoURanker(threshold=0).fit(IOU_X, LABELS)
    # DET's 0.03 now outranks VERB's -0.04: (1/1 + 2/5) / 2.
    assert ranker.class_scores_[0, 0] == pytest.approx(0.7, abs=1e-12)
    assert ranker.class_scores_[2, 0] == pytest.approx(7 / 24, abs=1e-12)


def test_iou_mean_merge_by_hand():
    ranker = IoURanker(merge="mean").fit(IOU_X, LABELS)
    np.testing.assert_allclose(ranker.scores_, [39 / 72, 101 / 180], atol=1e-12)


def test_iou_binary_is_neurox_average_precision():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, size=400)
    X = np.round(rng.normal(scale=0.1, size=(400, 25)), 2).astype(np.float32)
    X[:, 3] += 0.2 * y
    before = X.copy()
    ranker = IoURanker(merge="mean").fit(X, y)  # merge has no effect with 2 classes
    np.testing.assert_array_equal(X, before)
    neurox = X.copy()  # what NeuroX's iou_probe does to the caller's array
    neurox[np.abs(neurox) < 0.05] = 0
    expected = [average_precision_score(y, neurox[:, i]) for i in range(25)]
    np.testing.assert_allclose(ranker.scores_, expected, atol=1e-10)
    assert ranker.ranking_[0] == 3


@pytest.mark.parametrize("threshold", [0.0, 0.05])
def test_average_precision_matches_sklearn_with_ties_across_blocks(monkeypatch, threshold):
    rng = np.random.default_rng(6)
    codes = rng.integers(0, 5, size=300)
    X = (rng.integers(-3, 4, size=(300, 23)) * 0.04).astype(np.float32)  # many ties, some |x| < 0.05
    monkeypatch.setattr(iou_module, "_BLOCK_ELEMENTS", 300 * 4)  # 4 neurons per block, a partial last one
    ap = average_precision_per_class(X, codes, 5, threshold=threshold)
    scored = np.where(np.abs(X) < threshold, 0, X)
    expected = [[average_precision_score(codes == c, scored[:, i]) for i in range(23)] for c in range(5)]
    np.testing.assert_allclose(ap, expected, atol=1e-10)


def test_iou_integer_activations_match_sklearn():
    X = np.array([[3, 0], [1, 2], [1, 2], [0, 5], [2, 2]])
    y = np.array([1, 0, 1, 0, 1])
    ranker = IoURanker().fit(X, y)
    expected = [average_precision_score(y, X[:, i]) for i in range(2)]
    np.testing.assert_allclose(ranker.scores_, expected, atol=1e-12)


@pytest.mark.parametrize(
    "params, message",
    [
        ({"threshold": -0.1}, r"^The 'threshold' parameter of IoURanker must be a float >= 0\. Got -0\.1 instead\.$"),
        ({"threshold": "0.05"}, r"^The 'threshold' parameter of IoURanker must be a float >= 0\. Got '0\.05' instead\.$"),
        ({"merge": "sum"}, r"^The 'merge' parameter of IoURanker must be one of \['max', 'mean'\]\. Got 'sum' instead\.$"),
    ],
)
def test_iou_rejects_bad_parameters(params, message):
    with pytest.raises(ValueError, match=message):
        IoURanker(**params).fit(IOU_X, LABELS)

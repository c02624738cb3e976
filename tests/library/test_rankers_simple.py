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
    ranker = ProbelessRanker(merge="pairwise_sum").fit(X, LABELS)
    # Column 0: |1-4| + |1-1| + |4-1| = 6; column 1: 0 + 2 + 2 = 4; column 2: constant.
    np.testing.assert_allclose(ranker.scores_, [6.0, 4.0, 0.0], atol=1e-12)
    np.testing.assert_array_equal(ranker.ranking_, [0, 1, 2])
    np.testing.assert_allclose(ranker.class_means_, [[1, 1, 7], [4, 1, 7], [1, 3, 7]], atol=1e-12)
    # Per class t: sum over c != t of |mu_t - mu_c|.
    np.testing.assert_allclose(ranker.class_scores_, [[3, 2, 0], [6, 2, 0], [3, 4, 0]], atol=1e-12)
    assert _ranks(ranker) == {"DET": [0, 1, 2], "NOUN": [0, 1, 2], "VERB": [1, 0, 2]}
    np.testing.assert_array_equal(X, TOY)


# One token per class, so the rows are the class means (DET, NOUN, VERB). Per-class scores
# sum_{c != t} |mu_t - mu_c|, and each class's ranking:
#   DET  [30, 18, 30, 12]   0, 2, 1, 3
#   NOUN [20, 18, 15, 24]   3, 0, 1, 2
#   VERB [30, 36, 15, 12]   1, 0, 2, 3
# Neuron 0 spreads all three classes; neurons 1, 2 and 3 each single out one class.
MERGE_X = np.array([[0.0, 0.0, 15.0, 0.0], [10.0, 0.0, 0.0, 12.0], [20.0, 18.0, 0.0, 0.0]])
MERGE_LABELS = np.array(["DET", "NOUN", "VERB"])


@pytest.mark.parametrize(
    "merge, scores",
    [
        # Pair sums |0-10| + |0-20| + |10-20| = 40, 18 + 18 = 36, 15 + 15 = 30, 12 + 12 = 24.
        ("pairwise_sum", [40, 36, 30, 24]),
        ("mean", [80 / 3, 24, 20, 16]),  # ranks as the pair sum: the column sums are twice it
        ("max", [30, 36, 30, 24]),  # 1, then the tie 0 and 2 by index, then 3
        # Round 1, turns by candidate score: VERB takes 1 (36), DET takes 0 (30), NOUN takes
        # 3 (24). Round 2: DET takes 2. Order 1, 0, 3, 2; scores 4 - position.
        ("round_robin", [3, 4, 1, 2]),
        # Best ranks: 1 -> 0 (VERB, 36), 0 -> 0 (DET, 30), 3 -> 0 (NOUN, 24), 2 -> 1.
        ("best_rank", [3, 4, 1, 2]),
    ],
)
def test_probeless_merges_by_hand(merge, scores):
    ranker = ProbelessRanker(merge=merge).fit(MERGE_X, MERGE_LABELS)
    np.testing.assert_allclose(ranker.class_scores_, [[30, 18, 30, 12], [20, 18, 15, 24], [30, 36, 15, 12]])
    np.testing.assert_allclose(ranker.scores_, scores, atol=1e-12)
    np.testing.assert_array_equal(ranker.ranking_, np.argsort(-np.asarray(scores), kind="stable"))


def test_probeless_default_merge_is_round_robin():
    ranker = ProbelessRanker().fit(MERGE_X, MERGE_LABELS)
    np.testing.assert_array_equal(ranker.ranking_, [1, 0, 3, 2])


def test_probeless_matches_brute_force_pairs():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 9, size=500)
    X = rng.normal(size=(500, 30)).astype(np.float32)
    ranker = ProbelessRanker(merge="pairwise_sum").fit(X, y)
    means = np.stack([X[y == c].astype(np.float64).mean(axis=0) for c in range(9)])
    pairwise = np.abs(means[:, None, :] - means[None, :, :])  # (C, C, D)
    np.testing.assert_allclose(ranker.class_means_, means, atol=1e-6)
    np.testing.assert_allclose(ranker.class_scores_, pairwise.sum(axis=1), atol=1e-5)
    np.testing.assert_allclose(ranker.scores_, np.triu(pairwise.transpose(2, 0, 1), k=1).sum(axis=(1, 2)), atol=1e-5)


@pytest.mark.parametrize("merge", ["pairwise_sum", "max", "mean", "round_robin", "best_rank"])
def test_probeless_binary_ignores_merge(merge):
    X = np.array([[1.0, 0.0, 2.0], [3.0, 0.0, 2.0], [0.0, 1.0, 2.0], [0.0, 3.0, 2.0]])
    ranker = ProbelessRanker(merge=merge).fit(X, [0, 0, 1, 1])
    np.testing.assert_allclose(ranker.scores_, [2.0, 2.0, 0.0])  # |mu_0 - mu_1|


@pytest.mark.parametrize(
    "cls, options",
    [
        (ProbelessRanker, "'pairwise_sum', 'max', 'mean', 'round_robin', 'best_rank'"),
        (MeanSelectRanker, "'max', 'mean', 'round_robin', 'best_rank'"),
    ],
)
def test_mean_rankers_reject_unknown_merge(cls, options):
    message = rf"^The 'merge' parameter of {cls.__name__} must be one of \[{options}\]\. Got 'sum' instead\.$"
    with pytest.raises(ValueError, match=message):
        cls(merge="sum").fit(TOY, LABELS)


# ------------------------------------------------------------------ mean select
def test_mean_select_scores_by_hand():
    X = TOY.copy()
    ranker = MeanSelectRanker(merge="max").fit(X, LABELS)
    # Column 0 (range 4): DET 1 vs rest 2.5, NOUN 4 vs 1, VERB 1 vs 2.5.
    # Column 1 (range 4): DET 1 vs 2, NOUN 1 vs 2, VERB 3 vs 1. Column 2 is constant.
    expected = np.array([[-1.5 / 4, -1 / 4, 0], [3 / 4, -1 / 4, 0], [-1.5 / 4, 2 / 4, 0]])
    np.testing.assert_allclose(ranker.class_scores_, expected, rtol=1e-6)
    np.testing.assert_allclose(ranker.scores_, [0.75, 0.5, 0.0], rtol=1e-6)
    np.testing.assert_array_equal(ranker.ranking_, [0, 1, 2])
    assert _ranks(ranker) == {"DET": [0, 1, 2], "NOUN": [0, 1, 2], "VERB": [1, 0, 2]}
    np.testing.assert_array_equal(X, TOY)


# Tokens DET, DET, NOUN, VERB, VERB. s_c = (class mean - rest mean) / range, e.g. neuron 0
# (range 8): DET (8 - 10/3) / 8, NOUN (0 - 26/4) / 8, VERB (5 - 16/3) / 8. Rankings by |s_c|:
#   DET  [ 14/24, 5/24, 11/48,  1/14]   0, 2, 1, 3
#   NOUN [13/16,  5/16, 17/32,  4/7 ]   0, 3, 2, 1
#   VERB [  1/24, 5/12,  1/8,  13/42]   1, 3, 2, 0
SELECT_X = np.array(
    [[8.0, 7.0, 7.0, 2.0], [8.0, 4.0, 2.0, 7.0], [0.0, 6.0, 9.0, 8.0], [7.0, 5.0, 1.0, 6.0], [3.0, 3.0, 9.0, 1.0]]
)
SELECT_LABELS = np.array(["DET", "DET", "NOUN", "VERB", "VERB"])


@pytest.mark.parametrize(
    "merge, order",
    [
        # Maxima 13/16, 5/12, 17/32, 4/7: VERB's best neuron (1) comes last.
        ("max", [0, 3, 2, 1]),
        # Sums 1.4375, 0.9375, 0.885, 0.952.
        ("mean", [0, 3, 1, 2]),
        # Round 1, turns by candidate: NOUN takes 0 (13/16), DET's 0 is gone so it takes 2,
        # VERB takes 1; then 3.
        ("round_robin", [0, 2, 1, 3]),
        # Best ranks: 0 -> 0 (13/16), 1 -> 0 (5/12), 3 -> 1 (NOUN, 4/7), 2 -> 1 (DET, 11/48).
        ("best_rank", [0, 1, 3, 2]),
    ],
)
def test_mean_select_merges_by_hand(merge, order):
    ranker = MeanSelectRanker(merge=merge).fit(SELECT_X, SELECT_LABELS)
    expected = [[14 / 24, 5 / 24, -11 / 48, -1 / 14], [-13 / 16, 5 / 16, 17 / 32, 4 / 7], [-1 / 24, -5 / 12, -1 / 8, -13 / 42]]
    np.testing.assert_allclose(ranker.class_scores_, expected, rtol=1e-6)
    np.testing.assert_array_equal(ranker.ranking_, order)
    if merge in ("round_robin", "best_rank"):
        np.testing.assert_array_equal(ranker.scores_[order], [4, 3, 2, 1])


def test_mean_select_default_merge_is_best_rank():
    # The signed scores would give another order (0, 3, 2, 1): the merge must use |s_c|.
    np.testing.assert_array_equal(MeanSelectRanker().fit(SELECT_X, SELECT_LABELS).ranking_, [0, 1, 3, 2])


@pytest.mark.parametrize("merge", ["max", "mean", "round_robin", "best_rank"])
def test_mean_select_binary_ignores_merge(merge):
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, size=300)
    X = rng.normal(size=(300, 12))
    ranker = MeanSelectRanker(merge=merge).fit(X, y)
    neurox = (X[y == 1].mean(axis=0) - X[y == 0].mean(axis=0)) / (X.max(axis=0) - X.min(axis=0) + 1e-7)
    np.testing.assert_allclose(ranker.scores_, np.abs(neurox), rtol=1e-9)


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
    ranker = IoURanker(threshold=0.05, merge="max").fit(X, LABELS)
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


@pytest.mark.parametrize(
    "merge, scores",
    [
        ("max", [2 / 3, 1.0]),
        ("mean", [39 / 72, 101 / 180]),
        # VERB's candidate (1, AP 1) goes first, then DET takes 0: scores 2 - position.
        ("round_robin", [1.0, 2.0]),
        # Both neurons have best rank 0; neuron 1's AP there (1) beats neuron 0's (2/3).
        ("best_rank", [1.0, 2.0]),
    ],
)
def test_iou_merges_by_hand(merge, scores):
    ranker = IoURanker(merge=merge).fit(IOU_X, LABELS)
    np.testing.assert_allclose(ranker.scores_, scores, atol=1e-12)


def test_iou_round_robin_covers_a_class_that_max_crowds_out():
    # Neurons 0 and 1 detect DET perfectly, 2 and 3 NOUN perfectly; neuron 4 detects VERB
    # well but not perfectly (a DET token ties VERB's lower activation).
    X = np.array(
        [
            [1.0, 1.0, 0.0, 0.0, 0.0],
            [1.0, 1.0, 0.0, 0.0, 0.5],
            [0.0, 0.0, 1.0, 1.0, 0.0],
            [0.0, 0.0, 1.0, 1.0, 0.0],
            [0.0, 0.0, 0.0, 0.0, 1.0],
            [0.0, 0.0, 0.0, 0.0, 0.5],
        ]
    )
    # VERB's AP on neuron 4: (1/1 + 2/3) / 2 = 5/6.
    assert IoURanker(threshold=0, merge="max").fit(X, LABELS).ranking_[:3].tolist() == [0, 1, 2]
    # Round 1: DET takes 0, NOUN takes 2 (APs 1), VERB takes 4 (5/6).
    assert IoURanker(threshold=0).fit(X, LABELS).ranking_[:3].tolist() == [0, 2, 4]


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
        (
            {"merge": "sum"},
            (
                r"^The 'merge' parameter of IoURanker must be one of "
                r"\['max', 'mean', 'round_robin', 'best_rank'\]\. Got 'sum' instead\.$"
            ),
        ),
    ],
)
def test_iou_rejects_bad_parameters(params, message):
    with pytest.raises(ValueError, match=message):
        IoURanker(**params).fit(IOU_X, LABELS)

"""Merging per-class relevance into one ranking: every merge on a hand-worked example, and
the properties that define the order-based merges on random data."""

import numpy as np
import pytest

from neuro_pipeline.ranking._merge import MERGES, check_merge, merge_class_scores

# 3 classes x 6 neurons. Per-class rankings (descending, ties to the lower index):
#   class 0: 0, 1, 2, 5, 4, 3
#   class 1: 0, 4, 5, 3, 2, 1
#   class 2: 1, 5, 3, 4, 2, 0
RELEVANCE = np.array(
    [
        [0.9, 0.8, 0.7, 0.0, 0.1, 0.2],
        [0.5, 0.0, 0.1, 0.2, 0.4, 0.3],
        [0.0, 0.65, 0.1, 0.3, 0.2, 0.5],
    ]
)


def _order(scores):
    return np.argsort(-scores, kind="stable").tolist()


def test_max_by_hand():
    scores = merge_class_scores(RELEVANCE, "max")
    np.testing.assert_allclose(scores, [0.9, 0.8, 0.7, 0.3, 0.4, 0.5])
    # Class 1's best neurons (0, 4) reach only 0.5 and 0.4, so neuron 4 ranks fifth.
    assert _order(scores) == [0, 1, 2, 5, 4, 3]


def test_mean_by_hand():
    scores = merge_class_scores(RELEVANCE, "mean")
    np.testing.assert_allclose(scores, np.array([1.4, 1.45, 0.9, 0.5, 0.7, 1.0]) / 3)
    assert _order(scores) == [1, 0, 5, 2, 4, 3]


def test_round_robin_by_hand():
    # Round 1, turns by the relevance of each class's candidate: class 0 (neuron 0, 0.9)
    # takes 0; class 2 (neuron 1, 0.65) takes 1; class 1's candidate 0 is gone, so it takes
    # its next, 4.
    # Round 2, candidates 2 (0.7), 5 (0.5 for class 2) and 5 (0.3 for class 1): class 0
    # takes 2, class 2 takes 5, and class 1 takes its next free neuron, 3.
    scores = merge_class_scores(RELEVANCE, "round_robin")
    assert _order(scores) == [0, 1, 4, 2, 5, 3]
    # scores_ = n_neurons - position, so sorting reproduces the order.
    np.testing.assert_array_equal(scores, [6, 5, 3, 1, 4, 2])


def test_best_rank_by_hand():
    # Best rank (class where reached, relevance there): neuron 0 -> 0 (class 0, 0.9),
    # 1 -> 0 (class 2, 0.65), 5 -> 1 (class 2, 0.5), 4 -> 1 (class 1, 0.4),
    # 2 -> 2 (class 0, 0.7), 3 -> 2 (class 2, 0.3).
    scores = merge_class_scores(RELEVANCE, "best_rank")
    assert _order(scores) == [0, 1, 5, 4, 2, 3]
    np.testing.assert_array_equal(scores, [6, 5, 2, 1, 3, 4])


def test_best_rank_ties_go_to_the_highest_relevance_where_the_rank_is_reached():
    # Neurons 0 and 1 both reach rank 0: neuron 0 in classes 0 (0.3) and 1 (0.9), neuron 1
    # in class 2 (0.5). Neuron 0's 0.9 counts, not the 0.3 of the first class.
    relevance = np.array([[0.3, 0.0, 0.1], [0.9, 0.0, 0.1], [0.0, 0.5, 0.1]])
    assert _order(merge_class_scores(relevance, "best_rank")) == [0, 1, 2]


def test_order_merges_break_ties_by_lower_index():
    # Within a class, equal relevance goes to the lower neuron; between classes whose
    # candidates are equally relevant, the lower class takes its turn first.
    relevance = np.array([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]])
    assert _order(merge_class_scores(relevance, "round_robin")) == [0, 2, 1, 3]
    assert _order(merge_class_scores(relevance, "best_rank")) == [0, 2, 1, 3]
    swapped = relevance[::-1].copy()  # class 0 now prefers neurons 2 and 3
    assert _order(merge_class_scores(swapped, "round_robin")) == [2, 0, 3, 1]
    assert _order(merge_class_scores(swapped, "best_rank")) == [0, 2, 1, 3]


@pytest.fixture(scope="module")
def random_relevance():
    rng = np.random.default_rng(7)
    # Rounded, so there are ties; class 3 scores low everywhere (crowded out by "max").
    relevance = np.round(rng.random((5, 60)), 1)
    relevance[3] *= 0.1
    return relevance


@pytest.mark.parametrize("merge", MERGES)
def test_merged_scores_are_finite_and_rank_every_neuron(merge, random_relevance):
    scores = merge_class_scores(random_relevance, merge)
    assert scores.shape == (60,) and scores.dtype == np.float64 and np.isfinite(scores).all()
    if merge in ("round_robin", "best_rank"):
        np.testing.assert_array_equal(np.sort(scores), np.arange(1, 61))


def test_round_robin_gives_every_class_its_turns(random_relevance):
    n_classes, n_neurons = random_relevance.shape
    rankings = np.argsort(-random_relevance, axis=1, kind="stable")
    order = _order(merge_class_scores(random_relevance, "round_robin"))
    for r in range(1, n_neurons // n_classes + 1):
        prefix = set(order[: r * n_classes])
        taken_before = set(order[: (r - 1) * n_classes])
        for c in range(n_classes):
            # After r rounds, class c holds at least the first r neurons of its ranking
            # that no earlier round had taken.
            fresh = [n for n in rankings[c] if n not in taken_before][:1]
            assert set(fresh) <= prefix
    # Class 3, far below the others, still has its best neuron in the first round.
    assert rankings[3, 0] in order[:n_classes]
    assert rankings[3, 0] not in _order(merge_class_scores(random_relevance, "max"))[:n_classes]


def test_best_rank_prefixes_are_unions_of_class_top_r(random_relevance):
    rankings = np.argsort(-random_relevance, axis=1, kind="stable")
    order = _order(merge_class_scores(random_relevance, "best_rank"))
    for r in range(1, 61):
        union = set(rankings[:, :r].ravel().tolist())
        assert set(order[: len(union)]) == union


@pytest.mark.parametrize("merge", ["sum", "MAX", None, 1])
def test_check_merge_names_the_options(merge):
    with pytest.raises(
        ValueError,
        match=rf"^The 'merge' parameter of Demo must be one of \['max', 'mean', 'round_robin', 'best_rank'\]\. "
        rf"Got {merge!r} instead\.$",
    ):
        check_merge(merge, owner="Demo")

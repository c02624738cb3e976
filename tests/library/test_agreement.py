"""Agreement between ranking methods: top-n overlap, NeuronVote and AvgOverlap (Fan et al. 2023)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from neuro_pipeline.analysis import neuron_vote, topn_overlap, vote_agreement

THREE = {"a": [0, 1, 2, 3], "b": [1, 0, 3, 2], "c": [3, 2, 1, 0]}


def test_topn_overlap_hand_computed():
    table = topn_overlap({"c": THREE["c"], "a": THREE["a"], "b": THREE["b"]}, ns=(1, 2, 3))
    assert table.schema == pl.Schema({
        "method_a": pl.Utf8, "method_b": pl.Utf8, "n": pl.Int64, "n_a": pl.Int64,
        "n_b": pl.Int64, "overlap": pl.Int64, "jaccard": pl.Float64,
    })
    # a/b: top-1 {0} vs {1}; top-2 {0,1} vs {1,0}; top-3 {0,1,2} vs {1,0,3}: 2 of 4.
    # a/c: {0} vs {3}; {0,1} vs {3,2}; {0,1,2} vs {3,2,1}: 2 of 4.
    # b/c: {1} vs {3}; {1,0} vs {3,2}; {1,0,3} vs {3,2,1}: 2 of 4.
    assert table.select("method_a", "method_b", "n", "overlap", "jaccard").rows() == [
        ("a", "b", 1, 0, 0.0), ("a", "b", 2, 2, 1.0), ("a", "b", 3, 2, 0.5),
        ("a", "c", 1, 0, 0.0), ("a", "c", 2, 0, 0.0), ("a", "c", 3, 2, 0.5),
        ("b", "c", 1, 0, 0.0), ("b", "c", 2, 0, 0.0), ("b", "c", 3, 2, 0.5),
    ]
    assert table["n_a"].to_list() == table["n"].to_list() == table["n_b"].to_list()


def test_partial_rankings_need_allow_partial_and_compare_what_they_have():
    rankings = {"full": [0, 1, 2, 3, 4, 5], "gauss": [5, 0]}
    with pytest.raises(ValueError, match="'gauss' ranks 2 neurons but it must be a permutation of all 6"):
        topn_overlap(rankings, ns=(1, 3))
    table = topn_overlap(rankings, ns=(1, 3), allow_partial=True)
    # n=1: {0} vs {5}. n=3: {0,1,2} vs {5,0}: 1 shared of 4.
    assert table.select("n", "n_a", "n_b", "overlap", "jaccard").rows() == [
        (1, 1, 1, 0, 0.0), (3, 3, 2, 1, 0.25),
    ]


def test_neuron_vote_is_the_rank_sum_with_ties_to_the_lower_index():
    # Position sums: 0+1+3 = 4, 1+0+2 = 3, 2+3+1 = 6, 3+2+0 = 5.
    assert neuron_vote(THREE).tolist() == [1, 0, 3, 2]
    # Without c: 0+1, 1+0, 2+3, 3+2 -> two ties.
    assert neuron_vote(THREE, exclude=["c"]).tolist() == [0, 1, 2, 3]
    assert neuron_vote(THREE, exclude=("a", "b")).tolist() == THREE["c"]


def test_unranked_neurons_get_the_mean_or_the_next_position():
    rankings = {"a": [3], "b": [0, 1, 2, 3], "c": [0, 3, 1, 2]}
    # b + c position sums: 0, 3, 5, 4. "a" puts neuron 3 at 0 and the others at
    # "mean": (1 + 3) / 2 = 2 -> sums 2, 5, 7, 4: neuron 3 passes neuron 1.
    assert neuron_vote(rankings, allow_partial=True).tolist() == [0, 3, 1, 2]
    # "last": 1 -> sums 1, 4, 6, 4: neurons 1 and 3 tie, the lower index first.
    assert neuron_vote(rankings, allow_partial=True, unranked="last").tolist() == [0, 1, 3, 2]


def test_depth_cuts_rankings_before_voting():
    rankings = {"a": [0, 1, 2, 3], "b": [3, 2, 1, 0]}
    assert neuron_vote(rankings).tolist() == [0, 1, 2, 3]  # every sum is 3
    # Cut to 2, rest tied at position 2: sums 0+2, 1+2, 2+1, 2+0.
    assert neuron_vote(rankings, depth=2, unranked="last").tolist() == [0, 3, 1, 2]


def test_depth_100_last_orders_like_fan_et_al_borda_points():
    # Fan et al.: in each ranking cut to 100, position p earns 100 - p points, absent 0;
    # neurons sorted by total points, descending.
    rng = np.random.default_rng(0)
    rankings = {f"m{i}": rng.permutation(768) for i in range(5)}
    points = np.zeros(768)
    for ranking in rankings.values():
        points[ranking[:100]] += 100 - np.arange(100)
    vote = neuron_vote(rankings, depth=100, unranked="last")
    assert np.all(np.diff(points[vote]) <= 0)
    tied = points[vote] == np.roll(points[vote], -1)
    assert np.all(vote[:-1][tied[:-1]] < vote[1:][tied[:-1]])  # equal points: lower index first


def test_vote_agreement_hand_computed_leave_one_out():
    table = vote_agreement(THREE, ns=(2,))
    assert table.schema == pl.Schema({
        "method": pl.Utf8, "n": pl.Int64, "vote_overlap": pl.Int64,
        "vote_jaccard": pl.Float64, "avg_overlap_jaccard": pl.Float64,
    })
    # a vs vote(b, c): sums 4, 2, 4, 2 -> [1, 3, ...]; {0,1} vs {1,3}: 1 of 3.
    # b vs vote(a, c): all sums 3 -> [0, 1, ...]; {1,0} vs {0,1}: 2 of 2.
    # c vs vote(a, b): sums 1, 1, 5, 5 -> [0, 1, ...]; {3,2} vs {0,1}: 0.
    # AvgOverlap at n=2: J(a,b) = 1, J(a,c) = J(b,c) = 0.
    assert table.rows() == [
        ("a", 2, 1, pytest.approx(1 / 3), 0.5),
        ("b", 2, 2, 1.0, 0.5),
        ("c", 2, 0, 0.0, 0.0),
    ]


def test_vote_agreement_with_baselines():
    table = vote_agreement(THREE, ns=(2,), baselines=["b", "c"])
    # a: same as before. b: only c is left to compare with, and c: only b.
    assert table.rows() == [
        ("a", 2, 1, pytest.approx(1 / 3), 0.5),
        ("b", 2, 0, 0.0, 0.0),
        ("c", 2, 0, 0.0, 0.0),
    ]


def test_a_method_never_votes_for_itself():
    # If x voted, vote(x, y) would tie every neuron and fall back to index order, i.e. x.
    table = vote_agreement({"x": [0, 1, 2, 3], "y": [3, 2, 1, 0]}, ns=(1, 2))
    assert table["vote_overlap"].to_list() == [0, 0, 0, 0]


def test_vote_agreement_with_a_partial_method():
    rankings = {"full": [0, 1, 2, 3, 4, 5], "full2": [1, 0, 2, 3, 4, 5], "gauss": [4, 1]}
    with pytest.raises(ValueError, match="allow_partial"):
        vote_agreement(rankings, ns=(3,))
    table = vote_agreement(rankings, ns=(3,), allow_partial=True).filter(pl.col("method") == "gauss")
    # vote(full, full2) = [0, 1, 2, ...]; gauss's {4, 1} vs {0, 1, 2}: 1 of 4.
    # J(gauss, full) = J(gauss, full2) = 1/4.
    assert table.rows() == [("gauss", 3, 1, 0.25, 0.25)]


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: topn_overlap({"a": [0, 1, 2]}, ns=(1,)), ValueError, "at least 2 ranking"),
        (lambda: topn_overlap([[0, 1], [1, 0]], ns=(1,)), TypeError, "must be a mapping"),
        (lambda: topn_overlap({"a": [0, 1, 1], "b": [0, 1, 2]}, ns=(1,)), ValueError,
         "'a' lists neuron 1 twice \\(positions 1 and 2\\)"),
        (lambda: topn_overlap({"a": [0, 1, 3], "b": [0, 1, 2]}, ns=(1,)), ValueError,
         "'a' has neuron 3 at position 2, outside 0..2"),
        (lambda: topn_overlap({"a": [0, -1, 2], "b": [0, 1, 2]}, ns=(1,)), ValueError, "outside"),
        (lambda: topn_overlap({"a": [0.0, 1.0], "b": [0, 1]}, ns=(1,)), TypeError, "integer neuron indices"),
        (lambda: topn_overlap({"a": [], "b": [0, 1]}, ns=(1,)), ValueError, "non-empty 1-D"),
        (lambda: topn_overlap({"a": [0, 1], "b": [1, 0]}, ns=(3,)), ValueError, "int in 1..2"),
        (lambda: topn_overlap({"a": [0, 1], "b": [1, 0]}, ns=(0,)), ValueError, "int in 1..2"),
        (lambda: topn_overlap({"a": [0, 1], "b": [1, 0]}, ns=(1, 1)), ValueError, "repeats"),
        (lambda: topn_overlap({"a": [5], "b": [7]}, ns=(1,), allow_partial=True), ValueError,
         "Pass n_neurons="),
        (lambda: topn_overlap({"a": [0, 1, 2], "b": [1]}, ns=(2,), allow_partial=True, n_neurons=2),
         ValueError, "outside 0..1"),
        (lambda: neuron_vote(THREE, exclude="z"), ValueError, "cannot exclude unknown method"),
        (lambda: neuron_vote(THREE, exclude=["a", "b", "c"]), ValueError, "leaves no method"),
        (lambda: neuron_vote(THREE, depth=0), ValueError, "depth must be None or an int >= 1"),
        (lambda: neuron_vote(THREE, unranked="zero"), ValueError, "unknown unranked='zero'"),
        (lambda: vote_agreement(THREE, ns=(2,), baselines=["z"]), ValueError, "unknown baseline"),
        (lambda: vote_agreement(THREE, ns=(2,), baselines="a"), ValueError,
         "'a' has no other method to compare with"),
    ],
)
def test_rejects_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()

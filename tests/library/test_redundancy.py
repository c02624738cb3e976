"""Correlation clustering of neurons (Dalvi et al. 2020), representatives and per-layer tables."""

from __future__ import annotations

import logging

import numpy as np
import polars as pl
import pytest
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import squareform

from neuro_pipeline.analysis import (
    constant_neurons,
    correlation_clusters,
    independent_neurons,
    neuron_clusters_by_layer,
    redundancy,
    redundancy_by_layer,
    summarize_clusters,
)

# Three orthonormal, zero-mean vectors over 4 tokens: any combination of them has a
# correlation equal to the cosine of its coefficients.
E1 = np.array([1.0, -1.0, 1.0, -1.0]) / 2
E2 = np.array([1.0, 1.0, -1.0, -1.0]) / 2
E3 = np.array([1.0, -1.0, -1.0, 1.0]) / 2

# r(x0, x1) = 0.8, r(x0, x2) = 0.4, r(x1, x2) = 0.8 * 0.4 + 0.6 * -0.2 = 0.2, so the
# dissimilarities 1 - |r| are 0.2, 0.6 and 0.8. Average linkage merges {0, 1} at 0.2 and
# then adds 2 at (0.6 + 0.8) / 2 = 0.7; single linkage adds it at 0.6, complete at 0.8.
GRADED = np.column_stack([E1, 0.8 * E1 + 0.6 * E2, 0.4 * E1 - 0.2 * E2 + np.sqrt(0.8) * E3])


@pytest.mark.parametrize(
    ("threshold", "method", "expected"),
    [
        (0.5, "average", [0, 0, 1]),
        (0.65, "average", [0, 0, 1]),
        (0.75, "average", [0, 0, 0]),
        (0.1, "average", [0, 1, 2]),
        (0.65, "single", [0, 0, 0]),
        (0.75, "complete", [0, 0, 1]),
    ],
)
def test_hand_computed_linkage_cuts(threshold, method, expected):
    assert correlation_clusters(GRADED, threshold=threshold, method=method).tolist() == expected


def test_abs_correlation_joins_anticorrelated_neurons():
    # x1 = -x0 (r = -1); x2 and x3 are orthogonal to both and to each other (r = 0).
    X = np.column_stack([E1, -E1, E2, E3]) + 3.0
    assert correlation_clusters(X).tolist() == [0, 0, 1, 2]
    # With 1 - r, the pair is at distance 2 and every other pair at 1: all singletons at 0.5.
    assert correlation_clusters(X, use_abs=False).tolist() == [0, 1, 2, 3]


def test_central_representative_is_the_member_most_correlated_with_its_mates():
    # GRADED columns reversed: mean |r| to mates is 0.3 (column 0), 0.5 (1), 0.6 (2).
    X = GRADED[:, ::-1]
    assert independent_neurons(X, threshold=0.75).tolist() == [2]
    # At 0.5 the clusters are {0} and {1, 2}; in a pair both members tie, the lower index wins.
    assert independent_neurons(X, threshold=0.5).tolist() == [0, 1]


def _planted(seed=0, n_tokens=600):
    """Groups of 4, 3 and 5 neurons driven by one latent each (r about 0.99, some with the
    sign flipped), plus 4 independent noise neurons; columns shuffled."""
    rng = np.random.default_rng(seed)
    latents = rng.normal(size=(n_tokens, 3))
    columns, truth = [], []
    for group, (size, signs) in enumerate([(4, [1, -1, 1, 1]), (3, [1, 1, 1]), (5, [1, 1, -1, 1, -1])]):
        for sign in signs[:size]:
            columns.append(sign * latents[:, group] + 0.1 * rng.normal(size=n_tokens) + rng.normal() * 5)
            truth.append(group)
    for k in range(4):
        columns.append(rng.normal(size=n_tokens))
        truth.append(3 + k)
    order = rng.permutation(len(columns))
    X = np.column_stack(columns)[:, order]
    return X, np.asarray(truth)[order]


def _same_partition(a, b):
    """True when two labelings group the neurons identically (ids may differ)."""
    pairs = set(zip(a.tolist(), b.tolist()))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def test_planted_groups_become_clusters_and_noise_singletons():
    X, truth = _planted()
    clusters = correlation_clusters(X)
    assert clusters.max() + 1 == 3 + 4
    assert _same_partition(clusters, truth)
    # Without |r|, the sign-flipped members leave their group: groups 0 and 2 split in two.
    signed = correlation_clusters(X, use_abs=False)
    assert signed.max() + 1 == 3 + 4 + 2


def test_cluster_ids_are_numbered_by_first_occurrence():
    X, _ = _planted(seed=3)
    clusters = correlation_clusters(X)
    assert clusters[0] == 0
    # Every new id is exactly one more than the largest id seen so far.
    running_max = np.maximum.accumulate(clusters)
    assert np.all(clusters <= np.concatenate([[0], running_max[:-1] + 1]))


def test_matches_neurox_recipe_on_data_without_constant_neurons():
    X, _ = _planted(seed=5)
    corr = np.corrcoef(X.T)
    reference = fcluster(linkage(squareform(1 - np.abs(corr), checks=False), method="average"),
                         0.5, criterion="distance")
    assert _same_partition(correlation_clusters(X), reference)


def test_chunked_correlations_equal_numpy_even_with_large_offsets(monkeypatch):
    rng = np.random.default_rng(7)
    X = rng.normal(size=(50, 5)) + np.array([1e4, -3e3, 0.0, 7.0, 1e5])
    monkeypatch.setattr(redundancy, "_ROW_CHUNK", 3)
    corr, constant = redundancy._correlations(X, slice(None), "test")
    np.testing.assert_allclose(corr, np.corrcoef(X.T), atol=1e-9)
    assert not constant.any()


def test_constant_neurons_share_one_cluster_and_are_never_representatives(caplog):
    X, _ = _planted(seed=1)
    X = np.column_stack([np.full(len(X), 2.0), X, np.zeros(len(X)), np.full(len(X), 0.1)])
    with caplog.at_level(logging.WARNING, logger="neuro_pipeline.analysis.redundancy"):
        clusters = correlation_clusters(X)
    last = X.shape[1] - 1
    assert constant_neurons(X).tolist() == [0, last - 1, last]
    assert clusters[0] == clusters[last - 1] == clusters[last] == 0
    assert np.sum(clusters == 0) == 3
    assert clusters.max() + 1 == 1 + 3 + 4
    assert "3 constant neuron(s)" in caplog.text and str(last - 1) in caplog.text
    for reps in (independent_neurons(X),
                 independent_neurons(X, clusters=clusters, representative="random")):
        assert len(reps) == 3 + 4 and not set(reps.tolist()) & {0, last - 1, last}


def test_random_representatives_are_seeded_members_of_each_cluster():
    X, _ = _planted(seed=2)
    clusters = correlation_clusters(X)
    picks = {tuple(independent_neurons(X, clusters=clusters, representative="random", random_state=s))
             for s in range(10)}
    for pick in picks:
        assert sorted(clusters[list(pick)].tolist()) == list(range(clusters.max() + 1))
    assert len(picks) > 1  # different seeds pick different members of the big clusters
    again = independent_neurons(X, representative="random", random_state=4)
    assert again.tolist() == independent_neurons(X, representative="random", random_state=4).tolist()


def test_inputs_are_never_modified(tmp_path):
    X, _ = _planted(seed=4)
    original = X.copy()
    correlation_clusters(X)
    independent_neurons(X)
    assert np.array_equal(X, original)  # float64 input: chunks must be copies
    np.save(tmp_path / "X.npy", X.astype(np.float32))
    mm = np.load(tmp_path / "X.npy", mmap_mode="r")  # read-only: a write would raise
    assert _same_partition(correlation_clusters(mm), correlation_clusters(X.astype(np.float32)))


def _layered(n_tokens=400, seed=0):
    """3 layers x 4 units. Layer 0: four copies of one latent. Layer 1: four independent
    neurons. Layer 2: [constant, pair member, constant, pair member]."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(2, n_tokens))
    layer0 = [a + 0.05 * rng.normal(size=n_tokens) for _ in range(4)]
    layer1 = list(rng.normal(size=(4, n_tokens)))
    layer2 = [np.ones(n_tokens), b, np.full(n_tokens, -2.0), -b + 0.05 * rng.normal(size=n_tokens)]
    return np.column_stack(layer0 + layer1 + layer2)


def test_redundancy_by_layer_hand_computed_table():
    table = redundancy_by_layer(_layered(), n_layers=3, hidden_size=4, include_all_layers=True)
    assert table.schema == pl.Schema({
        "layer": pl.Int32, "n_neurons": pl.Int64, "n_constant": pl.Int64, "n_clusters": pl.Int64,
        "n_independent": pl.Int64, "largest_cluster": pl.Int64, "mean_cluster_size": pl.Float64,
    })
    assert table.rows() == [
        (0, 4, 0, 1, 1, 4, 4.0),
        (1, 4, 0, 4, 4, 1, 1.0),
        (2, 4, 2, 2, 1, 2, 2.0),
        # All 12 columns at once: {layer 0}, 4 singletons, the pair, the constants.
        (None, 12, 2, 7, 6, 4, 10 / 6),
    ]


def test_neuron_table_layout_and_globally_unique_cluster_ids():
    neurons = neuron_clusters_by_layer(_layered(), n_layers=3, hidden_size=4)
    assert neurons["layer"].to_list() == [0] * 4 + [1] * 4 + [2] * 4
    assert neurons["unit"].to_list() == [0, 1, 2, 3] * 3
    assert neurons["cluster"].to_list() == [0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 5, 6]
    assert neurons["is_constant"].to_list() == [False] * 8 + [True, False, True, False]
    assert neurons.filter(pl.col("is_representative"))["neuron"].to_list()[1:] == [4, 5, 6, 7, 9]


def test_all_layer_clustering_joins_neurons_across_layers():
    X = _layered()
    X[:, 4] = X[:, 0] * 2 + 1  # a layer-1 neuron copies layer 0
    neurons = neuron_clusters_by_layer(X, n_layers=3, hidden_size=4, across_layers=True)
    assert neurons["cluster"][4] == neurons["cluster"][0]
    assert neurons["is_representative"].sum() == 5  # layer 0 + neuron 4, 3 singletons, the pair


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: correlation_clusters(np.zeros(5)), ValueError, "must be 2-D"),
        (lambda: correlation_clusters(np.zeros((1, 3))), ValueError, "at least 2 tokens"),
        (lambda: correlation_clusters(np.array([[1.0, np.nan], [2.0, 1.0]])), ValueError,
         r"non-finite value \(nan\) at row 0, column 1"),
        (lambda: correlation_clusters(np.array([["a"], ["b"]])), TypeError, "real numbers"),
        (lambda: correlation_clusters(GRADED, threshold=-0.1), ValueError, "threshold must be a finite number >= 0"),
        (lambda: correlation_clusters(GRADED, threshold=float("inf")), ValueError, "threshold"),
        (lambda: correlation_clusters(GRADED, method="ward"), ValueError, "unknown linkage method 'ward'"),
        (lambda: independent_neurons(GRADED, representative="medoid"), ValueError, "unknown representative"),
        (lambda: independent_neurons(GRADED, clusters=[0, 1]), ValueError, "3 integer ids"),
        (lambda: redundancy_by_layer(GRADED, n_layers=2, hidden_size=2), ValueError,
         "X has 3 columns but n_layers \\* hidden_size = 2 \\* 2 = 4"),
        (lambda: redundancy_by_layer(GRADED, n_layers=0, hidden_size=3), ValueError, "n_layers must be an int >= 1"),
        (lambda: summarize_clusters(pl.DataFrame({"layer": [0], "cluster": [0]})), ValueError,
         r"lacks columns \['is_constant', 'is_representative'\]"),
    ],
)
def test_rejects_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_diversify_ranking_takes_one_neuron_per_cluster_first():
    from neuro_pipeline.analysis import diversify_ranking

    # clusters: {0, 1, 5} and {2, 3}, neuron 4 alone.
    clusters = [0, 0, 1, 1, 2, 0]
    # By hand: 1 (cluster 0), 5 skipped, 3 (cluster 1), 0 skipped, 4 (cluster 2), 2 skipped.
    assert diversify_ranking([1, 5, 3, 0, 4, 2], clusters).tolist() == [1, 3, 4, 5, 0, 2]
    # A prefix of a ranking stays a prefix-length result.
    assert diversify_ranking([5, 1, 2], clusters).tolist() == [5, 2, 1]
    with pytest.raises(ValueError, match="distinct neuron indices"):
        diversify_ranking([1, 1], clusters)
    with pytest.raises(ValueError, match=r"outside 0..5"):
        diversify_ranking([6], clusters)

"""Ranking: the NeuronRanker contract for every registered method, and LinearProbeRanker's
NeuroX selection semantics (cumulative weight mass per class, union, ordering sweep)."""

import numpy as np
import polars as pl
import pytest
from sklearn.datasets import make_classification

from neuro_pipeline.probe import LinearProbe
from neuro_pipeline.ranking import RANKERS, LinearProbeRanker, NeuronRanker, get_ranker, ranking_table

PLANTED = [3, 11, 22, 35]  # class c is carried by neuron PLANTED[c]


@pytest.fixture(scope="module")
def planted():
    """4 classes among 40 Gaussian noise neurons; neuron PLANTED[c] fires for class c."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, size=1200)
    X = rng.normal(size=(1200, 40)).astype(np.float32)
    for c, neuron in enumerate(PLANTED):
        X[:, neuron] += 2.5 * (y == c)
    groups = np.arange(1200) // 12  # 100 "sentences" of 12 tokens
    return X, y, groups


@pytest.fixture(scope="module")
def fitted(planted):
    X, y, _ = planted
    return LinearProbeRanker(l1=1e-2, l2=1e-3).fit(X, y)


# ------------------------------------------------------------------ contract, every method
@pytest.mark.parametrize("name", sorted(RANKERS))
def test_ranker_contract(name, planted):
    X, y, _ = planted
    before = X.copy()
    ranker = get_ranker(name)
    assert ranker.fit(X, y) is ranker
    np.testing.assert_array_equal(X, before)
    n = X.shape[1]
    assert ranker.n_neurons_in_ == n
    assert ranker.scores_.shape == (n,) and ranker.scores_.dtype == np.float64
    assert np.array_equal(np.sort(ranker.ranking_), np.arange(n))
    np.testing.assert_array_equal(ranker.ranking_, np.argsort(-ranker.scores_, kind="stable"))
    assert set(ranker.ranking_[:4]) == set(PLANTED)
    again = get_ranker(name).fit(X, y)
    np.testing.assert_array_equal(again.ranking_, ranker.ranking_)
    with pytest.raises(ValueError, match=rf"{type(ranker).__name__}: X must be 2-D"):
        get_ranker(name).fit(X[:, 0], y)


def test_get_ranker_unknown_name_lists_the_choices():
    with pytest.raises(ValueError, match=r"^Unknown ranking method 'iou_probe'; choose one of \[.*'linear_probe'.*\]\.$"):
        get_ranker("iou_probe")


def test_get_ranker_passes_parameters():
    ranker = get_ranker("linear_probe", l1=0.5, search_stride=10)
    assert isinstance(ranker, LinearProbeRanker)
    assert (ranker.l1, ranker.search_stride, ranker.l2) == (0.5, 10, "auto")


# ------------------------------------------------------------------ planted signal
def test_recovers_planted_neurons_overall_and_per_class(fitted):
    assert set(fitted.ranking_[:4]) == set(PLANTED)
    per_class = fitted.top_neurons_per_class(0.0)
    for c, neuron in enumerate(PLANTED):
        assert fitted.class_rankings_[c][0] == neuron
        assert per_class[c].tolist() == [neuron]
        assert neuron in fitted.top_neurons_per_class(0.5)[c]
    assert set(PLANTED) <= set(fitted.top_neurons_by_mass(0.5))


def test_recovers_informative_features_of_make_classification():
    X, y = make_classification(
        n_samples=800, n_features=20, n_informative=4, n_redundant=0, n_classes=3,
        n_clusters_per_class=1, shuffle=False, random_state=0,
    )
    ranker = LinearProbeRanker(l1=1e-2, l2=1e-3).fit(X, y)
    assert set(ranker.ranking_[:4]) == {0, 1, 2, 3}


def test_auto_lambda_prefers_the_strongest_penalty_within_tolerance(planted):
    X, y, groups = planted
    grid = ((1e-3, 1e-4), (1e-1, 1e-2), (1e-2, 1e-3))  # tried strongest first, whatever the order given
    ranker = LinearProbeRanker(lambda_grid=grid, accuracy_tolerance=0.01).fit(X, y, groups=groups)
    search = ranker.lambda_search_
    assert search.columns == ["l1", "l2", "heldout_accuracy", "n_nonzero_neurons", "n_iter", "fit_seconds", "selected"]
    assert search["l1"].to_list() == [1e-1, 1e-2, 1e-3]
    assert search["selected"].sum() == 1
    good = search.filter(pl.col("heldout_accuracy") >= search["heldout_accuracy"].max() - 0.01)
    assert (ranker.l1_, ranker.l2_) == (good["l1"].max(), good["l1"].max() / 10)
    assert ranker.probe_.l1 == ranker.l1_
    assert set(ranker.ranking_[:4]) == set(PLANTED)


def test_auto_lambda_with_one_penalty_fixed(planted):
    X, y, _ = planted
    ranker = LinearProbeRanker(l2=0.0, lambda_grid=((1e-2, 1e-3), (1e-3, 1e-4))).fit(X, y)
    assert ranker.lambda_search_["l2"].to_list() == [0.0, 0.0]
    assert ranker.l2_ == 0.0 and ranker.l1_ in (1e-2, 1e-3)


def test_groups_are_checked(planted):
    X, y, groups = planted
    with pytest.raises(ValueError, match=r"groups must have shape \(1200,\)"):
        LinearProbeRanker().fit(X, y, groups=groups[:10])
    with pytest.raises(ValueError, match="groups has 1 distinct value"):
        LinearProbeRanker().fit(X, y, groups=np.zeros(1200))


# ------------------------------------------------------------------ NeuroX semantics by hand
def _hand_probe(W):
    """A probe with hand-set weights (never fitted), as NeuroX's functions accept any probe."""
    probe = LinearProbe(l1=0.0, l2=0.0)
    probe.coef_ = np.asarray(W, dtype=np.float32)
    probe.classes_ = np.array(["A", "B", "C"][: len(W)])
    return probe


HAND_W = [
    [0.5, -0.25, 0.125, 0.125, 0.0],  # A: 0 alone carries half the mass
    [0.0625, 0.25, -0.5, 0.125, 0.0625],  # B: 2 alone carries half the mass
    [0.25, 0.25, 0.25, 0.125, 0.125],  # C: 0 then 1 (equal weights: lower index first)
]


def test_top_neurons_per_class_matches_a_manual_computation():
    ranker = LinearProbeRanker.from_probe(_hand_probe(HAND_W), search_stride=4)
    per_class = ranker.top_neurons_per_class(0.5)
    assert {label: v.tolist() for label, v in per_class.items()} == {"A": [0], "B": [2], "C": [0, 1]}
    assert sorted(ranker.top_neurons_by_mass(0.5).tolist()) == [0, 1, 2]
    # 0 % selects each class's heaviest neuron; 100 % every neuron with non-zero weight.
    assert {k: v.tolist() for k, v in ranker.top_neurons_per_class(0.0).items()} == {"A": [0], "B": [2], "C": [0]}
    assert ranker.top_neurons_per_class(1.0)["A"].tolist() == [0, 1, 2, 3]


def test_global_ordering_matches_a_manual_computation():
    # Steps of 25 %: {0, 2} at 0 %, 1 at 50 % (class C), 3 and 4 at 100 %. Inside a step,
    # max |w| over classes decides (0 and 2 tie at 0.5 -> lower index first).
    ranker = LinearProbeRanker.from_probe(_hand_probe(HAND_W), search_stride=4)
    assert ranker.ranking_.tolist() == [0, 2, 1, 3, 4]
    assert ranker.ordering_cutoffs_.tolist() == [2, 2, 3, 3, 5]
    assert ranker.scores_.tolist() == [5.0, 3.0, 4.0, 2.0, 1.0]
    assert ranker.bottom_neurons(2).tolist() == [3, 4]


def _neurox_top_neurons(abs_W, percentage):
    """A literal port of NeuroX's linear_probe.get_top_neurons (union as a set)."""
    top = {}
    for c in range(abs_W.shape[0]):
        total = np.sum(abs_W[c])
        sort_idx = np.argsort(abs_W[c])[::-1]
        cum = np.cumsum(abs_W[c, sort_idx])
        unselected = np.where(cum >= total * percentage)[0]
        chosen = np.arange(cum.shape[0]) if unselected.shape[0] == 0 else np.arange(unselected[0] + 1)
        top[c] = sort_idx[chosen]
    return set(np.concatenate(list(top.values())).tolist())


def _neurox_ordering(abs_W, search_stride):
    """A literal port of NeuroX's get_neuron_ordering (chunks as sets)."""
    considered, chunks, cutoffs = set(), [], []
    for p in range(search_stride + 1):
        new = _neurox_top_neurons(abs_W, p / search_stride) - considered
        chunks.append(new)
        considered |= new
        cutoffs.append(len(considered))
    return chunks, cutoffs


def _neurox_granular(abs_W, granularity, search_stride):
    """A literal port of NeuroX's get_neuron_ordering_granular."""
    unions = [_neurox_top_neurons(abs_W, p / search_stride) for p in range(search_stride + 1)]
    sliding, considered, chunks, cutoffs = 0, set(), [], []
    for i in range(0, abs_W.shape[1] + 1, granularity):
        while len(unions[sliding]) < i:
            sliding += 1
        new = unions[sliding] - considered
        if new:
            chunks.append(new)
            considered |= new
            cutoffs.append(len(considered))
    return chunks, cutoffs


@pytest.mark.parametrize("seed", [0, 1])
def test_global_ordering_has_neurox_chunks(seed):
    W = np.random.default_rng(seed).laplace(size=(5, 300))
    ranker = LinearProbeRanker.from_probe(_hand_probe(W[:3]))
    chunks, cutoffs = _neurox_ordering(np.abs(W[:3].astype(np.float32)).astype(np.float64), 100)
    assert ranker.ordering_cutoffs_.tolist() == cutoffs
    bounds = [0, *cutoffs]
    for chunk, start, stop in zip(chunks, bounds, bounds[1:]):
        assert set(ranker.ranking_[start:stop].tolist()) == chunk
    # Inside a chunk: max |w| over classes, descending.
    heaviest = np.abs(W[:3]).max(axis=0)
    for start, stop in zip(bounds, bounds[1:]):
        assert np.all(np.diff(heaviest[ranker.ranking_[start:stop]]) <= 0)


def test_granular_ordering_has_neurox_chunks():
    W = np.random.default_rng(2).laplace(size=(3, 300))
    ranker = LinearProbeRanker.from_probe(_hand_probe(W), ordering="granular", granularity=50)
    chunks, cutoffs = _neurox_granular(np.abs(W.astype(np.float32)).astype(np.float64), 50, 100)
    assert ranker.ordering_cutoffs_.tolist() == cutoffs
    bounds = [0, *cutoffs]
    for chunk, start, stop in zip(chunks, bounds, bounds[1:]):
        assert set(ranker.ranking_[start:stop].tolist()) == chunk
    assert np.array_equal(np.sort(ranker.ranking_), np.arange(300))


def test_zero_weight_neurons_come_last_ordered_by_gradient(planted):
    X, y, _ = planted
    ranker = LinearProbeRanker(l1=5e-2, l2=0.0).fit(X, y)
    zero = ~(ranker.probe_.coef_ != 0).any(axis=0)
    assert zero.sum() > 10
    n_nonzero = int((~zero).sum())
    assert set(ranker.ranking_[n_nonzero:]) == set(np.flatnonzero(zero))
    assert ranker.ordering_cutoffs_[-1] == n_nonzero
    gradient = np.abs(ranker.probe_.loss_gradient_).max(axis=0)
    assert np.all(np.diff(gradient[ranker.ranking_[n_nonzero:]]) <= 0)


def test_class_with_all_zero_weights_selects_nothing():
    W = [[0.5, 0.25, 0.0], [0.0, 0.0, 0.0]]
    ranker = LinearProbeRanker.from_probe(_hand_probe(W))
    assert ranker.top_neurons_per_class(0.5)["B"].tolist() == []
    assert ranker.ranking_.tolist() == [0, 1, 2]


def test_hard_threshold_uses_the_documented_rule():
    ranker = LinearProbeRanker.from_probe(_hand_probe(HAND_W))
    assert ranker.top_neurons_by_threshold(0.5)["A"].tolist() == [0, 1]
    assert ranker.top_neurons_by_threshold(0.6)["C"].tolist() == [0, 1, 2]


# ------------------------------------------------------------------ top_neurons, table
def test_top_neurons(fitted):
    assert fitted.top_neurons(3).tolist() == fitted.ranking_[:3].tolist()
    # ceil(0.05 * 40) = 2, ceil(0.051 * 40) = 3
    assert len(fitted.top_neurons(fraction=0.05)) == 2
    assert len(fitted.top_neurons(fraction=0.051)) == 3
    assert len(fitted.top_neurons(fraction=1.0)) == 40
    assert fitted.top_neurons(0).tolist() == []


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        ((3,), {"fraction": 0.1}, r"exactly one of k or fraction; got k=3, fraction=0.1"),
        ((), {}, r"exactly one of k or fraction; got k=None, fraction=None"),
        ((41,), {}, r"top_neurons\(k=41\) but X has only 40 neurons"),
        ((-1,), {}, r"k must be a non-negative integer"),
        ((2.5,), {}, r"k must be a non-negative integer"),
        ((), {"fraction": 0.0}, r"fraction must be a number in \(0, 1\]"),
        ((), {"fraction": 1.5}, r"fraction must be a number in \(0, 1\]"),
    ],
)
def test_top_neurons_errors(fitted, args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fitted.top_neurons(*args, **kwargs)


def test_unfitted_ranker_says_so():
    with pytest.raises(ValueError, match="This LinearProbeRanker instance is not fitted yet"):
        LinearProbeRanker().top_neurons(3)


def test_bad_hyperparameters():
    X, y = np.eye(4), [0, 1, 0, 1]
    with pytest.raises(ValueError, match=r"The 'ordering' parameter of LinearProbeRanker must be one of \['global', 'granular'\]"):
        LinearProbeRanker(l1=0.1, l2=0.1, ordering="fine").fit(X, y)
    with pytest.raises(ValueError, match="The 'l1' parameter of LinearProbeRanker must be 'auto' or a float >= 0"):
        LinearProbeRanker(l1="strong").fit(X, y)
    with pytest.raises(ValueError, match="y has 1 class"):
        LinearProbeRanker().fit(X, [1, 1, 1, 1])


def test_ranking_table(fitted):
    table = ranking_table(fitted)
    assert table.schema == pl.Schema({"neuron": pl.Int32, "score": pl.Float64, "rank": pl.Int32})
    assert table["rank"].to_list() == list(range(1, 41))
    assert table["neuron"].to_list() == fitted.ranking_.tolist()
    assert table["score"].is_sorted(descending=True)


def test_lambda_grid_and_from_probe_are_checked(planted):
    X, y, _ = planted
    with pytest.raises(ValueError, match=r"The 'lambda_grid' parameter of LinearProbeRanker must be a non-empty sequence of \(l1, l2\) pairs"):
        LinearProbeRanker(lambda_grid=(1e-3, 1e-4)).fit(X, y)
    with pytest.raises(ValueError, match=r"from_probe\(\) needs a fitted LinearProbe"):
        LinearProbeRanker.from_probe(LinearProbe())


class _PrefixRanker(NeuronRanker):
    """A greedy-style ranker that ranks only neurons 1 and 3 (the rest score -inf)."""

    def _score(self, X, y):
        scores = np.full(X.shape[1], -np.inf)
        scores[[1, 3]] = [1.0, 2.0]
        return scores


def test_base_class_handles_partial_rankings():
    X, y = np.random.default_rng(0).normal(size=(6, 5)), [0, 1, 0, 1, 0, 1]
    ranker = _PrefixRanker().fit(X, y)
    assert ranker.n_ranked_ == 2
    assert ranker.ranking_.tolist() == [3, 1, 0, 2, 4]  # unranked ties: lower index first
    assert ranker.top_neurons(2).tolist() == [3, 1]
    with pytest.raises(ValueError, match=r"top_neurons\(k=3\) but _PrefixRanker ranked only 2 neurons"):
        ranker.top_neurons(3)
    table = ranking_table(ranker)
    assert table["rank"].to_list() == [1, 2, None, None, None]
    assert table["neuron"].to_list() == [3, 1, 0, 2, 4]
    assert ranker.bottom_neurons(1).tolist() == [1]  # the last *ranked* neuron


# ------------------------------------------------------------------ LCA variants, selections
@pytest.mark.parametrize(
    "penalty, l1_zero, l2_zero",
    [("elasticnet", False, False), ("lasso", False, True), ("ridge", True, False), ("none", True, True)],
)
def test_lca_variants_fix_the_excluded_penalties(planted, penalty, l1_zero, l2_zero):
    X, y, groups = planted
    ranker = LinearProbeRanker(penalty=penalty).fit(X, y, groups=groups)
    assert (ranker.l1_ == 0.0) == l1_zero
    assert (ranker.l2_ == 0.0) == l2_zero
    if penalty == "ridge":
        # Ridge searches the grid's l1 values as l2 and keeps every neuron non-zero.
        assert set(ranker.lambda_search_["l2"].to_list()) == {1e-2, 3e-3, 1e-3, 3e-4}
        assert (ranker.probe_.coef_ != 0).all()
    if penalty == "none":
        assert ranker.lambda_search_ is None
    # Every variant still finds the planted neurons.
    assert set(ranker.top_neurons(4).tolist()) == set(PLANTED)


def test_lasso_is_sparser_than_ridge(planted):
    X, y, _ = planted
    lasso = LinearProbeRanker(penalty="lasso", l1=3e-2).fit(X, y)
    ridge = LinearProbeRanker(penalty="ridge", l2=3e-2).fit(X, y)
    assert (lasso.probe_.coef_ == 0).sum() > 0
    assert (ridge.probe_.coef_ == 0).sum() == 0


def test_lca_variant_rejects_a_penalty_it_excludes(planted):
    X, y, _ = planted
    with pytest.raises(ValueError, match=r"penalty='lasso'\) has no l2 term, but l2=0.1 was given"):
        LinearProbeRanker(penalty="lasso", l2=0.1).fit(X, y)
    with pytest.raises(ValueError, match=r"The 'penalty' parameter of LinearProbeRanker must be one of \['elasticnet'"):
        LinearProbeRanker(penalty="l1").fit(X, y)


def test_bottom_and_random_selections(fitted):
    assert fitted.bottom_neurons(3).tolist() == fitted.ranking_[-3:].tolist()
    assert len(fitted.bottom_neurons(fraction=0.05)) == 2
    drawn = fitted.random_neurons(10, random_state=1)
    assert len(set(drawn.tolist())) == 10 and drawn.tolist() == sorted(drawn.tolist())
    assert drawn.tolist() == fitted.random_neurons(10, random_state=1).tolist()
    assert drawn.tolist() != fitted.random_neurons(10, random_state=2).tolist()
    assert len(fitted.random_neurons(fraction=0.051)) == 3
    with pytest.raises(ValueError, match=r"random_neurons\(k=41\): k must be an integer in \[0, 40\]"):
        fitted.random_neurons(41)


def test_ranker_can_train_its_probe_by_minibatch(planted):
    X, y, _ = planted
    ranker = LinearProbeRanker(l1=1e-2, l2=1e-3, solver="minibatch").fit(X, y)
    assert ranker.probe_.solver == "minibatch" and ranker.probe_.converged_ is None
    assert set(ranker.top_neurons(4).tolist()) == set(PLANTED)

"""The NeuronRanker contract, checked for every method registered in ``RANKERS`` (in the
spirit of sklearn's ``parametrize_with_checks``): a method added later is covered as soon
as its module registers it."""

import numpy as np
import pytest

from neuro_pipeline.ranking import RANKERS, get_ranker

N_TOKENS, N_NEURONS = 600, 40
PLANTED = (5, 17, 29)  # neuron PLANTED[c] fires for class c


@pytest.fixture(scope="module")
def planted():
    """3 classes among 40 Gaussian noise neurons; neuron PLANTED[c] is shifted up by 3 for
    the tokens of class c. float32, like extracted activations."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, size=N_TOKENS)
    X = rng.normal(size=(N_TOKENS, N_NEURONS)).astype(np.float32)
    for c, neuron in enumerate(PLANTED):
        X[:, neuron] += 3.0 * (y == c)
    return X, y


@pytest.mark.parametrize("name", sorted(RANKERS))
def test_ranker_contract(name, planted):
    X, y = planted
    before = X.copy()
    ranker = get_ranker(name)
    owner = type(ranker).__name__

    assert ranker.fit(X, y) is ranker
    np.testing.assert_array_equal(X, before)  # X not mutated

    assert ranker.n_neurons_in_ == N_NEURONS
    np.testing.assert_array_equal(ranker.classes_, [0, 1, 2])
    assert ranker.scores_.shape == (N_NEURONS,) and ranker.scores_.dtype == np.float64
    assert ranker.ranking_.shape == (N_NEURONS,)
    np.testing.assert_array_equal(np.sort(ranker.ranking_), np.arange(N_NEURONS))
    np.testing.assert_array_equal(ranker.ranking_, np.argsort(-ranker.scores_, kind="stable"))
    assert len(PLANTED) <= ranker.n_ranked_ <= N_NEURONS
    assert set(ranker.ranking_[: len(PLANTED)].tolist()) == set(PLANTED)
    if hasattr(ranker, "class_rankings_"):
        assert set(ranker.class_rankings_) == set(ranker.classes_.tolist())
        for order in ranker.class_rankings_.values():
            assert len(np.unique(order)) == len(order) and set(order.tolist()) <= set(range(N_NEURONS))

    again = get_ranker(name).fit(X, y)
    np.testing.assert_array_equal(again.scores_, ranker.scores_)
    np.testing.assert_array_equal(again.ranking_, ranker.ranking_)

    with pytest.raises(ValueError, match=rf"^{owner}: X must be 2-D \(n_tokens, n_neurons\); got shape \({N_TOKENS},\)\."):
        get_ranker(name).fit(X[:, 0], y)
    with pytest.raises(ValueError, match=rf"^{owner}: y has 1 class \(0\); at least 2 are needed\."):
        get_ranker(name).fit(X, np.zeros(N_TOKENS, dtype=int))

"""AttributionRanker: integrated gradients and gradient x input of a probe's class
log-probability, checked against autograd and the completeness axiom, on planted data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neuro_pipeline.probe import LinearProbe
from neuro_pipeline.ranking import RANKERS, get_ranker
from neuro_pipeline.ranking.attribution import AttributionRanker, probe_attributions

PLANTED = (2, 7, 11)  # neuron PLANTED[c] fires for class c


@pytest.fixture(scope="module")
def planted():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, size=300)
    X = rng.normal(size=(300, 14)).astype(np.float32) + 0.5
    for c, neuron in enumerate(PLANTED):
        X[:, neuron] += 2.5 * (y == c)
    return X, y


@pytest.fixture(scope="module")
def probe(planted):
    X, y = planted
    return LinearProbe(l1=1e-3, l2=1e-3).fit(X, y)


def _log_prob(probe: LinearProbe, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target | x) through autograd, from the probe's standardised weights."""
    z = (x - torch.from_numpy(probe.mean_)) / torch.from_numpy(probe.scale_)
    logits = z @ torch.from_numpy(probe.coef_).double().T + torch.from_numpy(probe.intercept_).double()
    return torch.log_softmax(logits, dim=-1).gather(1, targets[:, None])[:, 0]


def test_registered():
    assert RANKERS["attribution"] is AttributionRanker
    assert isinstance(get_ranker("attribution", n_steps=4), AttributionRanker)


def test_gradient_x_input_matches_autograd(planted, probe):
    X, y = planted
    x = torch.from_numpy(X[:20].astype(np.float64)).requires_grad_(True)
    targets = torch.from_numpy(y[:20])
    (grad,) = torch.autograd.grad(_log_prob(probe, x, targets).sum(), x)
    expected = ((x - torch.from_numpy(probe.mean_)) * grad).detach().numpy()
    got = probe_attributions(probe, X[:20], y[:20], attribution="gradient_x_input")
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("baseline", ["mean", "zero"])
def test_integrated_gradients_are_complete(planted, probe, baseline):
    X, y = planted
    x = torch.from_numpy(X[:50].astype(np.float64))
    targets = torch.from_numpy(y[:50])
    x0 = torch.from_numpy(probe.mean_) if baseline == "mean" else torch.zeros_like(x[0])
    gap = (_log_prob(probe, x, targets) - _log_prob(probe, x0.expand_as(x), targets)).numpy()
    attributions = probe_attributions(probe, X[:50], y[:50], n_steps=64, baseline=baseline)
    np.testing.assert_allclose(attributions.sum(axis=1), gap, atol=2e-3)


def test_planted_neurons_lead_each_class(planted):
    X, y = planted
    ranker = AttributionRanker().fit(X, y)
    for c, neuron in enumerate(PLANTED):
        assert ranker.class_rankings_[c][0] == neuron
    assert set(ranker.ranking_[:3].tolist()) == set(PLANTED)
    assert ranker.class_scores_.shape == (3, 14) and (ranker.class_scores_ >= 0).all()


def test_class_scores_are_mean_absolute_attributions(planted):
    X, y = planted
    ranker = AttributionRanker(attribution="gradient_x_input", chunk_size=64).fit(X, y)
    attributions = np.abs(probe_attributions(ranker.probe_, X, y, attribution="gradient_x_input"))
    for c in range(3):
        np.testing.assert_allclose(ranker.class_scores_[c], attributions[y == c].mean(axis=0), rtol=1e-10)


def test_binary_scores_are_the_mean_over_all_tokens(planted):
    X, y = planted
    binary = (y == 1).astype(int)
    ranker = AttributionRanker().fit(X, binary)
    attributions = np.abs(probe_attributions(ranker.probe_, X, binary))
    np.testing.assert_allclose(ranker.scores_, attributions.mean(axis=0), rtol=1e-10)
    assert ranker.ranking_[0] == PLANTED[1]


@pytest.mark.parametrize(
    "params, message",
    [
        ({"attribution": "saliency"}, r"'attribution' parameter of AttributionRanker must be one of \['integrated_gradients', 'gradient_x_input'\]"),
        ({"baseline": "median"}, r"'baseline' parameter of AttributionRanker must be one of \['mean', 'zero'\]"),
        ({"n_steps": 0}, r"'n_steps' parameter of AttributionRanker must be an int >= 1"),
        ({"merge": "pairwise_sum"}, r"'merge' parameter of AttributionRanker must be one of"),
    ],
)
def test_invalid_parameters(planted, params, message):
    X, y = planted
    with pytest.raises(ValueError, match=message):
        AttributionRanker(**params).fit(X, y)

"""Gaussian probe (MAP Gaussians per class) and its greedy mutual-information ranker."""

import math

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from neuro_pipeline.ranking import RANKERS, get_ranker
from neuro_pipeline.ranking.gaussian import GaussianProbe, GaussianProbeRanker


@pytest.fixture(scope="module")
def separated():
    """Two well-separated classes on neuron 0, noise on neuron 1."""
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 60)
    X = np.column_stack([rng.normal(size=120) + 6.0 * y, rng.normal(size=120)])
    return X, y


@pytest.fixture(scope="module")
def small():
    """200 tokens x 12 neurons x 3 classes, class means differing on every neuron."""
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, size=200)
    X = rng.normal(size=(200, 12)) + 0.7 * rng.normal(size=(3, 12))[y]
    return X, y


def brute_force_greedy(X, y, k):
    """NeuroX's get_neuron_ordering: refit a GaussianProbe for every candidate."""
    selected, path = [], []
    for _ in range(k):
        scores = {
            j: GaussianProbe().fit(X, y, neurons=selected + [j]).mutual_information(X, y)[0]
            for j in range(X.shape[1])
            if j not in selected
        }
        best = max(scores, key=scores.get)
        selected.append(best)
        path.append(scores[best])
    return selected, np.array(path)


def test_separating_neuron_is_selected_first(separated):
    X, y = separated
    ranker = GaussianProbeRanker(max_neurons=1).fit(X, y)
    assert ranker.selected_.tolist() == [0]
    assert ranker.ranking_.tolist() == [0, 1]
    assert ranker.mi_path_[0] > 0.9  # H(Y) = 1 bit, nearly all of it carried by neuron 0


def test_probabilities_match_scipy_with_the_map_parameters(separated):
    X, y = separated
    probe = GaussianProbe().fit(X, y)
    D = X.shape[1]
    log_joint = []
    for c in (0, 1):
        Xc = X[y == c]
        mu = Xc.mean(axis=0)
        scatter = (Xc - mu).T @ (Xc - mu)
        lambda0 = np.diag(np.diag(np.cov(Xc, rowvar=False)))
        sigma = (lambda0 + scatter) / (len(Xc) + D + 2 + D + 2)  # nu_n + D + 2
        log_joint.append(math.log(len(Xc) / len(y)) + multivariate_normal(mu, sigma).logpdf(X))
    log_joint = np.column_stack(log_joint)
    expected = np.exp(log_joint - np.logaddexp(log_joint[:, 0], log_joint[:, 1])[:, None])
    np.testing.assert_allclose(probe.predict_proba(X), expected, rtol=0, atol=1e-8)
    assert probe.score(X, y) == 1.0


def test_mutual_information_is_entropy_minus_cross_entropy(separated):
    X, y = separated
    probe = GaussianProbe().fit(X, y, neurons=[1])
    p = probe.predict_proba(X)[np.arange(len(y)), y]
    mi, nmi = probe.mutual_information(X, y)
    assert mi == pytest.approx(1.0 + np.mean(np.log2(p)), abs=1e-12)
    assert nmi == pytest.approx(mi / 1.0, abs=1e-12)


def test_incremental_greedy_equals_brute_force(small):
    X, y = small
    ranker = GaussianProbeRanker(max_neurons=5).fit(X, y)
    selected, path = brute_force_greedy(X, y, 5)
    assert ranker.selected_.tolist() == selected
    np.testing.assert_allclose(ranker.mi_path_, path, rtol=0, atol=1e-8)


@pytest.mark.parametrize("separation", [3.0, 30.0, 300.0])
def test_greedy_equals_brute_force_when_classes_are_pruned_or_underflow(separation):
    """Sharp posteriors leave classes out of the float32 sums (upper bounds, then exact
    re-scoring); extreme ones make the float32 class sums underflow (exact fallback)."""
    rng = np.random.default_rng(2)
    y = rng.integers(0, 4, size=160)
    X = rng.normal(size=(160, 8))
    X[:, :3] += separation * rng.normal(size=(4, 3))[y]
    ranker = GaussianProbeRanker(max_neurons=4, token_block=50, candidate_block=3).fit(X, y)
    selected, path = brute_force_greedy(X, y, 4)
    assert ranker.selected_.tolist() == selected
    np.testing.assert_allclose(ranker.mi_path_, path, rtol=0, atol=1e-8)


def test_scores_are_finite_and_rank_the_rest_by_single_neuron_mi(small):
    X, y = small
    ranker = GaussianProbeRanker(max_neurons=3).fit(X, y)
    assert np.isfinite(ranker.scores_).all() and ranker.n_ranked_ == X.shape[1]
    np.testing.assert_array_equal(ranker.ranking_[:3], ranker.selected_)
    rest = ranker.ranking_[3:]
    assert np.all(np.diff(ranker.single_neuron_mi_[rest]) <= 0)
    single = [GaussianProbe().fit(X, y, neurons=[j]).mutual_information(X, y)[0] for j in range(X.shape[1])]
    np.testing.assert_allclose(ranker.single_neuron_mi_, single, rtol=0, atol=1e-5)
    assert ranker.selected_[0] == int(np.argmax(single))
    assert not hasattr(ranker, "class_rankings_")


def test_constant_neurons_do_not_crash_and_rank_last(small):
    X, y = small
    X = X.copy()
    X[:, [2, 7]] = 0.0
    X[y == 1, 5] = 1.5  # constant within one class only: floored variance, still a candidate
    before = X.copy()
    ranker = GaussianProbeRanker(max_neurons=4).fit(X, y)
    np.testing.assert_array_equal(X, before)
    assert set(ranker.ranking_[-2:]) == {2, 7}
    assert np.isnan(ranker.single_neuron_mi_[[2, 7]]).all()
    assert np.isfinite(ranker.mi_path_).all()
    probe = GaussianProbe().fit(X, y, neurons=[2, 5, 7])
    assert np.isfinite(probe.predict_proba(X)).all()


def test_float32_input_is_not_mutated_and_gives_the_same_selection(small):
    X, y = small
    X32 = X.astype(np.float32)
    X32.flags.writeable = False
    ranker = GaussianProbeRanker(max_neurons=3).fit(X32, y)
    assert ranker.selected_.tolist() == brute_force_greedy(X32, y, 3)[0]


def test_registered_and_clonable():
    assert RANKERS["gaussian"] is GaussianProbeRanker
    assert get_ranker("gaussian", max_neurons=3).max_neurons == 3


def test_bad_n_jobs_is_rejected(small):
    X, y = small
    with pytest.raises(ValueError, match=r"The 'n_jobs' parameter of GaussianProbeRanker must be -1 or an int >= 1\. Got 0 "):
        GaussianProbeRanker(n_jobs=0).fit(X, y)


def test_single_threaded_gives_the_same_selection(small):
    X, y = small
    one = GaussianProbeRanker(max_neurons=4, n_jobs=1, candidate_block=4).fit(X, y)
    two = GaussianProbeRanker(max_neurons=4, n_jobs=2, candidate_block=4).fit(X, y)
    np.testing.assert_array_equal(one.ranking_, two.ranking_)
    np.testing.assert_array_equal(one.mi_path_, two.mi_path_)


def test_torch_thread_setting_is_restored(small):
    import torch

    X, y = small
    before = torch.get_num_threads()
    GaussianProbeRanker(max_neurons=2).fit(X, y)
    assert torch.get_num_threads() == before


def test_max_neurons_larger_than_neurons_warns_and_selects_all(small):
    X, y = small
    with pytest.warns(UserWarning, match=r"max_neurons=20 is larger than the 12 neurons of X; selecting at most 12"):
        ranker = GaussianProbeRanker(max_neurons=20).fit(X, y)
    assert len(ranker.selected_) == 12


@pytest.mark.parametrize("value", [0, -1, 2.5, True])
def test_bad_max_neurons_is_rejected(small, value):
    X, y = small
    message = rf"The 'max_neurons' parameter of GaussianProbeRanker must be an int >= 1\. Got {value!r} instead\."
    with pytest.raises(ValueError, match=message):
        GaussianProbeRanker(max_neurons=value).fit(X, y)


def test_probe_input_errors(small):
    X, y = small
    with pytest.raises(ValueError, match=r"neurons must be column indices in \[0, 12\); got values from 3 to 12\."):
        GaussianProbe().fit(X, y, neurons=[3, 12])
    probe = GaussianProbe().fit(X, y, neurons=[0])
    with pytest.raises(ValueError, match=r"X has 2 neurons but the probe was fitted on 12"):
        probe.predict(X[:, :2])
    with pytest.raises(ValueError, match=r"label 7 at row 0, which was not seen in fit"):
        probe.mutual_information(X[:2], np.array([7, 0]))
    with pytest.raises(ValueError, match=r"The 'reg' parameter of GaussianProbe must be a finite float > 0\. Got 0 "):
        GaussianProbe(reg=0).fit(X, y)


def test_one_neuron_by_hand():
    """Class a at 0 and 2, class b at 4 and 8, one neuron (D = 1). By hand: mu0 is the
    class mean, so Lambda_n = Lambda0 + scatter = (sample variance) + scatter:
    a: (2 + 2) / (n + 2D + 4 = 8) = 0.5;  b: (8 + 8) / 8 = 2.
    At x = 3: log N(3; 6, 2) - log N(3; 1, 0.5) = (-ln(4 pi)/2 - 9/4) - (-ln(pi)/2 - 4)
    = 1.75 - ln 2, so P(b | 3) = 1 / (1 + exp(ln 2 - 1.75)) = 0.742089 (equal priors)."""
    X = np.array([[0.0], [2.0], [4.0], [8.0]])
    probe = GaussianProbe().fit(X, ["a", "a", "b", "b"])
    np.testing.assert_allclose(probe.means_, [[1.0], [6.0]])
    np.testing.assert_allclose(probe.covariances_[:, 0, 0], [0.5, 2.0], rtol=1e-5)
    np.testing.assert_allclose(probe.predict_proba(np.array([[3.0]]))[0], [1 - 0.742089, 0.742089], atol=1e-6)
    assert probe.predict(np.array([[3.0], [1.5]])).tolist() == ["b", "a"]

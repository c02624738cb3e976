"""LinearProbe: learns, is sparse under L1, is scale-invariant, converges to the optimum,
and never touches its input."""

import warnings

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

from neuro_pipeline.probe import LinearProbe


@pytest.fixture(scope="module")
def blobs():
    """Three well-separated classes in 6 dimensions, string labels."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.array(["ADJ", "NOUN", "VERB"]), 100)
    centres = rng.normal(scale=4.0, size=(3, 6))
    X = (centres[np.repeat(np.arange(3), 100)] + rng.normal(size=(300, 6))).astype(np.float32)
    return X, y


@pytest.fixture(scope="module")
def informative():
    """make_classification with the 5 informative features first (shuffle=False)."""
    X, y = make_classification(
        n_samples=600, n_features=30, n_informative=5, n_redundant=0, n_classes=3,
        n_clusters_per_class=1, shuffle=False, random_state=0,
    )
    return X.astype(np.float32), y


def test_learns_a_separable_problem(blobs):
    X, y = blobs
    probe = LinearProbe(l1=0.0, l2=1e-3).fit(X, y)
    assert probe.converged_
    assert probe.score(X, y) == 1.0
    assert probe.classes_.tolist() == ["ADJ", "NOUN", "VERB"]
    proba = probe.predict_proba(X)
    assert proba.shape == (300, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    assert probe.coef_.shape == (3, 6) and probe.intercept_.shape == (3,)


def test_l1_gives_exact_zeros_and_more_with_larger_l1(informative):
    X, y = informative
    zeros = [int((LinearProbe(l1=l1, l2=0.0).fit(X, y).coef_ == 0).sum()) for l1 in (0.0, 3e-3, 3e-2)]
    assert zeros[0] == 0
    assert 0 < zeros[1] < zeros[2]
    # The survivors of a strong L1 penalty are the informative features.
    strong = LinearProbe(l1=3e-2, l2=0.0).fit(X, y)
    assert set(np.flatnonzero((strong.coef_ != 0).any(axis=0))) <= set(range(5))


def test_solution_satisfies_the_optimality_conditions(informative):
    # Elastic-net KKT: a zero weight has |grad| <= l1; a non-zero weight has
    # grad + 2*l2*w + l1*sign(w) == 0 (up to the solver tolerance).
    X, y = informative
    l1, l2 = 1e-2, 1e-3
    probe = LinearProbe(l1=l1, l2=l2, tol=1e-6, max_iter=5000).fit(X, y)
    W, G = probe.coef_, probe.loss_gradient_
    zero = W == 0
    assert np.all(np.abs(G[zero]) <= l1 + 1e-4)
    np.testing.assert_allclose(G[~zero] + 2 * l2 * W[~zero] + l1 * np.sign(W[~zero]), 0.0, atol=1e-4)


def test_matches_sklearn_on_pure_l2(informative):
    # sklearn minimises C * sum(CE) + ||W||^2 / 2; dividing by C * n gives our objective
    # with l2 = 1 / (2 * C * n), on the same standardised features.
    X, y = informative
    n, C = len(y), 0.5
    X64 = X.astype(np.float64)
    Z = (X64 - X64.mean(axis=0)) / X64.std(axis=0)
    reference = LogisticRegression(C=C, tol=1e-10, max_iter=10_000).fit(Z, y)
    probe = LinearProbe(l1=0.0, l2=1 / (2 * C * n), tol=1e-6, max_iter=5000).fit(X, y)
    np.testing.assert_allclose(probe.predict_proba(X), reference.predict_proba(Z), atol=1e-4)


def test_standardisation_makes_column_scale_irrelevant(informative):
    X, y = informative
    scaled = X.copy()
    scaled[:, 0] *= 1000.0
    scaled[:, 2] *= 1e-3
    scaled[:, 1] += 3.0
    a = LinearProbe(l1=1e-3, l2=1e-3).fit(X, y)
    b = LinearProbe(l1=1e-3, l2=1e-3).fit(scaled, y)
    np.testing.assert_array_equal(a.predict(X), b.predict(scaled))
    np.testing.assert_allclose(a.predict_proba(X), b.predict_proba(scaled), atol=1e-4)
    np.testing.assert_allclose(a.coef_, b.coef_, atol=1e-4)


def test_constant_feature_contributes_nothing(blobs):
    X, y = blobs
    X = np.column_stack([X, np.full(len(y), 7.0, dtype=np.float32)])
    probe = LinearProbe(l1=0.0, l2=1e-3).fit(X, y)
    assert probe.scale_[-1] == 1.0
    assert np.all(probe.coef_[:, -1] == 0)


def test_does_not_mutate_X_and_accepts_read_only_input(informative):
    X, y = informative
    X = X.copy()
    before = X.copy()
    X.setflags(write=False)
    probe = LinearProbe().fit(X, y)
    probe.predict(X)
    np.testing.assert_array_equal(X, before)


def test_is_deterministic_and_independent_of_chunk_size_and_dtype(informative):
    X, y = informative
    a = LinearProbe().fit(X, y)
    b = LinearProbe().fit(X, y)
    np.testing.assert_array_equal(a.coef_, b.coef_)
    chunked = LinearProbe(chunk_size=7).fit(X, y)
    np.testing.assert_allclose(chunked.coef_, a.coef_, atol=1e-4)
    as_float64 = LinearProbe().fit(X.astype(np.float64), y)
    np.testing.assert_allclose(as_float64.coef_, a.coef_, atol=1e-4)
    fortran = LinearProbe().fit(np.asfortranarray(X), y)
    np.testing.assert_allclose(fortran.coef_, a.coef_, atol=1e-4)


def test_warm_start_converges_faster(informative):
    X, y = informative
    probe = LinearProbe(l1=1e-3, l2=1e-3, warm_start=True).fit(X, y)
    cold_iterations = probe.n_iter_
    probe.fit(X, y)
    assert probe.n_iter_ < cold_iterations


def test_warns_when_not_converged(informative):
    X, y = informative
    with pytest.warns(Warning, match="did not reach tol"):
        LinearProbe(max_iter=2).fit(X, y)


@pytest.mark.parametrize(
    "X, y, match",
    [
        # 1-D activations
        (np.zeros(4), [0, 1, 0, 1], r"X must be 2-D \(n_tokens, n_neurons\); got shape \(4,\)"),
        # one label too few
        (np.zeros((4, 2)), [0, 1, 0], "y has 3 labels but X has 4 rows"),
        # a single class
        (np.zeros((4, 2)), ["NOUN"] * 4, r"LinearProbe: y has 1 class \('NOUN'\); at least 2 are needed"),
        # a NaN at row 2, column 1
        (np.array([[0, 0], [1, 1], [0, np.nan], [1, 1]]), [0, 1, 0, 1], "non-finite value \\(nan\\) at row 2, column 1"),
    ],
)
def test_rejects_bad_input(X, y, match):
    with pytest.raises(ValueError, match=match):
        LinearProbe().fit(X, y)


def test_rejects_bad_hyperparameters_and_wrong_width(blobs):
    X, y = blobs
    with pytest.raises(ValueError, match="The 'l1' parameter of LinearProbe must be a finite float >= 0. Got -1"):
        LinearProbe(l1=-1).fit(X, y)
    with pytest.raises(ValueError, match="not fitted yet"):
        LinearProbe().predict(X)
    probe = LinearProbe().fit(X, y)
    with pytest.raises(ValueError, match="X has 5 features \\(neurons\\) but this LinearProbe was fitted on 6"):
        probe.predict(X[:, :5])


def test_score_counts_unseen_labels_as_errors(blobs):
    X, y = blobs
    probe = LinearProbe(l1=0.0, l2=1e-3).fit(X, y)
    y_test = y.copy().astype(object)
    y_test[:30] = "INTJ"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert probe.score(X, y_test) == pytest.approx(0.9)


def test_leaves_the_torch_thread_setting_alone(blobs):
    import torch

    X, y = blobs
    before = torch.get_num_threads()
    LinearProbe().fit(X, y).predict(X)  # small: runs on one thread internally
    assert torch.get_num_threads() == before


# ---------------------------------------------------------------------- minibatch solver
def test_minibatch_solver_reaches_the_fista_accuracy(informative):
    X, y = informative
    exact = LinearProbe(l1=0.0, l2=1e-3).fit(X, y)
    quick = LinearProbe(l1=0.0, l2=1e-3, solver="minibatch", max_epochs=30, batch_size=32, learning_rate=1e-2).fit(X, y)
    assert quick.converged_ is None and quick.n_iter_ == 30
    assert quick.score(X, y) >= exact.score(X, y) - 0.02
    # Near the optimum, not merely accurate: the objective is within 5% of FISTA's.
    assert quick.objective_ <= 1.05 * exact.objective_
    assert exact.objective_ <= quick.objective_ + 1e-6


def test_minibatch_solver_is_seeded_and_keeps_l1_zeros_exact(informative):
    X, y = informative
    params = dict(l1=2e-2, l2=0.0, solver="minibatch", max_epochs=10, batch_size=64, learning_rate=1e-2)
    a = LinearProbe(**params, random_state=3).fit(X, y)
    b = LinearProbe(**params, random_state=3).fit(X, y)
    c = LinearProbe(**params, random_state=4).fit(X, y)
    np.testing.assert_array_equal(a.coef_, b.coef_)
    assert not np.array_equal(a.coef_, c.coef_)
    # The L1 prox zeroes the noise features exactly; the 5 informative ones survive.
    assert (a.coef_[:, 5:] == 0).mean() > 0.5
    assert (a.coef_[:, :5] != 0).any(axis=0).all()


def test_minibatch_solver_reads_memmaps_in_contiguous_blocks(tmp_path, informative, monkeypatch):
    """A file-backed matrix is read a block of contiguous rows at a time (blocks in random
    order, rows shuffled inside): every row once per epoch, seeded, and as accurate as the
    in-memory solver's uniform draws."""
    import neuro_pipeline.probe as probe_module

    X, y = informative
    path = tmp_path / "X.npy"
    np.save(path, X)
    mapped = np.load(path, mmap_mode="r")
    monkeypatch.setattr(probe_module, "_FILE_BLOCK_ROWS", 128)
    params = dict(l1=0.0, l2=1e-3, solver="minibatch", max_epochs=20, batch_size=32, learning_rate=1e-2)
    in_memory = LinearProbe(**params).fit(X, y)
    file_backed = LinearProbe(**params).fit(mapped, y)
    np.testing.assert_array_equal(file_backed.coef_, LinearProbe(**params).fit(mapped, y).coef_)
    assert file_backed.score(X, y) >= in_memory.score(X, y) - 0.02
    solver = probe_module._FistaSolver(mapped, np.zeros(len(y), dtype=np.int64), 1, np.zeros(30), np.ones(30),
                                       np.ones(30, dtype=bool), 4096)
    batches = list(solver._minibatches(np.random.default_rng(0), 32))
    rows = np.concatenate([r for r, _ in batches])
    assert sorted(rows.tolist()) == list(range(len(y)))  # every row exactly once
    assert all(r.max() - r.min() < 128 for r, _ in batches)  # each batch inside one block
    for r, block in batches:
        np.testing.assert_array_equal(block, X[r])


@pytest.mark.parametrize(
    "params, match",
    [
        ({"solver": "sgd"}, r"The 'solver' parameter of LinearProbe must be one of \['fista', 'minibatch'\]"),
        ({"learning_rate": 0.0}, r"The 'learning_rate' parameter of LinearProbe must be a float > 0"),
        ({"max_epochs": 0}, r"The 'max_epochs' parameter of LinearProbe must be an int >= 1"),
        ({"batch_size": 2.5}, r"The 'batch_size' parameter of LinearProbe must be an int >= 1"),
        ({"random_state": "x"}, r"The 'random_state' parameter of LinearProbe must be an int"),
    ],
)
def test_minibatch_hyperparameters_are_checked(blobs, params, match):
    X, y = blobs
    with pytest.raises(ValueError, match=match):
        LinearProbe(**params).fit(X, y)


def test_shared_column_stats_give_the_same_probe_as_computing_them():
    from neuro_pipeline.matrix import take_columns
    from neuro_pipeline.probe import column_stats

    rng = np.random.default_rng(7)
    X = (rng.normal(size=(600, 40)) * rng.uniform(0.2, 4.0, 40) + rng.uniform(-3, 3, 40)).astype(np.float32)
    X[:, 5] = 2.5  # a constant column stays inactive through take()
    y = (X[:, 1] + X[:, 7] > 0).astype(int) + (X[:, 9] > 1)
    stats = column_stats(X)
    columns = np.array([1, 5, 7, 9, 30])
    shared = LinearProbe(l1=0.0, l2=1e-3).fit(take_columns(X, columns), y, column_stats=stats.take(columns))
    own = LinearProbe(l1=0.0, l2=1e-3).fit(take_columns(X, columns), y)
    np.testing.assert_array_equal(shared.coef_, own.coef_)
    np.testing.assert_array_equal(shared.scale_, own.scale_)
    assert not stats.take(columns).active[1]
    with pytest.raises(ValueError, match="column_stats describe 40 columns but X has 5"):
        LinearProbe().fit(take_columns(X, columns), y, column_stats=stats)

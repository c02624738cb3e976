"""A linear probe: multinomial logistic regression with an elastic-net penalty, in torch.

Start here: :class:`LinearProbe` is what NeuroX calls a linear probe (``nn.Linear(D, C)``
trained with cross-entropy plus L1 and L2 penalties), rebuilt as a scikit-learn style
estimator. Unlike NeuroX's 10 epochs of Adam on raw activations, it works on standardised
features and by default minimises the convex objective to a stated tolerance with
full-batch proximal gradient (FISTA), so the weights that neuron rankings read are
reproducible and L1 zeros are exact; ``solver="minibatch"`` trains with a few epochs of
shuffled mini-batch Adam instead, for when only the predictions matter.
The data is read in row chunks, so memory beyond ``X`` itself stays small and ``X`` may be
a ``numpy.memmap``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import warnings
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning

logger = logging.getLogger(__name__)

#: Below this many elements of X, probes run on one torch thread (see _one_thread_if_small).
_PARALLEL_MIN_ELEMENTS = 1 << 22

_SOLVERS = ("fista", "minibatch")

#: Contiguous rows the minibatch solver reads at a time from a file-backed matrix.
_FILE_BLOCK_ROWS = 16_384


class LinearProbe(BaseEstimator):
    """Multinomial logistic regression with an elastic-net penalty, fitted by FISTA.

    The probe minimises, over weights ``W`` (n_classes, n_features) and bias ``b``::

        (1 / n) * sum_i CE(softmax(W @ z_i + b), y_i)  +  l1 * sum|W|  +  l2 * ||W||_F^2

    where ``z_i`` is token ``i``'s activation vector, standardised with the training
    mean and standard deviation when ``standardize=True`` (``z = x``
    otherwise). The bias is not penalised. Both penalties act on standardised weights,
    so every neuron is penalised on the same scale whatever its raw variance. The
    standardisation is folded into the weights rather than applied to a copy of ``X``;
    a feature whose mean is hundreds of times its standard deviation therefore loses some
    float32 precision (MiniLM's hidden states have |mean| / std <= 15). Note the
    differences from NeuroX: the L2 term is the *squared* Frobenius norm (NeuroX uses the
    unsquared norm), and the loss is the mean over all tokens, minimised to convergence.

    Two solvers minimise it:

    * ``solver="fista"`` (default): full-batch FISTA (Beck & Teboulle 2009) with
      backtracking on the step size, a gradient-based momentum restart, and the exact
      proximal step of the penalty (soft-thresholding by ``l1`` then shrinking by
      ``1 / (1 + 2 * step * l2)``), run until the gradient mapping is below ``tol``. Use it
      when the weights themselves matter (neuron rankings read them): the result is the
      optimum to a stated tolerance and L1 zeros are exact.
    * ``solver="minibatch"``: ``max_epochs`` passes of Adam over mini-batches of
      ``batch_size`` tokens drawn without replacement (seeded by ``random_state``), each
      step followed by the same L1 soft-thresholding, so zeros stay exact. This is NeuroX's
      training loop done with standardised features, shuffling and larger batches: on
      MiniLM activations of UD EWT it reaches the full-probe accuracy of FISTA in two to
      three epochs, several times sooner, but stops after a fixed budget rather than at a
      tolerance. Use it when only the predictions matter (retrained evaluation probes,
      large data).

    Both start from zero weights and log-prior biases and are deterministic for a given
    thread count (and seed).

    Parameters
    ----------
    l1 : float, default=1e-3
        Weight of the L1 penalty (>= 0). Larger values give more exact zeros.
    l2 : float, default=1e-4
        Weight of the squared-L2 penalty (>= 0).
    standardize : bool, default=True
        Standardise each feature with the training mean and standard deviation. A feature
        with zero variance gets scale 1 and is held at weight 0, so it contributes nothing.
    solver : {"fista", "minibatch"}, default="fista"
        The optimiser (see above).
    max_iter : int, default=500
        Maximum number of FISTA iterations. Each costs about two passes over ``X``.
    tol : float, default=1e-4
        FISTA stops when the largest entry of the gradient mapping (the proximal-gradient
        analogue of the gradient, in standardised units) falls below ``tol``.
    max_epochs : int, default=3
        Passes over the data of the minibatch solver.
    batch_size : int, default=256
        Tokens per step of the minibatch solver.
    learning_rate : float, default=1e-3
        Adam step size of the minibatch solver (in standardised units).
    random_state : int, default=0
        Seed of the minibatch solver's shuffling.
    chunk_size : int, default=4096
        Rows of ``X`` processed at a time. Float32 C-contiguous rows are used in place;
        other inputs are converted one chunk at a time.
    warm_start : bool, default=False
        Start from the current ``coef_`` and ``intercept_`` when refitting on data with the
        same classes and number of features (used for regularisation paths).

    Attributes
    ----------
    classes_ : numpy.ndarray of shape (n_classes,)
        Sorted distinct labels of the training data.
    coef_ : numpy.ndarray of shape (n_classes, n_features), float32
        Weights in standardised space (the space the penalty acts in).
    intercept_ : numpy.ndarray of shape (n_classes,), float32
        Biases in standardised space.
    loss_gradient_ : numpy.ndarray of shape (n_classes, n_features), float32
        Gradient of the mean cross-entropy with respect to ``coef_`` at the solution. At
        the optimum a zero weight has ``|gradient| <= l1``; the closer to ``l1``, the
        closer that neuron is to entering the model (rankers use this to order neurons
        whose weights are all zero).
    mean_ : numpy.ndarray of shape (n_features,), float64
        Training mean per feature (zeros when ``standardize=False``).
    scale_ : numpy.ndarray of shape (n_features,), float64
        Training standard deviation per feature, 1 for constant features (ones when
        ``standardize=False``).
    n_features_in_ : int
    n_iter_ : int
        FISTA iterations run, or minibatch epochs run.
    converged_ : bool or None
        Whether FISTA reached ``tol`` within ``max_iter``; ``None`` for the minibatch
        solver, which runs a fixed budget and has no convergence test.
    objective_ : float
        Final value of the objective above.

    Examples
    --------
    >>> X = np.array([[0., 1.], [0., 2.], [1., 0.], [2., 0.]], dtype=np.float32)
    >>> probe = LinearProbe(l1=0.0, l2=1e-2).fit(X, ["a", "a", "b", "b"])
    >>> probe.predict(X).tolist()
    ['a', 'a', 'b', 'b']
    """

    def __init__(
        self,
        *,
        l1: float = 1e-3,
        l2: float = 1e-4,
        standardize: bool = True,
        solver: str = "fista",
        max_iter: int = 500,
        tol: float = 1e-4,
        max_epochs: int = 3,
        batch_size: int = 256,
        learning_rate: float = 1e-3,
        random_state: int = 0,
        chunk_size: int = 4096,
        warm_start: bool = False,
    ):
        self.l1 = l1
        self.l2 = l2
        self.standardize = standardize
        self.solver = solver
        self.max_iter = max_iter
        self.tol = tol
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.random_state = random_state
        self.chunk_size = chunk_size
        self.warm_start = warm_start

    # ------------------------------------------------------------------ fitting
    def fit(self, X, y, *, column_stats: ColumnStats | None = None) -> LinearProbe:
        """Fit the probe on activations ``X`` and labels ``y``.

        Parameters
        ----------
        X : array-like of shape (n_tokens, n_features)
            Finite real activations; never modified.
        y : array-like of shape (n_tokens,)
            Labels (ints or strings), at least 2 distinct values.
        column_stats : ColumnStats, optional
            The standardisation of these rows of ``X``, when already known: probes retrained
            on column subsets of one matrix share ``column_stats(X).take(columns)`` instead
            of each passing over its columns twice (the result is the same bit for bit).
            Ignored when ``standardize=False``.

        Returns
        -------
        self

        Raises
        ------
        ValueError, TypeError
            On invalid hyperparameters or input (see
            :func:`neuro_pipeline.ranking.validate_matrix`).
        """
        # Imported here because neuro_pipeline.ranking imports this module.
        from neuro_pipeline.ranking._base import validate_matrix

        self.check_params()
        X, y = validate_matrix(X, y, owner=type(self).__name__)
        if X.dtype == np.float32 and not X.flags.c_contiguous and not isinstance(X, np.memmap):
            # One copy now rather than one per row chunk per pass (hundreds of passes).
            X = np.ascontiguousarray(X)
        classes, y_idx = np.unique(y, return_inverse=True)
        n, d = X.shape
        if self.standardize and column_stats is not None:
            if column_stats.mean.shape != (d,):
                raise ValueError(f"{type(self).__name__}.fit: column_stats describe {column_stats.mean.shape[0]} "
                                 f"columns but X has {d}; pass column_stats(X_full).take(columns).")
            mean, scale, active = column_stats.mean, column_stats.scale, column_stats.active
        elif self.standardize:
            mean, scale, active = _standardisation(X, self.chunk_size)
        else:
            mean, scale, active = np.zeros(d), np.ones(d), np.ones(d, dtype=bool)

        warm = (
            self.warm_start
            and hasattr(self, "coef_")
            and self.coef_.shape == (len(classes), d)
            and np.array_equal(self.classes_, classes)
        )
        if warm:
            W0, b0 = self.coef_, self.intercept_
        else:
            prior = np.bincount(y_idx, minlength=len(classes)) / n
            W0 = np.zeros((len(classes), d), dtype=np.float32)
            b0 = (np.log(prior) - np.log(prior).mean()).astype(np.float32)

        solver = _FistaSolver(X, y_idx, len(classes), mean, scale, active, self.chunk_size)
        with _one_thread_if_small(X.size):
            if self.solver == "fista":
                W, b, grad, n_iter, objective, converged = solver.solve(
                    W0, b0, l1=float(self.l1), l2=float(self.l2), max_iter=int(self.max_iter), tol=float(self.tol)
                )
            else:
                W, b, grad, n_iter, objective = solver.solve_minibatch(
                    W0, b0, l1=float(self.l1), l2=float(self.l2), epochs=int(self.max_epochs),
                    batch_size=int(self.batch_size), learning_rate=float(self.learning_rate),
                    seed=int(self.random_state),
                )
                converged = None
        self.classes_ = classes
        self.coef_ = W
        self.intercept_ = b
        self.loss_gradient_ = grad
        self.mean_ = mean
        self.scale_ = scale
        self.n_features_in_ = d
        self.n_iter_ = n_iter
        self.converged_ = converged
        self.objective_ = objective
        if converged is False:
            warnings.warn(
                f"LinearProbe(l1={self.l1}, l2={self.l2}) did not reach tol={self.tol} in "
                f"max_iter={self.max_iter} iterations; increase max_iter, or increase l1/l2.",
                ConvergenceWarning,
                stacklevel=2,
            )
        return self

    def check_params(self) -> None:
        """Check the hyperparameters (``fit`` does it first; the configuration checks a
        selection probe's settings with it before any data is read).

        Raises
        ------
        ValueError
            Naming the first invalid hyperparameter and its valid values.
        """
        name = type(self).__name__
        for param in ("l1", "l2"):
            value = getattr(self, param)
            if isinstance(value, bool) or not isinstance(value, Real) or not (value >= 0 and math.isfinite(value)):
                raise ValueError(
                    f"The {param!r} parameter of {name} must be a finite float >= 0. Got {value!r} instead."
                )
        if self.solver not in _SOLVERS:
            raise ValueError(
                f"The 'solver' parameter of {name} must be one of {list(_SOLVERS)}. Got {self.solver!r} instead."
            )
        if isinstance(self.learning_rate, bool) or not isinstance(self.learning_rate, Real) or not (
            0 < self.learning_rate < math.inf
        ):
            raise ValueError(
                f"The 'learning_rate' parameter of {name} must be a float > 0. Got {self.learning_rate!r} instead."
            )
        if isinstance(self.random_state, bool) or not isinstance(self.random_state, Integral):
            raise ValueError(f"The 'random_state' parameter of {name} must be an int. Got {self.random_state!r} instead.")
        for param in ("max_iter", "chunk_size", "max_epochs", "batch_size"):
            value = getattr(self, param)
            if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
                raise ValueError(f"The {param!r} parameter of {name} must be an int >= 1. Got {value!r} instead.")
        if isinstance(self.tol, bool) or not isinstance(self.tol, Real) or not self.tol > 0:
            raise ValueError(f"The 'tol' parameter of {name} must be a float > 0. Got {self.tol!r} instead.")

    # ------------------------------------------------------------------ prediction
    def decision_function(self, X) -> np.ndarray:
        """Logits, shape (n_tokens, n_classes), float32, computed in row chunks."""
        X = self._check_predict_input(X)
        W_eff, offset = effective_weights(
            torch.from_numpy(self.coef_), torch.from_numpy(self.intercept_), self.mean_, self.scale_
        )
        out = torch.empty((X.shape[0], len(self.classes_)), dtype=torch.float32)
        with _one_thread_if_small(X.size):
            _forward(X, W_eff, offset, self.chunk_size, out)
        return out.numpy()

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities, shape (n_tokens, n_classes), columns in ``classes_`` order."""
        return torch.softmax(torch.from_numpy(self.decision_function(X)), dim=1).numpy()

    def predict(self, X) -> np.ndarray:
        """The most probable label of each token, shape (n_tokens,)."""
        logits = self.decision_function(X)
        return self.classes_[np.argmax(logits, axis=1)]

    def score(self, X, y) -> float:
        """Accuracy on ``(X, y)``; labels never seen in training count as errors."""
        y = np.asarray(y)
        if y.ndim != 1 or len(y) != np.shape(X)[0]:
            raise ValueError(f"LinearProbe.score: y must be 1-D with one label per row of X; got shape {y.shape}.")
        return float(np.mean(self.predict(X) == y))

    # ------------------------------------------------------------------ state
    def get_state(self) -> dict[str, np.ndarray]:
        """The fitted state as plain arrays, everything prediction reads besides the
        hyperparameters, so that a caller can store the probe and :meth:`from_state` can
        rebuild it.

        Returns
        -------
        dict of str to numpy.ndarray
            ``"classes"``: ``classes_``; ``"coef"``: ``coef_`` as C-contiguous float32,
            shape (n_classes, n_features); ``"intercept"``: float32, shape (n_classes,);
            ``"mean"`` and ``"scale"``: the standardisation, float64, shape (n_features,).
            An array already of that dtype and layout is the probe's own, not a copy:
            copy it before changing it.

        Raises
        ------
        ValueError
            If the probe is not fitted.
        """
        self._check_fitted()
        return {
            "classes": self.classes_,
            "coef": np.ascontiguousarray(self.coef_, dtype=np.float32),
            "intercept": np.ascontiguousarray(self.intercept_, dtype=np.float32),
            "mean": np.ascontiguousarray(self.mean_, dtype=np.float64),
            "scale": np.ascontiguousarray(self.scale_, dtype=np.float64),
        }

    @classmethod
    def from_state(cls, state: dict, **params) -> LinearProbe:
        """A fitted ``cls(**params)`` rebuilt from :meth:`get_state`'s arrays.

        It predicts bit for bit as the probe the state came from. The arrays are copied;
        ``coef`` may be flat (as read back from bytes) and is reshaped to
        (n_classes, n_features). Only what prediction needs is restored: the attributes
        of the fit itself (``loss_gradient_``, ``n_iter_``, ``converged_``,
        ``objective_``) are not set.

        Parameters
        ----------
        state : dict
            The keys of :meth:`get_state`: ``classes``, ``coef``, ``intercept``, ``mean``,
            ``scale``.
        **params
            Hyperparameters of the new probe (those it was fitted with, normally).

        Raises
        ------
        ValueError
            If a key is missing or the arrays' shapes do not fit together.

        Examples
        --------
        >>> X = np.array([[0., 1.], [0., 2.], [1., 0.], [2., 0.]], dtype=np.float32)
        >>> probe = LinearProbe(l1=0.0, l2=1e-2).fit(X, ["a", "a", "b", "b"])
        >>> LinearProbe.from_state(probe.get_state(), l1=0.0, l2=1e-2).predict(X).tolist()
        ['a', 'a', 'b', 'b']
        """
        name = f"{cls.__name__}.from_state"
        missing = [key for key in ("classes", "coef", "intercept", "mean", "scale") if key not in state]
        if missing:
            raise ValueError(f"{name}: the state has no {missing}; expected the keys of get_state().")
        classes = np.array(state["classes"])
        if classes.ndim != 1 or len(classes) < 2:
            raise ValueError(f"{name}: classes must be 1-D with at least 2 labels; got shape {classes.shape}.")
        coef = np.array(state["coef"], dtype=np.float32)
        if (coef.ndim not in (1, 2) or coef.size == 0 or coef.size % len(classes)
                or (coef.ndim == 2 and coef.shape[0] != len(classes))):
            raise ValueError(f"{name}: coef has shape {coef.shape}; expected ({len(classes)}, n_features), one "
                             "row of weights per class (or the same values flattened).")
        coef = coef.reshape(len(classes), -1)
        n_features = coef.shape[1]
        intercept = np.array(state["intercept"], dtype=np.float32)
        if intercept.shape != (len(classes),):
            raise ValueError(f"{name}: intercept has shape {intercept.shape}; expected ({len(classes)},), "
                             "one per class.")
        mean = np.array(state["mean"], dtype=np.float64)
        scale = np.array(state["scale"], dtype=np.float64)
        for key, value in (("mean", mean), ("scale", scale)):
            if value.shape != (n_features,):
                raise ValueError(f"{name}: {key} has shape {value.shape}; expected ({n_features},), one per "
                                 "feature (column of coef).")
        probe = cls(**params)
        probe.classes_ = classes
        probe.coef_ = coef
        probe.intercept_ = intercept
        probe.mean_ = mean
        probe.scale_ = scale
        probe.n_features_in_ = n_features
        return probe

    def _check_fitted(self) -> None:
        if not hasattr(self, "coef_"):
            raise ValueError(
                "This LinearProbe instance is not fitted yet. "
                "Call 'fit' with appropriate arguments before using this estimator."
            )

    def _check_predict_input(self, X) -> np.ndarray:
        from neuro_pipeline.ranking._base import validate_matrix

        self._check_fitted()
        X, _ = validate_matrix(X, owner=type(self).__name__)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {X.shape[1]} features (neurons) but this LinearProbe was fitted on "
                f"{self.n_features_in_}; select the same columns as in training."
            )
        return X


# ---------------------------------------------------------------------- numerics
@contextlib.contextmanager
def _one_thread_if_small(n_elements: int):
    """Run small problems on one torch thread, restoring the setting afterwards.

    Each FISTA step is a handful of tiny kernels on small inputs; with several threads
    their synchronisation costs more than the arithmetic, and on a machine whose cores are
    busy it made a 25k x 27 probe 10x slower (measured: 3.5 s vs 0.3 s).
    """
    previous = torch.get_num_threads()
    if n_elements >= _PARALLEL_MIN_ELEMENTS or previous == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _row_chunks(X: np.ndarray, chunk_size: int):
    """Yield (start, float32 tensor) row blocks; float32 C-contiguous rows are not copied."""
    for start in range(0, X.shape[0], chunk_size):
        block = X[start : start + chunk_size]
        if block.dtype != np.float32 or not block.flags.c_contiguous:
            block = np.ascontiguousarray(block, dtype=np.float32)
        with warnings.catch_warnings():
            # Read-only inputs (memmaps) are only ever read here.
            warnings.filterwarnings("ignore", message="The given NumPy array is not writ")
            yield start, torch.from_numpy(block)


@dataclass(frozen=True)
class ColumnStats:
    """Per-column training mean, scale (standard deviation; 1 for a constant column) and
    non-constant mask: what :class:`LinearProbe` standardises with."""

    mean: np.ndarray
    scale: np.ndarray
    active: np.ndarray

    def take(self, columns) -> ColumnStats:
        """The statistics of some columns, in the order given."""
        columns = np.asarray(columns)
        return ColumnStats(self.mean[columns], self.scale[columns], self.active[columns])


def column_stats(X, chunk_size: int = 4096) -> ColumnStats:
    """:class:`ColumnStats` of the rows of ``X`` (two chunked passes in float64; ``X`` may be
    a ``numpy.memmap``)."""
    return ColumnStats(*_standardisation(X, chunk_size))


#: Rows per float64 chunk of the standardisation passes, whatever the probe's chunk_size:
#: 22 MB at MiniLM's 2,688 neurons. Chunks of 4,096 rows took 88 MB and were slower
#: (EWT dev: 0.21-0.24 s against 0.16-0.17 s).
_STATS_ROWS = 1024


def _standardisation(X: np.ndarray, chunk_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, scale and non-constant mask per column, in float64 by two chunked passes."""
    n, d = X.shape
    chunk_size = min(chunk_size, _STATS_ROWS)
    total = np.zeros(d)
    for start in range(0, n, chunk_size):
        total += X[start : start + chunk_size].sum(axis=0, dtype=np.float64)
    mean = total / n
    sq = np.zeros(d)
    for start in range(0, n, chunk_size):
        centred = X[start : start + chunk_size].astype(np.float64)
        centred -= mean  # in place: one float64 copy of the chunk, not two
        sq += np.einsum("ij,ij->j", centred, centred)
    std = np.sqrt(sq / n)
    # As sklearn's StandardScaler: a std at rounding level of the mean is a constant column.
    active = std > 10 * np.finfo(np.float64).eps * np.maximum(np.abs(mean), 1.0)
    scale = np.where(active, std, 1.0)
    return mean, scale, active


def effective_weights(
    W: torch.Tensor, b: torch.Tensor, mean: np.ndarray, scale: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold the standardisation into a probe's weights: ``W @ ((x - mean) / scale) + b`` equals
    ``W_eff @ x + offset``, so the logits of raw activations need no standardised copy of them.

    Parameters
    ----------
    W : torch.Tensor of shape (n_classes, n_features)
        Weights in standardised space (a probe's ``coef_``).
    b : torch.Tensor of shape (n_classes,)
        Biases in standardised space (``intercept_``).
    mean, scale : numpy.ndarray of shape (n_features,), float64
        The standardisation (``mean_``, ``scale_``).

    Returns
    -------
    W_eff : torch.Tensor of shape (n_classes, n_features), float32
    offset : torch.Tensor of shape (n_classes,), float32
        Computed in float64 and rounded once, as :meth:`LinearProbe.decision_function` uses them.
    """
    W_eff = (W.double() / torch.from_numpy(scale)).float()
    offset = (b.double() - W_eff.double() @ torch.from_numpy(mean)).float()
    return W_eff, offset


def _forward(X: np.ndarray, W_eff: torch.Tensor, offset: torch.Tensor, chunk_size: int, out: torch.Tensor) -> None:
    Wt = W_eff.T.contiguous()
    for start, block in _row_chunks(X, chunk_size):
        torch.matmul(block, Wt, out=out[start : start + block.shape[0]])
    out += offset


class _FistaSolver:
    """Full-batch FISTA for the probe objective; logits are kept per iterate so the
    extrapolated point costs no extra pass (logits are linear in the weights)."""

    def __init__(self, X, y_idx, n_classes, mean, scale, active, chunk_size):
        self.X = X
        self.n = X.shape[0]
        self.y_col = torch.from_numpy(np.ascontiguousarray(y_idx, dtype=np.int64)).reshape(-1, 1)
        self.minus_one = torch.full((self.n, 1), -1.0)
        self.n_classes = n_classes
        self.mean = mean
        self.scale = scale
        self.mean_t = torch.from_numpy(mean).float()
        self.inv_scale = torch.from_numpy(1.0 / scale).float()
        self.inactive = torch.from_numpy(~active)
        self.chunk_size = chunk_size

    def logits(self, W: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        out = torch.empty((self.n, self.n_classes), dtype=torch.float32)
        W_eff, offset = effective_weights(W, b, self.mean, self.scale)
        _forward(self.X, W_eff, offset, self.chunk_size, out)
        return out

    def loss(self, Z: torch.Tensor) -> float:
        """Mean cross-entropy of the point whose logits are Z."""
        log_p = torch.log_softmax(Z, dim=1)
        return -float(log_p.gather(1, self.y_col).double().mean())

    def loss_and_gradient(self, Z: torch.Tensor) -> tuple[float, torch.Tensor, torch.Tensor]:
        """Mean cross-entropy and its gradient (weights, bias) at the point whose logits are Z."""
        R = torch.log_softmax(Z, dim=1)
        loss = -float(R.gather(1, self.y_col).double().mean())
        R.exp_()
        R.scatter_add_(1, self.y_col, self.minus_one)
        R /= self.n
        Gt = torch.zeros((self.X.shape[1], self.n_classes), dtype=torch.float32)
        for start, block in _row_chunks(self.X, self.chunk_size):
            # X^T R (not R^T X): measured ~1.9x faster for skinny R with MKL.
            Gt.addmm_(block.T, R[start : start + block.shape[0]])
        G = Gt.T.contiguous()
        g_b = R.sum(dim=0)
        G -= torch.outer(g_b, self.mean_t)
        G *= self.inv_scale
        G[:, self.inactive] = 0.0
        return loss, G, g_b

    def solve(self, W0, b0, *, l1, l2, max_iter, tol):
        W = torch.from_numpy(np.array(W0, dtype=np.float32))
        b = torch.from_numpy(np.array(b0, dtype=np.float32))
        W[:, self.inactive] = 0.0
        Z = self.logits(W, b)
        W_prev, b_prev, Z_prev = W, b, Z
        t = 1.0
        L = 1.0
        converged = False
        n_iter = 0
        debug = logger.isEnabledFor(logging.DEBUG)
        for n_iter in range(1, max_iter + 1):
            t_next = (1.0 + math.sqrt(1.0 + 4.0 * t * t)) / 2.0
            beta = (t - 1.0) / t_next
            if beta > 0:
                Wy, by, Zy = W + beta * (W - W_prev), b + beta * (b - b_prev), Z + beta * (Z - Z_prev)
            else:
                Wy, by, Zy = W, b, Z
            f_y, g_W, g_b = self.loss_and_gradient(Zy)
            while True:
                step = 1.0 / L
                V = Wy - step * g_W
                W_new = torch.sign(V) * torch.clamp(V.abs() - step * l1, min=0.0) / (1.0 + 2.0 * step * l2)
                b_new = by - step * g_b
                Z_new = self.logits(W_new, b_new)
                f_new = self.loss(Z_new)
                dW, db = W_new - Wy, b_new - by
                sq = float(dW.double().pow(2).sum() + db.double().pow(2).sum())
                bound = f_y + float((g_W * dW).double().sum() + (g_b * db).double().sum()) + 0.5 * L * sq
                # Small slack: f is summed in float64 from float32 logits.
                if f_new <= bound + 1e-7 * max(1.0, abs(f_y)) or sq == 0.0:
                    break
                L *= 2.0
            # Gradient-based adaptive restart (O'Donoghue & Candes 2015).
            if float(((Wy - W_new) * (W_new - W)).double().sum() + ((by - b_new) * (b_new - b)).double().sum()) > 0:
                t_next = 1.0
            W_prev, b_prev, Z_prev = W, b, Z
            W, b, Z = W_new, b_new, Z_new
            t = t_next
            mapping = L * max(float(dW.abs().max()), float(db.abs().max()))
            if debug:
                logger.debug(
                    "iter %d: loss %.6f, step %.3g, mapping %.3g, restart %s", n_iter, f_new, 1.0 / L, mapping, t == 1.0
                )
            if mapping < tol:
                converged = True
                break
            L *= 0.9
        loss, grad, _ = self.loss_and_gradient(Z)
        objective = loss + l1 * float(W.double().abs().sum()) + l2 * float(W.double().pow(2).sum())
        logger.debug("LinearProbe: %d iterations, objective %.6g, step %.3g", n_iter, objective, 1.0 / L)
        return W.numpy(), b.numpy(), grad.numpy(), n_iter, objective, converged

    def _minibatches(self, rng, batch_size):
        """One epoch's (rows, X[rows]) mini-batches, every row once. In memory: rows drawn
        uniformly without replacement. File-backed X (a ``numpy.memmap``): blocks of
        ``_FILE_BLOCK_ROWS`` contiguous rows in random order, rows shuffled within each
        block, so that the file is read sequentially (a random read per row made an epoch
        over 2.8 GB in a 1 GB memory cgroup take minutes)."""
        if not isinstance(self.X, np.memmap):
            order = rng.permutation(self.n)
            for start in range(0, self.n, batch_size):
                rows = np.sort(order[start : start + batch_size])
                yield rows, self.X[rows]
            return
        size = max(batch_size, _FILE_BLOCK_ROWS)
        for first in rng.permutation(np.arange(0, self.n, size)):
            data = np.asarray(self.X[first : first + size])  # one sequential read
            local = rng.permutation(len(data))
            for start in range(0, len(data), batch_size):
                rows = np.sort(local[start : start + batch_size])
                yield first + rows, data[rows]

    def solve_minibatch(self, W0, b0, *, l1, l2, epochs, batch_size, learning_rate, seed):
        """Adam on mini-batches drawn without replacement, each step followed by the L1
        proximal step; returns the weights with the loss gradient and objective of one final
        full pass."""
        W = torch.from_numpy(np.array(W0, dtype=np.float32))
        b = torch.from_numpy(np.array(b0, dtype=np.float32))
        W[:, self.inactive] = 0.0
        params = (W, b)
        first = [torch.zeros_like(p) for p in params]
        second = [torch.zeros_like(p) for p in params]
        beta1, beta2, eps = 0.9, 0.999, 1e-8
        rng = np.random.default_rng(seed)
        y = self.y_col.reshape(-1)
        step = 0
        for epoch in range(epochs):
            for rows, block in self._minibatches(rng, batch_size):
                if block.dtype != np.float32:
                    block = block.astype(np.float32)
                block = torch.from_numpy(np.ascontiguousarray(block))
                m = block.shape[0]
                W_eff = W * self.inv_scale
                R = torch.softmax(torch.addmm(b - W_eff @ self.mean_t, block, W_eff.T), dim=1)
                R[torch.arange(m), y[torch.from_numpy(rows)]] -= 1.0
                R /= m
                g_b = R.sum(dim=0)
                G = (block.T @ R).T
                G -= torch.outer(g_b, self.mean_t)
                G *= self.inv_scale
                G[:, self.inactive] = 0.0
                if l2:
                    G += (2.0 * l2) * W
                step += 1
                correction1 = 1.0 - beta1**step
                correction2 = 1.0 - beta2**step
                for p, g, m1, m2 in zip(params, (G, g_b), first, second):
                    m1.mul_(beta1).add_(g, alpha=1.0 - beta1)
                    m2.mul_(beta2).addcmul_(g, g, value=1.0 - beta2)
                    denom = (m2 / correction2).sqrt_().add_(eps)
                    p.addcdiv_(m1, denom, value=-learning_rate / correction1)
                    if l1 and p is W:
                        # Proximal step in Adam's metric: each weight moved by about
                        # learning_rate / denom per unit gradient, so its L1 threshold is
                        # l1 times that step (a plain lr * l1 would never zero a weight).
                        threshold = (learning_rate * l1) / denom
                        W.copy_(torch.sign(W) * torch.clamp(W.abs() - threshold, min=0.0))
            logger.debug("minibatch epoch %d done (%d steps)", epoch + 1, step)
        loss, grad, _ = self.loss_and_gradient(self.logits(W, b))
        objective = loss + l1 * float(W.double().abs().sum()) + l2 * float(W.double().pow(2).sum())
        return W.numpy(), b.numpy(), grad.numpy(), epochs, objective

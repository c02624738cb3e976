"""The interface every neuron-ranking method implements, and the input checks they share.

Start here: a ranker is a scikit-learn style estimator. ``fit(X, y)`` takes activations
``X`` of shape (n_tokens, n_neurons) and one concept label per token, and sets
``scores_`` (one per neuron, higher = more relevant), ``ranking_`` (neuron indices, best
first) and, where the method defines them, ``class_rankings_``. ``top_neurons`` reads a
prefix of ``ranking_``. A subclass writes ``_score(X, y)`` only, or overrides ``fit`` when
the ranking is not simply the order of its scores (it must then keep the invariants that
``NeuronRanker.fit`` documents). :func:`validate_matrix` is the check of an activation
matrix (and its labels) that every ranker, the probe and the evaluations share.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator

#: Rows checked at a time for non-finite values, so the check never allocates a full-size mask.
_FINITE_CHECK_ROWS = 4096


def validate_matrix(X, y=None, *, owner: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Validate an activation matrix (and labels) without copying or mutating it.

    Parameters
    ----------
    X : array-like of shape (n_tokens, n_neurons)
        Real-valued activations. A NumPy array (or memmap) is returned as is; anything
        else goes through ``np.asarray``, which copies only when it must.
    y : array-like of shape (n_tokens,), optional
        One label per token (ints or strings). When given it must hold at least 2 classes.
    owner : str
        Name used in error messages, usually the calling class.

    Returns
    -------
    X : numpy.ndarray
        The same object when ``X`` was already an ndarray.
    y : numpy.ndarray or None

    Raises
    ------
    TypeError
        If ``X`` is not real-valued numeric.
    ValueError
        If ``X`` is not 2-D or is empty, if ``y`` has the wrong shape or length or fewer than
        2 classes, or if ``X`` or ``y`` holds a non-finite value (the message names the first
        bad row and column).

    Examples
    --------
    >>> X, y = validate_matrix([[0.0, 1.0], [1.0, 0.0]], [0, 1], owner="Demo")
    >>> X.shape, y.tolist()
    ((2, 2), [0, 1])
    """
    if not isinstance(X, np.ndarray):
        X = np.asarray(X)
    if X.dtype.kind not in "fiub":
        raise TypeError(
            f"{owner}: X must hold real numbers (float or int activations); got dtype {X.dtype}."
        )
    if X.ndim != 2:
        hint = " Select one layer first, or reshape to (n_tokens, n_layers * n_units)." if X.ndim == 3 else ""
        raise ValueError(f"{owner}: X must be 2-D (n_tokens, n_neurons); got shape {X.shape}.{hint}")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"{owner}: X must have at least 1 token and 1 neuron; got shape {X.shape}.")
    if X.dtype.kind == "f":
        for start in range(0, X.shape[0], _FINITE_CHECK_ROWS):
            chunk = X[start : start + _FINITE_CHECK_ROWS]
            finite = np.isfinite(chunk)
            if not finite.all():
                row, col = np.argwhere(~finite)[0]
                raise ValueError(
                    f"{owner}: X has a non-finite value ({chunk[row, col]}) at row {start + row}, "
                    f"column {col}; activations must be finite. Check the extraction of that token."
                )
    if y is None:
        return X, None
    if not isinstance(y, np.ndarray):
        y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"{owner}: y must be 1-D (n_tokens,); got shape {y.shape}.")
    if len(y) != X.shape[0]:
        raise ValueError(
            f"{owner}: y has {len(y)} labels but X has {X.shape[0]} rows (tokens); "
            "expected one label per token."
        )
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        row = int(np.flatnonzero(~np.isfinite(y))[0])
        raise ValueError(f"{owner}: y has a non-finite label ({y[row]}) at row {row}.")
    if y.dtype.kind == "O" and any(label is None for label in y):
        row = next(i for i, label in enumerate(y) if label is None)
        raise ValueError(f"{owner}: y has a missing label (None) at row {row}.")
    classes = np.unique(y)
    if len(classes) < 2:
        found = f"1 class ({classes[0].item()!r})" if len(classes) else "no classes"
        raise ValueError(
            f"{owner}: y has {found}; at least 2 are needed. "
            "Did the concept filter drop every negative token?"
        )
    return X, y


def check_fitted(ranker) -> None:
    """Raise unless ``ranker`` is fitted, i.e. has a ``ranking_``.

    Any object with ``ranking_`` and ``scores_`` passes (:func:`~neuro_pipeline.ranking.ranking_table`
    also takes rankings that no :class:`NeuronRanker` produced).

    Raises
    ------
    ValueError
        Naming the ranker's class, if it has no ``ranking_``.
    """
    if not hasattr(ranker, "ranking_"):
        raise ValueError(
            f"This {type(ranker).__name__} instance is not fitted yet. "
            "Call 'fit' with appropriate arguments before using this estimator."
        )


class NeuronRanker(BaseEstimator):
    """Order neurons by how much they encode a concept.

    Subclasses store keyword-only hyperparameters in ``__init__`` and implement
    ``_score(X, y)``; ``fit`` does the rest. A subclass whose hyperparameters can be
    checked without data overrides :meth:`check_params`, so that a configuration is
    refused before any data is read. ``get_params``, ``set_params``, ``clone`` and
    ``repr`` come from :class:`sklearn.base.BaseEstimator`.

    Attributes
    ----------
    classes_ : numpy.ndarray of shape (n_classes,)
        The sorted distinct labels seen in ``fit``.
    n_neurons_in_ : int
        Number of columns of ``X`` in ``fit``.
    scores_ : numpy.ndarray of shape (n_neurons,), float64
        Relevance per neuron, higher = more relevant; ``-inf`` for neurons a method did
        not rank (greedy methods rank a prefix only).
    ranking_ : numpy.ndarray of shape (n_neurons,), int64
        Neuron indices, best first: a stable argsort of ``-scores_`` (ties -> lower index).
    n_ranked_ : int
        How many neurons have a finite score (the meaningful prefix of ``ranking_``).
    class_rankings_ : dict
        Label -> neuron indices, best first, for methods that rank per class.
    """

    def fit(self, X, y) -> NeuronRanker:
        """Rank the neurons of ``X`` for the labels ``y``.

        Parameters
        ----------
        X : array-like of shape (n_tokens, n_neurons)
            Activations; never modified.
        y : array-like of shape (n_tokens,)
            One concept label per token, at least 2 distinct values.

        Returns
        -------
        self
        """
        X, y = validate_matrix(X, y, owner=type(self).__name__)
        self.classes_ = np.unique(y)
        self.n_neurons_in_ = X.shape[1]
        scores = np.asarray(self._score(X, y), dtype=np.float64)
        self.set_scores(scores)
        relevance = self._class_relevance()
        if relevance is not None:
            self.class_rankings_ = {
                label: np.argsort(-relevance[c], kind="stable") for c, label in enumerate(self.classes_)
            }
        return self

    def _class_relevance(self) -> np.ndarray | None:
        """Per-class relevance (n_classes, n_neurons), higher = more relevant, from which
        ``fit`` derives ``class_rankings_``; by default the ``class_scores_`` a method's
        ``_score`` set, or ``None`` for methods without per-class scores."""
        return getattr(self, "class_scores_", None)

    def set_scores(self, scores: np.ndarray) -> None:
        """Replace ``scores_`` and derive ``ranking_`` and ``n_ranked_`` from them.

        ``fit`` calls it with the method's scores; a caller that reorders a fitted ranking
        (e.g. to put one neuron of each correlation cluster first) calls it with scores that
        sort into the new order, ``-inf`` for neurons left unranked.

        Parameters
        ----------
        scores : numpy.ndarray of shape (n_neurons_in_,), float64
            Higher = more relevant. Kept as given (not copied).
        """
        if scores.shape != (self.n_neurons_in_,):
            raise AssertionError(f"_score returned shape {scores.shape}, expected ({self.n_neurons_in_},)")
        self.scores_ = scores
        # Stable sort: equal scores keep index order, so rankings are reproducible.
        self.ranking_ = np.argsort(-scores, kind="stable")
        self.n_ranked_ = int(np.isfinite(scores).sum())

    def _score(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} must implement _score(X, y)")

    def check_params(self) -> None:
        """Check the hyperparameters that need no data; the configuration calls it to refuse a
        bad setting before any data is read. By default there is nothing to check; checks
        that need the data (e.g. against the number of neurons) run in ``fit``.

        Raises
        ------
        ValueError, TypeError
            Naming the first invalid hyperparameter.
        """

    def check_fitted(self) -> None:
        """Raise ``ValueError`` unless the ranker is fitted (see :func:`check_fitted`)."""
        check_fitted(self)

    def top_neurons(self, k: int | None = None, *, fraction: float | None = None) -> np.ndarray:
        """The ``k`` best neurons (or the best ``fraction`` of all neurons), best first.

        Parameters
        ----------
        k : int, optional
            Number of neurons, ``0 <= k <= n_ranked_``.
        fraction : float, optional
            Share of all neurons in (0, 1]; ``k = ceil(fraction * n_neurons_in_)``.
            Give exactly one of ``k`` and ``fraction``.

        Returns
        -------
        numpy.ndarray of shape (k,), int64
            A prefix of ``ranking_``.

        Raises
        ------
        ValueError
            If the ranker is not fitted, if both or neither of ``k`` and ``fraction`` are
            given, if either is out of range, or if more neurons are asked for than the
            method ranked.
        """
        self.check_fitted()
        name = type(self).__name__
        if (k is None) == (fraction is None):
            raise ValueError(
                f"top_neurons() needs exactly one of k or fraction; got k={k!r}, fraction={fraction!r}."
            )
        if fraction is not None:
            if isinstance(fraction, bool) or not isinstance(fraction, Real) or not 0 < fraction <= 1:
                raise ValueError(f"top_neurons(fraction={fraction!r}): fraction must be a number in (0, 1].")
            k = math.ceil(fraction * self.n_neurons_in_)
            asked = f"fraction={fraction!r} (k={k})"
        else:
            if isinstance(k, bool) or not isinstance(k, Integral) or k < 0:
                raise ValueError(f"top_neurons(k={k!r}): k must be a non-negative integer.")
            asked = f"k={k}"
        k = int(k)
        if k > self.n_neurons_in_:
            raise ValueError(f"top_neurons({asked}) but X has only {self.n_neurons_in_} neurons.")
        if k > self.n_ranked_:
            raise ValueError(f"top_neurons({asked}) but {name} ranked only {self.n_ranked_} neurons.")
        return self.ranking_[:k].copy()

    def bottom_neurons(self, k: int | None = None, *, fraction: float | None = None) -> np.ndarray:
        """The last ``k`` (or ``ceil(fraction * n_neurons)``) ranked neurons, in ranking
        order (NeuroX's ``get_fixed_number_of_bottom_neurons``; the usual control of a top
        selection). Neurons a method did not rank are never returned.

        Raises
        ------
        ValueError
            As :meth:`top_neurons`.
        """
        k = len(self.top_neurons(k, fraction=fraction))
        return self.ranking_[self.n_ranked_ - k : self.n_ranked_].copy()

    def random_neurons(self, k: int | None = None, *, fraction: float | None = None, random_state=0) -> np.ndarray:
        """``k`` (or ``ceil(fraction * n_neurons)``) neurons drawn uniformly without
        replacement from all neurons, sorted by index: the baseline a top selection must
        beat. NeuroX's ``get_random_neurons`` keeps each neuron with a probability, so its
        size varies; a fixed size compares like with like.

        Parameters
        ----------
        k, fraction
            As :meth:`top_neurons` (``k`` may exceed ``n_ranked_`` here).
        random_state : int or numpy.random.Generator, default=0

        Raises
        ------
        ValueError
            As :meth:`top_neurons`, except for the ``n_ranked_`` limit.
        """
        self.check_fitted()
        if (k is None) == (fraction is None):
            raise ValueError(
                f"random_neurons() needs exactly one of k or fraction; got k={k!r}, fraction={fraction!r}."
            )
        if fraction is not None:
            if isinstance(fraction, bool) or not isinstance(fraction, Real) or not 0 < fraction <= 1:
                raise ValueError(f"random_neurons(fraction={fraction!r}): fraction must be a number in (0, 1].")
            k = math.ceil(fraction * self.n_neurons_in_)
        if isinstance(k, bool) or not isinstance(k, Integral) or not 0 <= k <= self.n_neurons_in_:
            raise ValueError(f"random_neurons(k={k!r}): k must be an integer in [0, {self.n_neurons_in_}].")
        rng = np.random.default_rng(random_state)
        return np.sort(rng.choice(self.n_neurons_in_, size=int(k), replace=False)).astype(np.int64)

"""Attribution ranking: order neurons by how much they move a probe's output, by gradients.

Start here: :class:`AttributionRanker` fits a :class:`~neuro_pipeline.probe.LinearProbe`,
then attributes the log-probability that the probe gives each token's own class to the
neurons, with integrated gradients (default) or gradient x input, both measured from a
baseline activation (the training mean by default). A neuron's relevance to class ``c``
is its mean absolute attribution over the tokens of class ``c``; the per-class relevance
is merged into one ranking like the other one-vs-rest methods.
"""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
import torch

from neuro_pipeline.probe import LinearProbe
from neuro_pipeline.ranking import register_ranker
from neuro_pipeline.ranking._base import NeuronRanker
from neuro_pipeline.ranking._merge import MERGES, check_merge, merge_class_scores

#: Values of ``attribution``.
ATTRIBUTIONS = ("integrated_gradients", "gradient_x_input")
#: Values of ``baseline``.
BASELINES = ("mean", "zero")
#: LinearProbe's defaults: the ranker's probe settings default to them, so the two cannot disagree.
_PROBE_DEFAULTS = LinearProbe().get_params()


@register_ranker("attribution")
class AttributionRanker(NeuronRanker):
    """Rank neurons by their gradient-based attribution to a probe's class log-probability.

    For a token with activations ``x`` and class ``t``, let ``F(x) = log p(t | x)`` under
    a linear softmax probe with logits ``W z + b`` on standardised activations
    ``z = (x - mean) / scale``. With a baseline ``x0``:

    - ``attribution="integrated_gradients"`` (Sundararajan et al., "Axiomatic Attribution
      for Deep Networks", ICML 2017): ``A_i = (x_i - x0_i) * mean_s dF/dx_i(x0 + a_s (x - x0))``
      over ``n_steps`` midpoints ``a_s`` of [0, 1]. The attributions of a token sum to
      ``F(x) - F(x0)`` up to the quadrature error (completeness).
    - ``attribution="gradient_x_input"``: ``A_i = (x_i - x0_i) * dF/dx_i(x)``, one
      gradient at the token itself; cheaper, but it fades for tokens the probe is sure
      of (the softmax saturates), which integrated gradients does not.

    Because the logits are linear in ``x``, ``dF/dz = (e_t - softmax(logits)) W`` in
    closed form: no autograd is needed, and integrated gradients costs ``n_steps``
    softmaxes over the classes per token, not ``n_steps`` passes over the neurons.

    The relevance of neuron ``i`` to class ``c`` is ``mean |A_i|`` over the tokens of
    class ``c`` (``class_scores_``; the mean absolute value, so evidence for and against
    the class both count). The global ranking merges these with ``merge`` (see
    :func:`~neuro_pipeline.ranking._merge.merge_class_scores`); with two classes it is
    ``mean |A_i|`` over all tokens.

    Unlike weight-based rankings (``linear_probe``), the attribution weighs a neuron's
    weight by how far its activation actually moves on the tokens, in the probe's units,
    which is what ablating it would remove.

    Parameters
    ----------
    attribution : {"integrated_gradients", "gradient_x_input"}, default="integrated_gradients"
    n_steps : int, default=16
        Riemann midpoints of the integrated-gradients path.
    baseline : {"mean", "zero"}, default="mean"
        ``x0``: the training mean of every neuron (a mean ablation, the neutral input of
        a standardised probe) or raw 0.
    merge : {"round_robin", "best_rank", "max", "mean"}, default="round_robin"
        How per-class relevance becomes one ranking (more than 2 classes).
    l1, l2 : float, default=1e-3, 1e-4
        Penalties of the probe (:class:`~neuro_pipeline.probe.LinearProbe`).
    max_iter, tol : int, float
        Passed to the probe.
    chunk_size : int, default=4096
        Tokens processed at a time, so ``X`` may be a memmap.

    Attributes
    ----------
    probe_ : LinearProbe
        The fitted probe.
    class_scores_ : numpy.ndarray of shape (n_classes, n_neurons), float64
        Mean absolute attribution per class, rows in the order of ``classes_``.
    class_rankings_ : dict
        Label -> all neuron indices by that class's relevance (descending).
    classes_, n_neurons_in_, scores_, ranking_, n_ranked_
        See :class:`~neuro_pipeline.ranking.NeuronRanker`.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, size=200)
    >>> X = rng.normal(size=(200, 6)).astype(np.float32)
    >>> X[:, 4] += 3 * y                      # neuron 4 carries the concept
    >>> int(AttributionRanker().fit(X, y).ranking_[0])
    4
    """

    def __init__(
        self,
        *,
        attribution: str = "integrated_gradients",
        n_steps: int = 16,
        baseline: str = "mean",
        merge: str = "round_robin",
        l1: float = _PROBE_DEFAULTS["l1"],
        l2: float = _PROBE_DEFAULTS["l2"],
        max_iter: int = _PROBE_DEFAULTS["max_iter"],
        tol: float = _PROBE_DEFAULTS["tol"],
        chunk_size: int = _PROBE_DEFAULTS["chunk_size"],
    ):
        self.attribution = attribution
        self.n_steps = n_steps
        self.baseline = baseline
        self.merge = merge
        self.l1 = l1
        self.l2 = l2
        self.max_iter = max_iter
        self.tol = tol
        self.chunk_size = chunk_size

    def check_params(self) -> None:
        """Check the hyperparameters (see :meth:`NeuronRanker.check_params`)."""
        name = type(self).__name__
        if self.attribution not in ATTRIBUTIONS:
            raise ValueError(
                f"The 'attribution' parameter of {name} must be one of {list(ATTRIBUTIONS)}. "
                f"Got {self.attribution!r} instead."
            )
        if self.baseline not in BASELINES:
            raise ValueError(
                f"The 'baseline' parameter of {name} must be one of {list(BASELINES)}. Got {self.baseline!r} instead."
            )
        check_merge(self.merge, owner=name, options=MERGES)
        for param in ("n_steps", "chunk_size"):
            value = getattr(self, param)
            if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
                raise ValueError(f"The {param!r} parameter of {name} must be an int >= 1. Got {value!r} instead.")
        for param in ("l1", "l2"):
            value = getattr(self, param)
            if isinstance(value, bool) or not isinstance(value, Real) or not value >= 0:
                raise ValueError(f"The {param!r} parameter of {name} must be a float >= 0. Got {value!r} instead.")

    def _score(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        self.check_params()
        self.probe_ = LinearProbe(l1=self.l1, l2=self.l2, max_iter=self.max_iter, tol=self.tol,
                                  chunk_size=self.chunk_size).fit(X, y)
        _, codes = np.unique(y, return_inverse=True)
        sums, counts = self._attribution_sums(X, codes.ravel())
        self.class_scores_ = sums / counts[:, None]
        if len(self.classes_) == 2:
            return sums.sum(axis=0) / counts.sum()
        return merge_class_scores(self.class_scores_, self.merge)

    def _attribution_sums(self, X: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per class, the sum over its tokens of |attribution| of every neuron; and the token counts."""
        n_classes = len(self.probe_.classes_)
        sums = np.zeros((n_classes, X.shape[1]))
        for start in range(0, X.shape[0], self.chunk_size):
            targets = codes[start : start + self.chunk_size]
            attributions = probe_attributions(
                self.probe_, X[start : start + self.chunk_size], targets,
                attribution=self.attribution, n_steps=self.n_steps, baseline=self.baseline,
            )
            one_hot = np.zeros((n_classes, len(targets)))
            one_hot[targets, np.arange(len(targets))] = 1.0
            sums += one_hot @ np.abs(attributions)
        counts = np.bincount(codes, minlength=n_classes).astype(np.float64)
        return sums, counts


def probe_attributions(
    probe: LinearProbe,
    X: np.ndarray,
    targets: np.ndarray,
    *,
    attribution: str = "integrated_gradients",
    n_steps: int = 16,
    baseline: str = "mean",
) -> np.ndarray:
    """Signed attribution of each neuron to ``log p(target | x)`` under a fitted probe.

    Parameters
    ----------
    probe : LinearProbe
        A fitted probe.
    X : array-like of shape (n_tokens, n_neurons)
        Activations (raw, as given to the probe).
    targets : array-like of int, shape (n_tokens,)
        Index into ``probe.classes_`` of the class whose log-probability is attributed.
    attribution, n_steps, baseline
        As :class:`AttributionRanker`.

    Returns
    -------
    numpy.ndarray of shape (n_tokens, n_neurons), float64
        For integrated gradients, each row sums to ``log p(t | x) - log p(t | x0)`` up to
        the midpoint-rule error, which shrinks as ``1 / n_steps**2``.

    Examples
    --------
    >>> X = np.array([[0., 1.], [0., 2.], [1., 0.], [2., 0.]], dtype=np.float32)
    >>> probe = LinearProbe(l1=0.0, l2=1e-2).fit(X, ["a", "a", "b", "b"])
    >>> probe_attributions(probe, X, np.array([0, 0, 1, 1])).shape
    (4, 2)
    """
    if attribution not in ATTRIBUTIONS:
        raise ValueError(f"Unknown attribution {attribution!r}; choose one of {list(ATTRIBUTIONS)}.")
    if baseline not in BASELINES:
        raise ValueError(f"Unknown baseline {baseline!r}; choose one of {list(BASELINES)}.")
    n_classes = len(probe.classes_)
    W = torch.from_numpy(probe.coef_).double()            # (C, D), standardised space
    b = torch.from_numpy(probe.intercept_).double()
    mean = torch.from_numpy(probe.mean_)
    scale = torch.from_numpy(probe.scale_)
    # The baseline in standardised units; the training mean is z0 = 0.
    z0 = torch.zeros_like(mean) if baseline == "mean" else -mean / scale
    if attribution == "integrated_gradients":
        alphas = (torch.arange(n_steps, dtype=torch.float64) + 0.5) / n_steps
    else:
        alphas = torch.ones(1, dtype=torch.float64)
    delta = (torch.from_numpy(np.asarray(X, dtype=np.float64)) - mean) / scale - z0
    targets = torch.from_numpy(np.asarray(targets, dtype=np.int64))
    # Along the path the logits are linear in alpha: logits(x0) + alpha * (delta @ W.T).
    logits0 = z0 @ W.T + b
    probs = torch.softmax(logits0 + alphas[:, None, None] * (delta @ W.T)[None], dim=-1).mean(dim=0)
    # dF/dlogits = e_t - softmax, averaged over the path; dF/dz = that @ W.
    weights = torch.nn.functional.one_hot(targets, n_classes).double() - probs
    return (delta * (weights @ W)).numpy()

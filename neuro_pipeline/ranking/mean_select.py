"""Mean Select: rank neurons by the normalised gap between a class's mean activation and
the mean over the other tokens.

Start here: :class:`MeanSelectRanker` needs no training; one pass over ``X`` gives every
class mean, and the column minima and maxima give the normaliser.
"""

from __future__ import annotations

import numpy as np

from neuro_pipeline.ranking import register_ranker
from neuro_pipeline.ranking._base import NeuronRanker
from neuro_pipeline.ranking.probeless import class_means

#: Added to the activation range, as NeuroX does, so that a constant neuron scores 0.
_RANGE_EPS = 1e-7


@register_ranker("mean_select")
class MeanSelectRanker(NeuronRanker):
    """Rank neurons by the normalised difference of class-conditional mean activations.

    This is Mean Select (Na et al., "Discovery of Natural Language Concepts in Individual
    Units of CNNs", ICLR 2019), the "selectivity probe" of NeuroX's open PR #35. For the
    one-vs-rest task of class ``c`` the score of neuron ``i`` is::

        s_c[i] = (mean(x_i | y == c) - mean(x_i | y != c)) / (max(x_i) - min(x_i) + 1e-7)

    where the maximum and minimum run over all tokens. Neurons are ranked by ``|s_c|``.

    - ``class_rankings_[c]`` orders the neurons by ``|s_c|`` (descending).
    - The overall score is ``max_c |s_c[i]|``: a neuron ranks high when it separates at
      least one class from the rest. With two classes ``s_0 = -s_1``, so this is exactly the
      binary score ``|s|`` of NeuroX with ``y == classes_[1]`` as the positive class.

    Differences from NeuroX's PR #35: the PR handles binary labels only (multi-class
    labels are one-vs-rest here), and this class never modifies ``X`` and reads it in row
    chunks (totals kept in float64), so it also works on a memmap.

    Attributes
    ----------
    class_scores_ : numpy.ndarray of shape (n_classes, n_neurons), float64
        Signed one-vs-rest scores ``s_c``, rows in the order of ``classes_`` (positive when
        the neuron is more active on class ``c``).
    class_rankings_ : dict
        Label -> all neuron indices ordered by ``|s_c|`` (descending, ties to the lower
        index).
    classes_, n_neurons_in_, scores_, ranking_, n_ranked_
        See :class:`~neuro_pipeline.ranking.NeuronRanker`.

    Examples
    --------
    >>> X = np.array([[4.0, 1.0, 0.0], [2.0, 1.0, 1.0], [0.0, 3.0, 0.0], [0.0, 1.0, 1.0]])
    >>> ranker = MeanSelectRanker().fit(X, [1, 1, 0, 0])
    >>> ranker.ranking_.tolist()
    [0, 1, 2]
    >>> np.round(ranker.scores_, 6).tolist()
    [0.75, 0.5, 0.0]
    """

    def __init__(self):
        pass

    def _class_relevance(self) -> np.ndarray:
        # Per-class rankings order by |score|: a neuron that is lower for the class counts too.
        return np.abs(self.class_scores_)

    def _score(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        classes, codes = np.unique(y, return_inverse=True)
        means, counts = class_means(X, codes.ravel(), len(classes))
        n_tokens = counts.sum()
        totals = counts @ means  # column sums of X
        rest_means = (totals[None, :] - counts[:, None] * means) / (n_tokens - counts)[:, None]
        value_range = X.max(axis=0).astype(np.float64) - X.min(axis=0).astype(np.float64) + _RANGE_EPS
        self.class_scores_ = (means - rest_means) / value_range
        return np.abs(self.class_scores_).max(axis=0)

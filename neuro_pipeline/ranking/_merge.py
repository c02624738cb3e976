"""Merge per-class neuron relevance into one global ranking; shared by the one-vs-rest rankers.

Start here: :func:`merge_class_scores` turns a (n_classes, n_neurons) relevance matrix
into one score per neuron, whose stable descending order is the global ranking.
"""

from __future__ import annotations

import numpy as np

#: Merges every one-vs-rest ranker accepts, in the order error messages list them.
MERGES = ("max", "mean", "round_robin", "best_rank")


def merge_class_scores(relevance: np.ndarray, merge: str) -> np.ndarray:
    """One score per neuron from per-class relevance, higher = more relevant.

    - ``"max"``: the neuron's best relevance over the classes.
    - ``"mean"``: its mean relevance over the classes.
    - ``"round_robin"``: the per-class rankings interleaved. In every round each class in
      turn takes its most relevant neuron not yet taken, so the top ``r * n_classes``
      neurons hold ``r`` neurons chosen by each class and no class is crowded out by
      classes whose scores run higher. Within a round the classes take turns in order of
      the relevance of the neuron each would take (highest first, as of the round's start).
    - ``"best_rank"``: the neurons ordered by their best rank in any class's ranking, so
      the top neurons are the union of every class's top ``r``; neurons with the same best
      rank are ordered by their highest relevance among the classes where they reach it.

    The two order-based merges return ``n_neurons - position``, so that a stable
    descending sort of the scores reproduces the merged order exactly.

    Per-class rankings are ``np.argsort(-relevance[c], kind="stable")`` (ties to the lower
    neuron index), the same order as ``NeuronRanker.class_rankings_``; every remaining tie
    also goes to the lower class or neuron index, so the result is deterministic.

    Parameters
    ----------
    relevance : numpy.ndarray of shape (n_classes, n_neurons)
        Finite per-class relevance, higher = more relevant to that class.
    merge : {"max", "mean", "round_robin", "best_rank"}

    Returns
    -------
    numpy.ndarray of shape (n_neurons,), float64

    Examples
    --------
    >>> relevance = np.array([[0.9, 0.8, 0.7, 0.0], [0.0, 0.1, 0.2, 0.3]])
    >>> merge_class_scores(relevance, "max").tolist()
    [0.9, 0.8, 0.7, 0.3]
    >>> merge_class_scores(relevance, "round_robin").tolist()  # order 0, 3, 1, 2
    [4.0, 2.0, 1.0, 3.0]
    """
    relevance = np.asarray(relevance, dtype=np.float64)
    if merge == "max":
        return relevance.max(axis=0)
    if merge == "mean":
        return relevance.mean(axis=0)
    if merge == "round_robin":
        order = _round_robin_order(relevance)
    elif merge == "best_rank":
        order = _best_rank_order(relevance)
    else:
        raise AssertionError(f"unknown merge {merge!r}; callers validate it against MERGES")
    n_neurons = relevance.shape[1]
    scores = np.empty(n_neurons, dtype=np.float64)
    scores[order] = n_neurons - np.arange(n_neurons, dtype=np.float64)
    return scores


def _round_robin_order(relevance: np.ndarray) -> np.ndarray:
    n_classes, n_neurons = relevance.shape
    rankings = np.argsort(-relevance, axis=1, kind="stable")
    taken = np.zeros(n_neurons, dtype=bool)
    next_pos = np.zeros(n_classes, dtype=np.int64)  # first position in each ranking not yet taken
    order = np.empty(n_neurons, dtype=np.int64)
    n_taken = 0
    classes = np.arange(n_classes)

    def advance(c: int) -> None:
        while taken[rankings[c, next_pos[c]]]:
            next_pos[c] += 1

    while n_taken < n_neurons:
        for c in classes:
            advance(c)
        candidate_relevance = relevance[classes, rankings[classes, next_pos]]
        for c in np.argsort(-candidate_relevance, kind="stable"):
            if n_taken == n_neurons:
                break
            advance(c)  # an earlier class this round may have taken this class's candidate
            neuron = rankings[c, next_pos[c]]
            taken[neuron] = True
            order[n_taken] = neuron
            n_taken += 1
    return order


def _best_rank_order(relevance: np.ndarray) -> np.ndarray:
    n_neurons = relevance.shape[1]
    rankings = np.argsort(-relevance, axis=1, kind="stable")
    ranks = np.empty_like(rankings)
    np.put_along_axis(ranks, rankings, np.arange(n_neurons)[None, :], axis=1)
    best_rank = ranks.min(axis=0)
    # A neuron can reach its best rank in several classes; the highest relevance counts.
    relevance_there = np.where(ranks == best_rank, relevance, -np.inf).max(axis=0)
    # lexsort: last key first; the neuron index breaks the remaining ties.
    return np.lexsort((np.arange(n_neurons), -relevance_there, best_rank))


def check_merge(merge, *, owner: str, options: tuple[str, ...] = MERGES) -> None:
    """Raise ``ValueError`` unless ``merge`` is one of ``options``."""
    if not (isinstance(merge, str) and merge in options):
        raise ValueError(f"The 'merge' parameter of {owner} must be one of {list(options)}. Got {merge!r} instead.")

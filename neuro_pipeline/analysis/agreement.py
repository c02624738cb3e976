"""Do neuron-ranking methods agree? Top-n overlap, consensus vote and leave-one-out agreement.

Start here: give every function the rankings of several methods as a mapping
``{method name: neuron indices, best first}`` (for example ``ranker.ranking_`` of each
fitted :class:`~neuro_pipeline.ranking.NeuronRanker`). :func:`topn_overlap` compares every
pair of methods; :func:`neuron_vote` merges rankings into one consensus; and
:func:`vote_agreement` scores each method against the other methods, the two
"compatibility" metrics of Fan et al., "Evaluating Neuron Interpretation Methods of NLP
Models", NeurIPS 2023:

- **AvgOverlap**: the mean Jaccard overlap ``|A ∩ B| / |A ∪ B|`` between a method's top-n
  neurons and each other method's top-n;
- **NeuronVote**: the Jaccard overlap between a method's top-n and the top-n of a
  consensus ranking voted by the other methods.

The protocol was checked against the authors' code, ``fdalvi/neuron-comparative-analysis``
(``neuron_vote.py`` ``combine_rankings`` and ``avg_overlap.py``, commit bd84d5b). Their
vote is a Borda count: in each baseline ranking, cut to its first 100 neurons, the neuron
at position ``p`` gets ``100 - p`` points and an absent neuron 0; neurons are ordered by
total points. Ordering by total points is ordering by the sum of positions, which is what
:func:`neuron_vote` computes. Differences, all deliberate:

- the evaluated method never votes for itself (their scripts vote with a fixed baseline
  list and, when the method is in it, include it; its Jaccard of 1 with itself also
  enters their AvgOverlap);
- no cut to 100 unless ``depth=100`` is given, and a neuron missing from a partial
  ranking gets the mean of the positions left over (``unranked="mean"``, the usual Borda
  rule for incomplete ballots); ``depth=100, unranked="last"`` reproduces their vote;
- ties go to the lower neuron index (theirs, ``argsort(points)[::-1]``, favours higher
  indices, in an unstable order).

Every ranking must rank neurons of the same model: a permutation of ``0..n_neurons-1``,
or with ``allow_partial=True`` a prefix of one (distinct indices), for methods that rank
only their best neurons (e.g. the greedy Gaussian probe).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from itertools import combinations
from numbers import Integral

import numpy as np
import polars as pl

_UNRANKED = ("mean", "last")

_OVERLAP_SCHEMA = {
    "method_a": pl.Utf8,
    "method_b": pl.Utf8,
    "n": pl.Int64,
    "n_a": pl.Int64,
    "n_b": pl.Int64,
    "overlap": pl.Int64,
    "jaccard": pl.Float64,
}
_VOTE_SCHEMA = {
    "method": pl.Utf8,
    "n": pl.Int64,
    "vote_overlap": pl.Int64,
    "vote_jaccard": pl.Float64,
    "avg_overlap_jaccard": pl.Float64,
}


def _check_rankings(
    rankings: Mapping[str, Sequence[int]],
    *,
    owner: str,
    allow_partial: bool,
    n_neurons: int | None,
    min_methods: int,
) -> tuple[dict[str, np.ndarray], int]:
    """Validated rankings as int64 arrays, keyed by name in sorted order, and n_neurons."""
    if not isinstance(rankings, Mapping):
        raise TypeError(
            f"{owner}: rankings must be a mapping {{method name: neuron indices}}; "
            f"got {type(rankings).__name__}."
        )
    if len(rankings) < min_methods:
        raise ValueError(
            f"{owner}: needs at least {min_methods} ranking(s); got {len(rankings)} "
            f"({sorted(map(str, rankings))})."
        )
    checked: dict[str, np.ndarray] = {}
    for name in rankings:
        if not isinstance(name, str):
            raise TypeError(f"{owner}: method names must be str; got {name!r}.")
        r = np.asarray(rankings[name])
        if r.ndim != 1 or len(r) == 0:
            raise ValueError(
                f"{owner}: ranking {name!r} must be a non-empty 1-D array of neuron indices; "
                f"got shape {r.shape}."
            )
        if r.dtype.kind not in "iu":
            raise TypeError(
                f"{owner}: ranking {name!r} must hold integer neuron indices; got dtype {r.dtype}."
            )
        checked[name] = r.astype(np.int64)
    if n_neurons is None:
        n_neurons = max(len(r) for r in checked.values())
    elif isinstance(n_neurons, bool) or not isinstance(n_neurons, Integral) or n_neurons < 1:
        raise ValueError(f"{owner}: n_neurons must be an int >= 1; got {n_neurons!r}.")
    n_neurons = int(n_neurons)
    for name, r in checked.items():
        bad = np.flatnonzero((r < 0) | (r >= n_neurons))
        if len(bad):
            hint = " Pass n_neurons= when every ranking is partial." if allow_partial else ""
            raise ValueError(
                f"{owner}: ranking {name!r} has neuron {r[bad[0]]} at position {bad[0]}, outside "
                f"0..{n_neurons - 1} (n_neurons={n_neurons}).{hint}"
            )
        repeated = np.flatnonzero(np.bincount(r, minlength=n_neurons) > 1)
        if len(repeated):
            first, second = np.flatnonzero(r == repeated[0])[:2]
            raise ValueError(
                f"{owner}: ranking {name!r} lists neuron {repeated[0]} twice (positions {first} "
                f"and {second}); a ranking lists each neuron once."
            )
        if not allow_partial and len(r) != n_neurons:
            raise ValueError(
                f"{owner}: ranking {name!r} ranks {len(r)} neurons but it must be a permutation "
                f"of all {n_neurons}. Pass allow_partial=True (and n_neurons=) if some methods "
                "rank only a prefix."
            )
    return {name: checked[name] for name in sorted(checked)}, n_neurons


def _check_ns(ns: Iterable[int], n_neurons: int, owner: str) -> list[int]:
    ns = list(ns) if not isinstance(ns, Integral) else [ns]
    if not ns:
        raise ValueError(f"{owner}: ns must list at least one top-n size.")
    for n in ns:
        if isinstance(n, bool) or not isinstance(n, Integral) or not 1 <= n <= n_neurons:
            raise ValueError(
                f"{owner}: every n in ns must be an int in 1..{n_neurons} (the number of "
                f"neurons); got {n!r}."
            )
    if len(set(ns)) != len(ns):
        raise ValueError(f"{owner}: ns repeats a value; got {ns}.")
    return [int(n) for n in ns]


def _check_short(rankings: dict[str, np.ndarray], ns: list[int], allow_partial: bool, owner: str) -> None:
    if allow_partial:
        return
    for name, r in rankings.items():
        if len(r) < max(ns):
            raise ValueError(
                f"{owner}: ranking {name!r} has only {len(r)} neurons, fewer than n={max(ns)}. "
                "Pass allow_partial=True to compare the neurons it has."
            )


def _positions(ranking: np.ndarray, n_neurons: int, depth: int | None, unranked: str) -> np.ndarray:
    """Position of every neuron in ``ranking`` (0 = best); absent neurons get the fill value."""
    ranked = ranking if depth is None else ranking[:depth]
    k = len(ranked)
    # "mean": the average of the positions k..n_neurons-1 nobody was given;
    # "last": all tied right after the ranked prefix (Fan et al.'s 0 points).
    fill = (k + n_neurons - 1) / 2 if unranked == "mean" else float(k)
    pos = np.full(n_neurons, fill)
    pos[ranked] = np.arange(k)
    return pos


def _in_top(ranking: np.ndarray, n: int, n_neurons: int) -> np.ndarray:
    mask = np.zeros(n_neurons, dtype=bool)
    mask[ranking[:n]] = True
    return mask


def _jaccard(a: np.ndarray, b: np.ndarray) -> tuple[int, float]:
    inter = int(np.count_nonzero(a & b))
    return inter, inter / int(np.count_nonzero(a | b))


def topn_overlap(
    rankings: Mapping[str, Sequence[int]],
    ns: Sequence[int] = (10, 30, 50, 70, 100),
    *,
    allow_partial: bool = False,
    n_neurons: int | None = None,
) -> pl.DataFrame:
    """Overlap of the top-n neurons of every pair of methods.

    Parameters
    ----------
    rankings : mapping of str to array-like of int
        Method name -> neuron indices, best first; at least 2 methods.
    ns : sequence of int, default (10, 30, 50, 70, 100)
        Top-n sizes (Fan et al.'s), distinct, each at most ``n_neurons``.
    allow_partial : bool, default False
        Accept rankings that list only a prefix of the neurons; a ranking shorter than
        ``n`` then contributes all it has (see ``n_a``/``n_b``). Without it, every
        ranking must be a permutation of all neurons.
    n_neurons : int, optional
        Number of neurons; defaults to the length of the longest ranking. Needed when every
        ranking is partial.

    Returns
    -------
    polars.DataFrame
        One row per unordered pair (``method_a < method_b`` by name) and ``n``: ``method_a``,
        ``method_b`` (Utf8), ``n``, ``n_a``, ``n_b`` (neurons actually compared from each
        side: ``min(n, len(ranking))``), ``overlap`` (``|A ∩ B|``, all Int64) and ``jaccard``
        (``|A ∩ B| / |A ∪ B|``, Float64).

    Raises
    ------
    TypeError
        If ``rankings`` is not a mapping of names to integer arrays.
    ValueError
        If fewer than 2 methods are given, a ranking repeats a neuron, has an index out of
        range or (without ``allow_partial``) is not a permutation of all neurons, or an
        ``n`` is not in ``1..n_neurons``.

    Examples
    --------
    >>> table = topn_overlap({"lca": [0, 1, 2, 3], "iou": [1, 3, 0, 2]}, ns=(1, 2, 3))
    >>> table.select("method_a", "method_b", "n", "overlap", "jaccard").rows()
    [('iou', 'lca', 1, 0, 0.0), ('iou', 'lca', 2, 1, 0.3333333333333333), ('iou', 'lca', 3, 2, 0.5)]
    """
    owner = "topn_overlap"
    checked, n_neurons = _check_rankings(
        rankings, owner=owner, allow_partial=allow_partial, n_neurons=n_neurons, min_methods=2
    )
    ns = _check_ns(ns, n_neurons, owner)
    _check_short(checked, ns, allow_partial, owner)
    rows = []
    for a, b in combinations(checked, 2):
        for n in ns:
            overlap, jaccard = _jaccard(_in_top(checked[a], n, n_neurons), _in_top(checked[b], n, n_neurons))
            rows.append((a, b, n, min(n, len(checked[a])), min(n, len(checked[b])), overlap, jaccard))
    return pl.DataFrame(rows, schema=_OVERLAP_SCHEMA, orient="row")


def neuron_vote(
    rankings: Mapping[str, Sequence[int]],
    *,
    exclude: str | Iterable[str] | None = None,
    depth: int | None = None,
    unranked: str = "mean",
    allow_partial: bool = False,
    n_neurons: int | None = None,
) -> np.ndarray:
    """Consensus ranking of several methods: order neurons by the sum of their positions.

    This is a Borda count (Fan et al.'s NeuronVote; see the module docstring): a neuron at
    position ``p`` (0 = best) in a ranking adds ``p`` to its total, and neurons are sorted
    by total, ascending, ties to the lower index.

    Parameters
    ----------
    rankings : mapping of str to array-like of int
        Method name -> neuron indices, best first.
    exclude : str or iterable of str, optional
        Methods that do not vote (e.g. the one being evaluated).
    depth : int, optional
        Cut every ranking to its first ``depth`` neurons before voting (Fan et al. use
        100); by default every ranking counts whole.
    unranked : {"mean", "last"}, default "mean"
        Position given to a neuron absent from a (partial or cut) ranking of length ``k``:
        ``"mean"`` is the mean of the unassigned positions, ``(k + n_neurons - 1) / 2``;
        ``"last"`` is ``k``, a tie right after the ranked ones (Fan et al.'s 0 points).
    allow_partial, n_neurons
        As in :func:`topn_overlap`.

    Returns
    -------
    numpy.ndarray of shape (n_neurons,), int64
        All neuron indices, consensus best first.

    Raises
    ------
    ValueError
        As :func:`topn_overlap`, or if ``exclude`` names an unknown method or leaves no
        voter, or ``depth``/``unranked`` is invalid.

    Examples
    --------
    Position sums over the three methods: neuron 0: 0+1+3 = 4, neuron 1: 1+0+2 = 3,
    neuron 2: 2+3+1 = 6, neuron 3: 3+2+0 = 5.

    >>> votes = {"a": [0, 1, 2, 3], "b": [1, 0, 3, 2], "c": [3, 2, 1, 0]}
    >>> neuron_vote(votes).tolist()
    [1, 0, 3, 2]
    >>> neuron_vote(votes, exclude="c").tolist()  # sums 1, 1, 5, 5: ties to the lower index
    [0, 1, 2, 3]
    """
    owner = "neuron_vote"
    checked, n_neurons = _check_rankings(
        rankings, owner=owner, allow_partial=allow_partial, n_neurons=n_neurons, min_methods=1
    )
    voters = _voters(checked, exclude, owner)
    _check_vote_options(depth, unranked, owner)
    return _vote([checked[name] for name in voters], n_neurons, depth, unranked)


def _voters(checked: Mapping[str, np.ndarray], exclude, owner: str) -> list[str]:
    excluded = [] if exclude is None else [exclude] if isinstance(exclude, str) else list(exclude)
    unknown = sorted(set(excluded) - set(checked))
    if unknown:
        raise ValueError(f"{owner}: cannot exclude unknown method(s) {unknown}; methods are {list(checked)}.")
    voters = [name for name in checked if name not in excluded]
    if not voters:
        raise ValueError(f"{owner}: exclude={excluded} leaves no method to vote.")
    return voters


def _check_vote_options(depth, unranked, owner: str) -> None:
    if depth is not None and (isinstance(depth, bool) or not isinstance(depth, Integral) or depth < 1):
        raise ValueError(f"{owner}: depth must be None or an int >= 1; got {depth!r}.")
    if unranked not in _UNRANKED:
        raise ValueError(f"{owner}: unknown unranked={unranked!r}; choose one of {list(_UNRANKED)}.")


def _vote(rankings: list[np.ndarray], n_neurons: int, depth: int | None, unranked: str) -> np.ndarray:
    total = np.zeros(n_neurons)
    for ranking in rankings:
        # Positions are integers or halves, so the float64 sums (and their ties) are exact.
        total += _positions(ranking, n_neurons, depth, unranked)
    return np.argsort(total, kind="stable")


def vote_agreement(
    rankings: Mapping[str, Sequence[int]],
    ns: Sequence[int] = (10, 30, 50, 70, 100),
    *,
    baselines: Iterable[str] | None = None,
    depth: int | None = None,
    unranked: str = "mean",
    allow_partial: bool = False,
    n_neurons: int | None = None,
) -> pl.DataFrame:
    """Fan et al.'s NeuronVote and AvgOverlap for every method, leave-one-out.

    For each method ``m`` and each ``n``, the comparison set is ``baselines`` (default:
    every method) without ``m``. NeuronVote compares ``m``'s top-n with the top-n of
    :func:`neuron_vote` over the comparison set; AvgOverlap is the mean Jaccard of ``m``'s
    top-n with each member's top-n.

    Parameters
    ----------
    rankings : mapping of str to array-like of int
        Method name -> neuron indices, best first; at least 2 methods.
    ns : sequence of int, default (10, 30, 50, 70, 100)
        Top-n sizes.
    baselines : iterable of str, optional
        The methods that vote and are averaged over (Fan et al.'s ``--baseline_methods``).
        A method outside ``baselines`` is still scored against them.
    depth, unranked
        As in :func:`neuron_vote`.
    allow_partial, n_neurons
        As in :func:`topn_overlap`; a partial ranking contributes ``min(n, len)`` neurons.

    Returns
    -------
    polars.DataFrame
        One row per method (sorted by name) and ``n``: ``method`` (Utf8), ``n``,
        ``vote_overlap`` (``|top-n(m) ∩ top-n(vote)|``, Int64), ``vote_jaccard`` and
        ``avg_overlap_jaccard`` (Float64).

    Raises
    ------
    ValueError
        As :func:`topn_overlap`, or if ``baselines`` names an unknown method or leaves a
        method with nobody to compare against.

    Examples
    --------
    Method "a" is compared with the vote of "b" and "c" (position sums 4, 2, 4, 2, so the
    vote starts 1, 3): its top-2 {0, 1} shares one neuron, Jaccard 1/3; its Jaccard is 1
    with "b" and 0 with "c", mean 0.5.

    >>> votes = {"a": [0, 1, 2, 3], "b": [1, 0, 3, 2], "c": [3, 2, 1, 0]}
    >>> vote_agreement(votes, ns=(2,)).rows()
    [('a', 2, 1, 0.3333333333333333, 0.5), ('b', 2, 2, 1.0, 0.5), ('c', 2, 0, 0.0, 0.0)]
    """
    owner = "vote_agreement"
    checked, n_neurons = _check_rankings(
        rankings, owner=owner, allow_partial=allow_partial, n_neurons=n_neurons, min_methods=2
    )
    ns = _check_ns(ns, n_neurons, owner)
    _check_short(checked, ns, allow_partial, owner)
    _check_vote_options(depth, unranked, owner)
    if baselines is None:
        pool = list(checked)
    else:
        pool = [baselines] if isinstance(baselines, str) else list(baselines)
        unknown = sorted(set(pool) - set(checked))
        if unknown:
            raise ValueError(f"{owner}: unknown baseline method(s) {unknown}; methods are {list(checked)}.")
        pool = sorted(set(pool))
    rows = []
    for method, ranking in checked.items():
        others = [name for name in pool if name != method]
        if not others:
            raise ValueError(
                f"{owner}: method {method!r} has no other method to compare with; baselines={pool}."
            )
        vote = _vote([checked[name] for name in others], n_neurons, depth, unranked)
        for n in ns:
            top = _in_top(ranking, n, n_neurons)
            vote_overlap, vote_jaccard = _jaccard(top, _in_top(vote, n, n_neurons))
            pairwise = [_jaccard(top, _in_top(checked[name], n, n_neurons))[1] for name in others]
            rows.append((method, n, vote_overlap, vote_jaccard, float(np.mean(pairwise))))
    return pl.DataFrame(rows, schema=_VOTE_SCHEMA, orient="row")

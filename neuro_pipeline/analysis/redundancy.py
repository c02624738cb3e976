"""How redundant are a model's neurons? Cluster neurons whose activations correlate.

Start here: :func:`correlation_clusters` gives every neuron (column of ``X``) a cluster id;
:func:`independent_neurons` keeps one neuron per cluster; :func:`redundancy_by_layer`
summarises a whole model, one row per layer, and :func:`neuron_clusters_by_layer` returns
the per-neuron table behind it.

This is the correlation clustering of Dalvi et al., "Analyzing Redundancy in Pretrained
Transformer Models", EMNLP 2020, as NeuroX implements it
(``interpretation.clustering.create_correlation_clusters``): the Pearson correlation
``r`` between every pair of neurons over all tokens, the dissimilarity ``1 - |r|`` (or
``1 - r`` with ``use_abs=False``), average-linkage hierarchical clustering, and a cut at
cophenetic distance ``threshold`` (scipy's ``fcluster(criterion="distance")``). With the
default 0.5, neurons end up together when their average ``|r|`` is at least 0.5.

Two choices differ from NeuroX:

- **Constant neurons** (zero variance over the tokens) have no correlation. NeuroX turns
  the NaN into ``r = 0``, which scatters them as singletons that look "independent". Here
  all constant neurons of one call share **one cluster of their own**, are logged, are
  listed by :func:`constant_neurons`, are flagged ``is_constant`` in the per-neuron table
  and counted as ``n_constant`` per layer; they never get a representative (a constant
  input carries no information for a probe).
- **Representatives.** NeuroX keeps a random neuron per cluster. The default here is
  ``representative="central"``: the neuron with the highest mean ``|r|`` to its cluster
  mates (a medoid), which is deterministic and the member that best stands in for the
  others. ``representative="random"`` reproduces NeuroX with a seeded generator.

Correlations are computed in float64 from row chunks of ``X`` (sums and cross-products
are accumulated chunk by chunk), so ``X`` may be a float32 memmap and is never copied
whole or modified.
"""

from __future__ import annotations

import logging
from numbers import Integral, Real

import numpy as np
import polars as pl
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import squareform

logger = logging.getLogger(__name__)

#: Rows of ``X`` converted to float64 at a time (2048 x 384 columns = 6 MB).
_ROW_CHUNK = 2048

#: Linkage methods that are valid on an arbitrary dissimilarity matrix (``ward``,
#: ``centroid`` and ``median`` assume Euclidean distances).
_METHODS = ("average", "complete", "single", "weighted")

_REPRESENTATIVES = ("central", "random")

_NEURON_SCHEMA = {
    "neuron": pl.Int32,
    "layer": pl.Int32,
    "unit": pl.Int32,
    "cluster": pl.Int32,
    "is_constant": pl.Boolean,
    "is_representative": pl.Boolean,
}


def _check_X(X, owner: str) -> np.ndarray:
    if not isinstance(X, np.ndarray):
        X = np.asarray(X)
    if X.dtype.kind not in "fiub":
        raise TypeError(f"{owner}: X must hold real numbers; got dtype {X.dtype}.")
    if X.ndim != 2:
        raise ValueError(f"{owner}: X must be 2-D (n_tokens, n_neurons); got shape {X.shape}.")
    if X.shape[0] < 2 or X.shape[1] < 1:
        raise ValueError(
            f"{owner}: X needs at least 2 tokens (rows) and 1 neuron to correlate; got shape {X.shape}."
        )
    return X


def _check_options(threshold, method, owner: str) -> None:
    if isinstance(threshold, bool) or not isinstance(threshold, Real) or not np.isfinite(threshold) or threshold < 0:
        raise ValueError(
            f"{owner}: threshold must be a finite number >= 0 (a cut on the 1 - |r| "
            f"dissimilarity, 0..1; 0..2 with use_abs=False); got {threshold!r}."
        )
    if method not in _METHODS:
        raise ValueError(f"{owner}: unknown linkage method {method!r}; choose one of {list(_METHODS)}.")


def _chunks(X: np.ndarray, columns: slice, owner: str):
    """Row chunks of ``X[:, columns]`` as float64, checked to be finite."""
    for start in range(0, X.shape[0], _ROW_CHUNK):
        # np.array copies even when X is already float64, so callers may modify the chunk.
        chunk = np.array(X[start : start + _ROW_CHUNK, columns], dtype=np.float64)
        if not np.isfinite(chunk).all():
            row, col = np.argwhere(~np.isfinite(chunk))[0]
            first = columns.start or 0
            raise ValueError(
                f"{owner}: X has a non-finite value ({chunk[row, col]}) at row {start + row}, "
                f"column {first + col}; activations must be finite."
            )
        yield chunk


def _correlations(X: np.ndarray, columns: slice, owner: str) -> tuple[np.ndarray, np.ndarray]:
    """Pearson correlations of ``X[:, columns]`` (float64) and the mask of constant columns.

    Every chunk is shifted by the first row before summing: that keeps the one-pass
    covariance accurate when a neuron's mean is large next to its spread, and makes a
    constant column exactly zero. Rows and columns of constant neurons are 0 in the result
    (diagonal 1).
    """
    shift = np.asarray(X[0, columns], dtype=np.float64)
    d = len(shift)
    sums = np.zeros(d)
    cross = np.zeros((d, d))
    lo = np.full(d, np.inf)
    hi = np.full(d, -np.inf)
    for chunk in _chunks(X, columns, owner):
        np.minimum(lo, chunk.min(axis=0), out=lo)
        np.maximum(hi, chunk.max(axis=0), out=hi)
        chunk -= shift
        sums += chunk.sum(axis=0)
        cross += chunk.T @ chunk
    n = X.shape[0]
    mean = sums / n
    cov = cross / n - np.outer(mean, mean)
    var = np.diag(cov).copy()
    constant = (hi == lo) | (var <= 0)
    std = np.sqrt(np.where(constant, 1.0, var))
    corr = cov / np.outer(std, std)
    corr = np.clip((corr + corr.T) / 2, -1.0, 1.0)
    corr[constant, :] = 0.0
    corr[:, constant] = 0.0
    np.fill_diagonal(corr, 1.0)
    return corr, constant


def _first_occurrence_ids(labels: np.ndarray) -> np.ndarray:
    """Relabel so that cluster ids are 0, 1, ... in order of each cluster's first neuron."""
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    new_id = np.empty(len(first), dtype=np.int64)
    new_id[np.argsort(first)] = np.arange(len(first))
    return new_id[inverse.ravel()]


def _cluster(corr: np.ndarray, constant: np.ndarray, threshold: float, use_abs: bool, method: str) -> np.ndarray:
    labels = np.zeros(len(constant), dtype=np.int64)  # fcluster ids start at 1: 0 = constant
    varying = np.flatnonzero(~constant)
    if len(varying) >= 2:
        sub = corr[np.ix_(varying, varying)]
        dissimilarity = 1.0 - (np.abs(sub) if use_abs else sub)
        np.fill_diagonal(dissimilarity, 0.0)
        condensed = squareform(np.clip(dissimilarity, 0.0, None), checks=False)
        labels[varying] = fcluster(linkage(condensed, method=method), t=threshold, criterion="distance")
    elif len(varying) == 1:
        labels[varying] = 1
    return _first_occurrence_ids(labels)


def _representatives(
    clusters: np.ndarray,
    constant: np.ndarray,
    corr: np.ndarray | None,
    use_abs: bool,
    representative: str,
    random_state,
) -> np.ndarray:
    rng = np.random.default_rng(random_state)
    order = np.argsort(clusters, kind="stable")
    bounds = np.flatnonzero(np.diff(clusters[order])) + 1
    chosen = []
    for members in np.split(order, bounds):
        members = members[~constant[members]]
        if len(members) == 0:
            continue
        if representative == "random":
            chosen.append(int(rng.choice(members)))
        elif len(members) == 1:
            chosen.append(int(members[0]))
        else:
            sub = corr[np.ix_(members, members)]
            sub = np.abs(sub) if use_abs else sub
            # The diagonal is 1 for every member, so the row sums rank like the mean over mates;
            # argmax takes the first maximum, i.e. the lowest neuron index on ties.
            chosen.append(int(members[np.argmax(sub.sum(axis=1))]))
    return np.sort(np.asarray(chosen, dtype=np.int64))


def constant_neurons(X) -> np.ndarray:
    """Indices of the neurons (columns of ``X``) whose activation never changes.

    Parameters
    ----------
    X : array-like of shape (n_tokens, n_neurons)
        Activations; read in row chunks, never modified.

    Returns
    -------
    numpy.ndarray of int64
        Sorted column indices with ``max == min``.

    Examples
    --------
    >>> constant_neurons(np.array([[1.0, 2.0, 0.0], [1.0, 3.0, 0.0]])).tolist()
    [0, 2]
    """
    X = _check_X(X, "constant_neurons")
    lo = np.full(X.shape[1], np.inf)
    hi = np.full(X.shape[1], -np.inf)
    for chunk in _chunks(X, slice(None), "constant_neurons"):
        np.minimum(lo, chunk.min(axis=0), out=lo)
        np.maximum(hi, chunk.max(axis=0), out=hi)
    return np.flatnonzero(hi == lo)


def correlation_clusters(
    X,
    *,
    threshold: float = 0.5,
    use_abs: bool = True,
    method: str = "average",
) -> np.ndarray:
    """Cluster id of every neuron, grouping neurons whose activations correlate.

    Parameters
    ----------
    X : array-like of shape (n_tokens, n_neurons)
        Activations, finite; may be a memmap. Never modified or copied whole.
    threshold : float, default 0.5
        Cut of the dendrogram, in dissimilarity units (``1 - |r|``): neurons whose
        clusters merge at a distance ``<= threshold`` share a cluster. 0 keeps only
        perfectly correlated neurons together; 1 (2 with ``use_abs=False``) or more puts
        every varying neuron in one cluster.
    use_abs : bool, default True
        Use ``1 - |r|``, so that anti-correlated neurons count as redundant (NeuroX's
        default); ``False`` uses ``1 - r``.
    method : {"average", "complete", "single", "weighted"}, default "average"
        scipy linkage method.

    Returns
    -------
    numpy.ndarray of shape (n_neurons,), int64
        Cluster ids ``0..k-1``, numbered in order of each cluster's lowest neuron index.
        All constant neurons share one cluster (see the module docstring and
        :func:`constant_neurons`).

    Raises
    ------
    TypeError
        If ``X`` is not numeric.
    ValueError
        If ``X`` is not 2-D, has fewer than 2 rows, holds a non-finite value, or if
        ``threshold`` or ``method`` is invalid.

    Examples
    --------
    Neurons 0 and 2 move together (``r = 1``), neuron 1 is uncorrelated with them
    (``r = 0``), neuron 3 is constant:

    >>> X = np.array([[1.0, 1.0, 2.0, 5.0], [-1.0, 1.0, -2.0, 5.0],
    ...               [1.0, -1.0, 2.0, 5.0], [-1.0, -1.0, -2.0, 5.0]])
    >>> correlation_clusters(X).tolist()
    [0, 1, 0, 2]
    """
    owner = "correlation_clusters"
    X = _check_X(X, owner)
    _check_options(threshold, method, owner)
    corr, constant = _correlations(X, slice(None), owner)
    if constant.any():
        _log_constant(owner, np.flatnonzero(constant))
    return _cluster(corr, constant, float(threshold), bool(use_abs), method)


def _log_constant(owner: str, indices: np.ndarray) -> None:
    shown = indices[:20].tolist()
    more = f" (+{len(indices) - 20} more)" if len(indices) > 20 else ""
    logger.warning(
        "%s: %d constant neuron(s) %s%s share one cluster; they have no correlation.",
        owner, len(indices), shown, more,
    )


def independent_neurons(
    X,
    *,
    clusters=None,
    representative: str = "central",
    threshold: float = 0.5,
    use_abs: bool = True,
    method: str = "average",
    random_state=0,
) -> np.ndarray:
    """One neuron per cluster of correlated neurons: a non-redundant subset of ``X``'s columns.

    Parameters
    ----------
    X : array-like of shape (n_tokens, n_neurons)
        Activations, as for :func:`correlation_clusters`.
    clusters : array-like of shape (n_neurons,), optional
        A clustering to reuse (e.g. from :func:`correlation_clusters`); computed from ``X``
        with ``threshold``, ``use_abs`` and ``method`` when omitted.
    representative : {"central", "random"}, default "central"
        ``"central"``: the member with the highest mean correlation (``|r|``, or ``r``
        with ``use_abs=False``) to its cluster mates, lowest index on ties.
        ``"random"``: a uniformly random member, as NeuroX does, drawn from
        ``numpy.random.default_rng(random_state)`` cluster by cluster.
    threshold, use_abs, method
        As in :func:`correlation_clusters`.
    random_state : int or numpy.random.Generator, default 0
        Seed for ``representative="random"``; unused otherwise.

    Returns
    -------
    numpy.ndarray of int64
        Sorted neuron indices, one per cluster of varying neurons. Constant neurons are
        never returned.

    Raises
    ------
    ValueError
        As :func:`correlation_clusters`, or if ``clusters`` does not have one id per
        neuron, or ``representative`` is unknown.

    Examples
    --------
    Neurons 0 and 1 are strongly correlated (``r = 0.97``) and neuron 2 is uncorrelated
    with both (``r = 0``). In the cluster {0, 1} both have the same mean ``|r|`` to their
    mate, so the lower index wins:

    >>> X = np.array([[1.0, 1.0, 1.0], [-1.0, -1.0, 1.0], [1.0, 0.6, -1.0], [-1.0, -0.6, -1.0]])
    >>> independent_neurons(X).tolist()
    [0, 2]
    """
    owner = "independent_neurons"
    X = _check_X(X, owner)
    _check_options(threshold, method, owner)
    if representative not in _REPRESENTATIVES:
        raise ValueError(
            f"{owner}: unknown representative {representative!r}; choose one of {list(_REPRESENTATIVES)}."
        )
    if clusters is not None:
        clusters = np.asarray(clusters)
        if clusters.shape != (X.shape[1],) or clusters.dtype.kind not in "iu":
            raise ValueError(
                f"{owner}: clusters must be {X.shape[1]} integer ids (one per neuron of X); "
                f"got shape {clusters.shape}, dtype {clusters.dtype}."
            )
        if representative == "random":  # no correlations needed, only which neurons are constant
            constant = np.zeros(X.shape[1], dtype=bool)
            constant[constant_neurons(X)] = True
            return _representatives(clusters, constant, None, bool(use_abs), representative, random_state)
    corr, constant = _correlations(X, slice(None), owner)
    if clusters is None:
        if constant.any():
            _log_constant(owner, np.flatnonzero(constant))
        clusters = _cluster(corr, constant, float(threshold), bool(use_abs), method)
    return _representatives(clusters, constant, corr, bool(use_abs), representative, random_state)


def neuron_clusters_by_layer(
    X,
    *,
    n_layers: int,
    hidden_size: int,
    threshold: float = 0.5,
    use_abs: bool = True,
    method: str = "average",
    representative: str = "central",
    random_state=0,
    across_layers: bool = False,
) -> pl.DataFrame:
    """Cluster every layer's neurons separately (or all at once) and list every neuron.

    The columns of ``X`` are laid out layer-major: neuron ``layer * hidden_size + unit``.

    Parameters
    ----------
    X : array-like of shape (n_tokens, n_layers * hidden_size)
        Activations of all layers; may be a float32 memmap. Each layer's columns are read
        in row chunks (per-layer correlations need a ``hidden_size``-square float64
        matrix only).
    n_layers, hidden_size : int
        The layout of the columns.
    threshold, use_abs, method, representative, random_state
        As in :func:`independent_neurons`.
    across_layers : bool, default False
        Cluster all columns in one call, so that a cluster may span layers (costs an
        ``n_neurons``-square correlation matrix).

    Returns
    -------
    polars.DataFrame
        One row per neuron: ``neuron``, ``layer``, ``unit``, ``cluster`` (all Int32),
        ``is_constant`` and ``is_representative`` (Boolean). Cluster ids are unique across
        the table: layer by layer, each numbered from where the previous layer stopped, in
        order of each cluster's first neuron.

    Raises
    ------
    ValueError
        If ``X`` does not have ``n_layers * hidden_size`` columns, or as
        :func:`independent_neurons`.

    Examples
    --------
    >>> X = np.array([[1.0, 2.0, 1.0, 0.0], [2.0, 4.0, 0.0, 0.0], [3.0, 6.0, 1.0, 0.0]])
    >>> neuron_clusters_by_layer(X, n_layers=2, hidden_size=2)["cluster"].to_list()
    [0, 0, 1, 2]
    """
    owner = "neuron_clusters_by_layer"
    X = _check_X(X, owner)
    _check_options(threshold, method, owner)
    for name, value in (("n_layers", n_layers), ("hidden_size", hidden_size)):
        if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
            raise ValueError(f"{owner}: {name} must be an int >= 1; got {value!r}.")
    if X.shape[1] != n_layers * hidden_size:
        raise ValueError(
            f"{owner}: X has {X.shape[1]} columns but n_layers * hidden_size = "
            f"{n_layers} * {hidden_size} = {n_layers * hidden_size}; columns must be layer-major."
        )
    if representative not in _REPRESENTATIVES:
        raise ValueError(
            f"{owner}: unknown representative {representative!r}; choose one of {list(_REPRESENTATIVES)}."
        )
    groups = [slice(None)] if across_layers else [
        slice(layer * hidden_size, (layer + 1) * hidden_size) for layer in range(n_layers)
    ]
    rng = np.random.default_rng(random_state)
    cluster_parts, constant_parts, rep_parts = [], [], []
    offset = 0
    for columns in groups:
        corr, constant = _correlations(X, columns, owner)
        if constant.any():
            first = columns.start or 0
            _log_constant(owner, first + np.flatnonzero(constant))
        clusters = _cluster(corr, constant, float(threshold), bool(use_abs), method)
        reps = _representatives(clusters, constant, corr, bool(use_abs), representative, rng)
        is_rep = np.zeros(len(clusters), dtype=bool)
        is_rep[reps] = True
        cluster_parts.append(clusters + offset)
        constant_parts.append(constant)
        rep_parts.append(is_rep)
        offset += int(clusters.max()) + 1
    neuron = np.arange(X.shape[1])
    return pl.DataFrame(
        {
            "neuron": neuron,
            "layer": neuron // hidden_size,
            "unit": neuron % hidden_size,
            "cluster": np.concatenate(cluster_parts),
            "is_constant": np.concatenate(constant_parts),
            "is_representative": np.concatenate(rep_parts),
        },
        schema=_NEURON_SCHEMA,
    )


def summarize_clusters(neurons: pl.DataFrame) -> pl.DataFrame:
    """Per-layer redundancy statistics from a :func:`neuron_clusters_by_layer` table.

    Parameters
    ----------
    neurons : polars.DataFrame
        With columns ``layer``, ``cluster``, ``is_constant`` and ``is_representative``.

    Returns
    -------
    polars.DataFrame
        One row per layer, sorted by layer: ``layer`` (Int32), ``n_neurons``,
        ``n_constant``, ``n_clusters`` (distinct clusters, the constant group counting as
        one), ``n_independent`` (representatives, i.e. clusters of varying neurons),
        ``largest_cluster`` (Int64) and ``mean_cluster_size`` (Float64; both over the
        clusters of varying neurons, null when there are none). For a table clustered
        ``across_layers``, a cluster is counted in every layer it has members in, with
        its size restricted to that layer.

    Examples
    --------
    >>> X = np.array([[1.0, 2.0, 1.0, 0.0], [2.0, 4.0, 0.0, 0.0], [3.0, 6.0, 1.0, 0.0]])
    >>> table = summarize_clusters(neuron_clusters_by_layer(X, n_layers=2, hidden_size=2))
    >>> table.select("layer", "n_constant", "n_clusters", "n_independent").rows()
    [(0, 0, 1, 1), (1, 1, 2, 1)]
    """
    missing = {"layer", "cluster", "is_constant", "is_representative"} - set(neurons.columns)
    if missing:
        raise ValueError(
            f"summarize_clusters: the table lacks columns {sorted(missing)}; pass the output "
            "of neuron_clusters_by_layer."
        )
    varying = ~pl.col("constant")
    return (
        neurons.group_by("layer", "cluster")
        .agg(
            size=pl.len(),
            n_constant=pl.col("is_constant").sum(),
            n_representatives=pl.col("is_representative").sum(),
            constant=pl.col("is_constant").all(),
        )
        .group_by("layer")
        .agg(
            n_neurons=pl.col("size").sum(),
            n_constant=pl.col("n_constant").sum(),
            n_clusters=pl.len(),
            n_independent=pl.col("n_representatives").sum(),
            largest_cluster=pl.col("size").filter(varying).max(),
            mean_cluster_size=pl.col("size").filter(varying).mean(),
        )
        .select(
            pl.col("layer").cast(pl.Int32),
            *(pl.col(c).cast(pl.Int64) for c in ("n_neurons", "n_constant", "n_clusters", "n_independent")),
            pl.col("largest_cluster").cast(pl.Int64),
            pl.col("mean_cluster_size").cast(pl.Float64),
        )
        .sort("layer", nulls_last=True)
    )


def redundancy_by_layer(
    X,
    *,
    n_layers: int,
    hidden_size: int,
    threshold: float = 0.5,
    use_abs: bool = True,
    method: str = "average",
    representative: str = "central",
    random_state=0,
    include_all_layers: bool = False,
) -> pl.DataFrame:
    """How many independent neurons each layer has: cluster each layer, one row per layer.

    Parameters
    ----------
    X : array-like of shape (n_tokens, n_layers * hidden_size)
        Activations, layer-major columns (see :func:`neuron_clusters_by_layer`).
    n_layers, hidden_size, threshold, use_abs, method, representative, random_state
        As in :func:`neuron_clusters_by_layer`.
    include_all_layers : bool, default False
        Also cluster all columns in one call and append its summary as a last row with a
        null ``layer`` (clusters may span layers there).

    Returns
    -------
    polars.DataFrame
        The columns of :func:`summarize_clusters`, one row per layer (plus the all-layer
        row).

    Examples
    --------
    >>> X = np.array([[1.0, 2.0, 1.0, 0.0], [2.0, 4.0, 0.0, 0.0], [3.0, 6.0, 1.0, 0.0]])
    >>> table = redundancy_by_layer(X, n_layers=2, hidden_size=2, include_all_layers=True)
    >>> table.select("layer", "n_neurons", "n_clusters", "largest_cluster").rows()
    [(0, 2, 1, 2), (1, 2, 2, 1), (None, 4, 3, 2)]
    """
    params = {
        "n_layers": n_layers, "hidden_size": hidden_size, "threshold": threshold,
        "use_abs": use_abs, "method": method, "representative": representative,
        "random_state": random_state,
    }
    summary = summarize_clusters(neuron_clusters_by_layer(X, **params))
    if not include_all_layers:
        return summary
    together = neuron_clusters_by_layer(X, **params, across_layers=True)
    overall = summarize_clusters(together.with_columns(layer=pl.lit(None, dtype=pl.Int32)))
    return pl.concat([summary, overall])


def diversify_ranking(ranking, clusters) -> np.ndarray:
    """Reorder a ranking so that redundant neurons wait their turn.

    The first pass keeps, in ranking order, the best-ranked neuron of every correlation
    cluster; the neurons skipped (each a near-copy of a neuron already taken) follow in
    their original order. The result is a permutation of ``ranking``.

    Univariate rankings (probeless, IoU, Mean Select, single-neuron MI) score each neuron
    alone, so a concept carried by one unit along the residual stream fills their top with
    copies of it. On MiniLM / UD EWT UPOS the top 269 probeless neurons lie in only 81 of
    the 872 correlation clusters (random neurons: 226), and a probe retrained on them is no
    better than one on random neurons; diversified, the same scores give 79.6 / 91.6 / 93.4
    / 94.3 % for the top 1 / 5 / 10 / 20 % instead of 73.1 / 87.0 / 91.4 / 93.5 %.

    Parameters
    ----------
    ranking : array-like of int, shape (n,)
        Neuron indices, best first (a permutation, or a prefix of one).
    clusters : array-like of int, shape (n_neurons,)
        Cluster id of every neuron (:func:`correlation_clusters`).

    Returns
    -------
    numpy.ndarray of int64, shape (n,)

    Raises
    ------
    ValueError
        If ``ranking`` repeats a neuron or names one outside ``clusters``.

    Examples
    --------
    >>> diversify_ranking([4, 0, 1, 3, 2], [0, 0, 1, 1, 0]).tolist()
    [4, 3, 0, 1, 2]
    """
    ranking = np.asarray(ranking, dtype=np.int64)
    clusters = np.asarray(clusters)
    if ranking.ndim != 1 or len(np.unique(ranking)) != len(ranking):
        raise ValueError("diversify_ranking: ranking must be a 1-D array of distinct neuron indices.")
    if len(ranking) and (ranking.min() < 0 or ranking.max() >= len(clusters)):
        raise ValueError(f"diversify_ranking: ranking names neurons outside 0..{len(clusters) - 1} "
                         f"(clusters has {len(clusters)} entries).")
    ids = clusters[ranking]
    # First occurrence of each cluster along the ranking.
    _, first = np.unique(ids, return_index=True)
    is_first = np.zeros(len(ranking), dtype=bool)
    is_first[first] = True
    return np.concatenate([ranking[is_first], ranking[~is_first]])

"""Ablation at the probe: keep or remove a ranking's neurons, by retraining or by filling.

Start here: :func:`ablate` is NeuroX's standard ablation report (``print_overall_stats``:
keep the top / random / bottom 10, 15 and 20 % of neurons, in "filter-out" and "zero-out"
variants) done for every combination of what happens to the selected neurons and how:

================  =========================================================================
mode              what is scored on the test split
================  =========================================================================
``keep_retrain``  a new probe trained on the selected columns only (NeuroX
                  ``filter_activations_keep_neurons`` + a new probe)
``keep_zero``     the full probe (trained once on all neurons) with every *other* column
                  filled (NeuroX ``zero_out_activations_keep_neurons``; no retraining)
``remove_retrain``  a new probe trained on every column *except* the selected ones
                  (``filter_activations_remove_neurons``)
``remove_zero``   the full probe with the selected columns filled
                  (``zero_out_activations_remove_neurons``)
================  =========================================================================

Retraining asks "what can these neurons do?", filling asks "what does the trained probe
lose without them?"; a redundant, distributed code scores high under ``remove_retrain``
and low under ``keep_zero``. :func:`summarize_ablation` averages the random draws.

**What "zero" means.** NeuroX sets ablated activations to 0. Our probe standardises
internally, so raw 0 is not neutral: for a neuron with mean ``m`` and standard deviation
``s`` it becomes ``z = -m / s``, an activation the probe may never have seen (MiniLM has
neurons with ``|m| / s`` up to 15), and the probe reads it as strong evidence. ``zero_value``
therefore chooses the fill:

* ``"mean"`` (default): the training mean, i.e. ``z = 0``. The neuron contributes exactly
  its average to every logit and no token-specific information: a mean ablation, which is
  what "remove the neuron" should mean.
* ``"zero"``: raw 0, as NeuroX does (its probe reads raw activations, so the operation on
  the input is the same). Useful to reproduce NeuroX's numbers; the drop it reports mixes
  the information lost with the shift to an unseen input.

Both can be asked for at once (``zero_value=("mean", "zero")``), sharing the retrained
probes; every filled row records its fill in the ``zero_value`` column.

Filling never copies ``X_test``: the full probe is affine in the raw activations,
``logits = (x - mean) @ W_eff.T + b`` with the standardisation folded into ``W_eff``
(:func:`~neuro_pipeline.probe.effective_weights`), so filling the columns ``C`` with ``fill``
changes the logits by ``-(X_test[:, C] - fill[C]) @ W_eff[:, C].T``. Whichever of ``C`` and
its complement is smaller is read, in row chunks.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from numbers import Integral, Real

import numpy as np
import polars as pl
import torch

from neuro_pipeline.evaluation.selection import (
    DEFAULT_SELECTION_PROBE_PARAMS,
    random_neurons,
)
from neuro_pipeline.matrix import take_columns
from neuro_pipeline.options import ABLATION_MODES, ABLATION_ZERO_VALUES, SELECTIONS
from neuro_pipeline.probe import LinearProbe, column_stats, effective_weights
from neuro_pipeline.ranking._base import validate_matrix

logger = logging.getLogger(__name__)

#: Rows of X_test read at a time when filled logits are computed.
_CHUNK_ROWS = 4096

_SCHEMA = {
    "mode": pl.String,
    "selection": pl.String,
    "fraction": pl.Float64,
    "k": pl.Int32,
    "draw": pl.Int32,
    "accuracy": pl.Float64,
    "zero_value": pl.String,
}


def ablate(
    X_train,
    y_train,
    X_test,
    y_test,
    ranking,
    *,
    fractions: Sequence[float] = (0.10, 0.15, 0.20),
    ks: Sequence[int] = (),
    n_random: int = 3,
    seed: int = 0,
    probe_params: Mapping | None = None,
    n_ranked: int | None = None,
    zero_value: str | Sequence[str] = "mean",
    modes: Sequence[str] = ABLATION_MODES,
) -> pl.DataFrame:
    """Test accuracy of a probe when a ranking's top, random or bottom neurons are kept or removed.

    The full probe is trained once on every neuron. Then, for each size ``k`` (each
    fraction gives ``k = ceil(f * n_neurons)``, as ``NeuronRanker.top_neurons``; each entry
    of ``ks`` is used as given) and each selection of ``k`` neurons

    - ``top``: ``ranking[:k]``;
    - ``random``: ``n_random`` uniform draws (:func:`~neuro_pipeline.evaluation.random_neurons`,
      the same draws :func:`~neuro_pipeline.evaluation.evaluate_selections` makes for the
      same ``seed`` and ``k``);
    - ``bottom``: ``ranking[-k:]``;

    each of ``modes`` is scored (see the module docstring): ``keep_retrain`` and
    ``remove_retrain`` train a new :class:`~neuro_pipeline.probe.LinearProbe` on the kept
    columns; ``keep_zero`` and ``remove_zero`` evaluate the full probe with the ablated
    columns filled with ``zero_value``. With ``probe_params`` equal, ``keep_retrain`` rows
    equal ``evaluate_selections``'s.

    Parameters
    ----------
    X_train, X_test : array-like of shape (n_tokens, n_neurons)
        Activations; never modified (read-only memmaps are fine). Retraining copies only
        the kept columns, one probe at a time; filling copies nothing beyond row chunks.
    y_train, y_test : array-like of shape (n_tokens,)
        Labels. Test labels never seen in training count as errors.
    ranking : array-like of int, shape (n_neurons,)
        A permutation of the neuron indices, best first (``NeuronRanker.ranking_``).
    fractions : sequence of float in (0, 1], default=(0.10, 0.15, 0.20)
        NeuroX's report sizes.
    ks : sequence of int in [1, n_neurons], default=()
        Explicit sizes, reported with a null ``fraction``.
    n_random : int, default=3
        Random draws per size (0 to skip random selections).
    seed : int, default=0
        Seed of the random draws.
    probe_params : mapping, optional
        ``LinearProbe`` hyperparameters of the full and the retrained probes; defaults to
        :data:`~neuro_pipeline.evaluation.DEFAULT_SELECTION_PROBE_PARAMS`.
    n_ranked : int, optional
        How many leading entries of ``ranking`` the method actually ranked
        (``NeuronRanker.n_ranked_``). Top selections larger than that, and every bottom
        selection of a partial ranking (its tail is in index order, not "least relevant"),
        are skipped and logged. Default: all.
    zero_value : {"mean", "zero"} or a sequence of them, default="mean"
        The fill of ablated columns in the ``*_zero`` modes: the training mean (the neuron
        carries no information; the default) or raw 0 (NeuroX). A sequence scores each.
    modes : sequence of str, default=ABLATION_MODES
        Which of ``keep_retrain``, ``keep_zero``, ``remove_retrain``, ``remove_zero`` to
        score. The ``remove_retrain`` probes read almost all columns and cost most.

    Returns
    -------
    polars.DataFrame
        The first row is the full probe (``mode="full"``, ``selection="all"``,
        ``k=n_neurons``), the reference for every other row. Then one row per size,
        selection, draw, mode and fill, in that order of nesting (sizes: fractions, then
        ``ks``): ``mode`` (str), ``selection`` (str), ``fraction`` (Float64; null for
        explicit ``ks`` and the full row), ``k`` (Int32; neurons kept or removed),
        ``draw`` (Int32; null unless random), ``accuracy`` (Float64), ``zero_value`` (str;
        the fill, null for retrained and full rows). A ``remove_retrain`` probe with no
        column left is an intercept-only probe, whose optimum predicts the training
        majority class; that is what it scores.

    Raises
    ------
    ValueError
        On inconsistent shapes, a ranking that is not a permutation, a bad fraction, ``k``,
        ``n_random``, ``n_ranked``, fill or mode, or no size at all.

    Examples
    --------
    Neuron 0 is -6 for class 0 and -5 for class 1; neurons 1 and 2 take the same values in
    both classes, so they carry nothing:

    >>> y = np.repeat([0, 1], [24, 8])
    >>> X = np.c_[y - 6, np.tile([[1, 1], [1, 3], [3, 1], [3, 3]], (8, 1))].astype(np.float32)
    >>> table = ablate(X, y, X, y, [0, 1, 2], fractions=(), ks=(1,), n_random=0,
    ...                zero_value=("mean", "zero"), modes=("keep_zero", "remove_zero"))
    >>> table.filter(pl.col("selection") == "top").select("mode", "zero_value", "accuracy").rows()
    [('keep_zero', 'mean', 1.0), ('keep_zero', 'zero', 1.0), ('remove_zero', 'mean', 0.75), ('remove_zero', 'zero', 0.25)]

    Keeping neuron 0 alone keeps every token right. Filling it with its mean leaves the
    probe its bias, which predicts the majority class (75 % of tokens); filling it with raw
    0, beyond class 1's -5, makes the probe call every token class 1.
    """
    X_train, y_train = validate_matrix(X_train, y_train, owner="ablate (train)")
    X_test, _ = validate_matrix(X_test, owner="ablate (test)")
    y_test = np.asarray(y_test)
    n_neurons = X_train.shape[1]
    ranking, sizes, zero_values, modes, n_ranked = _check_arguments(
        X_test, y_test, n_neurons, ranking, fractions, ks, n_random, n_ranked, zero_value, modes
    )
    params = dict(DEFAULT_SELECTION_PROBE_PARAMS if probe_params is None else probe_params)

    n_unseen = int((~np.isin(y_test, np.unique(y_train))).sum())
    if n_unseen:
        logger.warning(
            "ablate: %d of %d test tokens have labels never seen in training; they are scored as errors.",
            n_unseen, len(y_test),
        )
    start = time.perf_counter()
    stats = column_stats(X_train)  # shared by the full probe and every retrained one
    full = LinearProbe(**params).fit(X_train, y_train, column_stats=stats)
    full_logits = full.decision_function(X_test)
    W_eff, offset = (t.numpy() for t in effective_weights(
        torch.from_numpy(full.coef_), torch.from_numpy(full.intercept_), full.mean_, full.scale_
    ))
    fills = {"mean": full.mean_.astype(np.float32), "zero": np.zeros(n_neurons, dtype=np.float32)}
    rows = [_row("full", "all", None, n_neurons, None, _accuracy(full.classes_, full_logits, y_test), None)]
    logger.info("ablate: full probe on %d neurons, accuracy %.4f (%.1f s)",
                n_neurons, rows[0]["accuracy"], time.perf_counter() - start)
    # An intercept-only probe's optimum is softmax(b) = training prior: it predicts the
    # training majority class (the first in sorted order on ties, as argmax does).
    classes, counts = np.unique(y_train, return_counts=True)
    majority_accuracy = float(np.mean(y_test == classes[np.argmax(counts)]))

    for fraction, k in sizes:
        for name, draw, columns in _selections(ranking, n_neurons, k, n_random, seed, n_ranked):
            kept = np.zeros(n_neurons, dtype=bool)
            kept[columns] = True
            for mode in modes:
                start = time.perf_counter()
                keep = mode.startswith("keep")
                if mode.endswith("retrain"):
                    # np.flatnonzero is sorted: the copy reads each row left to right.
                    train_columns = np.flatnonzero(kept if keep else ~kept)
                    if len(train_columns):
                        probe = LinearProbe(**params).fit(take_columns(X_train, train_columns), y_train,
                                                          column_stats=stats.take(train_columns))
                        accuracy = probe.score(take_columns(X_test, train_columns), y_test)
                    else:
                        accuracy = majority_accuracy
                    rows.append(_row(mode, name, fraction, k, draw, accuracy, None))
                    logger.info("ablate: %s (%.1f s)", rows[-1], time.perf_counter() - start)
                else:
                    filled = ~kept if keep else kept
                    for fill_name in zero_values:
                        logits = _filled_logits(X_test, full_logits, W_eff, offset, filled, fills[fill_name])
                        accuracy = _accuracy(full.classes_, logits, y_test)
                        rows.append(_row(mode, name, fraction, k, draw, accuracy, fill_name))
                        logger.info("ablate: %s (%.1f s)", rows[-1], time.perf_counter() - start)
                        start = time.perf_counter()
    return pl.DataFrame(rows, schema=_SCHEMA)


def summarize_ablation(table: pl.DataFrame) -> pl.DataFrame:
    """Collapse :func:`ablate` rows to one per (mode, zero_value, fraction, k, selection).

    Returns ``mode``, ``zero_value``, ``selection``, ``fraction``, ``k``, ``n_draws``,
    ``accuracy_mean``, ``accuracy_std`` (sample std, ddof=1; null for one draw),
    ``accuracy_min`` and ``accuracy_max``, ordered by mode (full first, then
    :data:`ABLATION_MODES`), fill, size (fractions before explicit ``ks``) and
    top/random/bottom.

    Examples
    --------
    >>> rows = [("keep_zero", "random", 0.1, 3, d, a, "mean") for d, a in enumerate([0.5, 0.7])]
    >>> table = pl.DataFrame(rows, schema=list(_SCHEMA), orient="row")
    >>> summarize_ablation(table).select("n_draws", "accuracy_mean").rows()
    [(2, 0.6)]
    """
    mode_order = {name: i for i, name in enumerate(("full", *ABLATION_MODES))}
    selection_order = {name: i for i, name in enumerate(("all", *SELECTIONS))}
    return (
        table.group_by("mode", "zero_value", "selection", "fraction", "k", maintain_order=True)
        .agg(
            pl.len().cast(pl.Int32).alias("n_draws"),
            pl.col("accuracy").mean().alias("accuracy_mean"),
            pl.col("accuracy").std(ddof=1).alias("accuracy_std"),
            pl.col("accuracy").min().alias("accuracy_min"),
            pl.col("accuracy").max().alias("accuracy_max"),
        )
        .with_columns(
            pl.col("mode").replace_strict(mode_order, return_dtype=pl.Int32).alias("_mode"),
            pl.col("selection").replace_strict(selection_order, return_dtype=pl.Int32).alias("_selection"),
            pl.col("fraction").is_null().alias("_explicit"),
        )
        .sort("_mode", "zero_value", "_explicit", "fraction", "k", "_selection", nulls_last=False)
        .drop("_mode", "_selection", "_explicit")
    )


# ---------------------------------------------------------------------- helpers
def _check_arguments(X_test, y_test, n_neurons, ranking, fractions, ks, n_random, n_ranked, zero_value, modes):
    """Validate everything but X_train/y_train; return ranking, [(fraction, k)], fills, modes, n_ranked."""
    if X_test.shape[1] != n_neurons:
        raise ValueError(
            f"ablate: X_test has {X_test.shape[1]} neurons but X_train has {n_neurons}; "
            "both must come from the same layers."
        )
    if y_test.shape != (X_test.shape[0],):
        raise ValueError(
            f"ablate: y_test must have shape ({X_test.shape[0]},), one label per row of X_test; got {y_test.shape}."
        )
    ranking = np.asarray(ranking)
    if ranking.shape != (n_neurons,) or not np.array_equal(np.sort(ranking), np.arange(n_neurons)):
        raise ValueError(
            f"ablate: ranking must be a permutation of 0..{n_neurons - 1} (one entry per neuron); "
            f"got shape {ranking.shape}. Pass a fitted ranker's ranking_."
        )
    sizes = []
    for f in fractions:
        if isinstance(f, bool) or not isinstance(f, Real) or not 0 < f <= 1:
            raise ValueError(f"ablate: every fraction must be in (0, 1]; got {f!r}.")
        sizes.append((float(f), math.ceil(f * n_neurons)))
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, Integral) or not 1 <= k <= n_neurons:
            raise ValueError(f"ablate: every k must be an int in [1, {n_neurons}] (the number of neurons); got {k!r}.")
        sizes.append((None, int(k)))
    if not sizes:
        raise ValueError("ablate: no size to ablate; give at least one fraction or k.")
    if isinstance(n_random, bool) or not isinstance(n_random, Integral) or n_random < 0:
        raise ValueError(f"ablate: n_random must be an int >= 0; got {n_random!r}.")
    n_ranked = n_neurons if n_ranked is None else int(n_ranked)
    if not 0 <= n_ranked <= n_neurons:
        raise ValueError(f"ablate: n_ranked must be in [0, {n_neurons}]; got {n_ranked}.")
    zero_values = (zero_value,) if isinstance(zero_value, str) else tuple(zero_value)
    bad = [v for v in zero_values if v not in ABLATION_ZERO_VALUES]
    if bad or not zero_values:
        raise ValueError(f"ablate: unknown zero_value {bad[0] if bad else zero_value!r}; "
                         f"choose from {list(ABLATION_ZERO_VALUES)}.")
    modes = tuple(modes)
    bad = [m for m in modes if m not in ABLATION_MODES]
    if bad or not modes:
        raise ValueError(f"ablate: unknown mode {bad[0] if bad else modes!r}; choose from {list(ABLATION_MODES)}.")
    # Keep the documented row order whatever order the caller listed them in.
    modes = tuple(m for m in ABLATION_MODES if m in modes)
    zero_values = tuple(v for v in ABLATION_ZERO_VALUES if v in zero_values)
    return ranking, sizes, zero_values, modes, n_ranked


def _selections(ranking, n_neurons, k, n_random, seed, n_ranked):
    """(name, draw, columns) for top / random draws / bottom, as evaluate_selections picks them."""
    chosen = []
    if k <= n_ranked:
        chosen.append(("top", None, ranking[:k]))
    else:
        logger.info("ablate: top %d skipped; the method ranked only %d neurons", k, n_ranked)
    chosen += [("random", d, random_neurons(n_neurons, k, seed=seed, draw=d)) for d in range(n_random)]
    if n_ranked == n_neurons:
        chosen.append(("bottom", None, ranking[n_neurons - k :]))
    else:
        logger.info("ablate: bottom %d skipped; a partial ranking has no bottom", k)
    return chosen


def _filled_logits(X, full_logits, W_eff, offset, filled, fill):
    """Logits of the full probe (``X @ W_eff.T + offset``, already ``full_logits``) on ``X``
    with the columns where ``filled`` is True set to ``fill``.

    Reads only the smaller of the filled and the kept columns of ``X``, ``_CHUNK_ROWS`` rows
    at a time, and never writes to ``X``.
    """
    n_filled = int(filled.sum())
    if n_filled == 0:
        return full_logits
    out = np.empty_like(full_logits)
    if n_filled <= filled.size - n_filled:
        # Subtract the filled columns' actual contribution, add the fill's.
        columns = np.flatnonzero(filled)
        Wt = np.ascontiguousarray(W_eff[:, columns].T)
        shift = fill[columns]
        for start in range(0, X.shape[0], _CHUNK_ROWS):
            block = np.asarray(X[start : start + _CHUNK_ROWS, columns], dtype=np.float32)
            out[start : start + len(block)] = full_logits[start : start + len(block)] - (block - shift) @ Wt
    else:
        # Rebuild from the kept columns: W_eff x + offset with the filled x_j constant.
        columns = np.flatnonzero(~filled)
        Wt = np.ascontiguousarray(W_eff[:, columns].T)
        filled_columns = np.flatnonzero(filled)
        constant = offset + fill[filled_columns] @ W_eff[:, filled_columns].T
        for start in range(0, X.shape[0], _CHUNK_ROWS):
            block = np.asarray(X[start : start + _CHUNK_ROWS, columns], dtype=np.float32)
            out[start : start + len(block)] = block @ Wt + constant
    return out


def _accuracy(classes, logits, y) -> float:
    return float(np.mean(classes[np.argmax(logits, axis=1)] == y))


def _row(mode, selection, fraction, k, draw, accuracy, zero_value) -> dict:
    return {
        "mode": mode,
        "selection": selection,
        "fraction": fraction,
        "k": k,
        "draw": draw,
        "accuracy": accuracy,
        "zero_value": zero_value,
    }

"""Neuron drift between two versions of a model: did the important neurons move?

Start here: every function takes the tables of the *previous* and the *current* version and
returns one tidy polars table.

- :func:`ranking_drift` compares each method's global ranking: for every top-k size, the
  overlap and Jaccard of the two top-k sets, the neurons that entered and left, and the
  Spearman correlation of the two versions' scores;
- :func:`class_ranking_drift` does the same for the per-class rankings (no scores);
- :func:`class_metric_drift` lines up the per-class probe metrics (accuracy, F1,
  selectivity) and their differences;
- :func:`drift_alerts` turns the three tables into one row per crossed
  :class:`DriftThresholds` threshold, with a sentence for people;
- :func:`summarize_drift` condenses everything into a small JSON-ready dict.

A top-k set is the ``k`` neurons with the smallest non-null ``rank`` (1 = best). A method
that ranked fewer than ``k`` neurons (a greedy method ranks a prefix) contributes all it
ranked, so ``n_previous``/``n_current`` can be below ``k``. Rankings that exist in one
version only are kept with status ``"only_previous"`` or ``"only_current"`` and null
metrics, so that a method that disappeared is visible rather than silently dropped.

Floats are compared with a tolerance of 1e-9 against thresholds, so that a drop of exactly
the allowed amount (e.g. 0.92 → 0.90 with ``max_accuracy_drop=0.02``) is not an alert.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

import numpy as np
import polars as pl

OVERALL_LABEL = "(all)"
STATUSES = ("both", "only_previous", "only_current")
_TOLERANCE = 1e-9

_NEURON_LIST = pl.List(pl.Int64)
_SET_SCHEMA = {
    "k": pl.Int64,
    "n_previous": pl.Int64,
    "n_current": pl.Int64,
    "overlap": pl.Int64,
    "jaccard": pl.Float64,
    "entered": _NEURON_LIST,
    "left": _NEURON_LIST,
    "n_entered": pl.Int64,
    "n_left": pl.Int64,
}
RANKING_DRIFT_SCHEMA = {
    "method": pl.Utf8,
    **_SET_SCHEMA,
    "spearman": pl.Float64,
    "n_scored": pl.Int64,
    "status": pl.Utf8,
}
CLASS_RANKING_DRIFT_SCHEMA = {"method": pl.Utf8, "label": pl.Utf8, **_SET_SCHEMA, "status": pl.Utf8}
CLASS_METRIC_DRIFT_SCHEMA = {
    "label": pl.Utf8,
    "support_previous": pl.Int64,
    "support_current": pl.Int64,
    "accuracy_previous": pl.Float64,
    "accuracy_current": pl.Float64,
    "accuracy_delta": pl.Float64,
    "f1_previous": pl.Float64,
    "f1_current": pl.Float64,
    "f1_delta": pl.Float64,
    "selectivity_previous": pl.Float64,
    "selectivity_current": pl.Float64,
    "selectivity_delta": pl.Float64,
    "status": pl.Utf8,
}
ALERT_SCHEMA = {
    "kind": pl.Utf8,
    "method": pl.Utf8,
    "label": pl.Utf8,
    "k": pl.Int64,
    "value": pl.Float64,
    "threshold": pl.Float64,
    "message": pl.Utf8,
}
ALERT_KINDS = ("accuracy_drop", "selectivity_drop", "neurons_moved")

_TEXT_DTYPES = (pl.Utf8, pl.Categorical, pl.Enum)


# Validation --------------------------------------------------------------------------------


def _check_frame(frame: Any, name: str, required: Sequence[str], owner: str) -> None:
    if not isinstance(frame, pl.DataFrame):
        raise TypeError(f"{owner}: {name} must be a polars DataFrame; got {type(frame).__name__}.")
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{owner}: {name} is missing column {missing[0]!r}; it needs {list(required)}, "
            f"got {frame.columns}."
        )


def _text_column(frame: pl.DataFrame, column: str, name: str, owner: str) -> pl.Expr:
    dtype = frame.schema[column]
    if not (dtype == pl.Null or isinstance(dtype, _TEXT_DTYPES)):
        raise TypeError(f"{owner}: {name}[{column!r}] must hold strings; got dtype {dtype}.")
    if frame[column].null_count():
        row = frame[column].is_null().arg_true()[0]
        raise ValueError(f"{owner}: {name}[{column!r}] is null at row {row}; every row needs a {column}.")
    return pl.col(column).cast(pl.Utf8)


def _int_column(frame: pl.DataFrame, column: str, name: str, owner: str, *, nullable: bool) -> pl.Expr:
    dtype = frame.schema[column]
    if not (dtype.is_integer() or (nullable and dtype == pl.Null)):
        raise TypeError(f"{owner}: {name}[{column!r}] must hold integers; got dtype {dtype}.")
    if not nullable and frame[column].null_count():
        row = frame[column].is_null().arg_true()[0]
        raise ValueError(f"{owner}: {name}[{column!r}] is null at row {row}; every row needs a {column}.")
    return pl.col(column).cast(pl.Int64)


def _check_ks(ks: Sequence[int] | int, owner: str) -> list[int]:
    values = [ks] if isinstance(ks, Integral) else list(ks)
    if not values:
        raise ValueError(f"{owner}: ks must list at least one top-k size.")
    for k in values:
        if isinstance(k, bool) or not isinstance(k, Integral) or k < 1:
            raise ValueError(f"{owner}: every k in ks must be a positive int; got {k!r} in {values}.")
    if len(set(values)) != len(values):
        raise ValueError(f"{owner}: ks repeats a value; got {values}.")
    return sorted(int(k) for k in values)


def _rankings(frame: pl.DataFrame, name: str, keys: list[str], with_score: bool, owner: str) -> pl.DataFrame:
    """The checked columns of one version, cast to Utf8 keys, Int64 neuron/rank, Float64 score."""
    columns = [*keys, "neuron", *(["score"] if with_score else []), "rank"]
    _check_frame(frame, name, columns, owner)
    exprs = [_text_column(frame, key, name, owner) for key in keys]
    exprs.append(_int_column(frame, "neuron", name, owner, nullable=False))
    if with_score:
        dtype = frame.schema["score"]
        if not (dtype.is_numeric() or dtype == pl.Null):
            raise TypeError(f"{owner}: {name}['score'] must be numeric; got dtype {dtype}.")
        # NaN means "no score" like null; infinities (greedy methods' unselected neurons) stay ordered.
        exprs.append(pl.col("score").cast(pl.Float64).fill_nan(None))
    exprs.append(_int_column(frame, "rank", name, owner, nullable=True))
    table = frame.select(exprs)
    _check_unique(table, [*keys, "neuron"], name, owner, what="row")
    bad = table.filter(pl.col("rank") < 1)
    if len(bad):
        row = bad.row(0, named=True)
        raise ValueError(
            f"{owner}: {name} gives neuron {row['neuron']} rank {row['rank']} in {_where(row, keys)}; "
            "ranks start at 1 (best)."
        )
    _check_unique(table.filter(pl.col("rank").is_not_null()), [*keys, "rank"], name, owner, what="rank")
    return table


def _where(row: Mapping[str, Any], keys: Sequence[str]) -> str:
    return ", ".join(f"{key} {row[key]!r}" for key in keys)


def _check_unique(table: pl.DataFrame, columns: list[str], name: str, owner: str, *, what: str) -> None:
    dupes = table.group_by(columns, maintain_order=True).len().filter(pl.col("len") > 1)
    if not len(dupes):
        return
    row = dupes.row(0, named=True)
    keys = [c for c in columns if c not in ("neuron", "rank")]
    if what == "row":
        raise ValueError(
            f"{owner}: {name} has {row['len']} rows for {_where(row, keys)} and neuron {row['neuron']}; "
            f"give each ({', '.join(columns)}) one row."
        )
    raise ValueError(
        f"{owner}: {name} gives rank {row['rank']} to {row['len']} neurons in {_where(row, keys)}; "
        "a ranking gives each rank once."
    )


# Ranking drift -----------------------------------------------------------------------------


def _ordered(table: pl.DataFrame, keys: list[str], depth: int) -> dict[tuple, list[int]]:
    """Each ranking's first ``depth`` neurons, best first; a ranking with no ranked neuron maps to []."""
    out: dict[tuple, list[int]] = {key: [] for key in table.select(keys).unique().iter_rows()}
    ranked = (
        table.filter(pl.col("rank").is_not_null())
        .group_by(keys)
        .agg(pl.col("neuron").sort_by("rank").head(depth))
    )
    for row in ranked.iter_rows():
        out[tuple(row[:-1])] = list(row[-1])
    return out


def _set_rows(previous: list[int] | None, current: list[int] | None, ks: list[int]) -> list[dict]:
    """Top-k comparison of two rankings (best first) for every k; a missing side gives nulls."""
    rows = []
    for k in ks:
        prev_top = None if previous is None else previous[:k]
        cur_top = None if current is None else current[:k]
        row: dict[str, Any] = {
            "k": k,
            "n_previous": None if prev_top is None else len(prev_top),
            "n_current": None if cur_top is None else len(cur_top),
            "overlap": None, "jaccard": None, "entered": None, "left": None, "n_entered": None, "n_left": None,
        }
        if prev_top is not None and cur_top is not None:
            prev_set, cur_set = set(prev_top), set(cur_top)
            overlap = len(prev_set & cur_set)
            union = len(prev_set | cur_set)
            entered = [n for n in cur_top if n not in prev_set]
            left = [n for n in prev_top if n not in cur_set]
            row.update(overlap=overlap, jaccard=overlap / union if union else None, entered=entered, left=left,
                       n_entered=len(entered), n_left=len(left))
        rows.append(row)
    return rows


def _status(in_previous: bool, in_current: bool) -> str:
    return "both" if in_previous and in_current else "only_previous" if in_previous else "only_current"


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n of ``x``; tied values share the mean of the ranks they span."""
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    starts_group = np.concatenate(([True], sorted_x[1:] != sorted_x[:-1]))
    group = np.cumsum(starts_group) - 1
    starts = np.flatnonzero(starts_group)
    ends = np.append(starts[1:], len(x))
    ranks = np.empty(len(x))
    ranks[order] = ((starts + ends - 1) / 2 + 1)[group]
    return ranks


def _spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman's rho as the Pearson correlation of average ranks; None below 3 pairs or for a constant side."""
    if len(a) < 3:
        return None
    ra = _average_ranks(a)
    rb = _average_ranks(b)
    ra -= ra.mean()
    rb -= rb.mean()
    denom = math.sqrt(float(ra @ ra) * float(rb @ rb))
    if denom == 0:
        return None
    return float(np.clip(float(ra @ rb) / denom, -1.0, 1.0))


def _spearman_by_method(previous: pl.DataFrame, current: pl.DataFrame) -> dict[str, tuple[float | None, int]]:
    paired = (
        previous.select("method", "neuron", pl.col("score").alias("previous"))
        .join(current.select("method", "neuron", pl.col("score").alias("current")), on=["method", "neuron"])
        .drop_nulls(["previous", "current"])
        .sort("method", "neuron")
    )
    out = {}
    for (method,), group in paired.group_by(["method"], maintain_order=True):
        out[method] = (_spearman(group["previous"].to_numpy(), group["current"].to_numpy()), len(group))
    return out


def ranking_drift(previous: pl.DataFrame, current: pl.DataFrame, ks: Sequence[int]) -> pl.DataFrame:
    """How each method's global neuron ranking changed between two versions.

    Parameters
    ----------
    previous, current : polars.DataFrame
        One row per method and neuron: ``method`` (str), ``neuron`` (int), ``score``
        (float, higher = more relevant, may be null; NaN counts as null) and ``rank`` (int,
        1 = best, null when the method did not rank that neuron). Other columns are ignored.
    ks : sequence of int
        Top-k sizes, distinct positive ints (a single int is accepted); the output lists
        them in ascending order.

    Returns
    -------
    polars.DataFrame
        One row per method in either version (sorted by name) and ``k``:

        - ``method`` (Utf8), ``k`` (Int64);
        - ``n_previous``, ``n_current`` (Int64): size of each top-k set, ``min(k, ranked)``;
          null for the version that lacks the method;
        - ``overlap`` (Int64) and ``jaccard`` (Float64, ``overlap / |union|``, null when
          both sets are empty);
        - ``entered`` (List[Int64], in the current top-k but not the previous one, by
          current rank), ``left`` (List[Int64], the reverse, by previous rank),
          ``n_entered``, ``n_left`` (Int64);
        - ``spearman`` (Float64): Spearman correlation of the two versions' scores over
          the ``n_scored`` (Int64) neurons scored in both, the same on every ``k`` row;
          null below 3 neurons or when one side is constant (ties get average ranks);
        - ``status`` (Utf8): ``"both"``, ``"only_previous"`` or ``"only_current"``. All
          comparison columns are null unless ``"both"``.

    Raises
    ------
    TypeError
        If an input is not a DataFrame or a column has the wrong type.
    ValueError
        If a column is missing, a (method, neuron) pair appears twice, a method gives one
        rank twice or a rank below 1, or ``ks`` is empty, repeats a value or holds a value
        that is not a positive int.

    Examples
    --------
    Neuron 2 takes neuron 0's place at the top; the top 2 share neuron 1 only. Score ranks
    go from (4, 3, 2, 1) to (2, 3, 4, 1): rho = 1 - 6 * 8 / (4 * 15) = 0.2.

    >>> previous = pl.DataFrame({"method": ["m"] * 4, "neuron": [0, 1, 2, 3],
    ...                          "score": [4.0, 3.0, 2.0, 1.0], "rank": [1, 2, 3, 4]})
    >>> current = previous.with_columns(score=pl.Series([2.0, 3.0, 4.0, 1.0]), rank=pl.Series([3, 2, 1, 4]))
    >>> drift = ranking_drift(previous, current, ks=[2])
    >>> drift.select("k", "overlap", "jaccard", "entered", "left", "spearman").rows()
    [(2, 1, 0.3333333333333333, [2], [0], 0.2)]
    """
    owner = "ranking_drift"
    ks = _check_ks(ks, owner)
    prev = _rankings(previous, "previous", ["method"], True, owner)
    cur = _rankings(current, "current", ["method"], True, owner)
    prev_order, cur_order = _ordered(prev, ["method"], ks[-1]), _ordered(cur, ["method"], ks[-1])
    spearman = _spearman_by_method(prev, cur)
    rows = []
    for key in sorted(set(prev_order) | set(cur_order)):
        status = _status(key in prev_order, key in cur_order)
        rho, n_scored = spearman.get(key[0], (None, 0)) if status == "both" else (None, None)
        for row in _set_rows(prev_order.get(key), cur_order.get(key), ks):
            rows.append({"method": key[0], **row, "spearman": rho, "n_scored": n_scored, "status": status})
    return pl.DataFrame(rows, schema=RANKING_DRIFT_SCHEMA)


def class_ranking_drift(previous: pl.DataFrame, current: pl.DataFrame, ks: Sequence[int]) -> pl.DataFrame:
    """How each method's per-class neuron rankings changed between two versions.

    Parameters
    ----------
    previous, current : polars.DataFrame
        One row per method, label and neuron: ``method`` (str), ``label`` (str),
        ``neuron`` (int) and ``rank`` (int, 1 = best within the class, null if unranked).
    ks : sequence of int
        As in :func:`ranking_drift`.

    Returns
    -------
    polars.DataFrame
        One row per (method, label) in either version (sorted) and ``k``: ``method``,
        ``label`` and then the columns of :func:`ranking_drift` without ``spearman`` and
        ``n_scored``: ``k, n_previous, n_current, overlap, jaccard, entered, left,
        n_entered, n_left, status``. The status is per (method, label): a label that one
        version's method does not rank is ``"only_previous"``/``"only_current"``.

    Raises
    ------
    TypeError, ValueError
        As :func:`ranking_drift`, per (method, label).

    Examples
    --------
    >>> previous = pl.DataFrame({"method": "m", "label": ["NOUN", "NOUN", "VERB"],
    ...                          "neuron": [0, 1, 0], "rank": [1, 2, 1]})
    >>> current = pl.DataFrame({"method": "m", "label": ["NOUN", "NOUN"], "neuron": [0, 1], "rank": [2, 1]})
    >>> class_ranking_drift(previous, current, ks=[1]).select("label", "jaccard", "status").rows()
    [('NOUN', 0.0, 'both'), ('VERB', None, 'only_previous')]
    """
    owner = "class_ranking_drift"
    ks = _check_ks(ks, owner)
    keys = ["method", "label"]
    prev_order = _ordered(_rankings(previous, "previous", keys, False, owner), keys, ks[-1])
    cur_order = _ordered(_rankings(current, "current", keys, False, owner), keys, ks[-1])
    rows = []
    for key in sorted(set(prev_order) | set(cur_order)):
        status = _status(key in prev_order, key in cur_order)
        for row in _set_rows(prev_order.get(key), cur_order.get(key), ks):
            rows.append({"method": key[0], "label": key[1], **row, "status": status})
    return pl.DataFrame(rows, schema=CLASS_RANKING_DRIFT_SCHEMA)


# Metric drift ------------------------------------------------------------------------------


def _metrics(frame: pl.DataFrame, name: str, owner: str) -> pl.DataFrame:
    _check_frame(frame, name, ["label", "support", "accuracy", "f1"], owner)
    exprs = [_text_column(frame, "label", name, owner),
             _int_column(frame, "support", name, owner, nullable=True)]
    for column in ("accuracy", "f1", "selectivity"):
        if column not in frame.columns:
            exprs.append(pl.lit(None, dtype=pl.Float64).alias(column))
            continue
        dtype = frame.schema[column]
        if not (dtype.is_numeric() or dtype == pl.Null):
            raise TypeError(f"{owner}: {name}[{column!r}] must be numeric; got dtype {dtype}.")
        exprs.append(pl.col(column).cast(pl.Float64).fill_nan(None))
    table = frame.select(exprs)
    dupes = table.group_by("label", maintain_order=True).len().filter(pl.col("len") > 1)
    if len(dupes):
        label, n = dupes.row(0)
        raise ValueError(f"{owner}: {name} has {n} rows for label {label!r}; give each label one row.")
    return table


def class_metric_drift(previous: pl.DataFrame, current: pl.DataFrame) -> pl.DataFrame:
    """Per-class probe metrics of two versions side by side, with their differences.

    Parameters
    ----------
    previous, current : polars.DataFrame
        One row per label: ``label`` (str), ``support`` (int), ``accuracy`` and ``f1``
        (float in [0, 1], may be null) and optionally ``selectivity`` (float: per-class
        task minus control-task accuracy). A row labelled ``"(all)"`` holds the overall
        figures. Other columns are ignored.

    Returns
    -------
    polars.DataFrame
        One row per label in either version (full outer join), ``"(all)"`` first and the
        rest sorted: ``label``, ``support_previous``, ``support_current`` (Int64),
        ``accuracy_previous``, ``accuracy_current``, ``accuracy_delta``, ``f1_previous``,
        ``f1_current``, ``f1_delta``, ``selectivity_previous``, ``selectivity_current``,
        ``selectivity_delta`` (Float64) and ``status`` (``"both"``, ``"only_previous"``,
        ``"only_current"``). A delta is current − previous, null when either side is.

    Raises
    ------
    TypeError, ValueError
        If an input is not a DataFrame, lacks a column, has a column of the wrong type or
        repeats a label.

    Examples
    --------
    >>> previous = pl.DataFrame({"label": ["(all)", "NOUN"], "support": [10, 4],
    ...                          "accuracy": [0.875, 0.75], "f1": [0.9, 0.8]})
    >>> current = pl.DataFrame({"label": ["NOUN", "(all)"], "support": [4, 10],
    ...                         "accuracy": [0.5, 0.75], "f1": [0.6, 0.8]})
    >>> class_metric_drift(previous, current).select("label", "accuracy_delta", "status").rows()
    [('(all)', -0.125, 'both'), ('NOUN', -0.25, 'both')]
    """
    owner = "class_metric_drift"
    prev = _metrics(previous, "previous", owner).with_columns(_in_previous=pl.lit(True))
    cur = _metrics(current, "current", owner).with_columns(_in_current=pl.lit(True))
    joined = prev.join(cur, on="label", how="full", coalesce=True, suffix="_current").rename(
        {c: f"{c}_previous" for c in ("support", "accuracy", "f1", "selectivity")})
    in_prev = pl.col("_in_previous").fill_null(False)
    in_cur = pl.col("_in_current").fill_null(False)
    table = joined.with_columns(
        *[(pl.col(f"{c}_current") - pl.col(f"{c}_previous")).alias(f"{c}_delta")
          for c in ("accuracy", "f1", "selectivity")],
        status=pl.when(in_prev & in_cur).then(pl.lit("both"))
        .when(in_prev).then(pl.lit("only_previous")).otherwise(pl.lit("only_current")),
    )
    return (
        table.sort(pl.col("label") != OVERALL_LABEL, "label")
        .select([pl.col(c).cast(t) for c, t in CLASS_METRIC_DRIFT_SCHEMA.items()])
    )


# Alerts ------------------------------------------------------------------------------------


def _check_fraction(value: Any, name: str, *, upper: float = 1.0, hint: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, Real) or not 0 <= value <= upper:
        raise ValueError(f"DriftThresholds: {name} must be a number in [0, {upper:g}]{hint}; got {value!r}.")


@dataclass(frozen=True)
class DriftThresholds:
    """When drift between two versions is worth an alert.

    Parameters
    ----------
    max_accuracy_drop : float, default 0.02
        Largest allowed fall of a class's (or the overall) probe accuracy, as a fraction
        (0.02 = 2 points).
    max_selectivity_drop : float, default 0.05
        Largest allowed fall of a class's selectivity, as a fraction (0.05 = 5 points).
    min_jaccard : float, default 0.5
        Smallest allowed Jaccard overlap of a ranking's top-k neurons between versions.
    alert_k : int, optional
        The top-k size at which neuron movement is judged; by default the largest k of
        each drift table.
    min_support : int, default 30
        A class's accuracy and selectivity are judged only when it has at least this many
        evaluation words in both versions: on a class of 16 words one word is 6 points.
        The overall figure is always judged.

    Raises
    ------
    ValueError
        If a bound is outside [0, 1] (or not a number) or ``alert_k`` is not a positive int.

    Examples
    --------
    >>> DriftThresholds(max_accuracy_drop=0.01, alert_k=50).min_jaccard
    0.5
    """

    max_accuracy_drop: float = 0.02
    max_selectivity_drop: float = 0.05
    min_jaccard: float = 0.5
    alert_k: int | None = None
    min_support: int = 30

    def __post_init__(self) -> None:
        _check_fraction(self.max_accuracy_drop, "max_accuracy_drop",
                        hint=" (accuracy is a fraction: 0.02 means 2 points)")
        _check_fraction(self.max_selectivity_drop, "max_selectivity_drop",
                        hint=" (selectivity is a fraction: 0.05 means 5 points)")
        _check_fraction(self.min_jaccard, "min_jaccard")
        k = self.alert_k
        if k is not None and (isinstance(k, bool) or not isinstance(k, Integral) or k < 1):
            raise ValueError(f"DriftThresholds: alert_k must be None or a positive int; got {k!r}.")
        m = self.min_support
        if isinstance(m, bool) or not isinstance(m, Integral) or m < 0:
            raise ValueError(f"DriftThresholds: min_support must be an int >= 0; got {m!r}.")


def _subject(label: str | None, method: str | None = None) -> str:
    label_text = None if label is None else "overall" if label == OVERALL_LABEL else label
    return ", ".join(part for part in (method, label_text) if part is not None)


def _metric_alerts(metrics: pl.DataFrame, column: str, kind: str, limit: float, what: str,
                   percent: bool, min_support: int = 0) -> list[dict]:
    rows = []
    supported = ((pl.col("label") == OVERALL_LABEL)
                 | ((pl.col("support_previous").fill_null(0) >= min_support)
                    & (pl.col("support_current").fill_null(0) >= min_support)))
    for r in metrics.filter((pl.col(f"{column}_delta") < -(limit + _TOLERANCE)) & supported).iter_rows(named=True):
        before, after = r[f"{column}_previous"], r[f"{column}_current"]
        pair = (f"{100 * before:.1f}% → {100 * after:.1f}%" if percent
                else f"{100 * before:.1f} → {100 * after:.1f} points")
        drop = -r[f"{column}_delta"]
        rows.append({
            "kind": kind, "method": None, "label": r["label"], "k": None, "value": drop, "threshold": limit,
            "message": f"{_subject(r['label'])}: {what} fell {100 * drop:.1f} points ({pair}), "
                       f"more than the allowed {100 * limit:.1f}",
        })
    return rows


def _alert_k(table: pl.DataFrame, alert_k: int | None, name: str) -> int | None:
    ks = sorted(set(table["k"].to_list()))
    if not ks:
        return None
    if alert_k is None:
        return ks[-1]
    if alert_k not in ks:
        raise ValueError(
            f"drift_alerts: thresholds.alert_k={alert_k} but {name} has k in {ks}; compute the drift at "
            f"k={alert_k} or choose one of those."
        )
    return alert_k


def _movement_alerts(table: pl.DataFrame, name: str, thresholds: DriftThresholds) -> list[dict]:
    k = _alert_k(table, thresholds.alert_k, name)
    if k is None:
        return []
    limit = thresholds.min_jaccard
    moved = table.filter(
        (pl.col("status") == "both") & (pl.col("k") == k) & pl.col("jaccard").is_not_null()
        & (pl.col("jaccard") < limit - _TOLERANCE)
    )
    rows = []
    for r in moved.iter_rows(named=True):
        label = r.get("label")
        rows.append({
            "kind": "neurons_moved", "method": r["method"], "label": label, "k": k, "value": r["jaccard"],
            "threshold": limit,
            "message": f"{_subject(label, r['method'])}: the top {k} neurons moved, Jaccard {r['jaccard']:.2f} "
                       f"below the allowed {limit:.2f} ({r['overlap']} kept, {r['n_entered']} entered, "
                       f"{r['n_left']} left)",
        })
    return rows


def drift_alerts(
    ranking: pl.DataFrame,
    classes: pl.DataFrame | None,
    metrics: pl.DataFrame | None,
    thresholds: DriftThresholds,
) -> pl.DataFrame:
    """One row per drift threshold crossed between two versions.

    Parameters
    ----------
    ranking : polars.DataFrame
        Output of :func:`ranking_drift`.
    classes : polars.DataFrame or None
        Output of :func:`class_ranking_drift`; None when per-class rankings are not compared.
    metrics : polars.DataFrame or None
        Output of :func:`class_metric_drift`; None when metrics are not compared.
    thresholds : DriftThresholds
        The limits.

    Returns
    -------
    polars.DataFrame
        Columns ``kind`` (``"accuracy_drop"``, ``"selectivity_drop"`` or
        ``"neurons_moved"``), ``method`` (null for metric alerts), ``label`` (null for
        global rankings; ``"(all)"`` for the overall accuracy), ``k`` (Int64, null for
        metric alerts), ``value`` and ``threshold`` (Float64) and ``message`` (Utf8, a
        sentence). ``value`` is the measure compared with ``threshold``: the drop (previous
        − current, a fraction) for metric alerts, the Jaccard at ``k`` for moved neurons.
        Metric alerts come first, then global rankings, then per-class rankings. Empty
        (with this schema) when no threshold is crossed.

    Raises
    ------
    TypeError
        If ``thresholds`` is not a :class:`DriftThresholds` or a table is not a DataFrame.
    ValueError
        If a table lacks a column or ``thresholds.alert_k`` is not one of a non-empty
        table's k.

    Examples
    --------
    >>> metrics = class_metric_drift(
    ...     pl.DataFrame({"label": ["NOUN"], "support": [50], "accuracy": [0.92], "f1": [0.9]}),
    ...     pl.DataFrame({"label": ["NOUN"], "support": [50], "accuracy": [0.889], "f1": [0.9]}))
    >>> empty = ranking_drift(pl.DataFrame(schema={"method": pl.Utf8, "neuron": pl.Int64,
    ...                       "score": pl.Float64, "rank": pl.Int64}),
    ...                       pl.DataFrame(schema={"method": pl.Utf8, "neuron": pl.Int64,
    ...                       "score": pl.Float64, "rank": pl.Int64}), ks=[10])
    >>> drift_alerts(empty, None, metrics, DriftThresholds())["message"].to_list()
    ['NOUN: probe accuracy fell 3.1 points (92.0% → 88.9%), more than the allowed 2.0']
    """
    owner = "drift_alerts"
    if not isinstance(thresholds, DriftThresholds):
        raise TypeError(f"{owner}: thresholds must be a DriftThresholds; got {type(thresholds).__name__}.")
    _check_frame(ranking, "ranking", list(RANKING_DRIFT_SCHEMA), owner)
    rows: list[dict] = []
    if metrics is not None:
        _check_frame(metrics, "metrics", list(CLASS_METRIC_DRIFT_SCHEMA), owner)
        rows += _metric_alerts(metrics, "accuracy", "accuracy_drop", thresholds.max_accuracy_drop,
                               "probe accuracy", percent=True, min_support=thresholds.min_support)
        rows += _metric_alerts(metrics, "selectivity", "selectivity_drop", thresholds.max_selectivity_drop,
                               "selectivity", percent=False, min_support=thresholds.min_support)
    rows += _movement_alerts(ranking, "ranking", thresholds)
    if classes is not None:
        _check_frame(classes, "classes", list(CLASS_RANKING_DRIFT_SCHEMA), owner)
        rows += _movement_alerts(classes, "classes", thresholds)
    return pl.DataFrame(rows, schema=ALERT_SCHEMA)


# Summary -----------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """A JSON-ready scalar: NaN becomes None, numpy scalars become Python ones."""
    if isinstance(value, float) and math.isnan(value):
        return None
    return value.item() if isinstance(value, np.generic) else value


def _largest_drop(metrics: pl.DataFrame | None, column: str) -> dict[str, Any] | None:
    if metrics is None:
        return None
    drops = metrics.filter((pl.col("label") != OVERALL_LABEL) & (pl.col(f"{column}_delta") < 0))
    if not len(drops):
        return None
    r = drops.sort(f"{column}_delta", "label").row(0, named=True)
    return {"label": r["label"], "delta": _plain(r[f"{column}_delta"])}


def _by_method(rows: Iterable[dict], column: str) -> dict[str, Any]:
    return {r["method"]: _plain(r[column]) for r in rows}


def summarize_drift(
    ranking: pl.DataFrame,
    classes: pl.DataFrame | None,
    metrics: pl.DataFrame | None,
    alerts: pl.DataFrame,
) -> dict[str, Any]:
    """A small JSON-ready summary of the drift tables, for run metadata.

    Parameters
    ----------
    ranking, classes, metrics, alerts : polars.DataFrame
        Outputs of :func:`ranking_drift`, :func:`class_ranking_drift`,
        :func:`class_metric_drift` and :func:`drift_alerts`; ``classes`` and ``metrics``
        may be None.

    Returns
    -------
    dict
        - ``n_alerts`` (int) and ``alerts_by_kind`` ({kind: int}, only kinds that occur);
        - ``k`` (int or None): the largest k of ``ranking``;
        - ``jaccard`` ({method: float or None}): Jaccard at ``k`` of each method in both
          versions;
        - ``min_jaccard`` ({method: float or None}): the smallest Jaccard over all k;
        - ``spearman`` ({method: float or None});
        - ``only_previous``, ``only_current`` (list of str): methods in one version only;
        - ``accuracy_delta`` (float or None): overall ("(all)") accuracy change;
        - ``largest_accuracy_drop``, ``largest_selectivity_drop``: ``{"label", "delta"}``
          of the class with the most negative delta, or None when no class fell;
        - ``min_class_jaccard`` (``{"method", "label", "k", "jaccard"}`` or None): the
          per-class ranking that moved most at its largest k.

    Examples
    --------
    >>> table = pl.DataFrame({"method": ["m"] * 3, "neuron": [0, 1, 2], "score": [3.0, 2.0, 1.0],
    ...                       "rank": [1, 2, 3]})
    >>> drift = ranking_drift(table, table, ks=[1, 2])
    >>> summary = summarize_drift(drift, None, None, drift_alerts(drift, None, None, DriftThresholds()))
    >>> summary["n_alerts"], summary["k"], summary["jaccard"], summary["spearman"]
    (0, 2, {'m': 1.0}, {'m': 1.0})
    """
    both = ranking.filter(pl.col("status") == "both")
    k = _plain(ranking["k"].max()) if len(ranking) else None
    at_k = both.filter(pl.col("k") == k).sort("method").to_dicts()
    min_jaccard = both.group_by("method").agg(pl.col("jaccard").min()).sort("method").to_dicts()
    spearman = both.group_by("method").agg(pl.col("spearman").first()).sort("method").to_dicts()
    overall = None
    if metrics is not None:
        overall_rows = metrics.filter(pl.col("label") == OVERALL_LABEL)
        overall = _plain(overall_rows["accuracy_delta"][0]) if len(overall_rows) else None
    min_class = None
    if classes is not None and len(classes):
        moved = (classes.filter((pl.col("status") == "both") & pl.col("jaccard").is_not_null())
                 .filter(pl.col("k") == pl.col("k").max()))
        if len(moved):
            r = moved.sort("jaccard", "method", "label").row(0, named=True)
            min_class = {"method": r["method"], "label": r["label"], "k": r["k"], "jaccard": _plain(r["jaccard"])}
    counts = alerts.group_by("kind").len()
    by_kind = {kind: n for kind, n in counts.iter_rows()}
    return {
        "n_alerts": len(alerts),
        "alerts_by_kind": {kind: by_kind[kind] for kind in ALERT_KINDS if kind in by_kind},
        "k": k,
        "jaccard": _by_method(at_k, "jaccard"),
        "min_jaccard": _by_method(min_jaccard, "jaccard"),
        "spearman": _by_method(spearman, "spearman"),
        "only_previous": sorted(set(ranking.filter(pl.col("status") == "only_previous")["method"].to_list())),
        "only_current": sorted(set(ranking.filter(pl.col("status") == "only_current")["method"].to_list())),
        "accuracy_delta": overall,
        "largest_accuracy_drop": _largest_drop(metrics, "accuracy"),
        "largest_selectivity_drop": _largest_drop(metrics, "selectivity"),
        "min_class_jaccard": min_class,
    }


def activation_drift(previous: np.ndarray, current: np.ndarray, *, n_layers: int, hidden_size: int) -> pl.DataFrame:
    """How much each layer's units still compute the same thing: per neuron, the Pearson
    correlation of its activations in the two versions over the same words, summarised per layer.

    A low Jaccard of the top neurons with high correlations here means the ranking changed
    its mind among similar units; low correlations mean the units themselves changed
    (typical of the upper layers after fine-tuning).

    Parameters
    ----------
    previous, current : array-like of shape (n_words, n_layers * hidden_size)
        Activations of the same words, in the same row order, from the two versions.
    n_layers, hidden_size : int
        The neuron layout (neuron ``i`` is layer ``i // hidden_size``); both versions must share it.

    Returns
    -------
    polars.DataFrame
        One row per layer: ``layer``, ``n_neurons``, ``n_constant`` (units constant in either
        version, whose correlation is undefined and left out), ``corr_median``, ``corr_p05``,
        ``corr_p95``, ``corr_mean`` (Float64; null when every unit of the layer is constant).

    Raises
    ------
    ValueError
        When the shapes differ, do not match the layout, or there are fewer than 2 words.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> a = rng.normal(size=(50, 4))
    >>> activation_drift(a, a, n_layers=2, hidden_size=2)["corr_median"].to_list()
    [1.0, 1.0]
    """
    owner = "activation_drift"
    a = np.asarray(previous, dtype=np.float64)
    b = np.asarray(current, dtype=np.float64)
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"{owner}: previous and current must be 2-D arrays of the same shape; got "
                         f"{a.shape} and {b.shape}.")
    if a.shape[1] != n_layers * hidden_size:
        raise ValueError(f"{owner}: expected {n_layers} × {hidden_size} = {n_layers * hidden_size} columns, "
                         f"got {a.shape[1]}.")
    if a.shape[0] < 2:
        raise ValueError(f"{owner}: need at least 2 words to correlate, got {a.shape[0]}.")
    a = a - a.mean(0)
    b = b - b.mean(0)
    sa, sb = np.sqrt((a * a).sum(0)), np.sqrt((b * b).sum(0))
    constant = (sa == 0) | (sb == 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = (a * b).sum(0) / (sa * sb)
    rows = []
    for layer in range(n_layers):
        cols = slice(layer * hidden_size, (layer + 1) * hidden_size)
        c = corr[cols][~constant[cols]]
        stats = (np.median(c), np.percentile(c, 5), np.percentile(c, 95), c.mean()) if c.size else (None,) * 4
        rows.append({"layer": layer, "n_neurons": hidden_size, "n_constant": int(constant[cols].sum()),
                     **dict(zip(("corr_median", "corr_p05", "corr_p95", "corr_mean"),
                                [None if v is None else float(np.clip(v, -1.0, 1.0)) for v in stats]))})
    return pl.DataFrame(rows, schema={"layer": pl.Int32, "n_neurons": pl.Int32, "n_constant": pl.Int32,
                                      "corr_median": pl.Float64, "corr_p05": pl.Float64, "corr_p95": pl.Float64,
                                      "corr_mean": pl.Float64})

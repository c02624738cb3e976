"""Optional class balancing: undersample the majority classes of a set of training rows.

A rule-based concept is usually rare ("date" words are a few percent of a corpus), and a
probe trained on such rows can score well by predicting the majority class. Balancing keeps
every row of the small classes and a random subset of the large ones.

:func:`balance_labels` only *chooses* rows; it returns their indices, which the caller applies
to the training rows (never to dev or test, whose class mix should stay natural). Each class is
sampled by its own generator, seeded from ``seed`` and the class label, so a class's sample
does not depend on the order of the rows' classes or on which other classes are present.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral
from typing import Any, Literal

import numpy as np

__all__ = ["BalanceResult", "balance_labels"]

_TARGETS = ("minority",)


@dataclass(frozen=True)
class BalanceResult:
    """Which rows a balancing kept, and the class counts before and after.

    Attributes
    ----------
    indices : numpy.ndarray
        int64, sorted ascending, no duplicates, read-only: positions of the kept rows in the
        labels given to :func:`balance_labels`.
    counts_before, counts_after : dict
        Label to number of rows, sorted by label. Labels are Python ``str`` or ``int``.
    seed : int
        The seed used.
    target : "minority" or int
        The target as given.
    target_size : int
        The per-class cap that was applied (the smallest class size for ``"minority"``).
    """

    indices: np.ndarray
    counts_before: dict[Any, int]
    counts_after: dict[Any, int]
    seed: int
    target: Literal["minority"] | int
    target_size: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly provenance (labels as strings; the indices as a count and a digest).

        Returns
        -------
        dict
            Keys ``seed``, ``target``, ``target_size``, ``n_rows_before``, ``n_rows_after``,
            ``counts_before``, ``counts_after``, ``indices_sha256`` (first 16 hex digits of a
            SHA-256 over the int64 indices, to tell whether two runs kept the same rows).
        """
        return {
            "seed": self.seed,
            "target": self.target,
            "target_size": self.target_size,
            "n_rows_before": int(sum(self.counts_before.values())),
            "n_rows_after": int(self.indices.size),
            "counts_before": {str(k): v for k, v in self.counts_before.items()},
            "counts_after": {str(k): v for k, v in self.counts_after.items()},
            "indices_sha256": hashlib.sha256(
                self.indices.astype("<i8").tobytes()
            ).hexdigest()[:16],
        }

    def to_json(self) -> str:
        """:meth:`to_dict` as a JSON string with sorted keys.

        Examples
        --------
        >>> result = balance_labels(["a", "a", "b"], seed=0)
        >>> json.loads(result.to_json())["counts_after"]
        {'a': 1, 'b': 1}
        """
        return json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False)


def _check_labels(labels: Sequence[str] | np.ndarray) -> np.ndarray:
    if isinstance(labels, (str, bytes)):
        raise TypeError(f"labels must be a sequence of labels, not a single string {labels!r}.")
    array = np.asarray(labels)
    if array.ndim != 1:
        raise ValueError(
            f"labels must be 1-D (one label per row); got shape {array.shape}."
        )
    if array.size == 0:
        raise ValueError("labels is empty; balancing needs at least one row.")
    if array.dtype.kind not in "USiub":
        bad = next((v for v in array.tolist() if not isinstance(v, (str, int))), array[0])
        raise TypeError(
            f"labels must be strings or integers; got dtype {array.dtype} (e.g. {bad!r})."
        )
    return array


def _class_rng(seed: int, label: Any) -> np.random.Generator:
    # One generator per class, from the seed and the label's text: a class's sample then
    # depends only on its own rows, not on how many classes precede it in any order.
    label_key = int.from_bytes(hashlib.sha256(str(label).encode("utf-8")).digest()[:8], "big")
    return np.random.default_rng([seed, label_key])


def balance_labels(
    labels: Sequence[str] | np.ndarray,
    *,
    seed: int,
    target: Literal["minority"] | int = "minority",
) -> BalanceResult:
    """Undersample every class larger than the target size, without replacement.

    Parameters
    ----------
    labels : sequence of str or numpy.ndarray
        One label per row (strings or integers), e.g. the training labels of a probe.
    seed : int
        Non-negative; the same labels and seed always keep the same rows.
    target : "minority" or int, default "minority"
        Per-class cap: ``"minority"`` caps every class at the size of the smallest class
        (binary or multi-class); an int ``n >= 1`` caps every class at ``n`` rows. Classes
        at or below the cap keep all their rows: nothing is oversampled or dropped entirely.

    Returns
    -------
    BalanceResult
        ``indices`` (sorted positions of the kept rows), the counts before and after.

    Raises
    ------
    ValueError
        If ``labels`` is empty or not 1-D, ``target`` is an unknown string or an int below 1,
        or ``seed`` is negative.
    TypeError
        If ``seed`` or ``target`` is not an int (a bool is not accepted), or a label is
        neither a string nor an integer.

    Examples
    --------
    >>> result = balance_labels(["O", "O", "date", "O", "O", "date"], seed=0)
    >>> result.counts_before, result.counts_after
    ({'O': 4, 'date': 2}, {'O': 2, 'date': 2})
    >>> [int(i) for i in result.indices if i in (2, 5)]
    [2, 5]
    >>> balance_labels(["a", "a", "a", "b"], seed=0, target=2).counts_after
    {'a': 2, 'b': 1}
    """
    if isinstance(seed, bool) or not isinstance(seed, Integral):
        raise TypeError(f"seed must be an int; got {type(seed).__name__} {seed!r}.")
    if seed < 0:
        raise ValueError(f"seed must be >= 0; got {seed}.")
    seed = int(seed)
    if isinstance(target, str):
        if target not in _TARGETS:
            raise ValueError(
                f"Unknown target {target!r}; choose 'minority' or a positive int (a cap per class)."
            )
    elif isinstance(target, bool) or not isinstance(target, Integral):
        raise TypeError(
            f"target must be 'minority' or a positive int; got {type(target).__name__} {target!r}."
        )
    elif target < 1:
        raise ValueError(f"target must be >= 1 rows per class; got {target}.")
    else:
        target = int(target)
    array = _check_labels(labels)

    classes, inverse, sizes = np.unique(array, return_inverse=True, return_counts=True)
    target_size = int(sizes.min()) if target == "minority" else target
    order = np.argsort(inverse, kind="stable")  # rows grouped by class, in row order
    bounds = np.concatenate(([0], np.cumsum(sizes)))
    kept = []
    counts_before: dict[Any, int] = {}
    counts_after: dict[Any, int] = {}
    for index, label in enumerate(classes.tolist()):
        rows = order[bounds[index]:bounds[index + 1]]
        if rows.size > target_size:
            rows = _class_rng(seed, label).choice(rows, size=target_size, replace=False)
        kept.append(rows)
        counts_before[label] = int(sizes[index])
        counts_after[label] = int(rows.size)
    indices = np.sort(np.concatenate(kept)).astype(np.int64)
    indices.setflags(write=False)
    return BalanceResult(indices, counts_before, counts_after, seed, target, target_size)

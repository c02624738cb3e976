"""Which words make a neuron fire? Rank word types by a neuron's standardized activation.

Start here: :func:`top_words` takes one activation per token and the token's word, and
returns the word types that move that neuron furthest from its mean.
:func:`top_words_table` does the same for many neurons (columns of ``X``) at once and
returns one long table, ready to store.

The score is NeuroX's ``analysis.corpus.get_top_words`` (master @ a9ac7cd), computed with
arrays instead of a Python loop:

1. ``z = |a - mean(a)| / std(a)`` for every token, over all tokens of the corpus
   (population standard deviation, ``ddof=0``, as ``np.std``);
2. per word type, the **mean of** ``|z|`` over its occurrences (not ``|mean z|``: a type
   that fires strongly in both directions still scores high);
3. divide by the largest type score, so the best type scores 1.0;
4. keep the types whose score is strictly greater than ``min_threshold`` and, when
   ``num_tokens > 0``, only the first ``num_tokens`` of them.

Word types are compared exactly (case-sensitive, no normalisation), as in NeuroX.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from numbers import Integral, Real

import numpy as np
import polars as pl

from neuro_pipeline.matrix import take_columns

logger = logging.getLogger(__name__)

#: Neurons standardized at a time by :func:`top_words_table`; bounds the float64 working
#: set to ``n_tokens * _NEURON_BLOCK`` values (25k tokens -> 25 MB).
_NEURON_BLOCK = 128
_BLOCK_VALUES = 4_000_000

_TOP_WORDS_SCHEMA = {"word": pl.Utf8, "score": pl.Float64, "count": pl.Int64}
_TABLE_SCHEMA = {
    "neuron": pl.Int32,
    "rank": pl.Int32,
    "word": pl.Utf8,
    "score": pl.Float64,
    "count": pl.Int64,
}


def _check_words(words: Sequence[str], owner: str) -> np.ndarray:
    """Words as a NumPy object array of ``str`` (every element must be one). Objects, not a
    fixed-width unicode array: one long word would make every element as wide as it."""
    if isinstance(words, str):
        raise TypeError(f"{owner}: words must be a sequence of strings (one per token); got one str.")
    words = list(words)
    if not words:
        raise ValueError(f"{owner}: words is empty; at least one token is needed.")
    for i, word in enumerate(words):
        if not isinstance(word, str):
            raise TypeError(
                f"{owner}: words[{i}] is {type(word).__name__} {word!r}; every token must be a str."
            )
    out = np.empty(len(words), dtype=object)
    out[:] = words
    return out


def _check_options(num_tokens, min_threshold, owner: str) -> None:
    if isinstance(num_tokens, bool) or not isinstance(num_tokens, Integral) or num_tokens < 0:
        raise ValueError(
            f"{owner}: num_tokens must be an int >= 0 (0 = every type above min_threshold); "
            f"got {num_tokens!r}."
        )
    if (
        isinstance(min_threshold, bool)
        or not isinstance(min_threshold, Real)
        or not 0.0 <= float(min_threshold) < 1.0
    ):
        raise ValueError(
            f"{owner}: min_threshold must be a number in [0, 1) (scores are normalised so the "
            f"best type scores 1.0); got {min_threshold!r}."
        )


def _type_scores(z_abs: np.ndarray, inverse: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Mean ``|z|`` per type, divided by its maximum (all zeros when the maximum is 0)."""
    means = np.bincount(inverse, weights=z_abs, minlength=len(counts)) / counts
    top = means.max()
    return means / top if top > 0 else means


def _standardized_abs(A: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``|z|`` per column of ``A`` (float64), and a mask of the columns with zero variance.

    A constant column has no spread to explain; its ``|z|`` is defined as 0 everywhere
    (NeuroX divides by zero there and returns NaN scores).
    """
    A = np.asarray(A, dtype=np.float64)
    # max == min is exact; a rounded mean of a constant column can leave a tiny nonzero std.
    constant = A.max(axis=0) == A.min(axis=0)
    centred = A - A.mean(axis=0)
    std = np.sqrt((centred * centred).mean(axis=0))
    with np.errstate(divide="ignore", invalid="ignore"):
        z_abs = np.abs(centred / np.where(constant, 1.0, std))
    z_abs[:, constant] = 0.0
    return z_abs, constant


def _select(scores: np.ndarray, num_tokens: int, min_threshold: float) -> np.ndarray:
    """Indices of the kept types: score desc, then word asc."""
    keep = np.flatnonzero(scores > min_threshold)
    # Types come from np.unique, so index order is word order: a stable sort on -score
    # breaks ties by word.
    keep = keep[np.argsort(-scores[keep], kind="stable")]
    return keep[:num_tokens] if num_tokens > 0 else keep


def top_words(
    words: Sequence[str],
    activations,
    *,
    num_tokens: int = 0,
    min_threshold: float = 0.1,
) -> pl.DataFrame:
    """The word types that drive one neuron furthest from its mean activation.

    NeuroX's ``get_top_words`` definition: mean of ``|z|`` per word type, normalised by the
    best type (see the module docstring). ``min_threshold`` follows NeuroX **master**
    semantics (keep scores ``> min_threshold``; NeuroX 1.0.9 on PyPI hard-codes 0.1), but
    unlike master, ``num_tokens`` and ``min_threshold`` may be given together: the
    threshold applies first, then the cut to ``num_tokens`` types. (Master raises when
    both are given and otherwise applies 0.1 before ``num_tokens``, which is what the
    defaults here do.)

    Parameters
    ----------
    words : sequence of str, length n_tokens
        The word of every token, in the order of ``activations``.
    activations : array-like of shape (n_tokens,)
        The neuron's activation on every token; finite real numbers.
    num_tokens : int, default 0
        Keep at most this many types; 0 keeps every type above ``min_threshold``.
    min_threshold : float in [0, 1), default 0.1
        Keep types whose normalised score is strictly greater than this.

    Returns
    -------
    polars.DataFrame
        Columns ``word`` (Utf8), ``score`` (Float64, the best type scores 1.0) and
        ``count`` (Int64, occurrences of the type), sorted by score descending, then word.
        When the neuron is constant (standard deviation 0) every score is 0, so no type
        passes the threshold and the table is empty; a warning is logged.

    Raises
    ------
    TypeError
        If ``words`` is not a sequence of ``str`` or ``activations`` is not numeric.
    ValueError
        If ``activations`` is not 1-D, has a different length than ``words``, holds a
        non-finite value, or if ``num_tokens``/``min_threshold`` are out of range.

    Examples
    --------
    Activations ``[0, 0, 3, 1]`` have mean 1, so ``|a - mean|`` is ``[1, 1, 2, 0]``:
    "the" averages 1, "cat" 2, "sat" 0. Dividing by the standard deviation scales every
    type alike, so after normalisation "cat" scores 1.0, "the" 0.5 and "sat" 0.0 (dropped).

    >>> top_words(["the", "the", "cat", "sat"], [0.0, 0.0, 3.0, 1.0]).rows()
    [('cat', 1.0, 1), ('the', 0.5, 2)]
    """
    owner = "top_words"
    _check_options(num_tokens, min_threshold, owner)
    words_arr = _check_words(words, owner)
    a = np.asarray(activations)
    if a.dtype.kind not in "fiub":
        raise TypeError(f"{owner}: activations must be real numbers; got dtype {a.dtype}.")
    if a.ndim != 1:
        raise ValueError(
            f"{owner}: activations must be 1-D (n_tokens,); got shape {a.shape}. "
            "For several neurons use top_words_table(words, X, neurons)."
        )
    if len(a) != len(words_arr):
        raise ValueError(
            f"{owner}: {len(words_arr)} words but {len(a)} activations; expected one "
            "activation per token."
        )
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        row = int(np.flatnonzero(~np.isfinite(a))[0])
        raise ValueError(f"{owner}: activations has a non-finite value ({a[row]}) at token {row}.")
    types, inverse, counts = np.unique(words_arr, return_inverse=True, return_counts=True)
    z_abs, constant = _standardized_abs(a[:, None])
    if constant[0]:
        logger.warning("top_words: the neuron is constant (std 0); every score is 0, no word is kept.")
    scores = _type_scores(z_abs[:, 0], inverse.ravel(), counts)
    keep = _select(scores, int(num_tokens), float(min_threshold))
    return pl.DataFrame(
        {"word": types[keep].tolist(), "score": scores[keep], "count": counts[keep]},
        schema=_TOP_WORDS_SCHEMA,
    )


def top_words_table(
    words: Sequence[str],
    X,
    neurons: Sequence[int],
    *,
    num_tokens: int = 10,
    min_threshold: float = 0.1,
) -> pl.DataFrame:
    """:func:`top_words` for several neurons (columns of ``X``), as one long table.

    Only the requested columns of ``X`` are read (``X`` may be a memmap larger than
    memory) and ``X`` is never modified. The word types are found once; each neuron then
    costs one ``np.bincount``.

    Parameters
    ----------
    words : sequence of str, length n_tokens
        The word of every row of ``X``.
    X : numpy.ndarray of shape (n_tokens, n_neurons)
        Activations; the requested columns must be finite.
    neurons : sequence of int
        Column indices of ``X``, distinct; the table keeps their order.
    num_tokens : int, default 10
        Types per neuron; 0 keeps every type above ``min_threshold``.
    min_threshold : float in [0, 1), default 0.1
        As in :func:`top_words` (NeuroX master semantics).

    Returns
    -------
    polars.DataFrame
        Columns ``neuron`` (Int32), ``rank`` (Int32, 1 = best), ``word`` (Utf8), ``score``
        (Float64) and ``count`` (Int64). A constant neuron has no rows (see
        :func:`top_words`).

    Raises
    ------
    TypeError
        If ``words`` holds a non-string, ``X`` is not a numeric array or ``neurons`` holds
        a non-integer.
    ValueError
        If ``X`` is not 2-D, its row count differs from ``len(words)``, a neuron index is
        out of range or repeated, a requested column holds a non-finite value, or the
        options are out of range.

    Examples
    --------
    >>> X = np.array([[0.0, 5.0], [0.0, 5.0], [3.0, 5.0], [1.0, 5.0]])
    >>> top_words_table(["the", "the", "cat", "sat"], X, [0, 1]).rows()
    [(0, 1, 'cat', 1.0, 1), (0, 2, 'the', 0.5, 2)]
    """
    owner = "top_words_table"
    _check_options(num_tokens, min_threshold, owner)
    words_arr = _check_words(words, owner)
    if not isinstance(X, np.ndarray):
        X = np.asarray(X)
    if X.dtype.kind not in "fiub":
        raise TypeError(f"{owner}: X must hold real numbers; got dtype {X.dtype}.")
    if X.ndim != 2:
        raise ValueError(f"{owner}: X must be 2-D (n_tokens, n_neurons); got shape {X.shape}.")
    if X.shape[0] != len(words_arr):
        raise ValueError(
            f"{owner}: X has {X.shape[0]} rows but there are {len(words_arr)} words; "
            "expected one row per token."
        )
    neuron_list = list(neurons)
    for neuron in neuron_list:
        if isinstance(neuron, bool) or not isinstance(neuron, Integral):
            raise TypeError(f"{owner}: neuron indices must be ints; got {neuron!r}.")
        if not 0 <= neuron < X.shape[1]:
            raise ValueError(
                f"{owner}: neuron {neuron} is out of range; X has {X.shape[1]} neurons "
                f"(valid indices 0..{X.shape[1] - 1})."
            )
    if len(set(neuron_list)) != len(neuron_list):
        seen: set[int] = set()
        dup = next(n for n in neuron_list if n in seen or seen.add(n))
        raise ValueError(f"{owner}: neuron {dup} is requested twice; give each neuron once.")

    types, inverse, counts = np.unique(words_arr, return_inverse=True, return_counts=True)
    inverse = inverse.ravel()
    out = {name: [] for name in _TABLE_SCHEMA}
    # The requested columns once (a memmap's in one sequential pass), then standardized a
    # block at a time, the block small enough that its float64 working set stays near
    # _BLOCK_VALUES values whatever the corpus size (128 neurons of 269k words took 0.6 GB).
    # Column by column: each neuron is standardized and scored on its own.
    selected = take_columns(X, neuron_list, order="F")
    step = max(1, min(_NEURON_BLOCK, _BLOCK_VALUES // max(1, X.shape[0])))
    for start in range(0, len(neuron_list), step):
        block = neuron_list[start : start + step]
        A = selected[:, start : start + step]
        if A.dtype.kind == "f" and not np.isfinite(A).all():
            row, col = np.argwhere(~np.isfinite(A))[0]
            raise ValueError(
                f"{owner}: X has a non-finite value ({A[row, col]}) at row {row}, column "
                f"{block[col]}; activations must be finite."
            )
        z_abs, constant = _standardized_abs(A)
        for j, neuron in enumerate(block):
            if constant[j]:
                logger.warning("%s: neuron %d is constant (std 0); no word is kept.", owner, neuron)
            scores = _type_scores(z_abs[:, j], inverse, counts)
            keep = _select(scores, int(num_tokens), float(min_threshold))
            out["neuron"].append(np.full(len(keep), neuron))
            out["rank"].append(np.arange(1, len(keep) + 1))
            out["word"].append(types[keep])
            out["score"].append(scores[keep])
            out["count"].append(counts[keep])
    columns = {
        name: (np.concatenate(parts) if parts else np.empty(0)) for name, parts in out.items()
    }
    columns["word"] = columns["word"].astype(str).tolist()
    return pl.DataFrame(columns, schema=_TABLE_SCHEMA)

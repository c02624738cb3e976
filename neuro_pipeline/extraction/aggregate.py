"""Turn subword activations into word activations (NeuroX's ``aggregate_repr``).

A tokenizer splits a word such as ``"unhappiness"`` into several subwords; the analysis
works on words, so each word gets one vector per layer: that of its first subword, its last
subword, or the mean over its subwords. Everything here is vectorised over words.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch

from neuro_pipeline.options import AGGREGATION_ALIASES, AGGREGATIONS

__all__ = [
    "ACCEPTED_AGGREGATIONS",
    "AGGREGATIONS",
    "AGGREGATION_ALIASES",
    "aggregate_subwords",
    "check_aggregation",
    "select_and_aggregate",
]

#: Valid values of ``how``: the aggregations, then their aliases (``"average"`` is NeuroX's
#: name for ``"mean"``).
ACCEPTED_AGGREGATIONS: tuple[str, ...] = (*AGGREGATIONS, *AGGREGATION_ALIASES)

Aggregation = Literal["first", "last", "mean", "average"]


def check_aggregation(how: str) -> str:
    """Return the canonical name of an aggregation (``"average"`` -> ``"mean"``).

    Raises
    ------
    ValueError
        If ``how`` is not one of :data:`ACCEPTED_AGGREGATIONS`.
    """
    if how not in ACCEPTED_AGGREGATIONS:
        raise ValueError(f"Unknown aggregation {how!r}; choose one of {list(ACCEPTED_AGGREGATIONS)}.")
    return AGGREGATION_ALIASES.get(how, how)


def _rows(layer: np.ndarray | torch.Tensor, index: np.ndarray) -> np.ndarray:
    """Rows ``index`` of a 2-D layer as a float32 numpy array."""
    if isinstance(layer, np.ndarray):
        return layer[index].astype(np.float32, copy=False)
    if layer.device.type == "cpu" and layer.dtype == torch.float32:
        # numpy indexing is single-threaded: for copies this small, torch's intra-op
        # threads cost more than they save, and far more when the cores are busy.
        return layer.numpy()[index]
    if layer.device.type == "cpu" and layer.dtype == torch.bfloat16:
        # The same in numpy, which has no bfloat16: a bfloat16 is the high half of the
        # float32 of the same value, so widening the bits is exact (3x faster than
        # index_select and .float() for a batch of MiniLM's layers).
        bits = layer.view(torch.int16).numpy().view(np.uint16)[index]
        return (bits.astype(np.uint32) << 16).view(np.float32)
    if layer.device.type == "cpu" and layer.dtype == torch.float16:
        return layer.view(torch.int16).numpy().view(np.float16)[index].astype(np.float32)
    picked = layer.index_select(0, torch.from_numpy(index).to(layer.device))
    return picked.float().cpu().numpy()


def select_and_aggregate(
    layers: Sequence[np.ndarray | torch.Tensor],
    positions: np.ndarray,
    word_index: np.ndarray,
    n_words: int,
    how: str,
) -> np.ndarray:
    """Aggregate the rows ``positions`` of each layer into ``n_words`` rows.

    ``layers`` holds one (n_positions, hidden_size) array or tensor per layer (any device
    and dtype); ``word_index[i]`` is the word of row ``positions[i]``, and every word in
    ``range(n_words)`` must own at least one row. "first" and "last" follow the order of
    ``positions``. Returns (n_words, n_layers, hidden_size) float32. Only the rows needed
    are copied, so padding and special tokens cost nothing, and there is no loop over
    words: "mean" loops over subword rank (at most the longest word's subword count).
    """
    order = np.argsort(word_index, kind="stable")
    sorted_positions = positions[order]
    counts = np.bincount(word_index, minlength=n_words)
    starts = np.cumsum(counts) - counts
    out = np.empty((n_words, len(layers), layers[0].shape[-1]), dtype=np.float32)
    if how in ("first", "last"):
        chosen = sorted_positions[starts if how == "first" else starts + counts - 1]
        for layer_index, layer in enumerate(layers):
            out[:, layer_index] = _rows(layer, chosen)
        return out
    # Rows are sorted by word, so the r-th subword of word w sits at starts[w] + r.
    longer = [np.flatnonzero(counts > rank) for rank in range(1, int(counts.max(initial=1)))]
    for layer_index, layer in enumerate(layers):
        rows = _rows(layer, sorted_positions)
        sums = rows[starts]
        for rank, words in enumerate(longer, start=1):
            sums[words] += rows[starts[words] + rank]
        out[:, layer_index] = sums
    out /= counts.astype(np.float32)[:, None, None]
    return out


def aggregate_subwords(
    hidden: np.ndarray | torch.Tensor,
    word_ids: Sequence[int | None],
    n_words: int,
    how: Aggregation,
) -> np.ndarray:
    """Aggregate one sentence's subword activations into one vector per word and layer.

    Parameters
    ----------
    hidden : ndarray or Tensor of shape (n_layers, n_subwords, hidden_size)
        Activations of every subword position (special tokens included or not).
    word_ids : sequence of int or None, length n_subwords
        The word each position belongs to, as from ``BatchEncoding.word_ids()``; ``None``
        marks positions that belong to no word (special tokens, padding) and are ignored.
    n_words : int
        Number of words in the sentence.
    how : {"first", "last", "mean", "average"}
        Which subword represents the word; ``"average"`` is an alias of ``"mean"``.

    Returns
    -------
    ndarray of shape (n_words, n_layers, hidden_size), float32
        On the CPU, whatever the device and dtype of ``hidden``.

    Raises
    ------
    ValueError
        If ``how`` is unknown, ``hidden`` is not 3-D, ``word_ids`` has the wrong length or
        an id outside ``[0, n_words)``, or a word has no subword (it would otherwise be
        dropped or zero-filled without notice).

    Examples
    --------
    >>> h = np.arange(8, dtype=np.float32).reshape(1, 4, 2)  # 1 layer, 4 subwords
    >>> aggregate_subwords(h, [None, 0, 0, 1], 2, "mean")[:, 0]
    array([[3., 4.],
           [6., 7.]], dtype=float32)
    >>> aggregate_subwords(h, [None, 0, 0, 1], 2, "first")[:, 0]
    array([[2., 3.],
           [6., 7.]], dtype=float32)
    """
    how = check_aggregation(how)
    tensor = torch.as_tensor(hidden)
    if tensor.dim() != 3:
        raise ValueError(
            f"hidden must be 3-D (n_layers, n_subwords, hidden_size); got shape "
            f"{tuple(tensor.shape)}."
        )
    if len(word_ids) != tensor.shape[1]:
        raise ValueError(
            f"word_ids has {len(word_ids)} entries but hidden has {tensor.shape[1]} subword "
            "positions; expected one word id (or None) per position."
        )
    ids = np.array(word_ids, dtype=np.float64).reshape(-1)  # None -> nan
    valid = ~np.isnan(ids)
    index = ids[valid].astype(np.int64)
    if index.size and (index.min() < 0 or index.max() >= n_words):
        raise ValueError(
            f"word_ids must lie in [0, {n_words}) for n_words={n_words}; got ids from "
            f"{index.min()} to {index.max()}."
        )
    counts = np.bincount(index, minlength=n_words)
    if (counts == 0).any():
        missing = np.flatnonzero(counts == 0).tolist()
        raise ValueError(
            f"Words {missing[:10]} have no subword in word_ids; every one of the {n_words} "
            "words needs at least one."
        )
    return select_and_aggregate(list(tensor), np.flatnonzero(valid), index, n_words, how)

"""Word-level activations of every layer of a model, for pre-tokenised sentences.

Start here: :func:`extract_activations` takes a :class:`~.model.LoadedModel` and a list of
sentences (each a list of words) and yields, per sentence, an array of shape
``(n_words, n_layers, hidden_size)``: the embedding layer plus every transformer layer,
one vector per word (subwords aggregated by :func:`~.aggregate.aggregate_subwords`).

How it differs from NeuroX's ``extract_representations``:

* sentences are batched, sorted by subword length so that batches carry little padding;
  attention masks make batched results equal one-sentence-at-a-time results;
* sentences longer than the model's limit are split into overlapping windows (or rejected
  when asked), never silently truncated;
* a word the tokenizer turns into nothing is fed as the unknown token and counted, never
  dropped or zero-filled.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from neuro_pipeline.extraction.aggregate import (
    Aggregation,
    check_aggregation,
    select_and_aggregate,
)
from neuro_pipeline.extraction.model import LoadedModel

__all__ = ["ExtractionStats", "LONG_SENTENCE_MODES", "extract_activations"]

logger = logging.getLogger(__name__)

#: Valid values of ``long_sentences``.
LONG_SENTENCE_MODES: tuple[str, ...] = ("window", "reject")

# Sentences are tokenised and length-sorted in chunks of this many, which bounds the memory
# held for tokenised text while keeping padding low.
_CHUNK_SENTENCES = 4096
# Explicit, because a tokenizer.json may switch truncation or fixed padding on (MiniLM's
# says 128); long sentences are handled here, and padding is done per batch.
# verbose=False: the tokenizer's "longer than the maximum" warning does not apply.
_NO_PAD_OR_TRUNCATE = {"padding": False, "truncation": False, "verbose": False}


@dataclass
class ExtractionStats:
    """Counts gathered by :func:`extract_activations`.

    Counts are added to, so one instance can total several calls. A sentence's counts are
    added when it finishes: just before it is yielded, or when it is rejected. So while
    iterating, ``n_windowed_sentences`` grows exactly when a windowed sentence comes out.

    Parameters
    ----------
    n_sentences : int
        Sentences finished: yielded or rejected.
    n_words : int
        Word vectors yielded.
    n_subwords : int
        Subwords of the yielded sentences, special tokens excluded; each subword counts
        once even when windows overlap.
    n_windowed_sentences : int
        Sentences longer than the model's limit that were split into windows.
    n_rejected_sentences : int
        Sentences longer than the limit that were skipped (``long_sentences="reject"``).
    rejected_sentence_indices : list of int
        Indices (into the ``sentences`` argument) of the rejected sentences.
    n_words_without_subwords : int
        Words the tokenizer turned into zero subwords (e.g. ``"\\u200b"``); each was fed to
        the model as the tokenizer's unknown token instead.
    """

    n_sentences: int = 0
    n_words: int = 0
    n_subwords: int = 0
    n_windowed_sentences: int = 0
    n_rejected_sentences: int = 0
    rejected_sentence_indices: list[int] = field(default_factory=list)
    n_words_without_subwords: int = 0


@dataclass
class _Item:
    """One row of a forward pass: a whole sentence, or one window of a long sentence."""

    sentence: int
    window: int  # -1 for a whole sentence
    n_words: int
    ids: list[int]
    type_ids: list[int]
    word_ids: np.ndarray  # int64 per subword position, -1 for special tokens
    n_unknown: int  # words of the sentence fed as the unknown token


@dataclass
class _Pending:
    """A windowed sentence whose windows are not all computed yet."""

    out: np.ndarray  # (n_words, n_layers, hidden_size)
    windows: list[tuple[int, int]]
    owner: np.ndarray  # window index each word takes its vector from
    n_subwords: int
    n_unknown: int
    remaining: int


def _word_ids(encoding) -> np.ndarray:
    ids = np.array(encoding.word_ids, dtype=np.float64)  # None -> nan
    return np.nan_to_num(ids, nan=-1.0).astype(np.int64)


def _plan_windows(counts: np.ndarray, budget: int) -> list[tuple[int, int]]:
    """Split words with subword ``counts`` into ``[start, end)`` windows of <= budget subwords.

    Each window takes as many whole words as fit; the next one starts at the first word at
    or after the middle of the previous window, so consecutive windows share about half a
    window of context. Every word must fit on its own (``counts.max() <= budget``).
    """
    ends = np.cumsum(counts)
    starts = ends - counts
    n_words = len(counts)
    windows = []
    start = 0
    while True:
        end = int(np.searchsorted(ends, starts[start] + budget, side="right"))
        windows.append((start, end))
        if end >= n_words:
            return windows
        middle = starts[start] + (ends[end - 1] - starts[start]) // 2
        start = min(max(int(np.searchsorted(starts, middle, side="left")), start + 1), end)


def _assign_windows(counts: np.ndarray, windows: list[tuple[int, int]]) -> np.ndarray:
    """For each word, the window in which it is most central (has the most context on its
    shorter side, counted in subwords; the sentence's own edges do not count as a side)."""
    ends = np.cumsum(counts)
    starts = ends - counts
    n_words = len(counts)
    big = int(ends[-1]) + 1
    scores = np.full((len(windows), n_words), -1, dtype=np.int64)
    for k, (start, end) in enumerate(windows):
        left = starts[start:end] - starts[start] if start > 0 else np.full(end - start, big)
        right = ends[end - 1] - ends[start:end] if end < n_words else np.full(end - start, big)
        scores[k, start:end] = np.minimum(left, right)
    return scores.argmax(axis=0)  # ties -> earlier window


def extract_activations(
    model: LoadedModel,
    sentences: Sequence[Sequence[str]],
    *,
    aggregation: Aggregation = "last",
    batch_size: int = 32,
    long_sentences: str = "window",
    stats: ExtractionStats | None = None,
    progress: Callable[[int], None] | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield word activations of every layer for each sentence, in batches.

    Parameters
    ----------
    model : LoadedModel
        From :func:`~neuro_pipeline.extraction.load_model`.
    sentences : sequence of sequence of str
        Pre-tokenised sentences (lists of words, e.g. CoNLL-U forms). None may be empty.
    aggregation : {"first", "last", "mean", "average"}
        Which subword stands for a multi-subword word (NeuroX's default is ``"last"``;
        ``"average"`` is an alias of ``"mean"``).
    batch_size : int
        Sentences (or windows) per forward pass.
    long_sentences : {"window", "reject"}
        What to do with a sentence of more than ``model.max_length`` subwords (special
        tokens included). ``"window"`` runs overlapping windows of whole words, each within
        the limit and overlapping the next by about half a window, and gives every word the
        vector from the window where it is most central. ``"reject"`` yields nothing for
        the sentence and records it in ``stats``. Sentences are never truncated.
    stats : ExtractionStats, optional
        Counts are added to this object as sentences finish.
    progress : callable, optional
        Called after each batch with the number of sentences finished so far in this call
        (yielded or rejected).

    Yields
    ------
    index : int
        Position of the sentence in ``sentences``.
    activations : ndarray of shape (n_words, n_layers, hidden_size), float32
        Layer 0 is the embedding layer. Special tokens are not included.

    Notes
    -----
    Sentences come out in **length order, not input order**: they are sorted by subword
    length (in chunks of at least 4096 sentences) so that each batch holds sentences of
    similar length; use ``index`` to place each result. Rejected sentences are not yielded.

    Padding is masked, so a sentence's result does not depend on its batch (equal within
    float32 rounding, about 1e-6). Each word's vector comes from the model run on its own
    sentence only. A word that the tokenizer maps to no subword at all (a zero-width space,
    a control character) is fed as the tokenizer's unknown token, logged and counted in
    ``stats.n_words_without_subwords``.

    Arguments are checked when the function is called; the model runs as the iterator is
    consumed.

    Raises
    ------
    ValueError
        If ``aggregation``, ``long_sentences`` or ``batch_size`` is invalid, a sentence is
        empty, or (during iteration) a single word has more subwords than fit in one forward
        pass.
    TypeError
        If a sentence is a string rather than a sequence of words.

    Examples
    --------
    >>> loaded = load_model(model_dir)  # doctest: +SKIP
    >>> sentences = [["The", "cat", "sat"], ["Unbelievable", "!"]]
    >>> arrays = dict(extract_activations(loaded, sentences))  # doctest: +SKIP
    >>> arrays[1].shape  # doctest: +SKIP
    (2, 7, 384)
    """
    how = check_aggregation(aggregation)
    if long_sentences not in LONG_SENTENCE_MODES:
        raise ValueError(
            f"Unknown long_sentences mode {long_sentences!r}; choose one of "
            f"{list(LONG_SENTENCE_MODES)}."
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int; got {batch_size!r}.")
    for index, sentence in enumerate(sentences):
        if isinstance(sentence, str):
            raise TypeError(
                f"Sentence {index} is a str ({sentence[:40]!r}); expected a sequence of words, "
                "e.g. sentence.split()."
            )
        if len(sentence) == 0:
            raise ValueError(f"Sentence {index} is empty; every sentence needs at least one word.")
    return _extract(
        model, sentences, how, batch_size, long_sentences,
        stats if stats is not None else ExtractionStats(), progress,
    )


def _extract(
    model: LoadedModel,
    sentences: Sequence[Sequence[str]],
    how: str,
    batch_size: int,
    long_sentences: str,
    stats: ExtractionStats,
    progress: Callable[[int], None] | None,
) -> Iterator[tuple[int, np.ndarray]]:
    counted = (stats.n_windowed_sentences, stats.n_rejected_sentences,
               stats.n_words_without_subwords)
    done = 0
    reported = 0
    chunk_size = max(_CHUNK_SENTENCES, 8 * batch_size)
    for chunk_start in range(0, len(sentences), chunk_size):
        chunk = range(chunk_start, min(chunk_start + chunk_size, len(sentences)))
        items, pending, n_rejected = _tokenise_chunk(
            model, sentences, chunk, long_sentences, stats
        )
        done += n_rejected
        items.sort(key=lambda item: len(item.ids), reverse=True)
        for batch_start in range(0, len(items), batch_size):
            batch = items[batch_start:batch_start + batch_size]
            result = _run_batch(model, batch, how)
            offset = 0
            for item in batch:
                vectors = result[offset:offset + item.n_words]
                offset += item.n_words
                if item.window < 0:
                    stats.n_sentences += 1
                    stats.n_words += item.n_words
                    stats.n_subwords += int((item.word_ids >= 0).sum())
                    stats.n_words_without_subwords += item.n_unknown
                    done += 1
                    yield item.sentence, vectors
                    continue
                state = pending[item.sentence]
                start = state.windows[item.window][0]
                words = np.flatnonzero(state.owner == item.window)
                state.out[words] = vectors[words - start]
                state.remaining -= 1
                if state.remaining == 0:
                    del pending[item.sentence]
                    stats.n_sentences += 1
                    stats.n_words += len(state.out)
                    stats.n_subwords += state.n_subwords
                    stats.n_words_without_subwords += state.n_unknown
                    stats.n_windowed_sentences += 1
                    done += 1
                    yield item.sentence, state.out
            if progress is not None:
                progress(done)
                reported = done
        if pending:
            raise RuntimeError(f"Windows of sentences {sorted(pending)} were never computed.")
    if progress is not None and reported != done:
        progress(done)
    n_windowed, n_rejected, n_unknown = (
        stats.n_windowed_sentences - counted[0],
        stats.n_rejected_sentences - counted[1],
        stats.n_words_without_subwords - counted[2],
    )
    if n_windowed or n_rejected or n_unknown:
        logger.warning(
            "Extraction with %s: %d sentences longer than %d subwords were windowed, %d "
            "rejected; %d words had no subword and were fed as %r.",
            model.model_dir, n_windowed, model.max_length, n_rejected, n_unknown,
            model.tokenizer.unk_token,
        )


def _tokenise_chunk(
    model: LoadedModel,
    sentences: Sequence[Sequence[str]],
    chunk: range,
    long_sentences: str,
    stats: ExtractionStats,
) -> tuple[list[_Item], dict[int, _Pending], int]:
    """Tokenise a chunk into forward-pass items; windows long sentences or rejects them."""
    tokenizer = model.tokenizer
    words = [list(sentences[i]) for i in chunk]
    encodings = tokenizer(words, is_split_into_words=True, **_NO_PAD_OR_TRUNCATE).encodings
    word_ids = [_word_ids(encoding) for encoding in encodings]
    counts = [np.bincount(ids[ids >= 0], minlength=len(w)) for ids, w in zip(word_ids, words)]

    # Words that vanish in tokenisation are fed as the unknown token, so that every word
    # gets a vector computed in context instead of being dropped or zero-filled.
    empty = [j for j, c in enumerate(counts) if not c.all()]
    n_unknown = [0] * len(words)
    if empty:
        unk = tokenizer.unk_token
        for j in empty:
            missing = np.flatnonzero(counts[j] == 0)
            if unk is None:
                raise ValueError(
                    f"Sentence {chunk[j]}: word {int(missing[0])} "
                    f"({words[j][missing[0]]!r}) has no subword and the tokenizer has no "
                    "unknown token to stand in for it."
                )
            logger.debug("Sentence %d: words %s have no subword; using %r.",
                         chunk[j], missing.tolist(), unk)
            for position in missing:
                words[j][position] = unk
            n_unknown[j] = len(missing)
        redone = tokenizer([words[j] for j in empty], is_split_into_words=True,
                           **_NO_PAD_OR_TRUNCATE).encodings
        for j, encoding in zip(empty, redone):
            encodings[j] = encoding
            word_ids[j] = _word_ids(encoding)
            counts[j] = np.bincount(word_ids[j][word_ids[j] >= 0], minlength=len(words[j]))
            if not counts[j].all():
                raise RuntimeError(f"Sentence {chunk[j]}: the unknown token has no subword.")

    items: list[_Item] = []
    pending: dict[int, _Pending] = {}
    window_words: list[list[str]] = []
    window_keys: list[tuple[int, int]] = []
    n_rejected = 0
    for j, encoding in enumerate(encodings):
        index = chunk[j]
        if len(encoding.ids) <= model.max_length:
            items.append(_Item(index, -1, len(words[j]), encoding.ids, encoding.type_ids,
                               word_ids[j], n_unknown[j]))
            continue
        if long_sentences == "reject":
            stats.n_sentences += 1
            stats.n_rejected_sentences += 1
            stats.rejected_sentence_indices.append(index)
            stats.n_words_without_subwords += n_unknown[j]
            n_rejected += 1
            continue
        n_special = len(encoding.ids) - int(counts[j].sum())
        budget = model.max_length - n_special
        longest = int(counts[j].argmax())
        if counts[j][longest] > budget:
            raise ValueError(
                f"Sentence {index}: word {longest} ({words[j][longest]!r}) has "
                f"{int(counts[j][longest])} subwords, more than the {budget} that fit in one "
                f"forward pass of {model.model_dir.name} (max_length {model.max_length} "
                f"minus {n_special} special tokens)."
            )
        windows = _plan_windows(counts[j], budget)
        pending[index] = _Pending(
            out=np.empty((len(words[j]), model.n_layers, model.hidden_size), dtype=np.float32),
            windows=windows,
            owner=_assign_windows(counts[j], windows),
            n_subwords=int(counts[j].sum()),
            n_unknown=n_unknown[j],
            remaining=len(windows),
        )
        for k, (start, end) in enumerate(windows):
            window_words.append(words[j][start:end])
            window_keys.append((index, k))
    if window_words:
        for (index, k), encoding, window in zip(
            window_keys,
            tokenizer(window_words, is_split_into_words=True, **_NO_PAD_OR_TRUNCATE).encodings,
            window_words,
        ):
            if len(encoding.ids) > model.max_length:
                raise RuntimeError(
                    f"Sentence {index}: window {k} has {len(encoding.ids)} subwords in context, "
                    f"more than max_length {model.max_length}; the tokenizer splits words "
                    "differently by context."
                )
            items.append(_Item(index, k, len(window), encoding.ids, encoding.type_ids,
                               _word_ids(encoding), 0))
    return items, pending, n_rejected


def _run_batch(model: LoadedModel, batch: list[_Item], how: str) -> np.ndarray:
    """Forward one batch; (total words of the batch, n_layers, hidden_size) float32."""
    n_rows = len(batch)
    width = max(len(item.ids) for item in batch)
    pad_id = model.tokenizer.pad_token_id
    input_ids = np.full((n_rows, width), 0 if pad_id is None else pad_id, dtype=np.int64)
    type_ids = np.zeros((n_rows, width), dtype=np.int64)
    attention = np.zeros((n_rows, width), dtype=np.int64)
    word_ids = np.full((n_rows, width), -1, dtype=np.int64)
    word_offsets = np.zeros(n_rows, dtype=np.int64)
    n_words = 0
    # Pad on the right whatever the tokenizer's padding_side: with absolute position
    # embeddings, left padding would shift every position and change the results.
    for row, item in enumerate(batch):
        length = len(item.ids)
        input_ids[row, :length] = item.ids
        type_ids[row, :length] = item.type_ids
        attention[row, :length] = 1
        word_ids[row, :length] = item.word_ids
        word_offsets[row] = n_words
        n_words += item.n_words
    valid = word_ids >= 0
    positions = np.flatnonzero(valid)
    word_index = (word_ids + word_offsets[:, None])[valid]
    if np.bincount(word_index, minlength=n_words).min() == 0:
        raise RuntimeError("A word lost its subwords between tokenisation and the forward pass.")

    device = model.model.device
    inputs = {
        "input_ids": torch.from_numpy(input_ids).to(device),
        "attention_mask": torch.from_numpy(attention).to(device),
    }
    if "token_type_ids" in model.tokenizer.model_input_names:
        inputs["token_type_ids"] = torch.from_numpy(type_ids).to(device)
    with torch.inference_mode():
        hidden_states = model.model(**inputs, output_hidden_states=True).hidden_states
        if len(hidden_states) != model.n_layers:
            raise RuntimeError(
                f"{model.model_dir.name} returned {len(hidden_states)} hidden states; "
                f"expected n_layers={model.n_layers}."
            )
        layers = [layer.reshape(n_rows * width, -1) for layer in hidden_states]
        return select_and_aggregate(layers, positions, word_index, n_words, how)

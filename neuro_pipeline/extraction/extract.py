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
  dropped or zero-filled;
* besides encoders, decoder-only models (GPT-2) and either stack of an encoder-decoder
  model (T5, by teacher forcing) are supported, and a second segment per sentence can be
  given as context (``pairs``).
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
from neuro_pipeline.options import LONG_SENTENCE_MODES

__all__ = ["LONG_SENTENCE_MODES", "ExtractionStats", "extract_activations", "hidden_states"]

logger = logging.getLogger(__name__)

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
    """Word of each position of the first segment; -1 for special tokens and the pair."""
    ids = np.array(encoding.word_ids, dtype=np.float64)  # None -> nan
    ids = np.nan_to_num(ids, nan=-1.0).astype(np.int64)
    if encoding.n_sequences > 1:
        ids[np.array([sequence != 0 for sequence in encoding.sequence_ids])] = -1
    return ids


def _tokenise(tokenizer, words: list[list[str]], pairs: list[list[str]] | None) -> list:
    """Encodings of pre-tokenised sentences, with their second segments if any."""
    return tokenizer(words, pairs, is_split_into_words=True, **_NO_PAD_OR_TRUNCATE).encodings


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
    pairs: Sequence[Sequence[str]] | None = None,
    batch_tokens: int | None = None,
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
        Sentences (or windows) per forward pass, at most.
    batch_tokens : int, optional
        Also cap each forward pass at this many padded subword positions (rows × longest
        row): batches of short sentences hold up to ``batch_size`` sentences, batches of
        long ones fewer, so memory per pass stays bounded whatever the lengths. A single
        sentence (window) longer than the cap still runs, alone.
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
    pairs : sequence of sequence of str, optional
        A second segment per sentence (pre-tokenised, not empty), fed as the tokenizer's
        text pair: ``[CLS] sentence [SEP] pair [SEP]`` with ``token_type_ids`` 1 on the
        pair for BERT, ``sentence </s> pair </s>`` for T5. Activations are returned for
        the **first segment's words only**; the pair is context. A long sentence is
        windowed with the whole pair in every window. Only for encoder stacks: a causal
        decoder's states of the first segment could never see the second.

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

    Padding is masked and always on the right, so a sentence's result does not depend on
    its batch (equal within float32 rounding, about 1e-6); a tokenizer without a pad token
    (GPT-2) pads with its EOS token. Each word's vector comes from the model run on its own
    sentence only. A word that the tokenizer maps to no subword at all (a zero-width space,
    a control character) is fed as the tokenizer's unknown token, logged and counted in
    ``stats.n_words_without_subwords``.

    Arguments are checked when the function is called; the model runs as the iterator is
    consumed.

    Which state stands for a subword depends on the model's stack (``model.component``):

    * encoders (BERT; T5's encoder): the state at the subword, which has seen the whole
      sentence;
    * decoder-only models (GPT-2): the state at the subword, which has read the sentence up
      to and including that subword (the state that predicts the *next* token). Words are
      given their leading-space form, the first word included (``"Ġcat"``), and no special
      token is added, so a sentence reads as it would in the middle of running text;
    * T5's decoder, by teacher forcing with the sentence as the target and an empty source
      (the tokenizer's encoding of ``""``, i.e. ``</s>``): the decoder reads the target
      shifted right behind ``decoder_start_token_id``, and the state at target position t
      is the one that **predicts** target token t, having read tokens before t only. So
      with ``"first"`` a word's vector has not seen the word itself, and the first word's
      first subword gets the same vector in every sentence (it has read only the start
      token); ``"last"`` has seen all of the word's subwords but its last. Special tokens
      (the closing ``</s>``) are excluded as for BERT.

    In every decoder, a word's vector depends on the words before it only.

    Raises
    ------
    ValueError
        If ``aggregation``, ``long_sentences`` or ``batch_size`` is invalid, a sentence or a
        pair is empty, ``pairs`` does not have one entry per sentence or is given for a
        decoder, or (during iteration) a single word has more subwords than fit in one
        forward pass.
    TypeError
        If a sentence or a pair is a string rather than a sequence of words.

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
    if batch_tokens is not None and (isinstance(batch_tokens, bool) or not isinstance(batch_tokens, int)
                                     or batch_tokens < 1):
        raise ValueError(f"batch_tokens must be a positive int or None; got {batch_tokens!r}.")
    check_sentences(sentences)
    if pairs is not None:
        _check_pairs(model, sentences, pairs)
    return _extract(
        model, sentences, how, batch_size, long_sentences,
        stats if stats is not None else ExtractionStats(), progress, pairs, batch_tokens,
    )


def check_sentences(sentences: Sequence[Sequence[str]], what: str = "sentence") -> None:
    """TypeError for a sentence (or, with ``what="pair"``, a second segment) given as a
    string, ValueError for an empty one, naming its index."""
    for index, sentence in enumerate(sentences):
        if isinstance(sentence, str):
            raise TypeError(
                f"{what.capitalize()} {index} is a str ({sentence[:40]!r}); expected a sequence of words, "
                f"e.g. {what}.split()."
            )
        if len(sentence) == 0:
            raise ValueError(f"{what.capitalize()} {index} is empty; every {what} needs at least one word.")


def _check_pairs(
    model: LoadedModel, sentences: Sequence[Sequence[str]], pairs: Sequence[Sequence[str]]
) -> None:
    if model.component == "decoder":
        raise ValueError(
            f"pairs were given but {model.model_dir.name} is extracted from a causal decoder "
            f"({model.kind}): the second segment would come after the first, whose states "
            "cannot see it. Pairs need an encoder stack."
        )
    if isinstance(pairs, str) or len(pairs) != len(sentences):
        got = "a str" if isinstance(pairs, str) else f"{len(pairs)}"
        raise ValueError(f"pairs must hold one second segment per sentence: {len(sentences)} "
                         f"sentences but got {got}.")
    check_sentences(pairs, what="pair")


def _extract(
    model: LoadedModel,
    sentences: Sequence[Sequence[str]],
    how: str,
    batch_size: int,
    long_sentences: str,
    stats: ExtractionStats,
    progress: Callable[[int], None] | None,
    pairs: Sequence[Sequence[str]] | None,
    batch_tokens: int | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    counted = (stats.n_windowed_sentences, stats.n_rejected_sentences,
               stats.n_words_without_subwords)
    done = 0
    reported = 0
    chunk_size = max(_CHUNK_SENTENCES, 8 * batch_size)
    for chunk_start in range(0, len(sentences), chunk_size):
        chunk = range(chunk_start, min(chunk_start + chunk_size, len(sentences)))
        items, pending, n_rejected = _tokenise_chunk(
            model, sentences, chunk, long_sentences, stats, pairs
        )
        done += n_rejected
        items.sort(key=lambda item: len(item.ids), reverse=True)
        for batch in _batches(items, batch_size, batch_tokens):
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


def _batches(items: list[_Item], batch_size: int, batch_tokens: int | None) -> Iterator[list[_Item]]:
    """Consecutive batches of ``items`` (sorted longest first): at most ``batch_size`` items
    and, with ``batch_tokens``, at most that many padded positions (a longer item runs alone)."""
    start = 0
    while start < len(items):
        size = batch_size
        if batch_tokens is not None:
            size = max(1, min(size, batch_tokens // max(1, len(items[start].ids))))
        yield items[start:start + size]
        start += size


def _tokenise_chunk(
    model: LoadedModel,
    sentences: Sequence[Sequence[str]],
    chunk: range,
    long_sentences: str,
    stats: ExtractionStats,
    pairs: Sequence[Sequence[str]] | None,
) -> tuple[list[_Item], dict[int, _Pending], int]:
    """Tokenise a chunk into forward-pass items; windows long sentences or rejects them."""
    tokenizer = model.tokenizer
    words = [list(sentences[i]) for i in chunk]
    seconds = None if pairs is None else [list(pairs[i]) for i in chunk]
    encodings = _tokenise(tokenizer, words, seconds)
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
        redone = _tokenise(tokenizer, [words[j] for j in empty],
                           None if seconds is None else [seconds[j] for j in empty])
        for j, encoding in zip(empty, redone):
            encodings[j] = encoding
            word_ids[j] = _word_ids(encoding)
            counts[j] = np.bincount(word_ids[j][word_ids[j] >= 0], minlength=len(words[j]))
            if not counts[j].all():
                raise RuntimeError(f"Sentence {chunk[j]}: the unknown token has no subword.")

    items: list[_Item] = []
    pending: dict[int, _Pending] = {}
    window_words: list[list[str]] = []
    window_pairs: list[list[str]] = []
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
        # Special tokens, and the whole second segment, are in every window.
        n_special = len(encoding.ids) - int(counts[j].sum())
        budget = model.max_length - n_special
        longest = int(counts[j].argmax())
        if counts[j][longest] > budget:
            what = "special tokens" if seconds is None else "special tokens and pair subwords"
            raise ValueError(
                f"Sentence {index}: word {longest} ({words[j][longest]!r}) has "
                f"{int(counts[j][longest])} subwords, more than the {budget} that fit in one "
                f"forward pass of {model.model_dir.name} (max_length {model.max_length} "
                f"minus {n_special} {what})."
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
            if seconds is not None:
                window_pairs.append(seconds[j])
            window_keys.append((index, k))
    if window_words:
        for (index, k), encoding, window in zip(
            window_keys,
            _tokenise(tokenizer, window_words, None if seconds is None else window_pairs),
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
    input_ids = np.full((n_rows, width), _pad_id(model.tokenizer), dtype=np.int64)
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

    with torch.inference_mode():
        states = hidden_states(model, input_ids, attention, type_ids)
        if len(states) != model.n_layers:
            raise RuntimeError(
                f"{model.model_dir.name} returned {len(states)} hidden states; "
                f"expected n_layers={model.n_layers}."
            )
        layers = [layer.reshape(n_rows * width, -1) for layer in states]
        return select_and_aggregate(layers, positions, word_index, n_words, how)


def _pad_id(tokenizer) -> int:
    """The id padding is filled with: the pad token's, else (GPT-2 has none) the EOS token's.
    Padding is masked and sits after every real token, so its value never reaches a result."""
    for token_id in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return int(token_id)
    return 0


def hidden_states(
    model: LoadedModel, input_ids: np.ndarray, attention: np.ndarray, type_ids: np.ndarray
) -> tuple[torch.Tensor, ...]:
    """Hidden states (embeddings first) of the model's extracted stack for one padded batch.

    This is the forward pass extraction reads, for every kind of model (an encoder, a
    decoder, either stack of an encoder-decoder); interventions run the same one to find
    the module behind each hidden state. Call it under ``torch.inference_mode()`` unless
    gradients are wanted.

    Parameters
    ----------
    model : LoadedModel
    input_ids, attention, type_ids : numpy.ndarray of shape (batch, positions), int64
        Token ids, attention mask (1 = a real token) and token type ids, padded on the right.

    Returns
    -------
    tuple of torch.Tensor
        ``model.n_layers`` tensors of shape (batch, positions, hidden_size), on the model's
        device.
    """
    device = model.model.device
    ids = torch.from_numpy(input_ids).to(device)
    mask = torch.from_numpy(attention).to(device)
    if model.kind == "encoder-decoder" and model.component == "encoder":
        return model.model.get_encoder()(
            input_ids=ids, attention_mask=mask, output_hidden_states=True
        ).hidden_states
    if model.kind == "encoder-decoder":
        # Teacher forcing with the sentence as the target: the decoder reads the target
        # shifted right behind the start token, so its state at position t has seen target
        # tokens < t and predicts token t; word ids therefore align with the target's
        # positions as they are. The source is empty (the tokenizer's encoding of "", e.g.
        # T5's "</s>"): a source holding the sentence would let every decoder position see
        # the whole sentence through cross-attention.
        start = model.model.config.decoder_start_token_id
        decoder_ids = torch.cat([torch.full_like(ids[:, :1], start), ids[:, :-1]], dim=1)
        source = model.tokenizer("")["input_ids"] or [_pad_id(model.tokenizer)]
        source_ids = torch.tensor([source] * len(input_ids), dtype=torch.long, device=device)
        return model.model(
            input_ids=source_ids, attention_mask=torch.ones_like(source_ids),
            decoder_input_ids=decoder_ids, decoder_attention_mask=mask,
            output_hidden_states=True, use_cache=False,
        ).decoder_hidden_states
    inputs = {"input_ids": ids, "attention_mask": mask}
    if "token_type_ids" in model.tokenizer.model_input_names:
        inputs["token_type_ids"] = torch.from_numpy(type_ids).to(device)
    if model.kind == "decoder":
        inputs["use_cache"] = False
    return model.model(**inputs, output_hidden_states=True).hidden_states

"""Does the model use the neurons? Masked-word accuracy with and without an ablation.

Start here. A probe shows that neurons *encode* a concept; this module measures whether
the model's own output *depends* on them. The output is masked-word prediction:

1. A masked-LM head. :func:`checkpoint_mlm_head` reads the checkpoint's own BERT-style
   head (``cls.predictions.*``) when the model directory has one; otherwise
   :func:`train_mlm_head` trains a small one on the frozen encoder (BERT's head: dense +
   GELU + LayerNorm, decoder tied to the input word embeddings, so only the transform
   and the output bias are learnt), and :func:`save_mlm_head` / :func:`load_mlm_head`
   store it with a JSON of its training settings, tied to the model version.
2. A mask plan: which words of which sentences are masked (whole words, every subword
   replaced by the mask token). :func:`random_masks` for training,
   :func:`concept_masks` for evaluation (a few words of the concept and a few outside it
   per sentence).
3. :func:`masked_word_predictions` scores every masked word (correct or not, and its
   log-likelihood), optionally under an intervention; :func:`concept_scores` summarises
   the words of a concept against the words outside it.
4. :func:`neuron_ablation_effects` ablates a ranking's top neurons and ``n_random``
   random sets of the same size and the same per-layer counts
   (:func:`matched_random_neurons`), and :func:`summarize_ablation_effects` reports the
   baseline, top-k and random-k scores with a confidence interval over the random draws.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from pathlib import Path

import numpy as np
import polars as pl
import torch

from neuro_pipeline.extraction.model import LoadedModel
from neuro_pipeline.intervention.hooks import INTERVENTION_MODES, UnitEdit, intervene, neuron_edits

__all__ = [
    "ABLATION_EFFECT_COLUMNS",
    "ABLATION_SUMMARY_COLUMNS",
    "MaskedLMHead",
    "MaskPlan",
    "PREDICTION_COLUMNS",
    "checkpoint_mlm_head",
    "concept_masks",
    "concept_scores",
    "load_mlm_head",
    "masked_word_predictions",
    "matched_random_neurons",
    "neuron_ablation_effects",
    "random_masks",
    "save_mlm_head",
    "summarize_ablation_effects",
    "train_mlm_head",
]

logger = logging.getLogger(__name__)

#: ``[(sentence index, (masked word positions, ...)), ...]``: one masked copy of a
#: sentence per entry; the same sentence may appear in several entries.
MaskPlan = Sequence[tuple[int, tuple[int, ...]]]

#: File names written by :func:`save_mlm_head`.
HEAD_WEIGHTS_FILE = "mlm_head.safetensors"
HEAD_SETTINGS_FILE = "mlm_head.json"

#: Columns of :func:`masked_word_predictions`.
PREDICTION_COLUMNS: dict[str, pl.DataType] = {
    "mask_set": pl.Int32,        # index of the entry in the mask plan
    "sentence": pl.Int32,        # index of the sentence in ``sentences``
    "position": pl.Int32,        # word index within the sentence
    "label": pl.Utf8,            # the word's label (null when no labels were given)
    "n_subwords": pl.Int32,      # subwords of the word, all masked
    "correct": pl.Boolean,       # every subword is the head's top prediction (rank 1)
    "rank": pl.Int64,            # worst rank of the true subword among the word's subwords (1 = top)
    "log_likelihood": pl.Float64,  # sum over the word's subwords of log p(subword)
}

#: Columns of :func:`neuron_ablation_effects` (one row per condition x draw x group).
ABLATION_EFFECT_COLUMNS: dict[str, pl.DataType] = {
    "concept": pl.Utf8,          # the concept's name (its labels joined by "|")
    "top_k": pl.Int32,           # accuracy counts a word correct when its rank <= top_k
    "condition": pl.Utf8,        # "baseline", "top" or "random"
    "draw": pl.Int32,            # random draw 0..n_random-1; null for baseline and top
    "group": pl.Utf8,            # "concept" (masked words of the concept) or "outside"
    "n_words": pl.Int64,         # masked words scored in the group
    "n_neurons": pl.Int32,       # neurons ablated (0 for the baseline)
    "accuracy": pl.Float64,      # share of the group's masked words with rank <= top_k
    "log_likelihood": pl.Float64,  # mean over the group's words of the word log-likelihood
}

#: Columns of :func:`summarize_ablation_effects` (one row per group x metric).
ABLATION_SUMMARY_COLUMNS: dict[str, pl.DataType] = {
    "concept": pl.Utf8,
    "top_k": pl.Int32,
    "group": pl.Utf8,
    "metric": pl.Utf8,           # "accuracy" or "log_likelihood"
    "n_words": pl.Int64,
    "n_neurons": pl.Int32,
    "n_random": pl.Int32,
    "baseline": pl.Float64,      # no intervention
    "top": pl.Float64,           # the ranking's top neurons ablated
    "random_mean": pl.Float64,   # mean over the random draws
    "random_low": pl.Float64,    # confidence interval of random_mean (Student t over draws)
    "random_high": pl.Float64,
    "top_drop": pl.Float64,      # baseline - top
    "random_drop": pl.Float64,   # baseline - random_mean
    "random_share_below_top": pl.Float64,  # share of random draws scoring <= top
}


# ------------------------------------------------------------------------ the head
class MaskedLMHead(torch.nn.Module):
    """BERT's masked-LM head on a frozen encoder: dense + GELU + LayerNorm, then the
    input word embeddings (tied, not trained, not saved) plus an output bias.

    Parameters
    ----------
    word_embeddings : torch.nn.Embedding
        The encoder's input embeddings, shape (vocab_size, hidden_size); the decoder
        reads their weight at every call, so it stays tied.
    layer_norm_eps : float, default=1e-12

    Attributes
    ----------
    training_record : dict
        JSON-able facts about how the head was made (settings, data sizes, accuracy);
        written next to the weights by :func:`save_mlm_head`.
    """

    def __init__(self, word_embeddings: torch.nn.Embedding, *, layer_norm_eps: float = 1e-12):
        super().__init__()
        vocab_size, hidden_size = word_embeddings.weight.shape
        self.dense = torch.nn.Linear(hidden_size, hidden_size)
        self.layer_norm = torch.nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.bias = torch.nn.Parameter(torch.zeros(vocab_size))
        # A list, so the embeddings are not registered as a submodule: not in
        # state_dict, not in parameters(), not moved or trained with the head.
        self._tied = [word_embeddings]
        self.training_record: dict = {}

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits over the vocabulary, shape (..., vocab_size), for hidden states (..., hidden_size)."""
        transformed = self.layer_norm(torch.nn.functional.gelu(self.dense(hidden)))
        return transformed @ self._tied[0].weight.to(transformed.dtype).T + self.bias


def _check_encoder(loaded: LoadedModel, owner: str) -> None:
    if loaded.kind != "encoder":
        raise ValueError(
            f"{owner} needs an encoder with bidirectional attention (masked-word prediction); "
            f"{loaded.model_dir.name} is a {loaded.kind} model."
        )
    if getattr(loaded.tokenizer, "mask_token_id", None) is None:
        raise ValueError(f"{owner}: the tokenizer of {loaded.model_dir.name} has no mask token.")


def _word_embeddings(loaded: LoadedModel) -> torch.nn.Embedding:
    embeddings = loaded.model.get_input_embeddings()
    if embeddings.weight.shape[1] != loaded.hidden_size:
        raise ValueError(
            f"The word embeddings of {loaded.model_dir.name} have width {embeddings.weight.shape[1]}, "
            f"not hidden_size {loaded.hidden_size}; a head with a tied decoder needs them equal."
        )
    return embeddings


def checkpoint_mlm_head(loaded: LoadedModel) -> MaskedLMHead | None:
    """The checkpoint's own BERT-style masked-LM head, or None if it has none.

    Reads ``cls.predictions.transform.dense.*``, ``cls.predictions.transform.LayerNorm.*``
    and ``cls.predictions.bias`` from the model directory's ``*.safetensors`` files (as a
    ``BertForMaskedLM`` checkpoint stores them); the decoder is tied to the loaded
    model's input embeddings, as in BERT.

    Returns
    -------
    MaskedLMHead or None
        None when the weights hold no such head (e.g. all-MiniLM-L6-v2, a ``BertModel``).
    """
    from safetensors import safe_open

    _check_encoder(loaded, "checkpoint_mlm_head")
    prefix = "cls.predictions."
    wanted = {
        "transform.dense.weight": "dense.weight", "transform.dense.bias": "dense.bias",
        "transform.LayerNorm.weight": "layer_norm.weight", "transform.LayerNorm.bias": "layer_norm.bias",
        "bias": "bias",
    }
    found: dict[str, torch.Tensor] = {}
    for path in sorted(Path(loaded.model_dir).glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as weights:
            for key in weights.keys():
                if key.startswith(prefix) and key[len(prefix):] in wanted:
                    found[wanted[key[len(prefix):]]] = weights.get_tensor(key)
    if not found:
        return None
    missing = sorted(set(wanted.values()) - set(found))
    if missing:
        raise ValueError(
            f"{loaded.model_dir} has a partial masked-LM head: {sorted(found)} but not {missing}."
        )
    head = MaskedLMHead(_word_embeddings(loaded), layer_norm_eps=_layer_norm_eps(loaded))
    head.load_state_dict(found)
    head.training_record = {"source": "checkpoint", "model_version": loaded.version}
    return head.to(device=loaded.model.device, dtype=loaded.model.dtype).eval()


def _layer_norm_eps(loaded: LoadedModel) -> float:
    return float(getattr(loaded.model.config, "layer_norm_eps", 1e-12))


# ------------------------------------------------------------------------ mask plans
def _check_fraction(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not 0 < value <= 1:
        raise ValueError(f"{name} must be a number in (0, 1]; got {value!r}.")
    return float(value)


def _check_positive_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}; got {value!r}.")
    return int(value)


def random_masks(
    sentences: Sequence[Sequence[str]],
    *,
    mask_fraction: float = 0.15,
    n_rounds: int = 1,
    seed: int = 0,
) -> list[tuple[int, tuple[int, ...]]]:
    """A mask plan that masks a random ``mask_fraction`` of each sentence's words, in
    ``n_rounds`` masked copies whose masked words do not overlap.

    Each round masks ``ceil(mask_fraction * n_words)`` words (at least one); a sentence
    with too few words for all rounds gets fewer copies.

    Examples
    --------
    >>> random_masks([["a", "b", "c", "d"]], mask_fraction=0.5, n_rounds=2)
    [(0, (0, 2)), (0, (1, 3))]
    """
    mask_fraction = _check_fraction(mask_fraction, "mask_fraction")
    n_rounds = _check_positive_int(n_rounds, "n_rounds")
    rng = np.random.default_rng(seed)
    plan = []
    for index, sentence in enumerate(sentences):
        n_words = len(sentence)
        if n_words == 0:
            continue
        per_round = max(1, math.ceil(mask_fraction * n_words))
        order = rng.permutation(n_words)
        for start in range(0, min(n_rounds * per_round, n_words), per_round):
            plan.append((index, tuple(sorted(int(p) for p in order[start : start + per_round]))))
    return plan


def _concept_set(concept: str | Collection[str]) -> tuple[frozenset[str], str]:
    """The labels of a concept and its name."""
    if isinstance(concept, str):
        return frozenset([concept]), concept
    labels = frozenset(concept)
    if not labels or not all(isinstance(label, str) for label in labels):
        raise ValueError(f"concept must be a label or a non-empty collection of labels; got {concept!r}.")
    return labels, "|".join(sorted(labels))


def concept_masks(
    labels: Sequence[Sequence[str]],
    concept: str | Collection[str],
    *,
    n_concept: int = 2,
    n_outside: int = 2,
    seed: int = 0,
) -> list[tuple[int, tuple[int, ...]]]:
    """A mask plan for comparing a concept's words with the others: per sentence, up to
    ``n_concept`` random words whose label is in ``concept`` and up to ``n_outside``
    random other words, masked together in one copy.

    Balancing the two groups per sentence gives both enough masked words from one forward
    pass per sentence. Sentences with no word of either group are left out.

    Examples
    --------
    >>> concept_masks([["DET", "NOUN", "NOUN"], ["DET"], ["NOUN", "VERB", "NOUN"]], "NOUN",
    ...               n_concept=2, n_outside=1)
    [(0, (0, 1, 2)), (1, (0,)), (2, (0, 1, 2))]
    """
    members, _ = _concept_set(concept)
    n_concept = _check_positive_int(n_concept, "n_concept", 0)
    n_outside = _check_positive_int(n_outside, "n_outside", 0)
    if n_concept + n_outside == 0:
        raise ValueError("concept_masks needs n_concept + n_outside >= 1.")
    rng = np.random.default_rng(seed)
    plan = []
    for index, sentence_labels in enumerate(labels):
        inside = np.array([p for p, label in enumerate(sentence_labels) if label in members], dtype=np.int64)
        outside = np.array([p for p, label in enumerate(sentence_labels) if label not in members], dtype=np.int64)
        chosen = np.concatenate([
            rng.permutation(inside)[:n_concept], rng.permutation(outside)[:n_outside]
        ])
        if chosen.size:
            plan.append((index, tuple(sorted(int(p) for p in chosen))))
    return plan


# ------------------------------------------------------------------ masked forward passes
@dataclass
class _MaskedBatch:
    """One padded forward pass of masked sentences, ready to run."""

    inputs: dict[str, torch.Tensor]
    rows: torch.Tensor       # (n_masked_subwords,) batch row of each masked subword
    columns: torch.Tensor    # (n_masked_subwords,) position of each masked subword
    targets: torch.Tensor    # (n_masked_subwords,) the true subword id
    word: np.ndarray         # (n_masked_subwords,) index into the batch's masked words
    words: list[tuple[int, int, int]]  # (mask_set, sentence, position) per masked word


def _check_plan(sentences: Sequence[Sequence[str]], plan: MaskPlan) -> None:
    for entry, item in enumerate(plan):
        if not (isinstance(item, tuple) and len(item) == 2):
            raise ValueError(f"Mask plan entry {entry} must be (sentence index, positions); got {item!r}.")
        index, positions = item
        if not 0 <= index < len(sentences):
            raise ValueError(
                f"Mask plan entry {entry} names sentence {index}, but there are {len(sentences)} sentences."
            )
        n_words = len(sentences[index])
        if not positions or len(set(positions)) != len(positions) or min(positions) < 0 or max(positions) >= n_words:
            raise ValueError(
                f"Mask plan entry {entry}: positions {positions} must be distinct word indices in "
                f"[0, {n_words}) of sentence {index}, at least one."
            )


def _prepare(loaded: LoadedModel, sentences: Sequence[Sequence[str]], plan: MaskPlan,
             batch_size: int) -> list[_MaskedBatch]:
    """Tokenise each planned sentence once and build length-sorted masked batches."""
    _check_plan(sentences, plan)
    tokenizer = loaded.tokenizer
    used = sorted({index for index, _ in plan})
    batch = tokenizer([list(sentences[i]) for i in used], is_split_into_words=True,
                      padding=False, truncation=False, verbose=False)
    encodings = dict(zip(used, batch.encodings, strict=True))
    for index in used:
        if len(encodings[index].ids) > loaded.max_length:
            raise ValueError(
                f"Sentence {index} has {len(encodings[index].ids)} subwords, more than max_length "
                f"{loaded.max_length} of {loaded.model_dir.name}; leave it out of the mask plan."
            )
    order = sorted(range(len(plan)), key=lambda e: len(encodings[plan[e][0]].ids))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    mask_id = int(tokenizer.mask_token_id)
    device = loaded.model.device
    batches = []
    for start in range(0, len(order), batch_size):
        entries = order[start : start + batch_size]
        width = max(len(encodings[plan[e][0]].ids) for e in entries)
        ids = torch.full((len(entries), width), pad, dtype=torch.long)
        attention = torch.zeros_like(ids)
        rows, columns, targets, word, words = [], [], [], [], []
        for row, entry in enumerate(entries):
            index, positions = plan[entry]
            encoding = encodings[index]
            sentence_ids = torch.tensor(encoding.ids, dtype=torch.long)
            word_ids = np.array([-1 if w is None else w for w in encoding.word_ids])
            for position in positions:
                columns_of_word = np.flatnonzero(word_ids == position)
                if columns_of_word.size == 0:
                    raise ValueError(
                        f"Word {position} ({sentences[index][position]!r}) of sentence {index} has no "
                        "subword; it cannot be masked. Leave it out of the mask plan."
                    )
                for column in columns_of_word:
                    rows.append(row)
                    columns.append(int(column))
                    targets.append(int(sentence_ids[column]))
                    word.append(len(words))
                words.append((entry, index, position))
            masked = sentence_ids.clone()
            masked[[c for r, c in zip(rows, columns, strict=True) if r == row]] = mask_id
            ids[row, : len(masked)] = masked
            attention[row, : len(masked)] = 1
        inputs = {"input_ids": ids.to(device), "attention_mask": attention.to(device)}
        if "token_type_ids" in tokenizer.model_input_names:
            inputs["token_type_ids"] = torch.zeros_like(ids).to(device)
        batches.append(_MaskedBatch(
            inputs=inputs, rows=torch.tensor(rows), columns=torch.tensor(columns),
            targets=torch.tensor(targets), word=np.array(word, dtype=np.int64), words=words,
        ))
    return batches


def _states_at_masks(loaded: LoadedModel, batch: _MaskedBatch) -> torch.Tensor:
    """Last-layer states at the masked subwords, (n_masked_subwords, hidden_size)."""
    last = loaded.model(**batch.inputs).last_hidden_state
    return last[batch.rows.to(last.device), batch.columns.to(last.device)]


def _word_scores(head: MaskedLMHead, states: torch.Tensor, batch: _MaskedBatch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per masked word: subword count, worst rank of a true subword, summed log-likelihood."""
    logits = head(states.to(head.bias.dtype)).float()
    targets = batch.targets.to(logits.device)
    true = logits.gather(1, targets[:, None])
    log_p = (true[:, 0] - torch.logsumexp(logits, dim=-1)).double().cpu().numpy()
    # Rank 1 = no subword scores above the true one (a tie counts for the true one).
    ranks = ((logits > true).sum(dim=-1) + 1).cpu().numpy()
    n_words = len(batch.words)
    counts = np.bincount(batch.word, minlength=n_words)
    worst = np.zeros(n_words, dtype=np.int64)
    np.maximum.at(worst, batch.word, ranks)
    likelihood = np.bincount(batch.word, weights=log_p, minlength=n_words)
    return counts, worst, likelihood


# ------------------------------------------------------------------------ training
def train_mlm_head(
    loaded: LoadedModel,
    sentences: Sequence[Sequence[str]],
    *,
    mask_fraction: float = 0.15,
    n_rounds: int = 3,
    n_epochs: int = 4,
    batch_size: int = 256,
    learning_rate: float = 3e-3,
    validation_fraction: float = 0.1,
    forward_batch_size: int = 32,
    seed: int = 0,
) -> MaskedLMHead:
    """Train a BERT-style masked-LM head on the frozen encoder of ``loaded``.

    The encoder's last-layer states at masked subwords are computed once (eval mode, no
    gradient; the encoder is never changed), then the head's transform and output bias
    are trained on them with AdamW (weight decay 0.01) and full-softmax cross-entropy
    over the vocabulary. The output bias starts at the log-frequency of the training
    targets (add-0.1 smoothed), so the head starts from the unigram distribution.

    On all-MiniLM-L6-v2 (a sentence-embedding model that never saw the mask token in its
    final training) with UD EWT dev (about 16 000 masked subwords), the defaults reach
    about 10 % held-out subword accuracy in 4 epochs, against 6 % for always predicting
    the most frequent subword; an untied 2000-word softmax classifier on the same states
    reached 12.5 %, so the states, not the head, set the limit.

    Parameters
    ----------
    loaded : LoadedModel
        An encoder (``loaded.kind == "encoder"``) whose tokenizer has a mask token.
    sentences : sequence of sequence of str
        Training text, pre-tokenised. A ``validation_fraction`` of the sentences is held
        out to report accuracy.
    mask_fraction : float, default=0.15
        Share of each sentence's words masked per copy (whole words; BERT's 15 %).
    n_rounds : int, default=3
        Masked copies per sentence, with disjoint masked words (:func:`random_masks`).
    n_epochs, batch_size, learning_rate : int, int, float
        AdamW passes over the cached states, examples per step, and step size.
    validation_fraction : float, default=0.1
        Share of sentences held out (0 <= value < 1).
    forward_batch_size : int, default=32
        Sentences per encoder forward pass.
    seed : int, default=0
        Seeds the masks, the held-out split, the initial weights and the shuffling.

    Returns
    -------
    MaskedLMHead
        In eval mode, on the model's device; ``training_record`` holds the settings,
        data sizes, loss per epoch and held-out masked-subword accuracy.

    Raises
    ------
    ValueError
        If ``loaded`` is not an encoder with a mask token, an argument is out of range,
        or a sentence is longer than the model's limit.
    """
    _check_encoder(loaded, "train_mlm_head")
    n_epochs = _check_positive_int(n_epochs, "n_epochs")
    batch_size = _check_positive_int(batch_size, "batch_size")
    forward_batch_size = _check_positive_int(forward_batch_size, "forward_batch_size")
    if isinstance(learning_rate, bool) or not isinstance(learning_rate, Real) or not learning_rate > 0:
        raise ValueError(f"learning_rate must be a number > 0; got {learning_rate!r}.")
    if isinstance(validation_fraction, bool) or not isinstance(validation_fraction, Real) or not 0 <= validation_fraction < 1:
        raise ValueError(f"validation_fraction must be a number in [0, 1); got {validation_fraction!r}.")
    if len(sentences) == 0:
        raise ValueError("train_mlm_head needs at least one sentence.")
    settings = {
        "mask_fraction": mask_fraction, "n_rounds": n_rounds, "n_epochs": n_epochs,
        "batch_size": batch_size, "learning_rate": learning_rate,
        "validation_fraction": validation_fraction, "seed": seed,
    }
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    n_held = int(round(validation_fraction * len(sentences)))
    held = set(rng.permutation(len(sentences))[:n_held].tolist())
    plan = random_masks(sentences, mask_fraction=mask_fraction, n_rounds=n_rounds, seed=seed)
    train_plan = [item for item in plan if item[0] not in held]
    held_plan = [item for item in plan if item[0] in held]
    if not train_plan:
        raise ValueError("train_mlm_head: no training sentence is left after holding out validation_fraction.")
    train_states, train_targets = _cached_states(loaded, sentences, train_plan, forward_batch_size)
    held_states, held_targets = (_cached_states(loaded, sentences, held_plan, forward_batch_size)
                                 if held_plan else (None, None))

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = MaskedLMHead(_word_embeddings(loaded), layer_norm_eps=_layer_norm_eps(loaded))
    counts = torch.bincount(train_targets.cpu(), minlength=head.bias.shape[0]).double() + 0.1
    with torch.no_grad():
        head.bias.copy_((counts / counts.sum()).log().float())
    head = head.to(train_states.device)
    optimiser = torch.optim.AdamW(head.parameters(), lr=float(learning_rate), weight_decay=0.01)
    generator = torch.Generator().manual_seed(seed)
    losses = []
    head.train()
    for _ in range(n_epochs):
        order = torch.randperm(len(train_targets), generator=generator)
        total = 0.0
        for start in range(0, len(order), batch_size):
            step = order[start : start + batch_size].to(train_states.device)
            loss = torch.nn.functional.cross_entropy(head(train_states[step]), train_targets[step])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += loss.item() * len(step)
        losses.append(total / len(order))
    head.eval()
    head.training_record = {
        "source": "trained",
        "model_version": loaded.version,
        "model_dir": str(loaded.model_dir),
        "settings": settings,
        "n_sentences": len(sentences) - n_held,
        "n_heldout_sentences": n_held,
        "n_train_subwords": int(len(train_targets)),
        "n_heldout_subwords": 0 if held_targets is None else int(len(held_targets)),
        "train_loss_per_epoch": [round(v, 4) for v in losses],
        "train_subword_accuracy": _subword_accuracy(head, train_states, train_targets),
        "heldout_subword_accuracy": (None if held_targets is None
                                     else _subword_accuracy(head, held_states, held_targets)),
        "seconds": round(time.perf_counter() - started, 1),
    }
    logger.info("Trained a masked-LM head: %s", head.training_record)
    return head


def _cached_states(loaded, sentences, plan, batch_size) -> tuple[torch.Tensor, torch.Tensor]:
    states, targets = [], []
    with torch.inference_mode():
        for batch in _prepare(loaded, sentences, plan, batch_size):
            states.append(_states_at_masks(loaded, batch).float())
            targets.append(batch.targets)
    # Out of inference mode, so that the head can be trained on them.
    return torch.cat(states).clone(), torch.cat(targets).clone().to(states[0].device)


def _subword_accuracy(head: MaskedLMHead, states: torch.Tensor, targets: torch.Tensor) -> float:
    hits = 0
    with torch.inference_mode():
        for start in range(0, len(targets), 1024):
            logits = head(states[start : start + 1024])
            hits += int((logits.argmax(dim=-1) == targets[start : start + 1024]).sum())
    return round(hits / len(targets), 4)


def save_mlm_head(head: MaskedLMHead, directory: str | os.PathLike[str]) -> Path:
    """Write ``head``'s trained weights (safetensors) and ``training_record`` (JSON).

    The tied word embeddings are not written: they belong to the model, and
    :func:`load_mlm_head` ties the head to the model it is loaded for.

    Returns
    -------
    Path
        ``directory``, holding ``mlm_head.safetensors`` and ``mlm_head.json``.
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().float().cpu().contiguous() for k, v in head.state_dict().items()},
              str(directory / HEAD_WEIGHTS_FILE))
    (directory / HEAD_SETTINGS_FILE).write_text(json.dumps(head.training_record, indent=2, sort_keys=True) + "\n")
    return directory


def load_mlm_head(loaded: LoadedModel, directory: str | os.PathLike[str]) -> MaskedLMHead:
    """Load a head written by :func:`save_mlm_head` and tie it to ``loaded``.

    Raises
    ------
    FileNotFoundError
        If ``directory`` lacks ``mlm_head.safetensors`` or ``mlm_head.json``.
    ValueError
        If the head was trained for another model version (its JSON records the version),
        or its shapes do not fit the model.
    """
    from safetensors.torch import load_file

    directory = Path(directory)
    for name in (HEAD_WEIGHTS_FILE, HEAD_SETTINGS_FILE):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory} has no {name}; write it with save_mlm_head.")
    record = json.loads((directory / HEAD_SETTINGS_FILE).read_text())
    if record.get("model_version") != loaded.version:
        raise ValueError(
            f"The head in {directory} was trained for model version {str(record.get('model_version'))[:12]}, "
            f"not {loaded.version[:12]} ({loaded.model_dir.name}); train a head for this model."
        )
    head = MaskedLMHead(_word_embeddings(loaded), layer_norm_eps=_layer_norm_eps(loaded))
    try:
        head.load_state_dict(load_file(str(directory / HEAD_WEIGHTS_FILE)))
    except RuntimeError as error:
        raise ValueError(f"The head in {directory} does not fit {loaded.model_dir.name}: {error}") from error
    head.training_record = record
    return head.to(device=loaded.model.device).eval()


# ------------------------------------------------------------------------ evaluation
def masked_word_predictions(
    loaded: LoadedModel,
    head: MaskedLMHead,
    sentences: Sequence[Sequence[str]],
    plan: MaskPlan,
    *,
    labels: Sequence[Sequence[str]] | None = None,
    edits: Mapping[str, UnitEdit] | None = None,
    batch_size: int = 32,
) -> pl.DataFrame:
    """Score the head's prediction of every masked word, optionally under an intervention.

    Parameters
    ----------
    loaded : LoadedModel
        An encoder with a mask token.
    head : MaskedLMHead
        From :func:`checkpoint_mlm_head`, :func:`train_mlm_head` or :func:`load_mlm_head`.
    sentences : sequence of sequence of str
        Pre-tokenised sentences.
    plan : mask plan
        ``[(sentence index, (word positions, ...)), ...]`` (:func:`random_masks`,
        :func:`concept_masks`). Every subword of a masked word becomes the mask token.
    labels : sequence of sequence of str, optional
        One label per word, to fill the ``label`` column.
    edits : mapping of str to UnitEdit, optional
        Applied with :func:`~neuro_pipeline.intervention.intervene` during the forward
        passes (e.g. :func:`~neuro_pipeline.intervention.neuron_edits`).
    batch_size : int, default=32

    Returns
    -------
    polars.DataFrame
        One row per masked word, columns :data:`PREDICTION_COLUMNS`, sorted by
        ``mask_set`` and ``position``. A word is ``correct`` when every one of its
        subwords is the top prediction at its position (``rank`` 1; ``rank`` is the
        worst, i.e. largest, rank of the word's true subwords); its ``log_likelihood`` is the
        sum of its subwords' log-probabilities (each predicted with all masks in place).

    Raises
    ------
    ValueError
        If the plan names a missing sentence or word, a sentence is too long, or
        ``labels`` does not match ``sentences``.
    """
    _check_encoder(loaded, "masked_word_predictions")
    batch_size = _check_positive_int(batch_size, "batch_size")
    if labels is not None:
        _check_labels(sentences, labels)
    batches = _prepare(loaded, sentences, plan, batch_size)
    return _predict(loaded, head, batches, labels, edits)


def _check_labels(sentences, labels) -> None:
    if len(labels) != len(sentences) or any(len(a) != len(b) for a, b in zip(sentences, labels, strict=True)):
        raise ValueError("labels must hold one label per word of every sentence, like sentences.")


def _predict(loaded, head, batches, labels, edits) -> pl.DataFrame:
    columns: dict[str, list] = {name: [] for name in PREDICTION_COLUMNS}
    context = intervene(loaded.model, edits) if edits else contextlib.nullcontext()
    with torch.inference_mode(), context:
        for batch in batches:
            counts, ranks, likelihood = _word_scores(head, _states_at_masks(loaded, batch), batch)
            for entry, index, position in batch.words:
                columns["mask_set"].append(entry)
                columns["sentence"].append(index)
                columns["position"].append(position)
                columns["label"].append(None if labels is None else labels[index][position])
            columns["n_subwords"].extend(counts.tolist())
            columns["correct"].extend((ranks == 1).tolist())
            columns["rank"].extend(ranks.tolist())
            columns["log_likelihood"].extend(likelihood.tolist())
    frame = pl.DataFrame(columns, schema=PREDICTION_COLUMNS)
    return frame.sort("mask_set", "position")


def concept_scores(predictions: pl.DataFrame, concept: str | Collection[str], *, top_k: int = 1) -> pl.DataFrame:
    """Masked-word accuracy and mean log-likelihood of a concept's words and of the rest.

    Parameters
    ----------
    predictions : polars.DataFrame
        From :func:`masked_word_predictions`, with labels.
    concept : str or collection of str
        The label(s) of the concept.
    top_k : int, default=1
        A word counts as correct when its ``rank`` is at most ``top_k`` (1: exactly
        predicted; 10: among the head's 10 best guesses, for every subword).

    Returns
    -------
    polars.DataFrame
        Two rows, ``group`` = ``"concept"`` then ``"outside"``, with ``n_words`` (Int64),
        ``accuracy`` and ``log_likelihood`` (Float64, the mean per word; null for a
        group without words).

    Examples
    --------
    >>> table = pl.DataFrame({"label": ["NOUN", "VERB", "NOUN"], "rank": [1, 4, 3],
    ...                       "log_likelihood": [-1.0, -3.0, -2.0]})
    >>> concept_scores(table, "NOUN").rows()
    [('concept', 2, 0.5, -1.5), ('outside', 1, 0.0, -3.0)]
    >>> concept_scores(table, "NOUN", top_k=3).rows()
    [('concept', 2, 1.0, -1.5), ('outside', 1, 0.0, -3.0)]
    """
    members, _ = _concept_set(concept)
    top_k = _check_positive_int(top_k, "top_k")
    if predictions["label"].null_count():
        raise ValueError("predictions have no labels; pass labels to masked_word_predictions.")
    inside = predictions["label"].is_in(sorted(members))
    rows = []
    for group, mask in (("concept", inside), ("outside", ~inside)):
        part = predictions.filter(mask)
        rows.append({
            "group": group, "n_words": part.height,
            "accuracy": float((part["rank"] <= top_k).mean()) if part.height else None,
            "log_likelihood": float(part["log_likelihood"].mean()) if part.height else None,
        })
    return pl.DataFrame(rows, schema={"group": pl.Utf8, "n_words": pl.Int64,
                                      "accuracy": pl.Float64, "log_likelihood": pl.Float64})


# ------------------------------------------------------------------ top-k vs random-k
def matched_random_neurons(
    neurons: Sequence[int] | np.ndarray,
    *,
    n_layers: int,
    hidden_size: int,
    n_draws: int,
    seed: int = 0,
    exclude_chosen: bool = True,
) -> np.ndarray:
    """Random neuron sets with the same size and the same count per layer as ``neurons``.

    Parameters
    ----------
    neurons : sequence of int
        Global indices ``layer * hidden_size + unit`` (e.g. a ranking's top k).
    n_layers, hidden_size : int
        The layout of the global indices.
    n_draws : int
        Number of random sets.
    seed : int, default=0
    exclude_chosen : bool, default=True
        Draw only among neurons not in ``neurons``, so a random set never shares a neuron
        with the set it is the control for.

    Returns
    -------
    numpy.ndarray of shape (n_draws, k), int64
        Each row sorted; within each layer, units drawn uniformly without replacement.

    Raises
    ------
    ValueError
        If a neuron is out of range or repeated, or a layer has too few other units.

    Examples
    --------
    >>> draws = matched_random_neurons([1, 2, 9], n_layers=3, hidden_size=4, n_draws=2)
    >>> (draws // 4).tolist()   # two neurons in layer 0, one in layer 2, as chosen
    [[0, 0, 2], [0, 0, 2]]
    """
    n_layers = _check_positive_int(n_layers, "n_layers")
    hidden_size = _check_positive_int(hidden_size, "hidden_size")
    n_draws = _check_positive_int(n_draws, "n_draws")
    neurons = np.asarray(neurons, dtype=np.int64).reshape(-1)
    total = n_layers * hidden_size
    if neurons.size and (neurons.min() < 0 or neurons.max() >= total):
        raise ValueError(f"neurons must lie in [0, {total}) for {n_layers} layers x {hidden_size} units.")
    if len(np.unique(neurons)) != len(neurons):
        raise ValueError("neurons must be distinct.")
    layers, units = np.divmod(neurons, hidden_size)
    rng = np.random.default_rng(seed)
    out = np.empty((n_draws, len(neurons)), dtype=np.int64)
    for draw in range(n_draws):
        picked = [np.empty(0, dtype=np.int64)]
        for layer in np.unique(layers):
            count = int((layers == layer).sum())
            pool = np.setdiff1d(np.arange(hidden_size), units[layers == layer]) if exclude_chosen else np.arange(hidden_size)
            if count > len(pool):
                raise ValueError(
                    f"Layer {layer} holds {count} chosen neurons but only {len(pool)} other units; "
                    "cannot draw a disjoint random set (set exclude_chosen=False)."
                )
            picked.append(layer * hidden_size + rng.choice(pool, size=count, replace=False))
        out[draw] = np.sort(np.concatenate(picked))
    return out


def neuron_ablation_effects(
    loaded: LoadedModel,
    head: MaskedLMHead,
    sentences: Sequence[Sequence[str]],
    labels: Sequence[Sequence[str]],
    plan: MaskPlan,
    neurons: Sequence[int] | np.ndarray,
    *,
    concept: str | Collection[str],
    n_random: int = 10,
    mode: str = "mean",
    means: np.ndarray | None = None,
    factor: float = 0.0,
    top_k: int | Sequence[int] = 1,
    seed: int = 0,
    batch_size: int = 32,
    baseline: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Masked-word scores with no ablation, with ``neurons`` ablated, and with matched
    random neurons ablated, for a concept's words and the rest.

    Parameters
    ----------
    loaded, head, sentences, plan, batch_size
        As :func:`masked_word_predictions`; use the same plan for every method compared.
    labels : sequence of sequence of str
        One label per word.
    neurons : sequence of int
        Global hidden-state neurons to ablate (e.g. ``ranker.class_rankings_[c][:k]``).
    concept : str or collection of str
        Label(s) whose masked words form the ``"concept"`` group.
    n_random : int, default=10
        Random sets of the same size and per-layer counts (:func:`matched_random_neurons`,
        disjoint from ``neurons``).
    mode : {"mean", "zero", "scale"}, default="mean"
        The ablation (:func:`~neuro_pipeline.intervention.neuron_edits`). ``"mean"`` sets
        each neuron to ``means`` (its average over words), removing what it says about
        the token while keeping its usual level; ``"zero"`` also shifts that level.
    means : numpy.ndarray of shape (n_layers * hidden_size,), optional
        Needed for ``mode="mean"``, e.g. the column means of the activation matrix.
    factor : float, default=0.0
        For ``mode="scale"``.
    top_k : int or sequence of int, default=1
        ``accuracy`` counts a word correct when its rank is at most ``top_k``
        (:func:`concept_scores`). Several values give one set of rows each, from the
        same forward passes.
    seed : int, default=0
        Seed of the random draws.
    baseline : polars.DataFrame, optional
        :func:`masked_word_predictions` of the same plan without intervention, to reuse
        it across methods instead of recomputing it.

    Returns
    -------
    polars.DataFrame
        Columns :data:`ABLATION_EFFECT_COLUMNS`: for each ``top_k``, each condition
        (``baseline``, ``top``, then ``random`` draws 0..n_random-1), a ``concept`` row
        and an ``outside`` row. Summarise with :func:`summarize_ablation_effects`.

    Raises
    ------
    ValueError
        As :func:`~neuro_pipeline.intervention.neuron_edits`,
        :func:`matched_random_neurons` and :func:`masked_word_predictions`; or if
        ``mode`` is unknown or the plan masks no word of the concept.
    """
    _check_encoder(loaded, "neuron_ablation_effects")
    if mode not in INTERVENTION_MODES:
        raise ValueError(f"Unknown intervention mode {mode!r}; choose one of {list(INTERVENTION_MODES)}.")
    n_random = _check_positive_int(n_random, "n_random")
    top_ks = [top_k] if isinstance(top_k, Integral) and not isinstance(top_k, bool) else list(top_k)
    top_ks = [_check_positive_int(k, "top_k") for k in top_ks]
    _check_labels(sentences, labels)
    members, name = _concept_set(concept)
    neurons = np.asarray(neurons, dtype=np.int64).reshape(-1)
    draws = matched_random_neurons(neurons, n_layers=loaded.n_layers, hidden_size=loaded.hidden_size,
                                   n_draws=n_random, seed=seed)
    batches = _prepare(loaded, sentences, plan, _check_positive_int(batch_size, "batch_size"))
    if baseline is None:
        baseline = _predict(loaded, head, batches, labels, None)
    if not baseline["label"].is_in(sorted(members)).any():
        raise ValueError(f"The mask plan masks no word of the concept {name!r}; use concept_masks.")

    def rows(predictions: pl.DataFrame, condition: str, draw: int | None, n_neurons: int) -> list[pl.DataFrame]:
        return [_effect_rows(concept_scores(predictions, members, top_k=k), name, k, condition, draw, n_neurons)
                for k in top_ks]

    def ablated(chosen) -> pl.DataFrame:
        edits = neuron_edits(loaded, chosen, mode=mode, means=means, factor=factor)
        return _predict(loaded, head, batches, labels, edits)

    frames = rows(baseline, "baseline", None, 0) + rows(ablated(neurons), "top", None, len(neurons))
    for draw, chosen in enumerate(draws):
        frames += rows(ablated(chosen), "random", draw, len(chosen))
    return pl.concat(frames).select(list(ABLATION_EFFECT_COLUMNS)).sort("top_k", maintain_order=True)


def _effect_rows(scores: pl.DataFrame, concept: str, top_k: int, condition: str, draw: int | None,
                 n_neurons: int) -> pl.DataFrame:
    return scores.with_columns(
        pl.lit(concept, dtype=pl.Utf8).alias("concept"),
        pl.lit(top_k, dtype=pl.Int32).alias("top_k"),
        pl.lit(condition, dtype=pl.Utf8).alias("condition"),
        pl.lit(draw, dtype=pl.Int32).alias("draw"),
        pl.lit(n_neurons, dtype=pl.Int32).alias("n_neurons"),
    )


def summarize_ablation_effects(effects: pl.DataFrame, *, confidence: float = 0.95) -> pl.DataFrame:
    """Baseline, top-k and random-k scores side by side, with an interval over the draws.

    Parameters
    ----------
    effects : polars.DataFrame
        From :func:`neuron_ablation_effects` (several concatenated, for several concepts,
        are summarised per concept).
    confidence : float, default=0.95
        Level of the Student-t interval of the mean over the random draws
        (``mean +- t * sd / sqrt(n_random)``; with one draw the interval is that draw).

    Returns
    -------
    polars.DataFrame
        Columns :data:`ABLATION_SUMMARY_COLUMNS`, one row per concept, group
        (``"concept"``, ``"outside"``) and metric (``"accuracy"``, ``"log_likelihood"``).
        ``random_share_below_top`` is the share of random draws that scored at or below
        the top-k ablation: near 0 when the top neurons hurt more than any random set.

    Examples
    --------
    >>> effects = pl.DataFrame({
    ...     "concept": ["N"] * 6, "top_k": [1] * 6, "condition": ["baseline", "top", "random", "random", "random", "random"],
    ...     "draw": [None, None, 0, 1, 2, 3], "group": ["concept"] * 6, "n_words": [10] * 6,
    ...     "n_neurons": [0, 2, 2, 2, 2, 2], "accuracy": [0.8, 0.2, 0.7, 0.8, 0.7, 0.8],
    ...     "log_likelihood": [-1.0, -5.0, -1.5, -1.0, -1.5, -1.0]})
    >>> row = summarize_ablation_effects(effects).row(0, named=True)
    >>> row["metric"], row["top_drop"], round(row["random_mean"], 2), row["random_share_below_top"]
    ('accuracy', 0.6000000000000001, 0.75, 0.0)
    """
    from scipy import stats

    if isinstance(confidence, bool) or not isinstance(confidence, Real) or not 0 < confidence < 1:
        raise ValueError(f"confidence must be a number in (0, 1); got {confidence!r}.")
    missing = sorted(set(ABLATION_EFFECT_COLUMNS) - set(effects.columns))
    if missing:
        raise ValueError(f"effects lacks columns {missing}; expected the output of neuron_ablation_effects.")
    rows = []
    for (concept, top_k, group), part in effects.group_by(["concept", "top_k", "group"], maintain_order=True):
        base = part.filter(pl.col("condition") == "baseline")
        top = part.filter(pl.col("condition") == "top")
        random = part.filter(pl.col("condition") == "random")
        if base.height != 1 or top.height != 1 or random.height == 0:
            raise ValueError(
                f"effects for concept {concept!r}, group {group!r} need one baseline row, one top row "
                f"and at least one random row; got {base.height}, {top.height} and {random.height}."
            )
        for metric in ("accuracy", "log_likelihood"):
            values = random[metric].to_numpy().astype(np.float64)
            mean = float(values.mean())
            half = 0.0
            if len(values) > 1:
                half = float(stats.t.ppf(0.5 + confidence / 2, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values)))
            rows.append({
                "concept": concept, "top_k": top_k, "group": group, "metric": metric,
                "n_words": int(base["n_words"][0]), "n_neurons": int(top["n_neurons"][0]),
                "n_random": len(values), "baseline": base[metric][0], "top": top[metric][0],
                "random_mean": mean, "random_low": mean - half, "random_high": mean + half,
                "top_drop": base[metric][0] - top[metric][0], "random_drop": base[metric][0] - mean,
                "random_share_below_top": float(np.mean(values <= top[metric][0])),
            })
    return pl.DataFrame(rows, schema=ABLATION_SUMMARY_COLUMNS)

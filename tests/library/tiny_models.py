"""A tiny random BERT with a real WordPiece tokenizer, written to disk for tests.

The vocabulary is hand-written so that tests know how words split: for example
``"playing"`` -> ``play ##ing``, ``"cats"`` -> ``cat ##s`` and ``"unhappiness"`` ->
``un ##happi ##ness``. Single letters and ``##`` letters are included, so every lowercase
ASCII word tokenises (an unknown word of n letters becomes up to n subwords), which makes
long words easy to build.
"""

from __future__ import annotations

import string
from pathlib import Path

import torch
from transformers import BertConfig, BertModel, BertTokenizerFast

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WHOLE_WORDS = [
    "the", "a", "cat", "dog", "sat", "on", "mat", "play", "run", "un", "happy", "walk",
    "is", "was", "and", "it", "he", "she", "big", "small", "red", "blue", ".", ",", "!",
]
CONTINUATIONS = ["##s", "##ing", "##ed", "##ly", "##ness", "##happi", "##er"]
VOCAB: list[str] = (
    SPECIAL_TOKENS
    + WHOLE_WORDS
    + CONTINUATIONS
    + [c for c in string.ascii_lowercase if c not in WHOLE_WORDS]
    + [f"##{c}" for c in string.ascii_lowercase if f"##{c}" not in CONTINUATIONS]
)


def write_tiny_bert(
    path: str | Path,
    *,
    seed: int = 0,
    num_hidden_layers: int = 2,
    hidden_size: int = 32,
    max_position_embeddings: int = 64,
) -> Path:
    """Save a random ``BertModel`` and a matching fast WordPiece tokenizer to ``path``.

    Parameters
    ----------
    path : str or Path
        Directory to write (created if missing).
    seed : int
        Seed for the weights; the global torch RNG state is left as it was.
    num_hidden_layers, hidden_size, max_position_embeddings : int
        Passed to ``BertConfig``; ``hidden_size`` must be a multiple of 4 (4 heads). The
        tokenizer's ``model_max_length`` is set to ``max_position_embeddings``.

    Returns
    -------
    Path
        ``path``, holding ``config.json``, ``model.safetensors``, ``vocab.txt`` and
        ``tokenizer.json``.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    vocab_file = path / "vocab.txt"
    vocab_file.write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(
        vocab=str(vocab_file), do_lower_case=True, model_max_length=max_position_embeddings
    )
    config = BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=4,
        intermediate_size=2 * hidden_size,
        max_position_embeddings=max_position_embeddings,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BertModel(config)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path

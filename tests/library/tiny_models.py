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


# ------------------------------------------------------------------------------ GPT-2
# A decoder-only model with a real byte-level BPE tokenizer. The tokenizer is trained
# offline (the ``tokenizers`` library's BPE trainer is deterministic) on the sentences
# below, starting from the 256-symbol byte alphabet, so that any text, whatever its
# characters, tokenises (an unseen character becomes its UTF-8 bytes). Frequent words get
# their own leading-space token ("Ġcat"); rarer ones split ("Ġcat" + "s").

GPT2_TRAINING_TEXT = [
    "The cat sat on the mat.",
    "A dog was playing in the park with the cat.",
    "She is walking and he is running.",
    "The big red dog and the small blue cat sat on the mat.",
    "It was a happy day in the park (really) in 2024, about 3.5 hours.",
    "The dog is playing with the ball and the cat is sleeping.",
]
GPT2_EOS = "<|endoftext|>"


def write_tiny_gpt2(
    path: str | Path,
    *,
    seed: int = 0,
    n_layer: int = 2,
    n_embd: int = 32,
    n_positions: int = 64,
    vocab_size: int = 320,
) -> Path:
    """Save a random ``GPT2Model`` and a matching byte-level BPE ``GPT2TokenizerFast``.

    The vocabulary is ``<|endoftext|>`` (id 0: BOS, EOS and unknown token; GPT-2 has no pad
    token), the 256 byte symbols, then merges learnt from :data:`GPT2_TRAINING_TEXT`.

    Parameters
    ----------
    path : str or Path
        Directory to write (created if missing).
    seed : int
        Seed for the weights; the global torch RNG state is left as it was.
    n_layer, n_embd, n_positions : int
        Passed to ``GPT2Config`` (2 heads, so ``n_embd`` must be even). The tokenizer's
        ``model_max_length`` is ``n_positions``.
    vocab_size : int
        Size of the trained BPE vocabulary (at least 257).

    Returns
    -------
    Path
        ``path``, holding ``config.json``, ``model.safetensors``, ``vocab.json``,
        ``merges.txt`` and ``tokenizer.json``.
    """
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2Model, GPT2TokenizerFast

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer(add_prefix_space=True)
    bpe.train_from_iterator(GPT2_TRAINING_TEXT, vocab_size=vocab_size, min_frequency=1,
                            special_tokens=[GPT2_EOS], show_progress=False)
    bpe.save_model(str(path))
    # Saved without add_prefix_space, as GPT-2's own tokenizer is: load_model sets it.
    tokenizer = GPT2TokenizerFast(vocab=str(path / "vocab.json"), merges=str(path / "merges.txt"),
                                  model_max_length=n_positions)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_layer=n_layer, n_embd=n_embd, n_head=2,
        n_positions=n_positions, bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT2Model(config)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


def write_tiny_roberta(path: str | Path, *, seed: int = 0) -> Path:
    """Save a random ``RobertaModel`` (2 layers, width 32) and a byte-level BPE
    ``RobertaTokenizerFast`` saved **without** ``add_prefix_space``, as RoBERTa's own is.

    Its vocabulary is ``<s> <pad> </s> <unk> <mask>``, the 256 byte symbols, then merges
    learnt from :data:`GPT2_TRAINING_TEXT` with the space prefix, so ``"Ġcat"`` is a token.
    """
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizerFast

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer(add_prefix_space=True)
    bpe.train_from_iterator(GPT2_TRAINING_TEXT, vocab_size=330, min_frequency=1,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
                            show_progress=False)
    bpe.save_model(str(path))
    tokenizer = RobertaTokenizerFast(vocab=str(path / "vocab.json"), merges=str(path / "merges.txt"),
                                     model_max_length=64)
    config = RobertaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                           num_attention_heads=2, intermediate_size=64, max_position_embeddings=66,
                           pad_token_id=tokenizer.pad_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = RobertaModel(config)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


# -------------------------------------------------------------------------------- T5
# An encoder-decoder model with a SentencePiece-style Unigram tokenizer. The vocabulary is
# hand-written with log-probability scores (Unigram training is not deterministic across
# runs), so tests know how words split: "▁" starts a word, whole words such as "▁cat" are
# likely pieces, and single characters back everything else up, so "cats" -> ▁cat s and
# "2024" -> ▁ 2 0 2 4. Characters not listed (e.g. "ï", "—", emoji) become <unk>.

T5_SPECIAL_TOKENS = ["<pad>", "</s>", "<unk>"]
T5_WORDS = ["the", "The", "a", "cat", "dog", "sat", "on", "mat", "play", "is", "was", "and",
            "it", "he", "she", "big", "small", "red", "blue", "happy", "walk", "run", "caf"]
T5_SUFFIXES = ["s", "ing", "ed", "ly", "ness", "er"]
T5_CHARACTERS = list(string.ascii_letters + string.digits + ".,!?()'\"-") + ["é"]


def _t5_vocab() -> list[tuple[str, float]]:
    pieces = [(token, 0.0) for token in T5_SPECIAL_TOKENS] + [("\u2581", -2.0)]
    pieces += [(f"\u2581{word}", -3.0) for word in T5_WORDS]
    pieces += [(suffix, -4.0) for suffix in T5_SUFFIXES if suffix not in T5_CHARACTERS]
    seen = {piece for piece, _ in pieces}
    pieces += [(char, -6.0) for char in T5_CHARACTERS if char not in seen]
    return pieces


def write_tiny_t5(
    path: str | Path,
    *,
    seed: int = 0,
    d_model: int = 32,
    num_layers: int = 2,
    num_decoder_layers: int = 2,
    model_max_length: int = 64,
) -> Path:
    """Save a random ``T5Model`` and a matching Unigram ``T5TokenizerFast`` to ``path``.

    Parameters
    ----------
    path : str or Path
        Directory to write (created if missing).
    seed : int
        Seed for the weights; the global torch RNG state is left as it was.
    d_model, num_layers, num_decoder_layers : int
        Passed to ``T5Config`` (2 heads of ``d_model // 2``, ``d_ff = 2 * d_model``).
    model_max_length : int
        The tokenizer's limit (T5's relative positions set none).

    Returns
    -------
    Path
        ``path``, holding ``config.json``, ``model.safetensors`` and ``tokenizer.json``;
        ``decoder_start_token_id`` is the pad id 0, as in T5's own configs.
    """
    from transformers import T5Config, T5Model, T5TokenizerFast

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = T5TokenizerFast(vocab=_t5_vocab(), extra_ids=0, model_max_length=model_max_length)
    config = T5Config(
        vocab_size=len(tokenizer), d_model=d_model, d_kv=d_model // 2, d_ff=2 * d_model,
        num_layers=num_layers, num_decoder_layers=num_decoder_layers, num_heads=2,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = T5Model(config)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path

"""Activation extraction: load a local model, run it over words, get one vector per word.

Start here: :func:`load_model` reads a model directory into a :class:`LoadedModel`
(versioned by the hash of its files), and :func:`extract_activations` yields, for each
sentence, an array of shape ``(n_words, n_layers, hidden_size)`` covering the embedding
layer and every transformer layer. :func:`aggregate_subwords` is the subword-to-word step
on its own.

Encoders (BERT), decoder-only models (GPT-2) and either stack of an encoder-decoder model
(T5) are supported (:attr:`LoadedModel.kind`, ``component``); ``random_init_seed`` loads
the random-weights control model, versioned by :func:`random_init_version`.
"""

from neuro_pipeline.extraction.aggregate import ACCEPTED_AGGREGATIONS, AGGREGATIONS, aggregate_subwords
from neuro_pipeline.extraction.extract import (
    LONG_SENTENCE_MODES,
    ExtractionStats,
    extract_activations,
)
from neuro_pipeline.extraction.model import (
    COMPONENTS,
    DTYPES,
    MODEL_KINDS,
    LoadedModel,
    ModelLoadError,
    load_model,
    random_init_version,
)

__all__ = [
    "ACCEPTED_AGGREGATIONS",
    "AGGREGATIONS",
    "COMPONENTS",
    "DTYPES",
    "LONG_SENTENCE_MODES",
    "MODEL_KINDS",
    "ExtractionStats",
    "LoadedModel",
    "ModelLoadError",
    "aggregate_subwords",
    "extract_activations",
    "load_model",
    "random_init_version",
]

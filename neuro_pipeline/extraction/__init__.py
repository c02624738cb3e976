"""Activation extraction: load a local model, run it over words, get one vector per word.

Start here: :func:`load_model` reads a model directory into a :class:`LoadedModel`
(versioned by the hash of its files), and :func:`extract_activations` yields, for each
sentence, an array of shape ``(n_words, n_layers, hidden_size)`` covering the embedding
layer and every transformer layer. :func:`aggregate_subwords` is the subword-to-word step
on its own.
"""

from neuro_pipeline.extraction.aggregate import AGGREGATIONS, aggregate_subwords
from neuro_pipeline.extraction.extract import (
    LONG_SENTENCE_MODES,
    ExtractionStats,
    extract_activations,
)
from neuro_pipeline.extraction.model import DTYPES, LoadedModel, ModelLoadError, load_model

__all__ = [
    "AGGREGATIONS",
    "DTYPES",
    "LONG_SENTENCE_MODES",
    "ExtractionStats",
    "LoadedModel",
    "ModelLoadError",
    "aggregate_subwords",
    "extract_activations",
    "load_model",
]

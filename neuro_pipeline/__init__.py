"""neuro-pipeline: find out what the individual neurons of an NLP model encode.

The library computes; the Dagster code location in ``assets/`` orchestrates. Nothing in
this package imports dagster.
"""

from neuro_pipeline.types import TOKEN_COLUMNS, Sentence, sentence_hash

__all__ = ["TOKEN_COLUMNS", "Sentence", "sentence_hash"]
__version__ = "0.1.0"

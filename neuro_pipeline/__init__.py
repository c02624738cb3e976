"""neuro-pipeline: find out what the individual neurons of an NLP model encode.

The library computes; the Dagster code location in ``assets/`` orchestrates. Nothing in
this package imports dagster. The entry points a notebook needs are importable from here
(each is imported on first use, so ``import neuro_pipeline`` stays light)::

    import neuro_pipeline as npl

    cfg = npl.load_config("pipeline.yaml")
    store = npl.Store(cfg.store_path)
    npl.materialize_corpus(cfg, store)
    npl.materialize_activations(cfg, store)
    train = npl.load_split(cfg, store, npl.current_activation_set(cfg, store), "train")
    ranker = npl.get_ranker("probeless").fit(train.X, train.labels)

See ``docs/library.md`` for a worked example.
"""

from __future__ import annotations

import importlib
from typing import Any

from neuro_pipeline.types import TOKEN_COLUMNS, Sentence, sentence_hash

#: Entry point → the module that defines it.
_ENTRY_POINTS = {
    # configuration and storage
    "load_config": "neuro_pipeline.config",
    "config_from_dict": "neuro_pipeline.config",
    "PipelineConfig": "neuro_pipeline.config",
    "Store": "neuro_pipeline.store",
    # the stages
    "run_analysis": "neuro_pipeline.stages",
    "materialize_corpus": "neuro_pipeline.stages.corpus",
    "materialize_activations": "neuro_pipeline.stages.activations",
    "materialize_rankings": "neuro_pipeline.stages.rankings",
    "materialize_report": "neuro_pipeline.stages.report",
    "current_activation_set": "neuro_pipeline.stages.common",
    "load_split": "neuro_pipeline.stages.common",
    "read_ranking": "neuro_pipeline.stages.rankings",
    # the computing parts, without the store
    "read_conllu": "neuro_pipeline.corpus",
    "generate_demo_corpus": "neuro_pipeline.corpus",
    "load_model": "neuro_pipeline.extraction",
    "extract_activations": "neuro_pipeline.extraction",
    "get_ranker": "neuro_pipeline.ranking",
    "LinearProbe": "neuro_pipeline.probe",
    "evaluate_selections": "neuro_pipeline.evaluation",
}

__all__ = ["TOKEN_COLUMNS", "Sentence", "sentence_hash", *_ENTRY_POINTS]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    module = _ENTRY_POINTS.get(name)
    if module is None:
        raise AttributeError(f"module 'neuro_pipeline' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # imported once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_ENTRY_POINTS))

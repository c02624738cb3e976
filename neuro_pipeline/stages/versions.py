"""What a stage's result depends on, as content hashes: the model, the corpus, the settings,
and the activation set they make together. These are the data versions Dagster compares to
decide what is stale."""

from __future__ import annotations

import hashlib
from pathlib import Path

from neuro_pipeline.config import PipelineConfig
from neuro_pipeline.hashing import hash_directory, hash_file


def model_version(cfg: PipelineConfig) -> str:
    """Content hash of the model directory (config, tokenizer, weights); for the random-weights
    control (``model.random_init_seed``) a hash of that and the seed."""
    version = hash_directory(cfg.model_dir)
    if cfg.model.random_init_seed is not None:
        from neuro_pipeline.extraction.model import random_init_version

        version = random_init_version(version, cfg.model.random_init_seed)
    return version


def corpus_version(cfg: PipelineConfig) -> str:
    """Hash of the corpus files' bytes and of the options that turn them into labelled tokens."""
    h = hashlib.sha256(cfg.section_hash("corpus", "concepts", "balance").encode())
    for split in ("train", "dev", "test"):
        for key in (split, f"{split}_labels", f"{split}_pairs"):
            path = cfg.path(getattr(cfg.corpus, key))
            if path is not None:
                h.update(f"{key}={hash_file(path)}".encode())
    for concept in cfg.concepts:
        for path in _concept_files(cfg, concept):
            h.update(f"{concept.name}={hash_file(path)}".encode())
    return h.hexdigest()[:16]


def _concept_files(cfg: PipelineConfig, concept) -> list[Path]:
    """Files a concept's labels depend on: its word list, or the module of its function."""
    if concept.words_file:
        return [cfg.path(concept.words_file)]
    if concept.function:
        import importlib.util

        module = concept.function.split(":")[0] if ":" in concept.function else concept.function.rsplit(".", 1)[0]
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            return []
        return [Path(spec.origin)] if spec is not None and spec.origin and Path(spec.origin).is_file() else []
    return []


def settings_version(cfg: PipelineConfig) -> str:
    """Hash of the settings that change results after the corpus: extraction, ranking, evaluation."""
    extra = "" if cfg.model.component is None else f"|component={cfg.model.component}"
    return hashlib.sha256(
        (cfg.section_hash("extraction", "ranking", "evaluation") + cfg.model.dtype + extra).encode()
    ).hexdigest()[:16]


def activation_set_id(cfg: PipelineConfig, model_ver: str) -> str:
    """The id of the activations of model version ``model_ver`` under the configured extraction
    settings (aggregation, compute dtype, long sentences, storage, component)."""
    return make_activation_set_id(model_ver, aggregation=cfg.extraction.aggregation, dtype=cfg.model.dtype,
                                  long_sentences=cfg.extraction.long_sentences,
                                  storage_dtype=cfg.extraction.storage_dtype, storage=cfg.extraction.storage,
                                  component=cfg.model.component)


def make_activation_set_id(model_ver: str, *, aggregation: str, dtype: str, long_sentences: str,
                           storage_dtype: str = "float32", storage: str = "duckdb",
                           component: str | None = None) -> str:
    """An activation set's id: a hash of the model version and the settings that change its
    rows. Settings at their first value add nothing, so sets made before a setting existed
    keep their ids."""
    key = f"{model_ver}|{aggregation}|{dtype}|{long_sentences}"
    if storage_dtype != "float32":
        key += f"|storage={storage_dtype}"  # float32 sets keep the ids they always had
    if storage != "duckdb":
        key += f"|{storage}"
    if component is not None:
        key += f"|{component}"  # T5's encoder and decoder states are different sets
    return hashlib.sha256(key.encode()).hexdigest()[:16]

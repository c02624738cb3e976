"""The external inputs, observed: their data version is a content hash, so a change in bytes
(not a touch or a copy) marks the stages that read them stale.

With a model registry (``monitoring.registry``) the model is partitioned: one data version
per registered version folder."""

import dagster as dg

from neuro_pipeline.config import PipelineConfig
from neuro_pipeline.stages.versions import corpus_version, model_version, settings_version

from .resources import PipelineResource

INPUTS = "inputs"


def model_source(partitions_def: dg.PartitionsDefinition | None) -> dg.SourceAsset:
    if partitions_def is None:
        @dg.observable_source_asset(name="model_checkpoint", group_name=INPUTS, description=(
            "The model directory (config, tokenizer, weights), watched at a fixed path. "
            "Data version: SHA-256 of its files."))
        def model_checkpoint(pipeline: PipelineResource) -> dg.DataVersion:
            return dg.DataVersion(model_version(pipeline.load()))
        return model_checkpoint

    @dg.observable_source_asset(name="model_checkpoint", group_name=INPUTS, partitions_def=partitions_def,
                                description=(
        "The model registry: one partition per version folder. Data version: SHA-256 of the folder's files."))
    def registry_checkpoint(context, pipeline: PipelineResource) -> dg.DataVersionsByPartition:
        cfg = pipeline.load()
        keys = context.instance.get_dynamic_partitions(partitions_def.name)
        return dg.DataVersionsByPartition({k: model_version(cfg.for_model_version(k)) for k in keys
                                           if (cfg.registry_dir / k).is_dir()})
    return registry_checkpoint


@dg.observable_source_asset(group_name=INPUTS, description=(
    "The annotated corpus files and the options that read them (format, label column, split). "
    "Data version: hash of the files' bytes and those options."))
def corpus_files(pipeline: PipelineResource) -> dg.DataVersion:
    return dg.DataVersion(corpus_version(pipeline.load()))


@dg.observable_source_asset(group_name=INPUTS, description=(
    "The analysis settings of pipeline.yaml that change results after the corpus "
    "(extraction, ranking, evaluation, compute dtype). Data version: their hash."))
def analysis_settings(pipeline: PipelineResource) -> dg.DataVersion:
    return dg.DataVersion(settings_version(pipeline.load()))


def input_versions(cfg: PipelineConfig) -> dict[str, str]:
    """The current data versions of the unpartitioned inputs (what the watch sensor compares)."""
    versions = {"corpus_files": corpus_version(cfg), "analysis_settings": settings_version(cfg)}
    if cfg.registry_dir is None:
        versions["model_checkpoint"] = model_version(cfg)
    return versions

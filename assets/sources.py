"""The external inputs, observed: their data version is a content hash, so a change in bytes
(not a touch or a copy) marks the stages that read them stale."""

import dagster as dg

from neuro_pipeline.pipeline import corpus_version, model_version, settings_version

from .resources import PipelineResource


@dg.observable_source_asset(group_name="inputs", description=(
    "The model directory (config, tokenizer, weights). Data version: SHA-256 of its files."))
def model_checkpoint(pipeline: PipelineResource) -> dg.DataVersion:
    return dg.DataVersion(model_version(pipeline.load()))


@dg.observable_source_asset(group_name="inputs", description=(
    "The annotated corpus files and the options that read them (format, label column, split). "
    "Data version: hash of the files' bytes and those options."))
def corpus_files(pipeline: PipelineResource) -> dg.DataVersion:
    return dg.DataVersion(corpus_version(pipeline.load()))


@dg.observable_source_asset(group_name="inputs", description=(
    "The analysis settings of pipeline.yaml that change results after the corpus "
    "(extraction, ranking, evaluation, compute dtype). Data version: their hash."))
def analysis_settings(pipeline: PipelineResource) -> dg.DataVersion:
    return dg.DataVersion(settings_version(pipeline.load()))

SOURCES = [model_checkpoint, corpus_files, analysis_settings]

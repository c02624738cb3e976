"""The four stages of an analysis as software-defined assets, each one library call."""

import dagster as dg

from neuro_pipeline import pipeline as np_pipeline

from .metadata import activation_metadata, corpus_metadata, ranking_metadata, report_metadata
from .resources import PipelineResource
from .sources import analysis_settings, corpus_files, model_checkpoint

GROUP = "analysis"
POOL = "duckdb_writer"  # DuckDB allows one writer process at a time


@dg.asset(group_name=GROUP, code_version="1", pool=POOL, deps=[corpus_files],
          kinds={"polars", "duckdb"})
def annotated_corpus(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
    """Every word of the corpus with its label, keyed by (corpus_id, sentence_id, position): DuckDB table `tokens`."""
    cfg = pipeline.load()
    summary = np_pipeline.materialize_corpus(cfg, pipeline.store(cfg))
    return dg.MaterializeResult(metadata=corpus_metadata(summary, cfg),
                                data_version=dg.DataVersion(summary.version))


@dg.asset(group_name=GROUP, code_version="1", pool=POOL, deps=[annotated_corpus, model_checkpoint, analysis_settings],
          kinds={"pytorch", "duckdb"})
def token_activations(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
    """Every layer's activation for every corpus word, per model version, content-addressed by sentence: table `activations`."""
    cfg = pipeline.load()
    summary = np_pipeline.materialize_activations(cfg, pipeline.store(cfg), progress=_progress_logger(context))
    return dg.MaterializeResult(metadata=activation_metadata(summary),
                                data_version=dg.DataVersion(
                                    f"{summary.activation_set}-{np_pipeline.corpus_version(cfg)}"))


@dg.asset(group_name=GROUP, code_version="1", pool=POOL, deps=[token_activations, analysis_settings],
          kinds={"pytorch", "duckdb"})
def neuron_rankings(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
    """Neurons ordered by relevance to the task, globally and per class: tables `rankings`, `class_rankings`."""
    cfg = pipeline.load()
    summary = np_pipeline.materialize_rankings(cfg, pipeline.store(cfg))
    return dg.MaterializeResult(metadata=ranking_metadata(summary))


@dg.asset(group_name=GROUP, code_version="1", pool=POOL, deps=[neuron_rankings, analysis_settings],
          kinds={"duckdb", "html"})
def evaluation_report(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
    """Probe accuracy with all, top, random and bottom neurons, per class, and the HTML report: table `metrics`."""
    cfg = pipeline.load()
    summary = np_pipeline.materialize_report(cfg, pipeline.store(cfg))
    return dg.MaterializeResult(metadata=report_metadata(summary))


def _progress_logger(context: dg.AssetExecutionContext):
    state = {"next": 0.0}

    def progress(done: int, total: int) -> None:
        if total and done / total >= state["next"]:
            context.log.info(f"extracted {done}/{total} sentences")
            state["next"] += 0.1
    return progress

STAGES = [annotated_corpus, token_activations, neuron_rankings, evaluation_report]

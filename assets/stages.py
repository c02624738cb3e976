"""The stages of an analysis as software-defined assets, each one library call.

The ranking stage has one asset per configured method (``neuron_rankings/<name>``), so
the factories below are called by ``definitions.py`` with the methods of the config."""

import dagster as dg

from neuro_pipeline import pipeline as np_pipeline

from .metadata import (
    ablation_metadata,
    activation_metadata,
    agreement_metadata,
    class_neurons_metadata,
    corpus_metadata,
    ranking_metadata,
    redundancy_metadata,
    report_metadata,
    selectivity_metadata,
)
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
    summary = np_pipeline.materialize_activations(
        cfg, pipeline.store(cfg), progress=_progress_logger(context, "extraction", "sentences"))
    return dg.MaterializeResult(metadata=activation_metadata(summary),
                                data_version=dg.DataVersion(
                                    f"{summary.activation_set}-{np_pipeline.corpus_version(cfg)}"))


@dg.asset(group_name=GROUP, code_version="1", pool=POOL, deps=[token_activations, analysis_settings],
          kinds={"duckdb"})
def neuron_redundancy(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
    """Correlation clusters of each layer's neurons and one independent neuron per cluster (Dalvi et al. 2020): tables `redundancy_layers`, `redundancy_neurons`."""
    cfg = pipeline.load()
    summary = np_pipeline.materialize_redundancy(cfg, pipeline.store(cfg))
    return dg.MaterializeResult(metadata=redundancy_metadata(summary))


def ranking_asset(name: str, method: str, diversify: bool = False) -> dg.AssetsDefinition:
    """The ranking asset of one configured method: ``neuron_rankings/<name>``; a diversified
    ranking also reads the correlation clusters of ``neuron_redundancy``."""

    deps = [token_activations, analysis_settings, *([neuron_redundancy] if diversify else [])]

    @dg.asset(name=name, key_prefix=["neuron_rankings"], group_name=GROUP, code_version="2", pool=POOL,
              deps=deps, kinds={"pytorch", "duckdb"},
              description=(f"Neurons ordered by relevance to the task by `{method}`, globally and per class, "
                           "with the top words of the best neurons: tables `rankings`, `class_rankings`, "
                           "`ranking_runs`, `top_words`."))
    def _ranking(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
        cfg = pipeline.load()
        summary = np_pipeline.materialize_ranking(cfg, pipeline.store(cfg), name)
        return dg.MaterializeResult(metadata=ranking_metadata(summary))

    return _ranking


def analysis_assets(rankings: list[dg.AssetsDefinition]) -> list[dg.AssetsDefinition]:
    """The assets that read every ranking: method agreement and the evaluation report."""

    @dg.asset(group_name=GROUP, code_version="1", pool=POOL, deps=[*rankings, analysis_settings],
              kinds={"duckdb"})
    def method_agreement(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
        """Top-n overlap between the methods and with their NeuronVote consensus (Fan et al. 2023): table `agreement`."""
        cfg = pipeline.load()
        summary = np_pipeline.materialize_agreement(cfg, pipeline.store(cfg))
        return dg.MaterializeResult(metadata=agreement_metadata(summary))

    @dg.asset(group_name=GROUP, code_version="1", pool=POOL, deps=[*rankings, analysis_settings],
              kinds={"pytorch", "duckdb"})
    def probe_selectivity(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
        """Control-task selectivity (Hewitt & Liang 2019) of all neurons, of each method's top neurons and of each layer: tables `selectivity`, `layer_probes`."""
        cfg = pipeline.load()
        summary = np_pipeline.materialize_selectivity(
            cfg, pipeline.store(cfg), progress=_progress_logger(context, "selectivity", "probes"))
        return dg.MaterializeResult(metadata=selectivity_metadata(summary))

    @dg.asset(group_name=GROUP, code_version="1", pool=POOL, deps=[*rankings, analysis_settings],
              kinds={"pytorch", "duckdb"})
    def probe_ablation(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
        """Ablation at the probe: keep or remove the top, random and bottom neurons, retrained or zeroed in the full probe: table `ablation`."""
        cfg = pipeline.load()
        summary = np_pipeline.materialize_ablation(
            cfg, pipeline.store(cfg), progress=_progress_logger(context, "ablation", "rankings"))
        return dg.MaterializeResult(metadata=ablation_metadata(summary))

    @dg.asset(group_name=GROUP, code_version="1", pool=POOL, deps=[*rankings, analysis_settings],
              kinds={"pytorch", "duckdb"})
    def class_neurons(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
        """Where each class's top neurons are (layers) and the fewest neurons that detect each class: tables `layer_distribution`, `minimal_neurons`."""
        cfg = pipeline.load()
        summary = np_pipeline.materialize_class_neurons(cfg, pipeline.store(cfg))
        return dg.MaterializeResult(metadata=class_neurons_metadata(summary))

    @dg.asset(group_name=GROUP, code_version="3", pool=POOL,
              deps=[*rankings, method_agreement, neuron_redundancy, probe_selectivity, probe_ablation, class_neurons,
                    analysis_settings], kinds={"duckdb", "html"})
    def evaluation_report(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
        """Probe accuracy with all neurons and with each method's top, random and bottom neurons, per class, and the HTML report: table `metrics`."""
        cfg = pipeline.load()
        summary = np_pipeline.materialize_report(
            cfg, pipeline.store(cfg), progress=_progress_logger(context, "evaluation", "probes"))
        return dg.MaterializeResult(metadata=report_metadata(summary))

    return [method_agreement, probe_selectivity, probe_ablation, class_neurons, evaluation_report]


def _progress_logger(context: dg.AssetExecutionContext, what: str, unit: str):
    """A progress callback that logs ``progress <what>: <done>/<total> <unit>`` about every 5%;
    ``neuro-pipeline run`` turns these lines into a progress bar."""
    state = {"next": 0.0}

    def progress(done: int, total: int) -> None:
        if total and (done / total >= state["next"] or done == total):
            context.log.info(f"progress {what}: {done}/{total} {unit}")
            state["next"] = done / total + 0.05
    return progress


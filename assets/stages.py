"""The stages of an analysis as software-defined assets, each one library call.

``build_stages`` makes them for one configuration: one ranking asset per configured method
(``neuron_rankings/<name>``), and, with a model registry, every stage after the corpus
partitioned by model version. Every computed asset carries a ``code_version`` (bump it when
its logic changes) and the automation condition ``eager & all upstream blocking checks
passed``, so the automation sensor reruns exactly what went stale."""

import dataclasses
import os
from dataclasses import dataclass

import dagster as dg

from neuro_pipeline import pipeline as np_pipeline
from neuro_pipeline.config import StagesConfig

from .metadata import (
    ablation_metadata,
    activation_metadata,
    agreement_metadata,
    class_neurons_metadata,
    corpus_metadata,
    drift_metadata,
    interventions_metadata,
    per_task,
    ranking_metadata,
    redundancy_metadata,
    report_metadata,
    selectivity_metadata,
)
from .resources import PipelineResource
from .sources import analysis_settings, corpus_files

GROUP = "analysis"
POOL = "duckdb_writer"  # DuckDB allows one writer process at a time

#: Rerun when an upstream changed, once, and only when the upstream blocking checks passed.
AUTOMATION = (dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_blocking_checks_passed()).with_label(
    "eager, once the upstream blocking checks passed")


@dg.asset(group_name=GROUP, code_version="1", pool=POOL, deps=[corpus_files], kinds={"polars", "duckdb"},
          automation_condition=AUTOMATION)
def annotated_corpus(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
    """Every word of the corpus with its label, keyed by (corpus_id, sentence_id, position): DuckDB table `tokens`."""
    cfg = pipeline.load()
    summary = np_pipeline.materialize_corpus(cfg, pipeline.store(cfg))
    return dg.MaterializeResult(metadata=corpus_metadata(summary, cfg),
                                data_version=dg.DataVersion(summary.version))


@dataclass
class Stages:
    token_activations: dg.AssetsDefinition
    rankings: list[dg.AssetsDefinition]
    evaluation_report: dg.AssetsDefinition
    model_drift: dg.AssetsDefinition
    #: The optional stages: None when turned off in ``stages`` (``interventions.enabled``
    #: for model_interventions).
    neuron_redundancy: dg.AssetsDefinition | None = None
    method_agreement: dg.AssetsDefinition | None = None
    probe_selectivity: dg.AssetsDefinition | None = None
    probe_ablation: dg.AssetsDefinition | None = None
    class_neurons: dg.AssetsDefinition | None = None
    model_interventions: dg.AssetsDefinition | None = None

    @property
    def derived(self) -> list[dg.AssetsDefinition]:
        """The evaluation assets between the rankings and the report that are turned on."""
        return [a for a in (self.method_agreement, self.probe_selectivity, self.probe_ablation, self.class_neurons,
                            self.model_interventions) if a is not None]

    @property
    def optional(self) -> list[dg.AssetsDefinition]:
        """Every optional asset that is turned on: redundancy and the derived ones."""
        return [*([self.neuron_redundancy] if self.neuron_redundancy is not None else []), *self.derived]

    @property
    def per_model(self) -> list[dg.AssetsDefinition]:
        """Every asset computed per model version (partitioned with a registry)."""
        return [self.token_activations, *self.rankings, *self.optional, self.evaluation_report, self.model_drift]

    @property
    def all(self) -> list[dg.AssetsDefinition]:
        return [annotated_corpus, *self.per_model]


def build_stages(methods, model_checkpoint: dg.SourceAsset,
                 partitions_def: dg.PartitionsDefinition | None, *, interventions: bool = False,
                 optional: StagesConfig | None = None, sharded: bool = False,
                 parallel_rankings: bool = False) -> Stages:
    """The per-model-version assets for the configured ranking ``methods``: the optional
    stages that ``optional`` (the config's ``stages``) turns on, the intervention asset
    when ``interventions``, and extraction in shards when ``sharded``
    (``execution.shard_sentences``). With ``parallel_rankings`` (an executor that runs steps
    at once) the ranking assets leave the DuckDB writer pool: each reads the activations
    (Parquet files without holding the store) and commits its tables in one short
    transaction, so the methods are fitted side by side."""
    optional = StagesConfig() if optional is None else optional
    common = dict(group_name=GROUP, pool=POOL, partitions_def=partitions_def, automation_condition=AUTOMATION)

    if sharded:
        token_activations = _sharded_activations(model_checkpoint, partitions_def)
    else:
        @dg.asset(code_version="2", deps=[annotated_corpus, model_checkpoint, analysis_settings],
                  kinds={"pytorch", "duckdb"}, **common)
        def token_activations(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
            """Every layer's activation for every corpus word, per model version, content-addressed by sentence: table `activations`."""
            cfg = pipeline.load(context)
            summary = np_pipeline.materialize_activations(
                cfg, pipeline.store(cfg), progress=_progress_logger(context, "extraction", "sentences"))
            return dg.MaterializeResult(metadata=activation_metadata(summary),
                                        data_version=_activation_version(cfg, summary))

    @dg.asset(code_version="1", deps=[token_activations, analysis_settings], kinds={"duckdb"}, **common)
    def neuron_redundancy(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
        """Correlation clusters of each layer's neurons and one independent neuron per cluster (Dalvi et al. 2020): tables `redundancy_layers`, `redundancy_neurons`."""
        cfg = pipeline.load(context)
        summary = np_pipeline.materialize_redundancy(cfg, pipeline.store(cfg))
        return dg.MaterializeResult(metadata=redundancy_metadata(summary))

    def ranking_asset(name: str, method: str, diversify: bool) -> dg.AssetsDefinition:
        deps = [token_activations, analysis_settings, *([neuron_redundancy] if diversify else [])]

        @dg.asset(name=name, key_prefix=["neuron_rankings"], code_version="3", deps=deps,
                  kinds={"pytorch", "duckdb"}, **{**common, "pool": None if parallel_rankings else POOL},
                  description=(f"Neurons ordered by relevance to the task by `{method}`, globally and per class, "
                               "with the top words of the best neurons: tables `rankings`, `class_rankings`, "
                               "`ranking_runs`, `top_words`, and for a linear probe its fitted probe "
                               "(`ranking_probes`, the report's full probe)."))
        def _ranking(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
            cfg = pipeline.load(context)
            summaries = np_pipeline.each_task(cfg, np_pipeline.materialize_ranking, pipeline.store(cfg), name)
            return dg.MaterializeResult(metadata=per_task(summaries, ranking_metadata))

        return _ranking

    rankings = [ranking_asset(m.name, m.method, m.diversify) for m in methods]

    @dg.asset(code_version="1", deps=[*rankings, analysis_settings], kinds={"duckdb"}, **common)
    def method_agreement(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
        """Top-n overlap between the methods and with their NeuronVote consensus (Fan et al. 2023): table `agreement`."""
        cfg = pipeline.load(context)
        summaries = np_pipeline.each_task(cfg, np_pipeline.materialize_agreement, pipeline.store(cfg))
        return dg.MaterializeResult(metadata=per_task(summaries, agreement_metadata))

    @dg.asset(code_version="2", deps=[*rankings, analysis_settings], kinds={"pytorch", "duckdb"}, **common)
    def probe_selectivity(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
        """Control-task selectivity (Hewitt & Liang 2019) of all neurons (overall and per class), of each method's top neurons and of each layer: tables `selectivity`, `class_selectivity`, `layer_probes`."""
        cfg = pipeline.load(context)
        summaries = np_pipeline.each_task(cfg, np_pipeline.materialize_selectivity, pipeline.store(cfg),
                                          progress=_progress_logger(context, "selectivity", "probes"))
        return dg.MaterializeResult(metadata=per_task(summaries, selectivity_metadata))

    @dg.asset(code_version="1", deps=[*rankings, analysis_settings], kinds={"pytorch", "duckdb"}, **common)
    def probe_ablation(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
        """Ablation at the probe: keep or remove the top, random and bottom neurons, retrained or zeroed in the full probe: table `ablation`."""
        cfg = pipeline.load(context)
        summaries = np_pipeline.each_task(cfg, np_pipeline.materialize_ablation, pipeline.store(cfg),
                                          progress=_progress_logger(context, "ablation", "rankings"))
        return dg.MaterializeResult(metadata=per_task(summaries, ablation_metadata))

    @dg.asset(code_version="1", deps=[*rankings, analysis_settings], kinds={"pytorch", "duckdb"}, **common)
    def class_neurons(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
        """Where each class's top neurons are (layers) and the fewest neurons that detect each class: tables `layer_distribution`, `minimal_neurons`."""
        cfg = pipeline.load(context)
        summaries = np_pipeline.each_task(cfg, np_pipeline.materialize_class_neurons, pipeline.store(cfg))
        return dg.MaterializeResult(metadata=per_task(summaries, class_neurons_metadata))

    model_interventions = None
    if interventions:
        @dg.asset(code_version="1", deps=[*rankings, analysis_settings], kinds={"pytorch", "duckdb"}, **common)
        def model_interventions(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
            """Do the top neurons matter to the model? Each method's top neurons of a class ablated inside the live model, its masked-word accuracy and log-likelihood on the class's words and on others, against layer-matched random neurons: table `interventions`."""
            cfg = pipeline.load(context)
            summaries = np_pipeline.each_task(cfg, np_pipeline.materialize_interventions, pipeline.store(cfg),
                                              progress=_progress_logger(context, "interventions", "class x method"))
            return dg.MaterializeResult(metadata=per_task(summaries, interventions_metadata))

    stages = Stages(token_activations=token_activations, rankings=rankings, evaluation_report=None,
                    model_drift=None, model_interventions=model_interventions,
                    **{name: asset for name, asset in [
                        ("neuron_redundancy", neuron_redundancy), ("method_agreement", method_agreement),
                        ("probe_selectivity", probe_selectivity), ("probe_ablation", probe_ablation),
                        ("class_neurons", class_neurons)] if getattr(optional, name)})

    @dg.asset(code_version="6", deps=[*rankings, *stages.optional, analysis_settings],
              kinds={"duckdb", "html"}, **common)
    def evaluation_report(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
        """Probe accuracy with all neurons (the linear-probe ranking's own probe) and with each method's top, random and bottom neurons, per class, and the HTML report: table `metrics`."""
        cfg = pipeline.load(context)
        summaries = np_pipeline.each_task(cfg, np_pipeline.materialize_report, pipeline.store(cfg),
                                          progress=_progress_logger(context, "evaluation", "probes"))
        return dg.MaterializeResult(metadata=per_task(summaries, report_metadata))

    @dg.asset(code_version="2", deps=[evaluation_report], kinds={"duckdb", "html"}, **common)
    def model_drift(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
        """What moved since the previous model version: top-k overlap and rank correlation of every ranking, per-class neuron sets, accuracy and selectivity per class, threshold alerts; the report's drift section: tables `drift_*`."""
        cfg = pipeline.load(context)
        summaries = np_pipeline.each_task(cfg, np_pipeline.materialize_drift, pipeline.store(cfg))
        return dg.MaterializeResult(metadata=per_task(summaries, drift_metadata))

    stages.evaluation_report, stages.model_drift = evaluation_report, model_drift
    return stages


def _activation_version(cfg, summary) -> dg.DataVersion:
    return dg.DataVersion(f"{summary.activation_set}-{np_pipeline.corpus_version(cfg)}")


def _sharded_activations(model_checkpoint: dg.SourceAsset,
                         partitions_def: dg.PartitionsDefinition | None) -> dg.AssetsDefinition:
    """``token_activations`` as three kinds of step: one that lists the corpus shards with
    sentences left to extract, one per shard (not in the DuckDB writer pool: shards run at
    once where the executor allows, each committing its own rows in short transactions), and
    one that checks that every sentence is stored and records the asset's metadata."""

    @dg.op(pool=POOL, ins={"corpus": dg.In(dg.Nothing), "model": dg.In(dg.Nothing),
                           "settings": dg.In(dg.Nothing)}, out=dg.DynamicOut(int))
    def extraction_shards(context: dg.OpExecutionContext, pipeline: PipelineResource):
        cfg = pipeline.load(context)
        shards = np_pipeline.extraction_shards(cfg, pipeline.store(cfg))
        context.log.info(f"{len(shards)} extraction shard(s) of {cfg.execution.shard_sentences} sentences to run")
        for shard in shards:
            yield dg.DynamicOutput(shard, mapping_key=f"shard_{shard:05d}")

    @dg.op(out=dg.Out(dict))
    def extract_shard(context: dg.OpExecutionContext, pipeline: PipelineResource, shard: int) -> dict:
        cfg = pipeline.load(context)
        summary = np_pipeline.materialize_activations(
            cfg, pipeline.store(cfg), shard=shard, progress=_progress_logger(context, f"shard {shard}", "sentences"))
        context.log.info(f"shard {shard}: {summary.n_extracted} sentences extracted, {summary.n_reused} reused "
                         f"(pid {os.getpid()})")
        context.add_output_metadata({"shard": shard, "pid": os.getpid(), "n_extracted": summary.n_extracted,
                                     "seconds": summary.seconds})
        return dataclasses.asdict(summary)

    @dg.op(pool=POOL)
    def merge_shards(context: dg.OpExecutionContext, pipeline: PipelineResource, parts: list[dict]):
        cfg = pipeline.load(context)
        summary = np_pipeline.merge_activation_shards(
            cfg, pipeline.store(cfg), [np_pipeline.ActivationSummary(**p) for p in parts])
        return dg.Output(dataclasses.asdict(summary), metadata=activation_metadata(summary),
                         data_version=_activation_version(cfg, summary))

    nothing = dict(dagster_type=dg.Nothing)

    @dg.graph_asset(name="token_activations", group_name=GROUP, code_version="2", kinds={"pytorch", "duckdb"},
                    partitions_def=partitions_def, automation_condition=AUTOMATION,
                    ins={"corpus": dg.AssetIn(key=annotated_corpus.key, **nothing),
                         "model": dg.AssetIn(key=model_checkpoint.key, **nothing),
                         "settings": dg.AssetIn(key=analysis_settings.key, **nothing)},
                    description="Every layer's activation for every corpus word, per model version, content-addressed "
                                "by sentence, extracted in shards of `execution.shard_sentences` sentences that may "
                                "run in parallel: table `activations` or Parquet files.")
    def token_activations(corpus, model, settings):
        parts = extraction_shards(corpus=corpus, model=model, settings=settings).map(extract_shard)
        return merge_shards(parts.collect())

    return token_activations


def _progress_logger(context: dg.AssetExecutionContext, what: str, unit: str):
    """A progress callback that logs ``progress <what>: <done>/<total> <unit>`` about every 5%;
    ``neuro-pipeline run`` turns these lines into a progress bar."""
    state = {"next": 0.0}

    def progress(done: int, total: int) -> None:
        if total and (done / total >= state["next"] or done == total):
            context.log.info(f"progress {what}: {done}/{total} {unit}")
            state["next"] = done / total + 0.05
    return progress

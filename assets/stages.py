"""The stages of an analysis as software-defined assets: one table of stage specs and one
factory that turns it into assets.

Every row of :data:`STAGES` names the library's stage module (its ``materialize_*`` is the
asset's one call, its ``metadata`` what the UI shows), the asset's upstream stages, its
``code_version`` (bump it when the stage's logic changes) and its kinds. The factory makes
one asset per row (one per configured method for the rankings), leaves out the stages the
configuration turns off, partitions every stage after the corpus by model version when a
registry is configured, and gives each the automation condition ``eager & all upstream
blocking checks passed``, so the automation sensor reruns exactly what went stale. The
checks of each row are made in :mod:`assets.checks`.
"""


import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

import dagster as dg

from neuro_pipeline import stages as lib
from neuro_pipeline.config import PipelineConfig
from neuro_pipeline.stages import (
    ablation,
    activations,
    agreement,
    class_neurons,
    corpus,
    drift,
    interventions,
    rankings,
    redundancy,
    report,
    selectivity,
)

from .metadata import dagster_metadata, per_task
from .resources import PipelineResource

GROUP = "analysis"
POOL = "duckdb_writer"  # DuckDB allows one writer process at a time

#: Rerun when an upstream changed, once, and only when the upstream blocking checks passed.
AUTOMATION = (dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_blocking_checks_passed()).with_label(
    "eager, once the upstream blocking checks passed")


@dataclass(frozen=True)
class StageSpec:
    """One stage of the analysis as an asset."""

    #: The asset's name (for the rankings: the key prefix; one asset per configured method).
    name: str
    #: The library's stage module: ``materialize``, ``metadata`` and the checks come from it.
    module: ModuleType
    #: The function the asset calls: ``(cfg, store[, method name][, progress=...])``.
    materialize: Callable
    #: Upstream stages and inputs, by name; a stage that is turned off is left out.
    deps: tuple[str, ...]
    code_version: str
    kinds: frozenset[str]
    #: What the data is (shown in the UI); ``{method}`` is the ranking's registered method.
    description: str
    #: Computed once per task (the corpus's labels, then each concept), or once.
    per_task: bool = True
    #: ``(what, unit)`` of the progress lines ``neuro-pipeline run`` draws as a bar; None: none.
    progress: tuple[str, str] | None = None
    #: Whether the configuration turns the stage on.
    enabled: Callable[[PipelineConfig], bool] = lambda cfg: True
    #: One asset per configured ranking method.
    per_method: bool = False
    #: Not partitioned by model version (computed before any model is read).
    unpartitioned: bool = False
    #: Its blocking great-expectations suite, ``(cfg, store[, method name]) -> QualityReport``
    #: (run for every task of a per-task stage), and what the suite checks.
    check: Callable | None = None
    check_description: str = ("great-expectations: the asset's table has rows, accuracies in [0, 1], selectivity in "
                              "[-1, 1], overlaps in [0, 1].")


STAGES: tuple[StageSpec, ...] = (
    StageSpec("annotated_corpus", corpus, corpus.materialize_corpus, ("corpus_files",), "1",
              frozenset({"polars", "duckdb"}), per_task=False, unpartitioned=True, check=corpus.check_corpus,
              check_description="great-expectations: no empty tokens or labels, unique keys, valid splits, a "
                                "training split, training labels in the declared set, one label per word for every "
                                "concept; test labels outside the set or unseen in training are counted, and the "
                                "label distribution is recorded.",
              description="Every word of the corpus with its label, keyed by (corpus_id, sentence_id, position): "
                          "DuckDB table `tokens`."),
    StageSpec("token_activations", activations, activations.materialize_activations,
              ("annotated_corpus", "model_checkpoint", "analysis_settings"), "2", frozenset({"pytorch", "duckdb"}),
              per_task=False, progress=("extraction", "sentences"), check=activations.check_activations,
              check_description="great-expectations: one row per corpus word in every layer, the expected width, "
                                "no NaN or Inf (sentences and layers listed); constant neurons and windowed or "
                                "rejected sentences are reported.",
              description="Every layer's activation for every corpus word, per model version, content-addressed by "
                          "sentence: table `activations`."),
    StageSpec("neuron_redundancy", redundancy, redundancy.materialize_redundancy,
              ("token_activations", "analysis_settings"), "1", frozenset({"duckdb"}), per_task=False,
              enabled=lambda cfg: cfg.stages.neuron_redundancy, check=redundancy.check_redundancy,
              description="Correlation clusters of each layer's neurons and one independent neuron per cluster "
                          "(Dalvi et al. 2020): tables `redundancy_layers`, `redundancy_neurons`."),
    StageSpec("neuron_rankings", rankings, rankings.materialize_ranking,
              ("token_activations", "analysis_settings"), "3", frozenset({"pytorch", "duckdb"}), per_method=True,
              check=rankings.check_ranking,
              check_description="great-expectations: the ranking is a permutation of all neuron ids, scores are "
                                "finite (a method that ranks a prefix leaves rank and score null together), and the "
                                "hyperparameters are recorded.",
              description="Neurons ordered by relevance to the task by `{method}`, globally and per class, with the "
                          "top words of the best neurons: tables `rankings`, `class_rankings`, `ranking_runs`, "
                          "`top_words`, and for a linear probe its fitted probe (`ranking_probes`, the report's full "
                          "probe)."),
    StageSpec("method_agreement", agreement, agreement.materialize_agreement,
              ("neuron_rankings", "analysis_settings"), "1", frozenset({"duckdb"}),
              enabled=lambda cfg: cfg.stages.method_agreement, check=agreement.check_agreement,
              description="Top-n overlap between the methods and with their NeuronVote consensus (Fan et al. 2023): "
                          "table `agreement`."),
    StageSpec("probe_selectivity", selectivity, selectivity.materialize_selectivity,
              ("neuron_rankings", "analysis_settings"), "2", frozenset({"pytorch", "duckdb"}),
              progress=("selectivity", "probes"), enabled=lambda cfg: cfg.stages.probe_selectivity,
              check=selectivity.check_selectivity,
              description="Control-task selectivity (Hewitt & Liang 2019) of all neurons (overall and per class), "
                          "of each method's top neurons and of each layer: tables `selectivity`, "
                          "`class_selectivity`, `layer_probes`."),
    StageSpec("probe_ablation", ablation, ablation.materialize_ablation,
              ("neuron_rankings", "analysis_settings"), "1", frozenset({"pytorch", "duckdb"}),
              progress=("ablation", "rankings"), enabled=lambda cfg: cfg.stages.probe_ablation,
              check=ablation.check_ablation,
              description="Ablation at the probe: keep or remove the top, random and bottom neurons, retrained or "
                          "zeroed in the full probe: table `ablation`."),
    StageSpec("class_neurons", class_neurons, class_neurons.materialize_class_neurons,
              ("neuron_rankings", "analysis_settings"), "1", frozenset({"pytorch", "duckdb"}),
              enabled=lambda cfg: cfg.stages.class_neurons, check=class_neurons.check_class_neurons,
              description="Where each class's top neurons are (layers) and the fewest neurons that detect each "
                          "class: tables `layer_distribution`, `minimal_neurons`."),
    StageSpec("model_interventions", interventions, interventions.materialize_interventions,
              ("neuron_rankings", "analysis_settings"), "1", frozenset({"pytorch", "duckdb"}),
              progress=("interventions", "class x method"), enabled=lambda cfg: cfg.interventions.enabled,
              check=interventions.check_interventions,
              description="Do the top neurons matter to the model? Each method's top neurons of a class ablated "
                          "inside the live model, its masked-word accuracy and log-likelihood on the class's words "
                          "and on others, against layer-matched random neurons: table `interventions`."),
    StageSpec("evaluation_report", report, report.materialize_report,
              ("neuron_rankings", "neuron_redundancy", "method_agreement", "probe_selectivity", "probe_ablation",
               "class_neurons", "model_interventions", "analysis_settings"), "6", frozenset({"duckdb", "html"}),
              progress=("evaluation", "probes"), check=report.check_report,
              check_description="great-expectations: every accuracy in [0, 1]; the full probe beats the majority-class "
                                "baseline.",
              description="Probe accuracy with all neurons (the linear-probe ranking's own probe) and with each "
                          "method's top, random and bottom neurons, per class, and the HTML report: table "
                          "`metrics`."),
    StageSpec("model_drift", drift, drift.materialize_drift, ("evaluation_report",), "2",
              frozenset({"duckdb", "html"}), check=drift.check_drift,
              check_description="No class lost more probe accuracy or selectivity than monitoring.max_accuracy_drop / "
                                "max_selectivity_drop, and every top-k neuron set kept a Jaccard overlap of at least "
                                "monitoring.min_jaccard with the previous model version.",
              description="What moved since the previous model version: top-k overlap and rank correlation of "
                          "every ranking, per-class neuron sets, accuracy and selectivity per class, threshold "
                          "alerts; the report's drift section: tables `drift_*`."),
)


@dataclass
class Analysis:
    """The assets of one analysis: per stage name, its assets (one per method for the rankings)."""

    assets: dict[str, list[dg.AssetsDefinition]]
    #: The stage spec behind each asset.
    specs: dict[dg.AssetKey, StageSpec]

    @property
    def all(self) -> list[dg.AssetsDefinition]:
        return [a for group in self.assets.values() for a in group]

    def stage(self, name: str) -> dg.AssetsDefinition:
        (asset,) = self.assets[name]
        return asset


def build_stages(cfg: PipelineConfig, inputs: dict[str, dg.AssetsDefinition | dg.SourceAsset],
                 partitions_def: dg.PartitionsDefinition | None) -> Analysis:
    """The assets of every stage of :data:`STAGES` that ``cfg`` turns on, in table order.

    With ``execution.shard_sentences``, extraction is a graph of shard steps (see
    :func:`sharded_activations`). With an executor that runs steps at once, the ranking
    assets leave the DuckDB writer pool: each reads the activations (Parquet files without
    holding the store) and commits its tables in one short transaction, so the methods are
    fitted side by side."""
    built: dict[str, list[dg.AssetsDefinition]] = {}
    specs: dict[dg.AssetKey, StageSpec] = {}
    parallel = cfg.execution.executor != "in_process"
    for spec in STAGES:
        if not spec.enabled(cfg):
            continue
        deps = [d for name in spec.deps
                for d in ([inputs[name]] if name in inputs else built.get(name, []))]
        partitions = None if spec.unpartitioned else partitions_def
        if spec.name == "token_activations" and cfg.execution.shard_sentences > 0:
            made = [sharded_activations(spec, deps, partitions)]
        elif spec.per_method:
            made = [_asset(spec, deps + ([built["neuron_redundancy"][0]] if m.diversify else []), partitions,
                           method=m.name, description=spec.description.format(method=m.method),
                           pool=None if parallel else POOL) for m in cfg.ranking.methods]
        else:
            made = [_asset(spec, deps, partitions)]
        built[spec.name] = made
        for asset in made:
            specs[asset.key] = spec
    return Analysis(assets=built, specs=specs)


def _asset(spec: StageSpec, deps: list, partitions_def: dg.PartitionsDefinition | None, *,
           method: str | None = None, description: str | None = None, pool: str | None = POOL
           ) -> dg.AssetsDefinition:
    """One asset: load the configuration (of the partition's model version), call the stage
    (for every task, or once), and return its metadata; the corpus and extraction also give
    their content version as the data version."""
    key = ["neuron_rankings", method] if method else [spec.name]

    def compute(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
        cfg = pipeline.load(context if not spec.unpartitioned else None)
        store = pipeline.store(cfg)
        args = (store, method) if method else (store,)
        kwargs = {"progress": progress_logger(context, *spec.progress)} if spec.progress else {}
        if not spec.per_task:
            summary = spec.materialize(cfg, *args, **kwargs)
            return dg.MaterializeResult(metadata=dagster_metadata(spec.module.metadata(summary)),
                                        data_version=data_version(cfg, spec, summary))
        summaries = lib.each_task(cfg, spec.materialize, *args, **kwargs)
        return dg.MaterializeResult(metadata=per_task(summaries, spec.module.metadata))

    return dg.asset(name=key[-1], key_prefix=key[:-1] or None, group_name=GROUP, pool=pool,
                    partitions_def=partitions_def, automation_condition=AUTOMATION, code_version=spec.code_version,
                    deps=deps, kinds=set(spec.kinds), description=description or spec.description)(compute)


def data_version(cfg: PipelineConfig, spec: StageSpec, summary) -> dg.DataVersion | None:
    """The corpus's content version; the activation set and the corpus version for extraction
    (so the stages after it are stale exactly when their input changed)."""
    if spec.name == "annotated_corpus":
        return dg.DataVersion(summary.version)
    if spec.name == "token_activations":
        return dg.DataVersion(f"{summary.activation_set}-{lib.corpus_version(cfg)}")
    return None


def sharded_activations(spec: StageSpec, deps: list, partitions_def: dg.PartitionsDefinition | None
                        ) -> dg.AssetsDefinition:
    """``token_activations`` as three kinds of step: one that lists the corpus shards with
    sentences left to extract, one per shard (not in the DuckDB writer pool: shards run at
    once where the executor allows, each committing its own rows in short transactions), and
    one that checks that every sentence is stored and records the asset's metadata."""

    @dg.op(pool=POOL, ins={"corpus": dg.In(dg.Nothing), "model": dg.In(dg.Nothing),
                           "settings": dg.In(dg.Nothing)}, out=dg.DynamicOut(int))
    def extraction_shards(context: dg.OpExecutionContext, pipeline: PipelineResource):
        cfg = pipeline.load(context)
        shards = activations.extraction_shards(cfg, pipeline.store(cfg))
        context.log.info(f"{len(shards)} extraction shard(s) of {cfg.execution.shard_sentences} sentences to run")
        for shard in shards:
            yield dg.DynamicOutput(shard, mapping_key=f"shard_{shard:05d}")

    @dg.op(out=dg.Out(dict))
    def extract_shard(context: dg.OpExecutionContext, pipeline: PipelineResource, shard: int) -> dict:
        cfg = pipeline.load(context)
        summary = activations.materialize_activations(
            cfg, pipeline.store(cfg), shard=shard, progress=progress_logger(context, f"shard {shard}", "sentences"))
        context.log.info(f"shard {shard}: {summary.n_extracted} sentences extracted, {summary.n_reused} reused "
                         f"(pid {os.getpid()})")
        context.add_output_metadata({"shard": shard, "pid": os.getpid(), "n_extracted": summary.n_extracted,
                                     "seconds": summary.seconds})
        return dataclasses.asdict(summary)

    @dg.op(pool=POOL)
    def merge_shards(context: dg.OpExecutionContext, pipeline: PipelineResource, parts: list[dict]):
        cfg = pipeline.load(context)
        summary = activations.merge_activation_shards(
            cfg, pipeline.store(cfg), [activations.ActivationSummary(**p) for p in parts])
        return dg.Output(dataclasses.asdict(summary), metadata=dagster_metadata(activations.metadata(summary)),
                         data_version=data_version(cfg, spec, summary))

    nothing = dict(dagster_type=dg.Nothing)
    corpus_asset, model, settings = deps

    @dg.graph_asset(name=spec.name, group_name=GROUP, code_version=spec.code_version, kinds=set(spec.kinds),
                    partitions_def=partitions_def, automation_condition=AUTOMATION,
                    ins={"corpus": dg.AssetIn(key=corpus_asset.key, **nothing),
                         "model": dg.AssetIn(key=model.key, **nothing),
                         "settings": dg.AssetIn(key=settings.key, **nothing)},
                    description="Every layer's activation for every corpus word, per model version, content-addressed "
                                "by sentence, extracted in shards of `execution.shard_sentences` sentences that may "
                                "run in parallel: table `activations` or Parquet files.")
    def token_activations(corpus, model, settings):
        parts = extraction_shards(corpus=corpus, model=model, settings=settings).map(extract_shard)
        return merge_shards(parts.collect())

    return token_activations


def progress_logger(context: dg.AssetExecutionContext | dg.OpExecutionContext, what: str, unit: str):
    """A progress callback that logs ``progress <what>: <done>/<total> <unit>`` about every 5%;
    ``neuro-pipeline run`` turns these lines into a progress bar."""
    state = {"next": 0.0}

    def progress(done: int, total: int) -> None:
        if total and (done / total >= state["next"] or done == total):
            context.log.info(f"progress {what}: {done}/{total} {unit}")
            state["next"] = done / total + 0.05
    return progress

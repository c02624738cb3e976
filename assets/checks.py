"""Blocking data-quality checks, one great-expectations suite per stage (built in the library)."""

import dagster as dg
import polars as pl

from neuro_pipeline import pipeline as np_pipeline
from neuro_pipeline.quality import QualityReport

from .resources import PipelineResource
from .stages import Stages, annotated_corpus


#: A check is requested with its asset, so that the automation can plan an asset and its
#: children in one run (``all_deps_blocking_checks_passed`` accepts a check requested in
#: the same tick; the run itself skips the children when the check fails). Checks of
#: partitioned assets are partitioned alike (one result per model version), which is what
#: lets them run with their asset. Without both, an asset whose check had never run (a new
#: model version's first analysis) waited for a tick and a run per level of the graph: 5
#: runs, about 30 s apart, where one suffices.
#:
#: A materialization that has no check result (a run that left the checks out, or results
#: stored before checks were partitioned) gets its check on its own, once: otherwise the
#: children of that version would wait for a result that nothing requests.
_WITHOUT_RESULT = (dg.AutomationCondition.missing() & ~dg.AutomationCondition.any_deps_missing()
                   & ~dg.AutomationCondition.any_deps_in_progress()).newly_true().with_label(
    "its asset has no result of it")
WITH_ITS_ASSET = (dg.AutomationCondition.any_deps_match(dg.AutomationCondition.will_be_requested())
                  | _WITHOUT_RESULT).with_label("with its asset")


def _asset_check(asset: dg.AssetsDefinition, *, blocking: bool = True, **kwargs):
    """``dg.asset_check`` for a check that runs with its asset (see :data:`WITH_ITS_ASSET`):
    partitioned like it, blocking unless told otherwise."""
    return dg.asset_check(asset=asset, blocking=blocking, automation_condition=WITH_ITS_ASSET,
                          partitions_def=asset.partitions_def, **kwargs)


def _result(report: QualityReport) -> dg.AssetCheckResult:
    metadata: dict = {
        f"{r['expectation']}[{r['column']}]" if r.get("column") else r["expectation"]: dg.MetadataValue.json(r)
        for r in report.results
    }
    metadata["failed_expectations"] = report.n_failed
    metadata["suite"] = report.suite
    return dg.AssetCheckResult(passed=report.success, severity=dg.AssetCheckSeverity.ERROR, metadata=metadata)


@_asset_check(annotated_corpus, description=(
    "great-expectations: no empty tokens or labels, unique keys, valid splits, a training split, "
    "training labels in the declared set, one label per word for every concept; test labels outside the "
    "set or unseen in training are counted, and the label distribution is recorded."))
def annotated_corpus_quality(pipeline: PipelineResource) -> dg.AssetCheckResult:
    cfg = pipeline.load()
    return _result(np_pipeline.check_corpus(cfg, pipeline.store(cfg)))


def activations_check(asset: dg.AssetsDefinition) -> dg.AssetChecksDefinition:
    @_asset_check(asset, name="token_activations_quality", description=(
        "great-expectations: one row per corpus word in every layer, the expected width, no NaN or Inf "
        "(sentences and layers listed); constant neurons and windowed or rejected sentences are reported."))
    def _check(context: dg.AssetCheckExecutionContext, pipeline: PipelineResource) -> dg.AssetCheckResult:
        cfg = pipeline.load(context)
        return _result(np_pipeline.check_activations(cfg, pipeline.store(cfg)))

    return _check


def ranking_check(asset: dg.AssetsDefinition, name: str) -> dg.AssetChecksDefinition:
    """The blocking quality check of one ranking asset."""

    @_asset_check(asset, name="ranking_quality", description=(
        "great-expectations: the ranking is a permutation of all neuron ids, scores are finite (a method that "
        "ranks a prefix leaves rank and score null together), and the hyperparameters are recorded."))
    def _check(context: dg.AssetCheckExecutionContext, pipeline: PipelineResource) -> dg.AssetCheckResult:
        cfg = pipeline.load(context)
        return _result(np_pipeline.check_each_task(cfg, np_pipeline.check_ranking, pipeline.store(cfg), name))

    return _check


def report_check(report: dg.AssetsDefinition) -> dg.AssetChecksDefinition:
    @_asset_check(report, name="evaluation_report_quality", description=(
        "great-expectations: every accuracy in [0, 1]; the full probe beats the majority-class baseline."))
    def _check(context: dg.AssetCheckExecutionContext, pipeline: PipelineResource) -> dg.AssetCheckResult:
        cfg = pipeline.load(context)
        return _result(np_pipeline.check_each_task(cfg, np_pipeline.check_report, pipeline.store(cfg)))

    return _check


def derived_check(asset: dg.AssetsDefinition) -> dg.AssetChecksDefinition:
    """The blocking quality check of a derived evaluation asset (its tables' value ranges)."""
    name = asset.key.path[-1]

    @_asset_check(asset, name=f"{name}_quality", description=(
        "great-expectations: the asset's table has rows, accuracies in [0, 1], selectivity in [-1, 1], "
        "overlaps in [0, 1]."))
    def _check(context: dg.AssetCheckExecutionContext, pipeline: PipelineResource) -> dg.AssetCheckResult:
        cfg = pipeline.load(context)
        if name == "neuron_redundancy":  # one table per activation set, the same for every task
            return _result(np_pipeline.check_derived(cfg, pipeline.store(cfg), name))
        return _result(np_pipeline.check_each_task(cfg, np_pipeline.check_derived, pipeline.store(cfg), name))

    return _check


def drift_check(asset: dg.AssetsDefinition, severity: str) -> dg.AssetChecksDefinition:
    """Fails when a class's accuracy or selectivity fell, or a top-k neuron set moved, beyond
    the thresholds of ``monitoring`` (judged against the config at check time)."""
    level = dg.AssetCheckSeverity.ERROR if severity == "error" else dg.AssetCheckSeverity.WARN

    @_asset_check(asset, name="drift_within_thresholds", blocking=severity == "error", description=(
        "No class lost more probe accuracy or selectivity than monitoring.max_accuracy_drop / "
        "max_selectivity_drop, and every top-k neuron set kept a Jaccard overlap of at least "
        "monitoring.min_jaccard with the previous model version."))
    def _check(context: dg.AssetCheckExecutionContext, pipeline: PipelineResource) -> dg.AssetCheckResult:
        cfg = pipeline.load(context)
        results = np_pipeline.each_task(cfg, np_pipeline.check_drift, pipeline.store(cfg))
        passed = all(r[0] for r in results)
        alerts = pl.concat([r[1] for r in results if r[1].height], how="diagonal") if any(
            r[1].height for r in results) else pl.DataFrame()
        info = results[0][2]
        metadata: dict = {"n_alerts": alerts.height, "model_label": info["label"],
                          "previous_label": info["previous_label"] or "(none: first version)"}
        if alerts.height:
            metadata["alerts"] = dg.MetadataValue.md("\n".join(f"- {m}" for m in alerts["message"].to_list()))
        return dg.AssetCheckResult(passed=passed, severity=level, metadata=metadata)

    return _check


def stage_checks(stages: Stages, method_names: list[str], drift_severity: str) -> list[dg.AssetChecksDefinition]:
    """Every check of the analysis: one great-expectations suite per stage, and the drift check."""
    return [annotated_corpus_quality, activations_check(stages.token_activations),
            *[ranking_check(a, n) for a, n in zip(stages.rankings, method_names)],
            *[derived_check(a) for a in stages.optional],
            report_check(stages.evaluation_report), drift_check(stages.model_drift, drift_severity)]

"""Blocking data-quality checks: one great-expectations suite per stage (built in the library,
named in the stage table of :mod:`assets.stages`), and the drift check."""


import dagster as dg
import polars as pl

from neuro_pipeline import stages as lib
from neuro_pipeline.quality import QualityReport

from .resources import PipelineResource
from .stages import Analysis, StageSpec

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


def _result(report: QualityReport) -> dg.AssetCheckResult:
    metadata: dict = {
        f"{r['expectation']}[{r['column']}]" if r.get("column") else r["expectation"]: dg.MetadataValue.json(r)
        for r in report.results
    }
    metadata["failed_expectations"] = report.n_failed
    metadata["suite"] = report.suite
    return dg.AssetCheckResult(passed=report.success, severity=dg.AssetCheckSeverity.ERROR, metadata=metadata)


def quality_check(asset: dg.AssetsDefinition, spec: StageSpec) -> dg.AssetChecksDefinition:
    """The blocking check of one stage asset: its great-expectations suite (for every task of
    a per-task stage; for one method of the rankings), run with its asset (see
    :data:`WITH_ITS_ASSET`) and partitioned like it."""
    method = asset.key.path[-1] if spec.per_method else None
    name = "ranking_quality" if spec.per_method else f"{spec.name}_quality"

    @dg.asset_check(asset=asset, name=name, blocking=True, automation_condition=WITH_ITS_ASSET,
                    partitions_def=asset.partitions_def, description=spec.check_description)
    def _check(context: dg.AssetCheckExecutionContext, pipeline: PipelineResource) -> dg.AssetCheckResult:
        cfg = pipeline.load(context if not spec.unpartitioned else None)
        args = (pipeline.store(cfg), *([method] if method else []))
        if spec.per_task:
            return _result(lib.check_each_task(cfg, spec.check, *args))
        return _result(spec.check(cfg, *args))

    return _check


def drift_check(asset: dg.AssetsDefinition, spec: StageSpec, severity: str) -> dg.AssetChecksDefinition:
    """Fails when a class's accuracy or selectivity fell, or a top-k neuron set moved, beyond
    the thresholds of ``monitoring`` (judged against the config at check time); blocking only
    with ``monitoring.alert_severity: error``."""
    level = dg.AssetCheckSeverity.ERROR if severity == "error" else dg.AssetCheckSeverity.WARN

    @dg.asset_check(asset=asset, name="drift_within_thresholds", blocking=severity == "error",
                    automation_condition=WITH_ITS_ASSET, partitions_def=asset.partitions_def,
                    description=spec.check_description)
    def _check(context: dg.AssetCheckExecutionContext, pipeline: PipelineResource) -> dg.AssetCheckResult:
        cfg = pipeline.load(context)
        results = lib.each_task(cfg, spec.check, pipeline.store(cfg))
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


def stage_checks(analysis: Analysis, drift_severity: str) -> list[dg.AssetChecksDefinition]:
    """Every check of the analysis: one per stage asset with a suite, and the drift check."""
    checks = []
    for asset in analysis.all:
        spec = analysis.specs[asset.key]
        if spec.check is lib.check_drift:
            checks.append(drift_check(asset, spec, drift_severity))
        elif spec.check is not None:
            checks.append(quality_check(asset, spec))
    return checks

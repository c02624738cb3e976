"""Blocking data-quality checks, one great-expectations suite per stage (built in the library)."""

import dagster as dg

from neuro_pipeline import pipeline as np_pipeline
from neuro_pipeline.quality import QualityReport

from .resources import PipelineResource
from .stages import annotated_corpus, token_activations


def _result(report: QualityReport) -> dg.AssetCheckResult:
    metadata: dict = {
        f"{r['expectation']}[{r['column']}]" if r.get("column") else r["expectation"]: dg.MetadataValue.json(r)
        for r in report.results
    }
    metadata["failed_expectations"] = report.n_failed
    metadata["suite"] = report.suite
    return dg.AssetCheckResult(passed=report.success, severity=dg.AssetCheckSeverity.ERROR, metadata=metadata)


@dg.asset_check(asset=annotated_corpus, blocking=True, description=(
    "great-expectations: no empty tokens or labels, unique keys, valid splits, a training split; "
    "test labels unseen in training are counted."))
def annotated_corpus_quality(pipeline: PipelineResource) -> dg.AssetCheckResult:
    cfg = pipeline.load()
    return _result(np_pipeline.check_corpus(cfg, pipeline.store(cfg)))


@dg.asset_check(asset=token_activations, blocking=True, description=(
    "great-expectations: one row per corpus word in every layer, the expected width, no NaN or Inf."))
def token_activations_quality(pipeline: PipelineResource) -> dg.AssetCheckResult:
    cfg = pipeline.load()
    return _result(np_pipeline.check_activations(cfg, pipeline.store(cfg)))


def ranking_check(asset: dg.AssetsDefinition, name: str) -> dg.AssetChecksDefinition:
    """The blocking quality check of one ranking asset."""

    @dg.asset_check(asset=asset, name="ranking_quality", blocking=True, description=(
        "great-expectations: the ranking is a permutation of all neuron ids, scores are finite (a method that "
        "ranks a prefix leaves rank and score null together), and the hyperparameters are recorded."))
    def _check(pipeline: PipelineResource) -> dg.AssetCheckResult:
        cfg = pipeline.load()
        return _result(np_pipeline.check_ranking(cfg, pipeline.store(cfg), name))

    return _check


def report_check(report: dg.AssetsDefinition) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset=report, name="evaluation_report_quality", blocking=True, description=(
        "great-expectations: every accuracy in [0, 1]; the full probe beats the majority-class baseline."))
    def _check(pipeline: PipelineResource) -> dg.AssetCheckResult:
        cfg = pipeline.load()
        return _result(np_pipeline.check_report(cfg, pipeline.store(cfg)))

    return _check


def derived_check(asset: dg.AssetsDefinition) -> dg.AssetChecksDefinition:
    """The blocking quality check of a derived evaluation asset (its tables' value ranges)."""
    name = asset.key.path[-1]

    @dg.asset_check(asset=asset, name=f"{name}_quality", blocking=True, description=(
        "great-expectations: the asset's table has rows, accuracies in [0, 1], selectivity in [-1, 1], "
        "overlaps in [0, 1]."))
    def _check(pipeline: PipelineResource) -> dg.AssetCheckResult:
        cfg = pipeline.load()
        return _result(np_pipeline.check_derived(cfg, pipeline.store(cfg), name))

    return _check


INPUT_CHECKS = [annotated_corpus_quality, token_activations_quality]

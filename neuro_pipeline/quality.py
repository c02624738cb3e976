"""Data-quality suites, one per stage, run with great-expectations.

great_expectations is imported lazily (it costs seconds), so importing the library or
loading the Dagster code location does not pay for it. Each ``validate_*`` function
builds an expectation suite for one stage's table and returns a :class:`QualityReport`:
overall success plus one plain dict per expectation, which the Dagster checks turn into
metadata. Large tables (activations) are validated through a per-layer summary computed
in the store, so the suite never loads the whole matrix into pandas.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from neuro_pipeline.heap import collector_paused

log = logging.getLogger(__name__)


@dataclass
class QualityReport:
    """Outcome of one suite: ``success`` and one dict per expectation."""

    suite: str
    success: bool
    results: list[dict[str, Any]] = field(default_factory=list)

    @property
    def n_failed(self) -> int:
        return sum(not r["success"] for r in self.results)

    def failures(self) -> list[str]:
        return [f"{r['expectation']}[{r.get('column') or ''}]" for r in self.results if not r["success"]]


def _gx() -> Any:
    """great-expectations, imported on first use with the garbage collector paused (its import
    alone set off three full collections of a run's heap; see :mod:`neuro_pipeline.heap`)."""
    with collector_paused():
        import great_expectations

    return great_expectations


def _run_suite(name: str, frame: pl.DataFrame, expectations: list[Any]) -> QualityReport:
    gx = _gx()

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = {"globally": False, "metric_calculations": False}
    batch = (context.data_sources.add_pandas(f"{name}_source").add_dataframe_asset(name)
             .add_batch_definition_whole_dataframe("whole")
             .get_batch(batch_parameters={"dataframe": frame.to_pandas()}))
    suite = gx.ExpectationSuite(name=name)
    for exp in expectations:
        suite.add_expectation(exp)
    res = batch.validate(suite)
    results = []
    for r in res.results:
        kwargs = r.expectation_config.kwargs
        col = kwargs.get("column") or ",".join(kwargs.get("column_list", []) or [])
        info = r.result or {}
        results.append({
            "expectation": r.expectation_config.type,
            "column": col,
            "success": bool(r.success),
            "unexpected_count": info.get("unexpected_count"),
            "unexpected_examples": [str(v) for v in (info.get("partial_unexpected_list") or [])[:10]],
            "observed_value": _plain(info.get("observed_value")),
        })
    return QualityReport(suite=name, success=bool(res.success), results=results)


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)[:200]


def validate_tokens(tokens: pl.DataFrame, *, max_position: int | None = None,
                    declared_labels: Sequence[str] | None = None) -> QualityReport:
    """Suite for the annotated corpus (``tokens`` table rows of one corpus).

    Expectations: no empty or null tokens and labels, no whitespace inside either (NeuroX
    files split on it); keys (corpus_id, sentence_id, position) unique; positions
    non-negative (and below ``max_position`` if given); split in {train, dev, test}; a
    train split present; with ``declared_labels``, every training label in the declared
    set. Reported without failing: test (and dev) labels outside the declared set or unseen
    in training (the probe scores those words as errors), and the label distribution.
    """
    gx = _gx()

    frame = tokens.with_columns(
        pl.col("token").str.len_chars().alias("token_length"),
        pl.when(pl.col("split") == "train").then(pl.col("label")).alias("train_label"))
    train_labels = sorted(frame.filter(pl.col("split") == "train")["label"].unique().to_list())
    exps = [
        gx.expectations.ExpectColumnValuesToNotBeNull(column="token"),
        gx.expectations.ExpectColumnValuesToNotBeNull(column="label"),
        gx.expectations.ExpectColumnValuesToBeBetween(column="token_length", min_value=1),
        gx.expectations.ExpectColumnValuesToNotMatchRegex(column="token", regex=r"\s"),
        gx.expectations.ExpectColumnValuesToNotMatchRegex(column="label", regex=r"\s"),
        gx.expectations.ExpectCompoundColumnsToBeUnique(column_list=["corpus_id", "sentence_id", "position"]),
        gx.expectations.ExpectColumnValuesToBeBetween(column="position", min_value=0, max_value=max_position),
        gx.expectations.ExpectColumnValuesToBeInSet(column="split", value_set=["train", "dev", "test"]),
        gx.expectations.ExpectColumnDistinctValuesToContainSet(column="split", value_set=["train"]),
    ]
    if declared_labels is not None:
        exps.append(gx.expectations.ExpectColumnValuesToBeInSet(column="train_label", value_set=list(declared_labels)))
    report = _run_suite("annotated_corpus", frame, exps)
    test = frame.filter(pl.col("split") != "train")
    unseen = test.filter(~pl.col("label").is_in(train_labels)) if train_labels else test
    # Reported, not failed: a test label absent from training is data, scored as an error.
    report.results.append({
        "expectation": "labels_outside_training_set", "column": "label", "success": True,
        "unexpected_count": unseen.height,
        "unexpected_examples": sorted(set(unseen["label"].to_list()))[:10],
        "observed_value": unseen.height,
    })
    if declared_labels is not None:
        undeclared = test.filter(~pl.col("label").is_in(list(declared_labels)))
        report.results.append({
            "expectation": "test_labels_outside_declared_set", "column": "label", "success": True,
            "unexpected_count": undeclared.height,
            "unexpected_examples": [f"{r['label']} ({r['source']}:{r['line']})"
                                    for r in undeclared.unique("label", keep="first", maintain_order=True)
                                    .head(10).iter_rows(named=True)],
            "observed_value": undeclared.height,
        })
    counts = frame.group_by("split", "label").len().sort("split", "label")
    report.results.append({
        "expectation": "label_distribution", "column": "label", "success": True, "unexpected_count": 0,
        "unexpected_examples": [],
        "observed_value": {split: dict(zip(g["label"].to_list(), g["len"].to_list()))
                           for (split,), g in counts.group_by("split", maintain_order=True)},
    })
    return report


def validate_activation_summary(summary: pl.DataFrame, *, expected_rows: int, hidden_size: int) -> QualityReport:
    """Suite for the activations of one activation set, on its per-layer summary.

    ``summary`` has one row per layer with columns layer, n_rows, width_min, width_max and
    n_nonfinite (non-finite values), and optionally n_missing_sentences and
    n_word_count_mismatch (corpus sentences without activations, or whose stored word
    count differs from the corpus). Expectations: each layer has exactly ``expected_rows``
    rows (one per corpus word), every vector has ``hidden_size`` values, no value is NaN
    or infinite, and the two counts are zero.
    """
    gx = _gx()

    exps = [
        gx.expectations.ExpectColumnValuesToBeBetween(column="n_rows", min_value=expected_rows, max_value=expected_rows),
        gx.expectations.ExpectColumnValuesToBeBetween(column="width_min", min_value=hidden_size, max_value=hidden_size),
        gx.expectations.ExpectColumnValuesToBeBetween(column="width_max", min_value=hidden_size, max_value=hidden_size),
        gx.expectations.ExpectColumnValuesToBeBetween(column="n_nonfinite", min_value=0, max_value=0),
        gx.expectations.ExpectTableRowCountToBeBetween(min_value=1),
    ]
    for column in ("n_missing_sentences", "n_word_count_mismatch"):
        if column in summary.columns:
            exps.append(gx.expectations.ExpectColumnValuesToBeBetween(column=column, min_value=0, max_value=0))
    return _run_suite("token_activations", summary, exps)


def validate_rankings(ranking: pl.DataFrame, *, n_neurons: int) -> QualityReport:
    """Suite for one neuron ranking: every neuron id 0..n_neurons-1 exactly once, ranks
    unique in 1..n_neurons, and finite scores. A method that ranks only a prefix (greedy
    selection) leaves the rest with a null rank *and* a null score; a score without a rank,
    or a rank without a score, fails."""
    gx = _gx()

    frame = ranking.with_columns(
        # A NaN score counts as missing (pandas, which the suite runs on, would skip it).
        (pl.col("rank").is_null() == (pl.col("score").is_null() | pl.col("score").is_nan().fill_null(True)))
        .alias("rank_and_score_both_set_or_null"))
    exps = [
        gx.expectations.ExpectTableRowCountToEqual(value=n_neurons),
        gx.expectations.ExpectColumnValuesToBeUnique(column="neuron"),
        gx.expectations.ExpectColumnValuesToNotBeNull(column="neuron"),
        gx.expectations.ExpectColumnValuesToBeBetween(column="neuron", min_value=0, max_value=n_neurons - 1),
        gx.expectations.ExpectColumnValuesToBeUnique(column="rank"),
        gx.expectations.ExpectColumnValuesToBeBetween(column="rank", min_value=1, max_value=n_neurons),
        gx.expectations.ExpectColumnValuesToBeInSet(column="rank_and_score_both_set_or_null", value_set=[True]),
        gx.expectations.ExpectColumnValuesToBeBetween(column="score", min_value=-1e300, max_value=1e300),
    ]
    return _run_suite("neuron_rankings", frame, exps)


def validate_metrics(metrics: pl.DataFrame, *, majority_baseline: float) -> QualityReport:
    """Suite for the evaluation metrics: accuracies in [0, 1], full probe above the baseline."""
    gx = _gx()

    acc = metrics.filter(pl.col("metric") == "accuracy")
    full = acc.filter((pl.col("selection") == "all") & (pl.col("scope") == "overall"))
    frame = acc.with_columns(
        pl.when((pl.col("selection") == "all") & (pl.col("scope") == "overall"))
        .then(pl.col("value")).otherwise(None).alias("full_probe_accuracy"))
    exps = [
        gx.expectations.ExpectColumnValuesToBeBetween(column="value", min_value=0.0, max_value=1.0),
        gx.expectations.ExpectColumnValuesToNotBeNull(column="value"),
        # Strictly above the majority-class baseline (a probe that learned nothing scores it).
        gx.expectations.ExpectColumnMinToBeBetween(column="full_probe_accuracy", min_value=majority_baseline,
                                                   strict_min=True),
    ]
    report = _run_suite("evaluation_report", frame, exps)
    if full.is_empty():
        report.success = False
        report.results.append({"expectation": "full_probe_accuracy_present", "column": "value",
                               "success": False, "unexpected_count": 1, "unexpected_examples": [],
                               "observed_value": None})
    return report


__all__ = ["QualityReport", "validate_activation_summary", "validate_metrics", "validate_rankings",
           "validate_tokens"]


def validate_table(name: str, frame: pl.DataFrame, *, min_rows: int = 1,
                   ranges: dict[str, tuple[float, float]] | None = None,
                   not_null: tuple[str, ...] = ()) -> QualityReport:
    """Suite for a derived result table: at least ``min_rows`` rows, the ``not_null``
    columns filled, and each column of ``ranges`` within its (low, high) bounds (nulls,
    where allowed, are skipped by the bounds check; NaN counts as null and so fails
    ``not_null``)."""
    gx = _gx()

    exps: list[Any] = [gx.expectations.ExpectTableRowCountToBeBetween(min_value=min_rows)]
    exps += [gx.expectations.ExpectColumnValuesToNotBeNull(column=c) for c in not_null]
    exps += [gx.expectations.ExpectColumnValuesToBeBetween(column=c, min_value=lo, max_value=hi)
             for c, (lo, hi) in (ranges or {}).items()]
    return _run_suite(name, frame, exps)

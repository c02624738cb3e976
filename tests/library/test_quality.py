"""The great-expectations suites catch what they promise to catch."""

from __future__ import annotations

import polars as pl

from neuro_pipeline.quality import validate_rankings


def _ranking(neurons, scores, ranks):
    return pl.DataFrame({"neuron": neurons, "score": scores, "rank": ranks},
                        schema={"neuron": pl.Int32, "score": pl.Float64, "rank": pl.Int32})


def _failed(report):
    return {r["expectation"] for r in report.results if not r["success"]}


def test_a_full_permutation_with_finite_scores_passes():
    assert validate_rankings(_ranking([2, 0, 1], [3.0, 2.0, 1.0], [1, 2, 3]), n_neurons=3).success


def test_a_partial_ranking_passes_when_rank_and_score_are_null_together():
    report = validate_rankings(_ranking([2, 0, 1], [3.0, None, None], [1, None, None]), n_neurons=3)
    assert report.success, report.failures()


def test_duplicates_missing_neurons_and_bad_scores_fail():
    assert not validate_rankings(_ranking([2, 2, 1], [3.0, 2.0, 1.0], [1, 2, 3]), n_neurons=3).success
    assert not validate_rankings(_ranking([0, 1], [2.0, 1.0], [1, 2]), n_neurons=3).success
    nan = validate_rankings(_ranking([2, 0, 1], [3.0, float("nan"), 1.0], [1, 2, 3]), n_neurons=3)
    assert not nan.success and "expect_column_values_to_be_in_set" in _failed(nan)
    inf = validate_rankings(_ranking([2, 0, 1], [float("inf"), 2.0, 1.0], [1, 2, 3]), n_neurons=3)
    assert not inf.success
    score_without_rank = validate_rankings(_ranking([2, 0, 1], [3.0, 2.0, 1.0], [1, 2, None]), n_neurons=3)
    assert not score_without_rank.success


def test_validate_table_checks_rows_ranges_and_nulls():
    from neuro_pipeline.quality import validate_table

    good = pl.DataFrame({"accuracy": [0.5, 1.0], "selectivity": [-0.2, 0.3]})
    assert validate_table("t", good, ranges={"accuracy": (0, 1), "selectivity": (-1, 1)},
                          not_null=("accuracy",)).success
    assert not validate_table("t", good.head(0), ranges={"accuracy": (0, 1)}).success  # no rows
    assert not validate_table("t", pl.DataFrame({"accuracy": [1.5]}), ranges={"accuracy": (0, 1)}).success
    assert not validate_table("t", pl.DataFrame({"accuracy": [None, 0.5]}), not_null=("accuracy",)).success
    assert not validate_table("t", pl.DataFrame({"accuracy": [float("nan")]}), not_null=("accuracy",)).success

"""Comparing two stores: every table as a multiset of rows, timings left out, paths taken
relative to each store's folder, and Parquet activations compared by content."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from neuro_pipeline.store import ActivationSet, Store, to_json
from neuro_pipeline.store.compare import compare_stores, main

RANKING_KEYS = {"analysis": "a", "activation_set": "pq", "task": "upos", "method": "probeless", "params_hash": "p1"}


def build(folder: Path, *, layout: str = "bytes", scale: float = 1.0) -> Path:
    """A small store in ``folder``: a Parquet activation set written in two files, a set in
    DuckDB rows, rankings, a ranking run with timings and a report whose paths lie under
    the folder. Two calls with the same arguments give stores that differ only in their
    Parquet file names, timestamps and folder."""
    store = Store(folder / "pipeline.duckdb")
    rng = np.random.default_rng(0)
    parquet = ActivationSet("pq", "mv", "/models/m", "last", "float32", "window", 2, 3,
                            parquet_dir=str(folder / "activations"), parquet_layout=layout)
    rows = ActivationSet("db", "mv", "/models/m", "first", "float32", "window", 2, 3)
    for aset in (parquet, rows):
        store.register_activation_set(aset)
    sentences = [(f"h{i}", scale * rng.normal(size=(i + 1, 2, 3)).astype(np.float32), False) for i in range(4)]
    store.write_activations(parquet, sentences[:2])
    store.write_activations(parquet, sentences[2:], rejected=[("long", 900)])
    store.write_activations(rows, sentences[:2])
    ranking = pl.DataFrame({"model_version": "mv", "neuron": range(6), "layer": [0, 0, 0, 1, 1, 1],
                            "unit": [0, 1, 2] * 2, "score": np.linspace(0.1, 0.6, 6), "rank": range(6)})
    ranking = ranking.with_columns(**{k: pl.lit(v) for k, v in RANKING_KEYS.items()})
    store.replace_rows("rankings", ranking, RANKING_KEYS)
    run = pl.DataFrame({**{k: [v] for k, v in RANKING_KEYS.items()}, "params": [to_json({"merge": "best"})],
                        "fitted": [to_json({"n_ranked": 6, "search": [{"fit_seconds": 0.25, "l1": 0.1}]})],
                        "n_train": [10], "seconds": [1.5]})
    store.replace_rows("ranking_runs", run, RANKING_KEYS)
    report = pl.DataFrame({"analysis": ["a"], "activation_set": ["pq"], "task": ["upos"], "model_version": ["mv"],
                           "html_path": [str(folder / "reports" / "a.html")],
                           "markdown_path": [str(folder / "reports" / "a.md")]})
    store.replace_rows("reports", report, {"analysis": "a"})
    return store.path


def change(path: Path, sql: str) -> None:
    with Store(path).transaction() as con:
        con.execute(sql)


@pytest.fixture
def pair(tmp_path):
    return build(tmp_path / "one"), build(tmp_path / "two")


def test_two_stores_of_the_same_results_are_identical(pair, capsys):
    a, b = pair
    result = compare_stores(a, b)
    assert result.identical, result.report()
    assert {s.activation_set for s in result.activations} == {"pq", "db"}
    assert {"activation_sets.created_at", "ranking_runs.seconds", "ranking_runs.created_at",
            "reports.created_at"} <= set(result.skipped)
    assert {"reports.html_path", "activation_sets.parquet_dir", "activation_files.file"} <= set(
        result.relative_paths)
    assert result.json_timings == ["ranking_runs.fitted (fit_seconds)"]
    rankings = next(t for t in result.tables if t.table == "rankings")
    assert (rankings.rows_a, rankings.rows_b) == (6, 6)
    assert main([str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert f"identical: {len(result.tables)} tables, activations of 2 sets; skipped columns: " in out
    assert "ranking_runs.seconds" in out
    assert compare_stores(a, a).identical


def test_one_changed_value_is_found_in_its_table(pair, capsys):
    a, b = pair
    change(b, "UPDATE rankings SET score = score + 1e-12 WHERE neuron = 4")
    result = compare_stores(a, b)
    assert not result.identical
    differing = [t for t in result.tables if not t.identical]
    assert [t.table for t in differing] == ["rankings"]
    assert (differing[0].n_only_a, differing[0].n_only_b) == (1, 1)
    assert differing[0].only_a[0][differing[0].columns.index("neuron")] == 4
    assert compare_stores(a, b, rtol=1e-9).identical
    assert not compare_stores(a, b, atol=1e-13).identical
    assert compare_stores(a, b, skip_columns=["rankings.score"]).identical
    assert main([str(a), str(b)]) == 1
    out = capsys.readouterr().out
    assert "rankings" in out and "DIFFERS" in out and "1 row(s) only in A" in out
    assert out.strip().splitlines()[-1].startswith("DIFFERENT: 1 of ")


def test_an_extra_row_and_a_missing_table_are_differences(pair):
    a, b = pair
    change(b, "INSERT INTO rankings SELECT * REPLACE (neuron + 100 AS neuron) FROM rankings WHERE neuron = 0")
    change(b, "CREATE TABLE extra (x INTEGER)")
    result = compare_stores(a, b)
    tables = {t.table: t for t in result.tables}
    assert (tables["rankings"].rows_a, tables["rankings"].rows_b) == (6, 7)
    assert (tables["rankings"].n_only_a, tables["rankings"].n_only_b) == (0, 1)
    assert tables["extra"].problem == "only in B" and tables["extra"].rows_a is None
    assert not result.identical


def test_timestamps_and_timings_alone_are_no_difference(pair):
    a, b = pair
    change(b, "UPDATE ranking_runs SET created_at = created_at + INTERVAL 3 HOUR, seconds = seconds * 7, "
              "fitted = replace(fitted, '0.25', '9.5')")
    change(b, "UPDATE activation_sets SET created_at = TIMESTAMP '2001-01-01 00:00:00'")
    assert compare_stores(a, b).identical
    change(b, "UPDATE ranking_runs SET fitted = replace(fitted, '\"l1\": 0.1', '\"l1\": 0.2')")
    result = compare_stores(a, b)
    assert [t.table for t in result.tables if not t.identical] == ["ranking_runs"]


def test_activations_are_compared_by_content(pair):
    a, b = pair
    path = Store(b).query("SELECT file FROM activation_sentences WHERE sentence_hash = 'h3'")["file"][0]
    table = pq.read_table(path)
    act = table.column("act").to_pylist()
    act[-1] = bytes(len(act[-1]))                       # one row of the last sentence, zeroed
    column = table.schema.get_field_index("act")
    pq.write_table(table.set_column(column, "act", pa.array(act, table.schema.field(column).type)), path)
    result = compare_stores(a, b)
    assert all(t.identical for t in result.tables)      # the catalogue is the same
    [parquet] = [s for s in result.activations if s.activation_set == "pq"]
    assert (parquet.rows_a, parquet.rows_b, parquet.n_only_a, parquet.n_only_b) == (20, 20, 1, 1)
    assert parquet.only_a[0][0] == "h3"
    assert not result.identical


def test_rows_of_a_sentence_in_another_file_than_its_own_are_not_read(pair):
    """A Parquet file may hold a sentence that another file holds too (two runs extracted
    it at once); only the rows of the file the catalogue names count, as when the store reads."""
    a, b = pair
    store = Store(b)
    own = store.query("SELECT file FROM activation_sentences WHERE sentence_hash = 'h0'")["file"][0]
    other = store.query("SELECT file FROM activation_files WHERE file <> $f", {"f": own})["file"][0]
    rows = pq.read_table(own)
    rows = rows.filter(pc.equal(rows.column("sentence_hash").cast(pa.string()), "h0"))
    column = rows.schema.get_field_index("act")
    stale = rows.set_column(column, "act", pa.array([bytes(12)] * rows.num_rows, rows.schema.field(column).type))
    merged = pa.concat_tables([pq.read_table(other), stale])
    pq.write_table(merged, other)
    assert merged.num_rows > pq.read_table(own).num_rows
    result = compare_stores(a, b)
    assert result.identical, result.report()
    assert {s.activation_set: s.rows_b for s in result.activations}["pq"] == 20


def test_the_same_values_in_another_layout_are_the_same_activations(tmp_path):
    a, b = build(tmp_path / "bytes"), build(tmp_path / "list", layout="list")
    result = compare_stores(a, b)
    assert [t.table for t in result.tables if not t.identical] == ["activation_sets"]   # parquet_layout
    assert all(s.identical for s in result.activations)
    assert not compare_stores(a, build(tmp_path / "scaled", scale=2.0)).activations[0].identical


def test_a_missing_file_is_an_error(tmp_path, capsys):
    assert main([str(tmp_path / "nope.duckdb"), str(tmp_path / "nope.duckdb")]) == 2
    assert "no such store file" in capsys.readouterr().err

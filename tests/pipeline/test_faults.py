"""Crashes, failed writes and concurrent runs: nothing is lost, nothing is half-written.

- SIGKILL in the middle of extraction: the next run redoes only the unfinished sentences
  and its activations equal those of an uninterrupted run (to float32 rounding: the resumed
  sentences are batched differently).
- A write that fails in the middle of a stage's transaction leaves every table and the
  report files of the previous good run as they were.
- Two runs launched at once against one DuckDB file both finish, with the results of a
  single run.
- Bad data in the store (NaN in a layer, a constant neuron) and labels outside the declared
  set fail the blocking quality checks with the sentence, layer or label named.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest

from assets.definitions import build_definitions
from neuro_pipeline import stages as npl
from neuro_pipeline.config import load_config
from neuro_pipeline.store import Store

CLI = [sys.executable, "-m", "neuro_pipeline.cli"]


def _run_all(config: str, instance) -> dg.ExecuteInProcessResult:
    defs = build_definitions(config)
    defs.resolve_job_def("observe_inputs_job").execute_in_process(instance=instance)
    return defs.resolve_job_def("analysis_job").execute_in_process(instance=instance, raise_on_error=False)


def _matrix(cfg, store: Store) -> tuple[pl.DataFrame, np.ndarray]:
    aset = npl.current_activation_set(cfg, store)
    keys = store.query("SELECT DISTINCT sentence_hash, position FROM tokens ORDER BY ALL")
    return keys, store.read_activation_matrix(aset.activation_set, keys)


def _with_store(analysis_dir: Path, name: str) -> Path:
    """A copy of the analysis config writing to another store file."""
    config = analysis_dir / f"{name}.yaml"
    config.write_text((analysis_dir / "pipeline.yaml").read_text(encoding="utf-8").replace(
        "store: store/pipeline.duckdb", f"store: store/{name}.duckdb"), encoding="utf-8")
    return config


# ------------------------------------------------------------------- SIGKILL

_CHILD = textwrap.dedent("""
    import sys, time
    from neuro_pipeline import stages as npl
    from neuro_pipeline.config import load_config
    from neuro_pipeline.store import Store

    cfg = load_config(sys.argv[1])

    def progress(done, total):
        print(f"progress {done} {total}", flush=True)
        time.sleep(0.4)  # give the parent time to kill us between two writes

    npl.materialize_activations(cfg, Store(cfg.store_path), progress=progress, flush_words=12)
    print("finished", flush=True)
""")


def test_sigkill_during_extraction_resumes_and_equals_an_uninterrupted_run(analysis_dir):
    """The extraction alone, killed between two writes, batches of 4 sentences, activations in
    DuckDB rows. (``neuro-pipeline run`` killed by each signal at each stage, with the default
    Parquet files: ``test_run_faults.py``.)"""
    config = analysis_dir / "pipeline.yaml"
    config.write_text(config.read_text(encoding="utf-8").replace("corpus:", "extraction: {storage: duckdb}\ncorpus:"),
                      encoding="utf-8")
    cfg = load_config(config)
    store = Store(cfg.store_path)
    npl.materialize_corpus(cfg, store)
    n_sentences = store.query("SELECT count(DISTINCT sentence_hash) AS n FROM tokens")["n"][0]

    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(config)], stdout=subprocess.PIPE, text=True,
                             cwd=analysis_dir)
    seen = 0
    for line in child.stdout:
        if line.startswith("progress"):
            done, total = map(int, line.split()[1:])
            seen += 1
            if done >= total // 2 and seen >= 3:
                os.kill(child.pid, signal.SIGKILL)
                break
    child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL

    aset = npl.current_activation_set(cfg, store)
    done_before = store.extracted_sentences(aset.activation_set).height
    assert 0 < done_before < n_sentences, "the kill must land between the first and the last write"
    # Nothing half-written: every sentence marked done has all its rows in every layer.
    relation, params = store.activation_relation(aset)
    rows = store.query(f"SELECT count(*) AS n FROM {relation} WHERE activation_set = $aset",
                       {**params, "aset": aset.activation_set})["n"][0]
    words = store.query("SELECT sum(n_words) AS n FROM activation_sentences WHERE activation_set = ?",
                        [aset.activation_set])["n"][0]
    assert rows == words * aset.n_layers

    resumed = npl.materialize_activations(cfg, store)
    assert resumed.n_reused == done_before and resumed.n_extracted == n_sentences - done_before

    fresh_cfg = load_config(_with_store(analysis_dir, "fresh"))
    fresh = Store(fresh_cfg.store_path)
    npl.materialize_corpus(fresh_cfg, fresh)
    npl.materialize_activations(fresh_cfg, fresh)
    keys, resumed_matrix = _matrix(cfg, store)
    fresh_keys, fresh_matrix = _matrix(fresh_cfg, fresh)
    assert keys.equals(fresh_keys)
    # Batches are made of other sentences after the resume (padding differs): equal to
    # float32 rounding, as batched and one-at-a-time extraction are.
    np.testing.assert_allclose(resumed_matrix, fresh_matrix, atol=1e-5)


# ------------------------------------------------------------- failed write

def _snapshot(store: Store) -> dict[str, pl.DataFrame]:
    tables = store.query("SELECT table_name FROM information_schema.tables ORDER BY 1")["table_name"].to_list()
    return {t: store.query(f'SELECT * FROM "{t}" ORDER BY ALL') for t in tables if t != "activations"}


def test_a_write_that_fails_mid_transaction_leaves_the_last_good_results(analysis_dir, monkeypatch):
    config = analysis_dir / "pipeline.yaml"
    cfg = load_config(config)
    store = Store(cfg.store_path)
    with dg.instance_for_test() as instance:
        assert _run_all(str(config), instance).success
        before = _snapshot(store)
        report = Path(store.query("SELECT html_path FROM reports")["html_path"][0])
        page = report.read_bytes()
        # New settings: every evaluation table would change.
        config.write_text(config.read_text(encoding="utf-8").replace("n_random: 2", "n_random: 3"), encoding="utf-8")

        original = Store.replace_each

        def failing(self, items):
            # Fault injection: the report stage's write gets a last item that violates a
            # NOT NULL constraint, after its other tables were deleted and re-inserted.
            if any(table == "reports" for table, _, _ in items):
                bad = pl.DataFrame({"analysis": [None], "activation_set": ["x"], "task": ["t"]},
                                   schema={"analysis": pl.String, "activation_set": pl.String, "task": pl.String})
                items = [*items, ("reports", bad, {"analysis": "__none__"})]
            return original(self, items)

        monkeypatch.setattr(Store, "replace_each", failing)
        result = _run_all(str(config), instance)
        assert not result.success
        failed = [e.step_key for e in result.get_step_failure_events()]
        assert any("evaluation_report" in k for k in failed), failed

    after = _snapshot(store)
    report_tables = ["metrics", "class_metrics", "confusion", "reports"]
    for table in report_tables:
        assert after[table].equals(before[table]), table
    assert report.read_bytes() == page
    assert not list(report.parent.glob(".*.tmp")), "temporary report files are removed"
    # The stages before the report completed in the failed run and hold their new results;
    # the last good report still reads.
    assert store.query("SELECT count(*) AS n FROM metrics")["n"][0] == before["metrics"].height


# ------------------------------------------------------------- concurrency

def test_two_runs_at_once_on_one_store_both_finish_with_the_results_of_one_run(analysis_dir):
    config = analysis_dir / "pipeline.yaml"
    env = {**os.environ, "NEURO_PIPELINE_LOCK_TIMEOUT": "300"}
    runs = [subprocess.Popen([*CLI, "run", "-c", str(config), "--home", str(analysis_dir / f"home{i}")],
                             cwd=analysis_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for i in (1, 2)]
    outputs = [run.communicate(timeout=600)[0] for run in runs]
    for run, output in zip(runs, outputs):
        assert run.returncode == 0, output[-3000:]

    single = _with_store(analysis_dir, "single")
    proc = subprocess.run([*CLI, "run", "-c", str(single), "--home", str(analysis_dir / "home3")], cwd=analysis_dir,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    both, one = Store(load_config(config).store_path), Store(load_config(single).store_path)
    for table, columns in [("tokens", "*"), ("rankings", "method, neuron, score, rank"),
                           ("metrics", "method, scope, label, selection, fraction, k, draw, metric, value"),
                           ("selectivity", "method, k, task_accuracy, control_accuracy, selectivity")]:
        a = both.query(f"SELECT {columns} FROM {table} ORDER BY ALL")
        b = one.query(f"SELECT {columns} FROM {table} ORDER BY ALL")
        assert a.height > 0 and a.equals(b), table
    # Each sentence is catalogued once, with one file, although both runs extracted; the
    # matrix read from it has every word once (a duplicate row would be an error).
    dup = both.query("SELECT count(*) AS n FROM (SELECT activation_set, sentence_hash FROM activation_sentences "
                     "GROUP BY ALL HAVING count(*) > 1)")["n"][0]
    assert dup == 0
    assert both.query("SELECT count(*) AS n FROM activation_sentences WHERE status = 'ok' AND file IS NULL")["n"][0] == 0
    keys, matrix = _matrix(load_config(config), both)
    _, single_matrix = _matrix(load_config(single), one)
    np.testing.assert_array_equal(matrix, single_matrix)


# -------------------------------------------------------- quality gates

def _damage_parquet_set(store: Store, aset, target_hash: str) -> None:
    """The Parquet version of the UPDATEs below: unit 3 of layer 1 constant (0.5), a NaN in
    unit 0 of layer 2 of one sentence; each file rewritten in place with its own schema."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for file in store.activation_files(aset.activation_set):
        table = pq.read_table(file)
        act = table.column("act").combine_chunks()
        values = np.frombuffer(act.buffers()[1], dtype=np.float32).reshape(len(act), aset.hidden_size).copy()
        layer = table.column("layer").to_numpy()
        hashes = table.column("sentence_hash").to_pylist()
        values[layer == 1, 3] = 0.5
        values[(layer == 2) & (np.array(hashes) == target_hash), 0] = np.nan
        new = pa.FixedSizeBinaryArray.from_buffers(act.type, len(act), [None, pa.py_buffer(values.reshape(-1))])
        pq.write_table(table.set_column(table.schema.get_field_index("act"), "act", new), file)


@pytest.mark.parametrize("storage", ["parquet", "duckdb"])
def test_nan_and_constant_neurons_are_named_by_the_activation_check(analysis_dir, storage):
    config = analysis_dir / "pipeline.yaml"
    config.write_text(config.read_text(encoding="utf-8").replace("corpus:", f"extraction: {{storage: {storage}}}\ncorpus:"),
                      encoding="utf-8")
    cfg = load_config(config)
    store = Store(cfg.store_path)
    npl.materialize_corpus(cfg, store)
    npl.materialize_activations(cfg, store)
    report = npl.check_activations(cfg, store)
    assert report.success
    constant = {r["expectation"]: r for r in report.results}["constant_neurons"]
    assert constant["observed_value"]["n_constant"] == 0
    aset = npl.current_activation_set(cfg, store)
    target = store.query("SELECT sentence_id, sentence_hash, source, min(line) AS line FROM tokens "
                         "WHERE split = 'test' GROUP BY ALL ORDER BY sentence_id LIMIT 1").row(0, named=True)
    if storage == "parquet":
        _damage_parquet_set(store, aset, target["sentence_hash"])
    else:
        with store.transaction() as con:
            # Unit 3 of layer 1 becomes constant everywhere; one sentence gets a NaN in layer 2.
            con.execute("UPDATE activations SET act = list_concat(act[1:3], [0.5::FLOAT], act[5:]) "
                        "WHERE activation_set = ? AND layer = 1", [aset.activation_set])
            con.execute("UPDATE activations SET act = list_concat(['nan'::FLOAT], act[2:]) "
                        "WHERE activation_set = ? AND layer = 2 AND sentence_hash = ?",
                        [aset.activation_set, target["sentence_hash"]])
    report = npl.check_activations(cfg, store)
    assert not report.success
    by_name = {r["expectation"]: r for r in report.results}
    nan = by_name["sentences_with_nan_or_inf"]
    assert not nan["success"] and nan["unexpected_count"] == 1
    assert nan["unexpected_examples"] == [f"{target['source']}:{target['line']} (sentence {target['sentence_id']}) "
                                          "layers [2]"]
    assert by_name["constant_neurons"]["unexpected_examples"] == ["L1:3"]
    assert by_name["constant_neurons"]["success"]  # reported, not failed


def test_labels_outside_the_declared_set(analysis_dir):
    train = analysis_dir / "train.conllu"
    test = analysis_dir / "test.conllu"
    test.write_text(test.read_text(encoding="utf-8").replace("\tNOUN\t", "\tNOUNS\t", 1), encoding="utf-8")
    cfg = load_config(analysis_dir / "pipeline.yaml")
    store = Store(cfg.store_path)
    npl.materialize_corpus(cfg, store)
    report = npl.check_corpus(cfg, store)
    by_name = {(r["expectation"], r["column"]): r for r in report.results}
    assert report.success  # a test label outside the set is reported, not a failure
    outside = by_name[("test_labels_outside_declared_set", "label")]
    assert outside["unexpected_count"] == 1 and outside["unexpected_examples"][0].startswith("NOUNS (")
    assert by_name[("label_distribution", "label")]["observed_value"]["train"]["NOUN"] > 0
    train.write_text(train.read_text(encoding="utf-8").replace("\tVERB\t", "\tVRB\t", 1), encoding="utf-8")
    npl.materialize_corpus(cfg, store)
    report = npl.check_corpus(cfg, store)
    assert not report.success
    failed = [r for r in report.results if not r["success"]]
    assert [(r["expectation"], r["column"], r["unexpected_examples"]) for r in failed] == [
        ("expect_column_values_to_be_in_set", "train_label", ["VRB"])]


@pytest.mark.parametrize("setting, storage_dtype, parquet, rtol", [
    ("storage_dtype: bfloat16", "bfloat16", True, 2 ** -8),
    ("storage: duckdb", "float32", False, 0),
    ("{storage: duckdb, storage_dtype: float16}", "float16", False, 2 ** -11),
])
def test_other_storage_is_a_set_of_its_own_and_passes_its_checks(analysis_dir, setting, storage_dtype, parquet, rtol):
    config = analysis_dir / "pipeline.yaml"
    other = analysis_dir / "other.yaml"
    text = (f"extraction: {setting}\ncorpus:" if setting.startswith("{") else f"extraction:\n  {setting}\ncorpus:")
    other.write_text(config.read_text(encoding="utf-8").replace("corpus:", text), encoding="utf-8")
    full_cfg, other_cfg = load_config(config), load_config(other)
    store = Store(full_cfg.store_path)
    npl.materialize_corpus(full_cfg, store)
    for cfg in (full_cfg, other_cfg):
        npl.materialize_activations(cfg, store)
        assert npl.check_activations(cfg, store).success
    a, b = npl.current_activation_set(full_cfg, store), npl.current_activation_set(other_cfg, store)
    assert a.activation_set != b.activation_set and (a.storage_dtype, b.storage_dtype) == ("float32", storage_dtype)
    assert a.parquet_dir == str(analysis_dir / "store" / "activations")  # the default
    assert (b.parquet_dir == a.parquet_dir) == parquet
    assert bool(store.activation_files(b.activation_set)) == parquet
    xa = npl.load_split(full_cfg, store, a, "train").X
    xb = npl.load_split(other_cfg, store, b, "train").X
    np.testing.assert_allclose(xb, xa, rtol=rtol, atol=0)
    # The NaN check reads the same rows: a NaN in one stored value (of the default Parquet
    # set's bytes) is found.
    if not parquet:
        import pyarrow as pa
        import pyarrow.parquet as pq

        file = store.activation_files(a.activation_set)[0]
        table = pq.read_table(file)
        act = table.column("act").combine_chunks()
        values = np.frombuffer(act.buffers()[1], dtype=np.float32).copy()
        values[0] = np.nan
        act = pa.FixedSizeBinaryArray.from_buffers(act.type, len(act), [None, pa.py_buffer(values)])
        pq.write_table(table.set_column(table.schema.get_field_index("act"), "act", act), file)
        report = npl.check_activations(full_cfg, store)
        assert not report.success
        assert {r["expectation"]: r for r in report.results}["sentences_with_nan_or_inf"]["unexpected_count"] == 1


def test_a_failed_background_write_stops_the_extraction_with_its_error(tmp_path):
    from neuro_pipeline.stages.activations import BackgroundWriter
    from neuro_pipeline.store import StoreError

    store = Store(tmp_path / "s.duckdb")
    buffer = [("h1", np.zeros((2, 3, 4), np.float32), False)]
    with pytest.raises(StoreError, match="unknown activation set 'nope'"):
        with BackgroundWriter(store, "nope") as writer:
            writer.put(buffer)
            writer.put(buffer)  # the first failure is raised here or when the block ends
    assert store.query("SELECT count(*) AS n FROM activation_sentences")["n"][0] == 0

"""The same definitions on a real distributed executor: Celery workers fed by a Redis broker,
the Dagster instance on PostgreSQL, activations as Parquet files that DuckDB reads.

Starts, on 127.0.0.1: a PostgreSQL server, a Redis server and two ``neuro-pipeline worker``
processes (one step at a time each); runs ``neuro-pipeline run`` on the tiny analysis with
extraction in 4 shards; checks that the shards ran in both workers' processes and that every
result equals that of the same analysis run in one process. Everything it starts it stops.
"""

from __future__ import annotations

import os
import shutil
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
from tests.pipeline.services import Unavailable, start_postgres, start_redis, start_workers, stop_group

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "neuro_pipeline.cli"]

#: Result tables compared between the two runs, without the columns that name the run
#: (activation set ids differ with the storage) or time it.
TABLES = ("rankings", "class_rankings", "top_words", "agreement", "redundancy_layers", "redundancy_neurons",
          "metrics", "selectivity", "class_selectivity", "layer_probes", "ablation", "layer_distribution",
          "minimal_neurons", "class_metrics", "confusion")
VOLATILE = {"activation_set", "created_at", "seconds", "registered_at", "html_path", "markdown_path"}


@pytest.fixture(scope="module")
def services():
    """PostgreSQL and Redis URLs; in CI a missing service fails the test instead of skipping it."""
    started = []
    try:
        pg, stop_pg = start_postgres()
        started.append(stop_pg)
        redis, stop_redis = start_redis()
        started.append(stop_redis)
    except Unavailable as exc:
        for stop in started:
            stop()
        if os.environ.get("CI"):
            pytest.fail(f"distributed test needs PostgreSQL and Redis: {exc}")
        pytest.skip(str(exc))
    yield {"postgres": pg.replace("postgresql://", "postgresql+psycopg2://"), "redis": redis}
    for stop in reversed(started):
        stop()


def _results(store: Store) -> dict[str, pl.DataFrame]:
    out = {}
    for table in TABLES:
        frame = store.query(f"SELECT * FROM {table}")
        frame = frame.drop([c for c in frame.columns if c in VOLATILE])
        out[table] = frame.sort(frame.columns)
    return out


def test_sharded_extraction_equals_one_step_within_batch_effects(analysis_dir, tmp_path):
    """Shards batch their own sentences (length-sorted within the shard), so activations differ
    from one extraction step's only by float rounding; every sentence is stored once, the
    merged summary counts the whole corpus, and a rerun finds no shard left to do."""
    sharded_dir = tmp_path / "sharded"
    shutil.copytree(analysis_dir, sharded_dir)
    with open(sharded_dir / "pipeline.yaml", "a", encoding="utf-8") as f:
        f.write("execution:\n  shard_sentences: 5\n")
    results = {}
    for folder in (analysis_dir, sharded_dir):
        cfg = load_config(str(folder / "pipeline.yaml"))
        store = Store(cfg.store_path)
        npl.materialize_corpus(cfg, store)
        shards = npl.extraction_shards(cfg, store)
        parts = [npl.materialize_activations(cfg, store, shard=i) for i in shards]
        summary = npl.merge_activation_shards(cfg, store, parts)
        keys = store.query("SELECT DISTINCT sentence_hash, position FROM tokens ORDER BY ALL")
        aset = npl.current_activation_set(cfg, store)
        results[folder] = (shards, summary, store.read_activation_matrix(aset.activation_set, keys),
                           npl.extraction_shards(cfg, store))
    (one, whole, X1, _), (shards, merged, X5, rerun) = results[analysis_dir], results[sharded_dir]
    n = whole.n_sentences                                # distinct sentences (the corpus repeats some)
    assert one == [0] and shards == list(range(-(-n // 5))) and len(shards) >= 5 and rerun == [0]
    assert merged.n_shards == len(shards) and merged.n_sentences == n
    assert (merged.n_extracted, merged.n_rows, merged.n_reused) == (whole.n_extracted, whole.n_rows, 0)
    np.testing.assert_allclose(X5, X1, rtol=0, atol=1e-5)
    assert np.abs(X5 - X1).max() < 1e-5


def test_celery_workers_run_the_shards_and_give_the_single_process_results(analysis_dir, services, tmp_path,
                                                                          monkeypatch):
    # The single-process run: the default executor (every step in one process), activations
    # as DuckDB rows (the other storage), with the same shards: a shard's sentences are batched alike wherever it
    # runs, so every number must be bit-identical. (Shards against one extraction step:
    # test_sharded_extraction_equals_one_step_within_batch_effects.)
    reference_dir = tmp_path / "reference"
    shutil.copytree(analysis_dir, reference_dir)
    reference_cfg = str(reference_dir / "pipeline.yaml")
    with open(reference_cfg, "a", encoding="utf-8") as f:
        f.write("extraction:\n  storage: duckdb\nexecution:\n  shard_sentences: 8\n")
    with dg.instance_for_test() as instance:
        defs = build_definitions(reference_cfg)
        defs.resolve_job_def("observe_inputs_job").execute_in_process(instance=instance)
        assert defs.resolve_job_def("analysis_job").execute_in_process(instance=instance).success

    # The distributed run: the same analysis, extraction in shards of 8 of its 32 sentences.
    config = analysis_dir / "pipeline.yaml"
    config.write_text(config.read_text(encoding="utf-8") + textwrap.dedent(f"""\
        extraction:
          storage: parquet
        execution:
          executor: celery
          shard_sentences: 8
          broker: {services['redis']}/0
          backend: {services['redis']}/1
          instance: {ROOT / 'deploy' / 'celery' / 'dagster.yaml'}
        """), encoding="utf-8")
    env = {**os.environ, "NEURO_PIPELINE_POSTGRES_URL": services["postgres"]}
    names = ["w1", "w2"]
    workers = start_workers(analysis_dir, names, env)
    try:
        proc = subprocess.run([*CLI, "run", "-c", "pipeline.yaml", "--home", "home"], cwd=analysis_dir, env=env,
                              capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    finally:
        for worker in workers:
            stop_group(worker)
    assert all(w.returncode is not None for w in workers)

    # Which process ran each step: the run's events, read back from PostgreSQL.
    monkeypatch.setenv("NEURO_PIPELINE_POSTGRES_URL", services["postgres"])
    with dg.DagsterInstance.from_config(str(analysis_dir / "home" / "dagster_home")) as instance:
        runs = [r for r in instance.get_runs() if r.job_name == "analysis_job"]
        assert len(runs) == 1 and runs[0].is_success
        starts = instance.all_logs(runs[0].run_id, of_type=dg.DagsterEventType.STEP_START)
        run_pid = instance.all_logs(runs[0].run_id, of_type=dg.DagsterEventType.RUN_START)[0].dagster_event.pid
        delegated = [e for e in instance.all_logs(runs[0].run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
                     if "in celery worker" in (e.message or "")]
    shard_pids = {e.step_key: e.dagster_event.pid for e in starts if e.step_key.startswith("token_activations.extract_shard[")}
    n_sentences = Store(load_config(str(config)).store_path).query(
        "SELECT count(DISTINCT sentence_hash) AS n FROM tokens")["n"][0]
    assert len(shard_pids) == -(-n_sentences // 8) >= 4, sorted(shard_pids)
    assert len(set(shard_pids.values())) == 2, shard_pids          # both workers' processes ran shards
    worker_of = {e.step_key: e.dagster_event.engine_event_data.metadata["Celery worker"].value for e in delegated}
    assert {worker_of[k].split("@")[0] for k in shard_pids} == set(names), worker_of
    assert len(starts) == len(worker_of), "every step ran in a Celery worker"
    assert run_pid not in {e.dagster_event.pid for e in starts}

    # The activations went to Parquet files, and every result equals the single-process run's.
    cfg, ref = load_config(str(config)), load_config(reference_cfg)
    store, ref_store = Store(cfg.store_path), Store(ref.store_path)
    aset, ref_aset = npl.current_activation_set(cfg, store), npl.current_activation_set(ref, ref_store)
    assert aset.parquet_dir is not None and store.activation_files(aset.activation_set)
    assert ref_aset.parquet_dir is None
    keys = ref_store.query("SELECT DISTINCT sentence_hash, position FROM tokens ORDER BY ALL")
    np.testing.assert_array_equal(store.read_activation_matrix(aset.activation_set, keys),
                                  ref_store.read_activation_matrix(ref_aset.activation_set, keys))
    ours, theirs = _results(store), _results(ref_store)
    for table in TABLES:
        assert ours[table].height > 0 or table in ("minimal_neurons",), table
        assert ours[table].equals(theirs[table]), (table, ours[table], theirs[table])

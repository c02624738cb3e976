"""The same definitions on a real distributed executor: Celery workers fed by a Redis broker,
the Dagster instance on PostgreSQL, activations as Parquet files that DuckDB reads.

Starts, on 127.0.0.1: a PostgreSQL server, a Redis server and two ``neuro-pipeline worker``
processes (one step at a time each); runs ``neuro-pipeline run`` on the tiny analysis with
extraction in 4 shards; checks that the shards ran in both workers' processes and that every
result equals that of the same analysis run in one process. Then the same with one worker
SIGKILLed in the middle of a shard: the other worker runs that shard again, extracting only
the sentences the lost one had not stored, and the results are the same. Everything it
starts it stops.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest

from assets.definitions import build_definitions
from neuro_pipeline import stages as npl
from neuro_pipeline.config import load_config
from neuro_pipeline.store import Store
from tests.pipeline.services import (
    Unavailable,
    new_database,
    start_postgres,
    start_redis,
    start_workers,
    stop_group,
)

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "neuro_pipeline.cli"]

#: Result tables compared between the two runs, without the columns that name the run
#: (activation set ids differ with the storage) or time it.
TABLES = ("rankings", "class_rankings", "top_words", "agreement", "redundancy_layers", "redundancy_neurons",
          "metrics", "selectivity", "class_selectivity", "layer_probes", "ablation", "layer_distribution",
          "minimal_neurons", "class_metrics", "confusion")
VOLATILE = {"activation_set", "created_at", "seconds", "registered_at", "html_path", "markdown_path"}
SHARD_STEP = "token_activations.extract_shard["


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


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """``reference(analysis_dir)``: the config of the single-process run of that analysis (the
    default executor, activations as DuckDB rows, the other storage), with the distributed
    runs' shards: a shard's sentences are batched alike wherever it runs, so every number must
    be bit-identical. Run once for the module (every test's analysis_dir is the same analysis).
    (Shards against one extraction step: test_sharded_extraction_equals_one_step_within_batch_effects.)"""
    made: list[str] = []

    def make(analysis_dir: Path) -> str:
        if not made:
            reference_dir = tmp_path_factory.mktemp("reference")
            shutil.copytree(analysis_dir, reference_dir, dirs_exist_ok=True)
            config = str(reference_dir / "pipeline.yaml")
            with open(config, "a", encoding="utf-8") as f:
                f.write("extraction:\n  storage: duckdb\nexecution:\n  shard_sentences: 8\n")
            with dg.instance_for_test() as instance:
                defs = build_definitions(config)
                defs.resolve_job_def("observe_inputs_job").execute_in_process(instance=instance)
                assert defs.resolve_job_def("analysis_job").execute_in_process(instance=instance).success
            made.append(config)
        return made[0]

    return make


def _distributed(analysis_dir: Path, services: dict) -> Path:
    """The analysis on Celery, extraction in shards of 8 of its 32 sentences, activations as
    Parquet files; its pipeline.yaml."""
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
    return config


def _assert_equals_reference(config: Path, reference_cfg: str) -> None:
    """The activations went to Parquet files, and they and every result table equal the
    single-process run's."""
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


def test_celery_workers_run_the_shards_and_give_the_single_process_results(analysis_dir, services, reference,
                                                                          monkeypatch):
    reference_cfg = reference(analysis_dir)
    # The distributed run: the same analysis, extraction in shards of 8 of its 32 sentences.
    config = _distributed(analysis_dir, services)
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
    shard_pids = {e.step_key: e.dagster_event.pid for e in starts if e.step_key.startswith(SHARD_STEP)}
    n_sentences = Store(load_config(str(config)).store_path).query(
        "SELECT count(DISTINCT sentence_hash) AS n FROM tokens")["n"][0]
    assert len(shard_pids) == -(-n_sentences // 8) >= 4, sorted(shard_pids)
    assert len(set(shard_pids.values())) == 2, shard_pids          # both workers' processes ran shards
    worker_of = {e.step_key: e.dagster_event.engine_event_data.metadata["Celery worker"].value for e in delegated}
    assert {worker_of[k].split("@")[0] for k in shard_pids} == set(names), worker_of
    assert len(starts) == len(worker_of), "every step ran in a Celery worker"
    assert run_pid not in {e.dagster_event.pid for e in starts}
    _assert_equals_reference(config, reference_cfg)


#: sitecustomize.py of the worker named in NEURO_TEST_STALL_WORKER (its Celery command line
#: has ``-n <name>@%h``): its first extraction shard writes each sentence as soon as it is
#: extracted, and after the first batch says so in the worker's log and stalls, half done.
_STALL_HOOK = textwrap.dedent("""\
    import os
    import sys

    _NAME = os.environ.get("NEURO_TEST_STALL_WORKER")
    if _NAME and f"{_NAME}@%h" in sys.argv:
        import time

        from neuro_pipeline.stages import activations

        _materialize = activations.materialize_activations

        def _stalling(cfg, store, *, progress=None, flush_words=8192, shard=None):
            def stall(done, total):
                if progress is not None:
                    progress(done, total)
                if 0 < done < total:
                    time.sleep(1)  # the writes of a background writer
                    print(f"TEST-STALL shard {shard}: {done}/{total} sentences stored", file=sys.stderr, flush=True)
                    time.sleep(600)
            return _materialize(cfg, store, progress=stall, flush_words=1, shard=shard)

        activations.materialize_activations = _stalling
    """)


def test_a_worker_killed_in_a_shard_its_shard_runs_again_on_the_other_worker(analysis_dir, services, reference,
                                                                             tmp_path, monkeypatch):
    """SIGKILL of a worker's whole process group while it extracts a shard: the broker gives
    the shard's task to the other worker once the lost one no longer renews its delivery
    (``NEURO_PIPELINE_HEARTBEAT_TIMEOUT``, 6 s here; a live worker's step may run longer), and
    that worker extracts only the sentences the lost one had not stored; the run succeeds with
    the results of the single-process run."""
    reference_cfg = reference(analysis_dir)
    config = _distributed(analysis_dir, services)
    postgres = new_database(services["postgres"], "worker_lost")   # a Dagster instance of its own
    env = {**os.environ, "NEURO_PIPELINE_POSTGRES_URL": postgres}
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(_STALL_HOOK, encoding="utf-8")
    worker_env = {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(hooks), env.get("PYTHONPATH")])),
                  "NEURO_TEST_STALL_WORKER": "w1", "NEURO_PIPELINE_HEARTBEAT_TIMEOUT": "6",
                  "NEURO_PIPELINE_HEARTBEAT_SECONDS": "1"}
    workers = start_workers(analysis_dir, ["w1", "w2"], worker_env)
    lost_log = analysis_dir / "worker-w1.log"
    out = analysis_dir / "run.out"
    with open(out, "wb") as f:
        run = subprocess.Popen([*CLI, "run", "-c", "pipeline.yaml", "--home", "home"], cwd=analysis_dir, env=env,
                               stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while (stalled := re.search(r"TEST-STALL shard (\d+): (\d+)/(\d+)", lost_log.read_text(errors="replace"))
               ) is None:
            assert run.poll() is None, "the run ended before w1 stalled:\n" + out.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "w1 took no shard within 300 s"
            time.sleep(0.1)
        step = f"{SHARD_STEP}shard_{int(stalled.group(1)):05d}]"
        # Longer than the visibility timeout: w1 lives, so its shard stays its own.
        time.sleep(6 + 3)
        assert f'execution of step "{step}"' not in (analysis_dir / "worker-w2.log").read_text(errors="replace")
        os.killpg(workers[0].pid, signal.SIGKILL)
        workers[0].wait(timeout=30)
        killed = time.monotonic()
        assert run.wait(timeout=600) == 0, out.read_text(errors="replace")[-3000:]
        again = time.monotonic() - killed
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait(timeout=30)
        for worker in workers:
            stop_group(worker)
    shard, stored, total = map(int, stalled.groups())
    w2_log = (analysis_dir / "worker-w2.log").read_text(errors="replace")
    assert f"shard {shard}: {total - stored} sentences extracted, {stored} reused" in w2_log, (again, w2_log[-3000:])

    monkeypatch.setenv("NEURO_PIPELINE_POSTGRES_URL", postgres)
    with dg.DagsterInstance.from_config(str(analysis_dir / "home" / "dagster_home")) as instance:
        runs = [r for r in instance.get_runs() if r.job_name == "analysis_job"]
        assert len(runs) == 1 and runs[0].is_success
        starts = [e for e in instance.all_logs(runs[0].run_id, of_type=dg.DagsterEventType.STEP_START)
                  if e.step_key == step]
        again_events = [e.message for e in instance.all_logs(runs[0].run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
                        if e.step_key == step and "runs again" in (e.message or "")]
    # The shard started in w1's process, then in w2's, which says why in the run's events.
    assert len(starts) == 2 and len({e.dagster_event.pid for e in starts}) == 2, starts
    assert len(again_events) == 1 and "delivery 2 of at most 3" in again_events[0] and "w2@" in again_events[0]

    # Every sentence stored once, and every result as in the single-process run.
    cfg = load_config(str(config))
    store = Store(cfg.store_path)
    aset = npl.current_activation_set(cfg, store)
    counts = store.query("SELECT count(*) AS n, count(DISTINCT sentence_hash) AS d FROM activation_sentences "
                         "WHERE activation_set = ?", [aset.activation_set])
    n_sentences = store.query("SELECT count(DISTINCT sentence_hash) AS n FROM tokens")["n"][0]
    assert counts["n"][0] == counts["d"][0] == n_sentences
    _assert_equals_reference(config, reference_cfg)


def test_a_step_whose_worker_is_lost_every_time_fails_after_max_deliveries():
    """Each new delivery of a step's Celery task is recorded in its run; the one after
    MAX_DELIVERIES fails, naming the step (no endless round of lost workers)."""
    pytest.importorskip("dagster_celery")
    from assets.celery_worker import MAX_DELIVERIES, count_delivery

    @dg.op
    def extract():
        pass

    @dg.job
    def job():
        extract()

    with dg.instance_for_test() as instance:
        run_id = job.execute_in_process(instance=instance).run_id
        for delivery in range(2, MAX_DELIVERIES + 1):
            assert count_delivery(instance, run_id, "extract", "task-1", "w2@host") == delivery
        with pytest.raises(RuntimeError, match=f'Step "extract" is not run again: .* delivered {MAX_DELIVERIES + 1} '):
            count_delivery(instance, run_id, "extract", "task-1", "w2@host")
        assert count_delivery(instance, run_id, "extract", "task-2", "w2@host") == 2   # another task, its own count
        messages = [e.message for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
                    if e.step_key == "extract"]
        assert sum("runs again" in m for m in messages) == MAX_DELIVERIES and "not run again" in messages[-2]

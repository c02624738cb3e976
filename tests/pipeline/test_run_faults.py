"""Faults injected from outside into the user's commands, then the ordinary next command.

- ``neuro-pipeline run`` stopped by SIGKILL (the OOM killer, a lost machine), SIGTERM (a
  supervisor) and SIGINT (Ctrl-C) during extraction, during a ranking and during the report:
  each signal at each stage, in three sequences of three interrupted runs on one store. Then
  ``neuro-pipeline run`` finishes, and the store equals one uninterrupted reference run
  (``python -m neuro_pipeline.store.compare``).
- A run whose process is gone holds the pool slot; a waiting run says what it waits for
  within 5 s, waits with under 5% of a core, and goes on once the holder is found dead.
- ``neuro-pipeline ui`` SIGKILLed while a run the daemon launched extracts: after a
  restart the daemon ends the dead run, retries it, and the analysis completes.
- ``neuro-pipeline ui --port`` on a port another server holds stops with a clear error.

Each command runs in its own process group, as a shell starts a job.
"""

from __future__ import annotations

import datetime
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import dagster as dg
import pytest

from assets.liveness import HEARTBEAT_TAG, OWNER_TAG, Owner
from tests.pipeline.conftest import _empty_group
from tests.pipeline.dagster_ui import graphql, wait_for_ui
from tests.pipeline.faults import (
    CLI,
    assert_equals_reference,
    run_cli,
    sigkill_leftovers,
    start_cli,
    wait_for,
    write_fault_analysis,
)

ROOT = Path(__file__).resolve().parents[2]
STORE = ("store", "pipeline.duckdb")
#: The step of each stage that the signal interrupts.
PHASES = {"extraction": "token_activations", "ranking": "neuron_rankings__linear_probe",
          "report": "evaluation_report"}
#: Every signal at every stage: three runs per sequence, each stopped at the next stage.
SEQUENCES = [(signal.SIGKILL, signal.SIGTERM, signal.SIGINT),
             (signal.SIGTERM, signal.SIGINT, signal.SIGKILL),
             (signal.SIGINT, signal.SIGKILL, signal.SIGTERM)]


def _instance(folder: Path) -> dg.DagsterInstance:
    return dg.DagsterInstance.from_config(str(folder / ".neuro" / "dagster_home"))


def _wait_for_step(folder: Path, step: str, proc: subprocess.Popen) -> None:
    """Until the newest analysis run has started ``step``, read from the instance's event log
    (the command's own output comes later: Dagster relays a run's output through its
    compute-log capture, about once a second)."""
    home = folder / ".neuro" / "dagster_home"
    # Opened once the command has made the instance's tables (two processes creating them race).
    wait_for(lambda: "materializing" in proc.output_path.read_text(encoding="utf-8"), "the analysis run", proc=proc)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        def started() -> bool:
            runs = instance.get_runs(filters=dg.RunsFilter(job_name="analysis_job",
                                                          statuses=[dg.DagsterRunStatus.STARTED]), limit=1)
            return bool(runs) and any(e.step_key == step for e in instance.all_logs(
                runs[0].run_id, of_type=dg.DagsterEventType.STEP_START))
        wait_for(started, f"step {step}", proc=proc)


def _claims(instance: dg.DagsterInstance) -> list:
    storage = instance.event_log_storage
    return [s for k in storage.get_concurrency_keys() for s in storage.get_concurrency_info(k).claimed_slots]


@pytest.mark.parametrize("signals", SEQUENCES, ids=lambda s: "-".join(signal.Signals(x).name for x in s))
def test_run_stopped_at_each_stage_by_each_signal_resumes_to_the_uninterrupted_result(tmp_path, tiny_model_dir,
                                                                                      fault_reference, signals):
    config = write_fault_analysis(tmp_path, tiny_model_dir)
    left_dead = None  # a run SIGKILLed: the next command must find it and say so
    for (phase, started), sig in zip(PHASES.items(), signals):
        proc = start_cli(config)
        try:
            _wait_for_step(tmp_path, started, proc)
            os.killpg(proc.pid, sig)  # the whole job, as the terminal, a supervisor or the OOM killer does
            proc.wait(timeout=60)
        finally:
            sigkill_leftovers(proc.pid)
        out = proc.output_path.read_text(encoding="utf-8")
        if left_dead is not None:
            assert f"run {left_dead[:8]} (analysis_job) was left STARTED but its process" in out, out[-3000:]
            left_dead = None
        with _instance(tmp_path) as instance:
            run = instance.get_runs(filters=dg.RunsFilter(job_name="analysis_job"), limit=1)[0]
            ended = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_SUCCESS)
            assert started not in {e.step_key for e in ended}, f"the {phase} stage ended before the signal"
            if sig == signal.SIGKILL:
                assert proc.returncode == -signal.SIGKILL
                assert run.status == dg.DagsterRunStatus.STARTED  # nobody could say otherwise
                left_dead = run.run_id
            else:
                assert proc.returncode == 128 + sig, out[-3000:]
                assert f"the run was canceled ({signal.Signals(sig).name})" in out, out[-3000:]
                assert run.status == dg.DagsterRunStatus.CANCELED, run.status
                assert _claims(instance) == []
    final = run_cli(config)
    assert final.returncode == 0, final.stdout[-3000:] + final.stderr[-3000:]
    if left_dead is not None:
        assert f"run {left_dead[:8]} (analysis_job) was left STARTED" in final.stdout
    assert_equals_reference(tmp_path.joinpath(*STORE), fault_reference)
    # Interrupted stages left nothing half-written for the report either.
    assert not list((tmp_path / "reports").rglob(".*.tmp"))


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _run_process(cli_pid: int) -> int | None:
    """The ``python -m assets.run`` child of ``neuro-pipeline run``."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == cli_pid and \
                    b"assets.run" in (stat.parent / "cmdline").read_bytes():
                return int(stat.parent.name)
        except (OSError, ValueError):
            continue
    return None


def test_a_run_waiting_for_a_dead_runs_slot_says_so_waits_idle_and_goes_on(tmp_path, tiny_model_dir, fault_reference):
    """The slot of pool duckdb_writer is held by a run whose process (a ``sleep``) lives at
    first: the new run waits and says for what; the holder dies; the waiting run finds it dead,
    frees the slot and finishes."""
    config = write_fault_analysis(tmp_path, tiny_model_dir)
    home = tmp_path / ".neuro" / "dagster_home"
    home.mkdir(parents=True)
    shutil.copyfile(ROOT / "dagster.yaml", home / "dagster.yaml")
    holder = subprocess.Popen(["sleep", "600"], start_new_session=True)
    try:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            run_id = str(uuid.uuid4())
            owner = Owner.of_process(run_id, holder.pid)
            instance.add_run(dg.DagsterRun(job_name="analysis_job", run_id=run_id, status=dg.DagsterRunStatus.STARTED,
                                           tags={OWNER_TAG: owner.tag(), HEARTBEAT_TAG: "2026-01-01T00:00:00+00:00"}))
            storage = instance.event_log_storage
            storage.set_concurrency_slots("duckdb_writer", 1)
            assert storage.claim_concurrency_slot("duckdb_writer", run_id, "token_activations").is_claimed
        proc = start_cli(config)
        try:
            wait_for(lambda: "waiting since" in proc.output_path.read_text(encoding="utf-8"), "the waiting line",
                     timeout=240, proc=proc)
            said = time.time()
            out = proc.output_path.read_text(encoding="utf-8")
            line = next(x for x in out.splitlines() if "waiting since" in x)
            assert re.search(r"step \w+ waiting since \d\d:\d\d:\d\d for a slot of pool duckdb_writer", line), line
            assert f"held by run {run_id[:8]} (analysis_job, STARTED, step token_activations" in line, line
            # Said within 5 s of the start of the wait (the time Dagster recorded the pending claim).
            since = re.search(r"waiting since (\d\d:\d\d:\d\d)", line).group(1)
            at = datetime.datetime.combine(datetime.date.today(), datetime.time.fromisoformat(since)).timestamp()
            assert said - at < 6, f"the waiting line came {said - at:.1f} s after the wait began"
            child = _run_process(proc.pid)
            assert child is not None
            cpu0, t0 = _cpu_seconds(child), time.monotonic()
            time.sleep(5)
            share = (_cpu_seconds(child) - cpu0) / (time.monotonic() - t0)
            assert share < 0.05, f"the waiting run used {share:.1%} of a core"
            assert proc.poll() is None
            holder.kill()
            holder.wait()
            rc = proc.wait(timeout=300)
        finally:
            sigkill_leftovers(proc.pid)
        out = proc.output_path.read_text(encoding="utf-8")
        assert rc == 0, out[-3000:]
        assert f"run {run_id[:8]} (analysis_job) was left STARTED but its process (pid {holder.pid}" in out, out
    finally:
        holder.kill()
    assert_equals_reference(tmp_path.joinpath(*STORE), fault_reference)
    # A truncated activation file: the next run names it, extracts exactly its sentences again
    # and ends equal to the reference.
    file = sorted((tmp_path / "store" / "activations").rglob("*.parquet"))[-1]
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
    again = run_cli(config)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    named = [x for x in again.stdout.splitlines() if str(file) in x]
    assert named and "sentence(s) will be extracted again" in named[0], again.stdout[-3000:]
    assert_equals_reference(tmp_path.joinpath(*STORE), fault_reference)


def _runs(port: int) -> list[dict]:
    data = graphql(port, "{ runsOrError(limit: 100) { ... on Runs { results { runId status "
                         "tags { key value } assetSelection { path } } } } }")
    return data["runsOrError"]["results"]


def _start_ui(config: Path, port: int) -> subprocess.Popen:
    # The kill may come before the run's executor has tagged it with its process; such a run is
    # taken for dead after NEURO_PIPELINE_UNCLAIMED_TIMEOUT (120 s by default; 10 s here).
    env = {**os.environ, "NEURO_PIPELINE_UNCLAIMED_TIMEOUT": "10"}
    return subprocess.Popen([*CLI, "ui", "-c", str(config), "--port", str(port)], cwd=config.parent,
                            stdout=open(config.parent / f"ui-{port}.out", "w"), stderr=subprocess.STDOUT,
                            start_new_session=True, env=env)


def _stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    try:
        os.killpg(proc.pid, sig)
        proc.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        sigkill_leftovers(proc.pid)
    _empty_group(proc.pid)  # a code server started while the UI shut down missed the signal


def test_ui_killed_while_a_daemon_run_extracts_recovers_after_a_restart(tmp_path, tiny_model_dir, fault_reference):
    from tests.pipeline.dagster_ui import free_port

    config = write_fault_analysis(tmp_path, tiny_model_dir)
    port = free_port()
    ui = _start_ui(config, port)
    try:
        wait_for_ui(port)
        # The analysis launched as the UI's "Materialize" does, through the daemon's run queue
        # and launcher: the path of every run the daemon starts (automation, sensors, schedule).
        # Not left to the automation's first tick: on a fresh instance that tick can come before
        # the inputs are observed and then request nothing.
        from dagster_graphql import DagsterGraphQLClient

        killed = DagsterGraphQLClient("127.0.0.1", port_number=port).submit_job_execution(
            "analysis_job", repository_location_name="neuro")
        wait_for(lambda: any(r["runId"] == killed and r["status"] == "STARTED" for r in _runs(port)),
                 "the daemon's run to start", timeout=300)
        with _instance(tmp_path) as instance:
            wait_for(lambda: any(e.step_key == "token_activations" for e in instance.all_logs(
                killed, of_type=dg.DagsterEventType.STEP_START)), "the extraction", timeout=300)
        _stop(ui, signal.SIGKILL)  # webserver, daemon and code server, as a lost machine
    finally:
        sigkill_leftovers(ui.pid)
    with _instance(tmp_path) as instance:
        assert instance.get_run_by_id(killed).status == dg.DagsterRunStatus.STARTED
    port = free_port()
    ui = _start_ui(config, port)
    try:
        wait_for_ui(port)

        def done() -> bool:
            runs = _runs(port)
            return all(r["status"] in ("SUCCESS", "FAILURE", "CANCELED") for r in runs) and any(
                {"key": "dagster/parent_run_id", "value": killed} in r["tags"] for r in runs)
        wait_for(done, "the analysis to complete after the restart", timeout=420)
        runs = {r["runId"]: r for r in _runs(port)}
        assert runs[killed]["status"] == "FAILURE"
        retried = [r for r in runs.values() if {"key": "dagster/parent_run_id", "value": killed} in r["tags"]]
        assert retried and retried[0]["status"] == "SUCCESS", runs
    finally:
        _stop(ui)
    assert_equals_reference(tmp_path.joinpath(*STORE), fault_reference)


def test_ui_on_a_port_in_use_stops_naming_the_port_and_its_holder(tmp_path, tiny_model_dir):
    config = write_fault_analysis(tmp_path, tiny_model_dir)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    try:
        proc = subprocess.run([*CLI, "ui", "-c", str(config), "--port", str(port)], cwd=tmp_path,
                              capture_output=True, text=True, timeout=60)
    finally:
        server.close()
    assert proc.returncode != 0
    assert f"port {port} on 127.0.0.1 is already in use by pid {os.getpid()}: " in proc.stderr, proc.stderr
    assert "Dagster UI for analysis" not in proc.stdout  # nothing claims to serve

"""Runs whose process is gone: a heartbeat per run, dead runs found and ended, waits reported.

Dagster's run monitoring cannot see a run executed in process (``execute_in_process``, what
``neuro-pipeline run`` uses), and its default run launcher cannot tell whether a run's worker
is alive. A run whose process is killed (the OOM killer, a lost machine, ``kill -9``) then
stays STARTED for good and keeps its slot of pool ``duckdb_writer``: every later run, sensor
run and scheduled run waits for it. So every run of this code location says who runs it:

- ``neuro/owner``: the run id, host, boot id, pid and process start time of the process that
  orchestrates the run (``python -m assets.run`` for ``neuro-pipeline run``; the run worker
  for the runs the daemon launches, through :func:`with_heartbeat`);
- ``neuro/heartbeat``: a UTC time that process renews every :data:`HEARTBEAT_SECONDS`.

:func:`reap_dead_runs` ends the runs whose owner is gone: on this host at once (its pid is
gone, or belongs to a newer process, or the machine rebooted), elsewhere (PostgreSQL and
Celery: a pid means nothing there) when its heartbeat is older than :data:`HEARTBEAT_TIMEOUT`.
It reports them failed (canceled when a cancel was under way) through Dagster's public
``report_run_failed`` / ``report_run_canceled`` and frees their pool slots. ``python -m
assets.run`` calls it before it launches and while it waits for a slot; the sensor of
:func:`dead_run_sensor` calls it while the daemon of ``neuro-pipeline ui`` is up, and the
daemon's run retries (dagster.yaml) then rerun the daemon's own runs that died.

:class:`RunWatch` is the thread that beats and, while its run waits for a pool slot, says
what it waits for, since when and who holds the slot.

Importing this module also fixes a busy wait of Dagster 1.13.27 (see
:func:`_sleep_while_blocked`): a step blocked on a pool slot spun at 100% of a core.
"""

from __future__ import annotations

import datetime
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

OWNER_TAG = "neuro/owner"
HEARTBEAT_TAG = "neuro/heartbeat"
#: Seconds between two heartbeats of a run.
HEARTBEAT_SECONDS = float(os.environ.get("NEURO_PIPELINE_HEARTBEAT_SECONDS", "5"))
#: A run on another machine whose heartbeat is older than this is taken for dead.
HEARTBEAT_TIMEOUT = float(os.environ.get("NEURO_PIPELINE_HEARTBEAT_TIMEOUT", "60"))
#: A run launched by the daemon, the UI or ``neuro-pipeline run`` that has been STARTED this long
#: without an owner tag of its own died before its steps began (or was started by an older
#: version of this code location): taken for dead.
UNCLAIMED_TIMEOUT = float(os.environ.get("NEURO_PIPELINE_UNCLAIMED_TIMEOUT", "120"))
#: How often a waiting run looks at what it waits for (its first word comes within 5 s).
_WAIT_CHECK_SECONDS = 1.0
#: How often a run that still waits says so again.
_WAIT_REPEAT_SECONDS = 60.0

Say = Callable[[str], None]


# ------------------------------------------------------------------ identity

def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8]
    except OSError:
        return "-"


def _process_start(pid: int) -> str:
    """The start time of process ``pid`` (clock ticks after boot; '-' where /proc is absent,
    '' where the process does not exist)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return ""
    except OSError:
        return "-"
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, counted after the command name


@dataclass(frozen=True)
class Owner:
    """The process that orchestrates a run, as its ``neuro/owner`` tag records it."""

    run_id: str
    host: str
    boot: str
    pid: int
    start: str

    @classmethod
    def of_process(cls, run_id: str, pid: int) -> Owner:
        """Process ``pid`` of this host as the owner of run ``run_id``."""
        return cls(run_id, socket.gethostname(), _boot_id(), pid, _process_start(pid))

    @classmethod
    def this_process(cls, run_id: str) -> Owner:
        return cls.of_process(run_id, os.getpid())

    @classmethod
    def parse(cls, text: str | None) -> Owner | None:
        parts = (text or "").split()
        if len(parts) != 5 or not parts[3].isdigit():
            return None
        return cls(parts[0], parts[1], parts[2], int(parts[3]), parts[4])

    def tag(self) -> str:
        return f"{self.run_id} {self.host} {self.boot} {self.pid} {self.start}"

    def why_gone(self) -> str | None:
        """Why this process is known to be gone, judged on this host; None when it may live
        (or lives elsewhere: then only its heartbeat tells)."""
        if self.host != socket.gethostname():
            return None
        if self.boot not in ("-", _boot_id()):
            return f"host {self.host} has restarted since"
        start = _process_start(self.pid)
        if start == "":
            return f"its process (pid {self.pid} on {self.host}) is gone"
        if start not in ("-", self.start) and self.start != "-":
            return f"its process (pid {self.pid} on {self.host}) is gone; the pid belongs to a newer process"
        if start == "-":  # no /proc: ask the kernel whether the pid lives
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return f"its process (pid {self.pid} on {self.host}) is gone"
            except PermissionError:
                pass
        return None


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _stamp(t: datetime.datetime) -> str:
    return t.isoformat(timespec="seconds")


def owner_tags(run_id: str) -> dict[str, str]:
    """The tags that make this process the owner of run ``run_id`` (given when the run is
    created, or added when its executor starts)."""
    return {OWNER_TAG: Owner.this_process(run_id).tag(), HEARTBEAT_TAG: _stamp(_now())}


# ------------------------------------------------------------------ the reaper

@dataclass(frozen=True)
class DeadRun:
    run_id: str
    job_name: str
    reason: str
    n_materialized: int
    status: str

    def line(self) -> str:
        n = self.n_materialized
        kept = (f"the {n} materialization{'s' if n > 1 else ''} it finished {'are' if n > 1 else 'is'} kept" if n
                else "it had finished no asset")
        return (f"run {self.run_id[:8]} ({self.job_name}) was left {self.status} but {self.reason}: marked "
                f"{'canceled' if self.status == 'CANCELING' else 'failed'} and its pool slots freed; {kept}, "
                "and the next run resumes from them")


def why_dead(run: dg.DagsterRun, now: datetime.datetime | None = None, started: float | None = None) -> str | None:
    """Why ``run`` (STARTED or CANCELING since ``started``, a POSIX time) has no live owner,
    or None.

    A run without an owner tag of its own either has not reached its executor yet (the tag is
    added there; a re-execution still carries its parent's) or died before: one launched
    through a code server (the daemon, the UI) or by ``neuro-pipeline run`` is taken for dead
    after :data:`UNCLAIMED_TIMEOUT` seconds. Runs of other code (a notebook's
    ``execute_in_process``) are left alone."""
    now = now or _now()
    owner = Owner.parse(run.tags.get(OWNER_TAG))
    if owner is None or owner.run_id != run.run_id:
        ours = ".dagster/grpc_info" in run.tags or run.tags.get("trigger") == "neuro-pipeline run"
        age = now.timestamp() - started if started is not None else 0.0
        if ours and age > UNCLAIMED_TIMEOUT:
            return (f"no process has claimed it in the {age:.0f} s since it started (its process died before "
                    "its steps began, or an older version started it)")
        return None
    gone = owner.why_gone()
    if gone is not None:
        return gone
    if owner.host == socket.gethostname():
        return None  # its process lives: a stopped or slow process is not taken for dead
    try:
        beat = datetime.datetime.fromisoformat(run.tags.get(HEARTBEAT_TAG, ""))
    except ValueError:
        return None
    age = (now - beat).total_seconds()
    if age > HEARTBEAT_TIMEOUT:
        return f"its heartbeat stopped {age:.0f} s ago (process {owner.pid} on {owner.host})"
    return None


def reap_dead_runs(instance: dg.DagsterInstance, say: Say | None = None,
                   run_ids: set[str] | None = None) -> list[DeadRun]:
    """End the runs of ``instance`` (or only those of ``run_ids``) that are STARTED or
    CANCELING while their process is gone: report them failed (canceled when a cancel was
    under way) and free their pool slots. Each one is said in one line."""
    statuses = [dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]
    filters = dg.RunsFilter(statuses=statuses, run_ids=sorted(run_ids) if run_ids else None)
    dead = []
    for record in instance.get_run_records(filters=filters):
        run = record.dagster_run
        reason = why_dead(run, started=record.start_time or record.create_timestamp.timestamp())
        if reason is None:
            continue
        current = instance.get_run_by_id(run.run_id)  # another reaper may have been quicker
        if current is None or current.status not in statuses:
            continue
        n_done = len(instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION))
        found = DeadRun(run.run_id, run.job_name, reason, n_done, current.status.value)
        message = f"neuro-pipeline found this run's process gone: {reason}."
        if current.status == dg.DagsterRunStatus.CANCELING:
            instance.report_run_canceled(current, message=message)
        else:
            instance.report_run_failed(current, message=message)
        # The run's claims on pool slots stay until they are freed: Dagster frees them when the
        # run's own process ends its steps, or in its daemon (run_monitoring:
        # free_slots_after_run_end_seconds) only while a daemon runs. A run of `neuro-pipeline
        # run` may have no daemon at all, so the slots are freed here, with the call Dagster's
        # daemon makes (EventLogStorage.free_concurrency_slots_for_run).
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        dead.append(found)
        if say is not None:
            say(found.line())
    return dead


# ------------------------------------------------------------------ the watch

class RunWatch:
    """A thread that renews run ``run_id``'s heartbeat and, while the run waits for a pool
    slot, says (through ``say`` and as an engine event of the run) what it waits for, since
    when and who holds it; a holder whose process is gone is reaped on the spot.

    ``tagged``: the run's owner tags were given when it was created (``execute_in_process``
    with :func:`owner_tags`); otherwise the watch adds them, once the run exists."""

    def __init__(self, instance: dg.DagsterInstance, run_id: str, say: Say | None = None, *, tagged: bool = False):
        self.instance, self.run_id, self.say = instance, run_id, say
        self.tagged = tagged
        self.waiting_since: float | None = None
        self._told = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"neuro-heartbeat-{run_id[:8]}", daemon=True)

    def __enter__(self) -> RunWatch:
        self._claim()
        self._thread.start()
        return self

    def _claim(self) -> None:
        """Give the run its owner tags, once it exists (unless it was created with them)."""
        if not self.tagged and self.instance.get_run_by_id(self.run_id) is not None:
            self.instance.add_run_tags(self.run_id, owner_tags(self.run_id))
            self.tagged = True

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    @property
    def blocked(self) -> bool:
        """Whether the run is waiting for a pool slot (no step of it is running)."""
        return self.waiting_since is not None

    def _loop(self) -> None:
        next_beat = time.monotonic() + HEARTBEAT_SECONDS
        while not self._stop.wait(_WAIT_CHECK_SECONDS):
            try:
                self._claim()
                if not self.tagged:
                    continue
                if time.monotonic() >= next_beat:
                    self.instance.add_run_tags(self.run_id, {HEARTBEAT_TAG: _stamp(_now())})
                    next_beat = time.monotonic() + HEARTBEAT_SECONDS
                self._look_at_waits()
            except Exception as exc:  # a storage hiccup must not end the run; the next beat retries
                if self.say is not None:
                    self.say(f"heartbeat of run {self.run_id[:8]} not written: {type(exc).__name__}: {exc}")

    def _look_at_waits(self) -> None:
        storage = self.instance.event_log_storage
        if not storage.supports_global_concurrency_limits:
            return
        waits = []
        for key in sorted(storage.get_concurrency_keys()):
            info = storage.get_concurrency_info(key)
            mine = [s for s in info.pending_steps if s.run_id == self.run_id and s.assigned_timestamp is None]
            if mine:
                waits.append((key, mine[0], info.claimed_slots, info.limit or info.slot_count))
        if not waits:
            self.waiting_since = None
            return
        now = time.monotonic()
        if self.waiting_since is None:
            self.waiting_since, self._told = now, 0.0
        holders = {slot.run_id for _, _, slots, _ in waits for slot in slots if slot.run_id != self.run_id}
        if holders and reap_dead_runs(self.instance, self.say, run_ids=holders):
            return  # their slots are free: the step gets one at its next try
        if now - self._told < _WAIT_REPEAT_SECONDS and self._told:
            return
        self._told = now
        for key, step, slots, limit in waits:
            since = step.enqueued_timestamp.astimezone().strftime("%H:%M:%S")
            held = "; ".join(self._describe(slot) for slot in slots) or "no run (the slot is being handed over)"
            self._tell(f"step {step.step_key} waiting since {since} for a slot of pool {key} "
                       f"(limit {limit}), held by {held}")

    def _describe(self, slot) -> str:
        run = self.instance.get_run_by_id(slot.run_id)
        if run is None:
            return f"run {slot.run_id[:8]} (deleted), step {slot.step_key}"
        beat = run.tags.get(HEARTBEAT_TAG)
        try:
            age = f"heartbeat {(_now() - datetime.datetime.fromisoformat(beat)).total_seconds():.0f} s ago"
        except (TypeError, ValueError):
            age = "no heartbeat"
        started = run.tags.get("trigger") or run.tags.get("dagster/sensor_name") or run.job_name
        return f"run {slot.run_id[:8]} ({started}, {run.status.value}, step {slot.step_key}, {age})"

    def _tell(self, message: str) -> None:
        if self.say is not None:
            self.say(message)
        run = self.instance.get_run_by_id(self.run_id)
        if run is not None:
            self.instance.report_engine_event(message, run)


# ------------------------------------------------------------------ executor and sensor

class _WatchedExecutor(dg.Executor):
    """The configured executor, with a :class:`RunWatch` around its orchestration (which runs in
    the run's worker process, whichever executor: in process, multiprocess or Celery)."""

    def __init__(self, inner: dg.Executor):
        self._inner = inner

    def __getattr__(self, name: str):
        # What an executor's own code asks of it (dagster-celery calls executor.app_args()).
        return getattr(self._inner, name)

    @property
    def retries(self):
        return self._inner.retries

    @property
    def step_dependency_config(self):
        return self._inner.step_dependency_config

    def execute(self, plan_context, execution_plan):
        with RunWatch(plan_context.instance, plan_context.run_id):
            yield from self._inner.execute(plan_context, execution_plan)


def with_heartbeat(executor_def: dg.ExecutorDefinition) -> dg.ExecutorDefinition:
    """``executor_def`` whose runs carry a heartbeat (same name, configuration and requirements)."""
    create = executor_def.executor_creation_fn
    assert create is not None
    return dg.ExecutorDefinition(
        name=executor_def.name, config_schema=executor_def.config_schema,
        requirements=executor_def.get_requirements, description=executor_def.description,
        executor_creation_fn=lambda init_context: _WatchedExecutor(create(init_context)))


def dead_run_sensor() -> dg.SensorDefinition:
    """Ends the runs whose process is gone while the daemon runs (``neuro-pipeline ui``)."""

    @dg.sensor(name="dead_run_sensor", minimum_interval_seconds=15, default_status=dg.DefaultSensorStatus.RUNNING,
               description="Marks failed the runs whose process is gone (no heartbeat) and frees their pool "
                           "slots; the daemon's run retries then rerun its own runs.")
    def _sensor(context: dg.SensorEvaluationContext):
        dead = reap_dead_runs(context.instance, context.log.warning)
        return dg.SkipReason("; ".join(d.line() for d in dead) if dead else "every started run is alive")

    return _sensor


# ------------------------------------------------------------------ Dagster's busy wait

def _sleep_while_blocked() -> None:
    """Dagster 1.13.27's ``InstanceConcurrencyContext.interval_to_next_pending_claim_check``
    returns ``min([0, *intervals])``, never more than 0, so the step loop never sleeps while
    a step waits for a pool slot: the run spins at 100% of a core until the slot frees (seen
    while a dead run held ``duckdb_writer``; upstream PR dagster-io/dagster#20367 was closed
    unmerged). The replacement returns the time to the next claim check (Dagster's own back-off,
    1 s growing to 15 s). Only this one method of an internal class changes, and only on the
    version it was read on: another version keeps its own."""
    from dagster._core.execution.plan.instance_concurrency_context import InstanceConcurrencyContext

    if dg.__version__ != "1.13.27":
        return

    def interval_to_next_pending_claim_check(self) -> float:
        if not self._pending_claims or not self._pending_timeouts:
            return 0.0
        return max(0.0, min(self._pending_timeouts.values()) - time.time())

    InstanceConcurrencyContext.interval_to_next_pending_claim_check = interval_to_next_pending_claim_check


_sleep_while_blocked()

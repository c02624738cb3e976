"""The Celery app of a neuro-pipeline worker: ``neuro-pipeline worker`` runs
``celery -A assets.celery_worker worker``.

It is dagster-celery's own step task (``execute_plan``: one Dagster step, run in this worker
with the run's instance) on the broker and results backend of ``execution`` in the analysis
configuration (``NEURO_PIPELINE_CONFIG``), so the workers and the run that sends them steps
read one file. The step reloads the code location (``assets.definitions``) in the worker.

A worker that is lost while it runs a step (SIGKILL, out of memory, a machine or a pod gone):

- **The whole worker gone** (its main process too): the step's task is given to another
  worker, which runs the step again (an extraction shard resumes sentence by sentence).
  Tasks are acknowledged when they end (``task_acks_late``), so the broker keeps the task of
  a worker that dies. On Redis a delivered task that nobody acknowledges comes back after
  the ``visibility_timeout``; each worker renews the delivery time of the tasks it holds
  every :data:`~assets.liveness.HEARTBEAT_SECONDS` (:class:`RenewHeldTasks`), so the timeout
  is :data:`~assets.liveness.HEARTBEAT_TIMEOUT` (60 s, ``NEURO_PIPELINE_HEARTBEAT_TIMEOUT``)
  however long a step runs, and a lost worker's step runs again about that long after
  (give every worker the same value: the one that finds the lost task applies its own).
  A step is delivered at most :data:`MAX_DELIVERIES` times: a step that takes its worker
  down every time (one that always runs out of memory) then fails, naming itself.
- **Only the process running the step dies** (the OOM killer, a crash in native code) while
  the worker lives: the step fails at once with ``WorkerLostError``
  (``task_reject_on_worker_lost`` is off: such a death usually repeats), and so does the
  run, naming the step. The next run redoes what is missing.

The orchestrating run uses the same settings (:func:`celery_settings`, through
``assets.definitions.make_executor``).
"""

from __future__ import annotations

import os
import time

import celery
from celery import bootsteps
from celery.worker import state as worker_state
from dagster_celery import defaults as celery_defaults

from .liveness import HEARTBEAT_SECONDS, HEARTBEAT_TIMEOUT

#: How many times a step's task may be delivered to a worker: a step whose worker was lost
#: this many times (not an error in the step: its worker died each time) fails.
MAX_DELIVERIES = 3


def celery_settings() -> dict:
    """The Celery settings of the workers and of the runs that send them steps."""
    return {
        # A task is acknowledged once it has ended, so that the broker keeps the task of a
        # worker that dies (with one task at a time per process: no task waits behind a
        # long one in a busy worker's prefetch).
        "task_acks_late": True,
        "task_reject_on_worker_lost": False,
        "worker_prefetch_multiplier": 1,
        "broker_transport_options": {
            **celery_defaults.broker_transport_options,
            # Redis: an unacknowledged task is given again once its delivery time (renewed
            # by RenewHeldTasks while its worker lives) is this old; the workers look every
            # unacked_restore_interval seconds.
            "visibility_timeout": max(int(HEARTBEAT_TIMEOUT), 3 * _renew_seconds()),
            "unacked_restore_interval": _renew_seconds(),
            "unacked_restore_throttle": 1,
        },
    }


def _renew_seconds() -> int:
    return max(int(HEARTBEAT_SECONDS), 1)


class RenewHeldTasks(bootsteps.StartStopStep):
    """Redis: renews the delivery time of every task this worker holds (received, not yet
    acknowledged) every ``HEARTBEAT_SECONDS``, so that the broker gives a task again only
    when its worker is gone, not when the step runs longer than the visibility timeout.
    Runs in the worker's main process (its event loop), beside the step's process."""

    requires = {"celery.worker.consumer.tasks:Tasks"}

    def __init__(self, c, **kwargs):
        self.tref = None
        super().__init__(c, **kwargs)

    def start(self, c):
        channel = c.task_consumer.channel
        if not hasattr(getattr(channel, "qos", None), "unacked_index_key"):
            return  # not Redis: the broker itself returns a lost connection's tasks
        # (an error here, e.g. Redis unreachable, is logged by the event loop; the next beat retries)
        self.tref = c.timer.call_repeatedly(_renew_seconds(), self.renew, (channel,), priority=10)

    @staticmethod
    def renew(channel) -> None:
        tags = {r.message.delivery_tag for r in list(worker_state.reserved_requests) if r.message is not None}
        if tags:
            now = time.time()
            with channel.conn_or_acquire() as client:
                # xx: only tasks still unacknowledged (one that just ended is not put back)
                client.zadd(channel.qos.unacked_index_key, {tag: now for tag in tags}, xx=True)

    def stop(self, c):
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None

    shutdown = stop


class StepTask(celery.Task):
    """dagster-celery's step task that knows when it is delivered again (the worker that had
    it was lost): see :func:`count_delivery`."""

    def __call__(self, *args, **kwargs):
        if (self.request.delivery_info or {}).get("redelivered"):
            import dagster as dg
            from dagster._grpc.types import ExecuteStepArgs
            from dagster._serdes import unpack_value

            step_args = unpack_value(kwargs.get("execute_step_args_packed") or args[0], as_type=ExecuteStepArgs)
            with dg.DagsterInstance.from_ref(step_args.instance_ref) as instance:
                count_delivery(instance, step_args.run_id, ", ".join(step_args.step_keys_to_execute or []),
                               self.request.id, self.request.hostname)
        return super().__call__(*args, **kwargs)


def count_delivery(instance, run_id: str, step: str, task_id: str, hostname: str) -> int:
    """The step's task ``task_id`` is delivered again: records that in the run (an engine event
    naming the step, the delivery and the worker) and returns the delivery's number; raises
    after :data:`MAX_DELIVERIES` (the step fails, naming itself, instead of taking down one
    worker after the other)."""
    import dagster as dg
    from dagster._core.events import EngineEventData
    from dagster_celery.executor import CeleryExecutor

    run = instance.get_run_by_id(run_id)
    if run is None:
        return 0
    earlier = [e for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
               if e.step_key == step and _metadata(e).get("Celery task") == task_id]
    delivery = len(earlier) + 2
    data = EngineEventData({"Celery task": task_id, "delivery": delivery, "Celery worker": hostname})
    if delivery > MAX_DELIVERIES:
        message = (f'Step "{step}" is not run again: its Celery task {task_id} was delivered {delivery} times and '
                   "every worker that had it was lost before the step ended (killed, out of memory, machine gone): "
                   "the step itself may take its worker down. The next run redoes what is missing.")
        instance.report_engine_event(message, run, data, CeleryExecutor, step_key=step)
        raise RuntimeError(message)
    instance.report_engine_event(
        f'Step "{step}" runs again (delivery {delivery} of at most {MAX_DELIVERIES}) in {hostname}: the Celery '
        "worker that had it was lost before the step ended.", run, data, CeleryExecutor, step_key=step)
    return delivery


def _metadata(entry) -> dict:
    event = entry.dagster_event
    data = event.event_specific_data if event is not None else None
    return {key: getattr(value, "value", value) for key, value in (getattr(data, "metadata", None) or {}).items()}


def make_worker_app(broker: str, backend: str) -> celery.Celery:
    """The Celery app of a worker on ``broker`` and ``backend``, with its step task."""
    from dagster_celery.executor import CeleryExecutor
    from dagster_celery.make_app import make_app
    from dagster_celery.tasks import create_task

    worker_app = make_app(CeleryExecutor.for_cli(broker=broker, backend=backend,
                                                 config_source=celery_settings()).app_args())
    worker_app.steps["consumer"].add(RenewHeldTasks)
    create_task(worker_app, base=StepTask)
    return worker_app


def __getattr__(name: str):
    """``app`` (what ``celery -A assets.celery_worker`` looks up), made on first use from the
    analysis configuration, so that importing this module (for :func:`celery_settings`)
    reads no configuration."""
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from neuro_pipeline.config import load_config

    from .resources import CONFIG_ENV

    execution = load_config(os.environ.get(CONFIG_ENV) or None, deep=False).execution
    made = make_worker_app(execution.broker, execution.backend)
    globals()["app"] = made
    return made

"""``python -m assets.run``: what ``neuro-pipeline run`` executes in the Dagster instance.

1. Observe the inputs (model, corpus, settings: content-hash data versions); with a model
   registry, register its settled version folders as partitions.
2. Select what is stale or missing (Dagster's own staleness: a new data version upstream, a
   new ``code_version``) and everything downstream of it; ``--all`` selects everything.
3. Materialize the selection in-process, one run per model version, recorded in the
   instance like any other run (the UI shows them).

Nothing runs when nothing changed. Before it launches, it ends the runs whose process is gone
(see ``assets.liveness``: a killed run would otherwise hold the pool slot for good); its own
runs carry a heartbeat, and a run that waits for a slot says for what, since when and who
holds it.

Stopping: SIGUSR1 (what ``neuro-pipeline run`` sends on Ctrl-C or SIGTERM) cancels the run
cleanly: it is marked canceled, its slots are freed, finished stages are kept, and the
process exits with :data:`CANCELED`. Started by ``neuro-pipeline run`` (``NEURO_PIPELINE_PARENT``
names it), the process dies with its parent, as a killed process group would.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import signal
import sys
import threading
import uuid
import warnings

from neuro_pipeline.heap import collector_paused

with collector_paused():  # (see neuro_pipeline.heap; the code location freezes it with its own imports)
    import dagster as dg

warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)

#: Exit status of a run stopped by a cancel request (the CLI exits 130 or 143 itself).
CANCELED = 3
#: The environment variable through which ``neuro-pipeline run`` names itself to this process.
PARENT_ENV = "NEURO_PIPELINE_PARENT"


def stale_selection(defs: dg.Definitions, instance: dg.DagsterInstance,
                    partition_key: str | None) -> set[dg.AssetKey]:
    """The materializable assets that are stale or missing for ``partition_key`` (None: the
    unpartitioned ones), plus everything downstream of them."""
    # Dagster has no public call that gives an asset's stale status outside a run request
    # (RunRequest(stale_assets_only=True) serves sensors and schedules; the UI reads it over
    # GraphQL from a running webserver): the resolver the UI uses is imported from its
    # internal modules. Pinned with dagster==1.13.27 in pyproject.toml.
    from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView, TemporalContext
    from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus

    graph = defs.resolve_asset_graph()
    now = datetime.datetime.now(datetime.timezone.utc)
    view = AssetGraphView(temporal_context=TemporalContext(effective_dt=now, last_event_id=None),
                          instance=instance, asset_graph=graph)
    resolver = CachingStaleStatusResolver(instance=instance, asset_graph=graph, loading_context=view)
    keys = [k for k in graph.materializable_asset_keys
            if (graph.get(k).partitions_def is None) == (partition_key is None)]
    stale = {k for k in keys if resolver.get_status(k, partition_key) != StaleStatus.FRESH}
    return _downstream(graph, stale, set(keys))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m assets.run")
    parser.add_argument("--all", action="store_true", help="materialize everything, stale or not")
    parser.add_argument("--version", action="append", default=[],
                        help="with a model registry: only this version (repeatable; default: every version)")
    args = parser.parse_args(argv)

    from neuro_pipeline.config import ConfigError, load_config

    try:
        # The module builds the code location's definitions on import (as Dagster loads it).
        from assets.definitions import defs
    except ConfigError as exc:  # e.g. a ranking method's parameter (the CLI checks only the rest)
        print(f"neuro-pipeline: nothing was run\nConfigError: {exc}", file=sys.stderr, flush=True)
        return 2
    from assets.liveness import RunWatch, owner_tags, reap_dead_runs
    from assets.monitoring import MODEL_VERSIONS, registry_folders

    instance = dg.DagsterInstance.get()
    stop = _Cancel(instance)
    reap_dead_runs(instance, _say)
    cfg = load_config(defs.resources["pipeline"].config_path or None)
    if cfg.registry_dir is not None:
        ready, waiting = registry_folders(cfg.registry_dir, 0)
        for line in waiting:
            print(f"neuro-pipeline: skipping registry folder {line}", flush=True)
        known = set(instance.get_dynamic_partitions(MODEL_VERSIONS))
        new = [v for v in ready if v not in known]
        if new:
            instance.add_dynamic_partitions(MODEL_VERSIONS, new)
        unknown = sorted(set(args.version) - set(ready))
        if unknown:
            print(f"neuro-pipeline: no model version {unknown[0]!r} in {cfg.registry_dir}; found {ready}",
                  file=sys.stderr)
            return 2
        partitions = args.version or ready
        if not partitions:
            print(f"neuro-pipeline: the registry {cfg.registry_dir} holds no model version yet", file=sys.stderr)
            return 2
    else:
        if args.version:
            print("neuro-pipeline: --version needs monitoring.registry in the config", file=sys.stderr)
            return 2
        partitions = [None]
    observe_id = str(uuid.uuid4())
    with stop.running(observe_id), RunWatch(instance, observe_id, _say, tagged=True):
        observe = defs.resolve_job_def("observe_inputs_job").execute_in_process(
            instance=instance, raise_on_error=False, run_id=observe_id, tags=owner_tags(observe_id))
    if stop.requested:
        return stop.finish()
    if not observe.success:
        return 1
    job = defs.resolve_job_def("analysis_job")
    graph = defs.resolve_asset_graph()
    unpartitioned = {k for k in graph.materializable_asset_keys if graph.get(k).partitions_def is None}
    per_model = set(graph.materializable_asset_keys) - unpartitioned
    # With a registry, a stale corpus makes every version's stages stale once it is rebuilt.
    corpus_stale = partitions != [None] and bool(stale_selection(defs, instance, None))
    ran = 0
    for i, partition in enumerate(partitions):
        if args.all:
            selection = unpartitioned | per_model if (partition is None or i == 0) else set(per_model)
        elif partition is None:
            selection = stale_selection(defs, instance, None)
        elif corpus_stale:
            selection = per_model | (unpartitioned if i == 0 else set())
        else:
            selection = stale_selection(defs, instance, partition)
        # Activation files found damaged (missing, truncated): their sentences are forgotten and
        # extracted again, with everything after the extraction.
        if _repair_activations(cfg if partition is None else cfg.for_model_version(partition)):
            selection |= _downstream(graph, {dg.AssetKey("token_activations")}, per_model | unpartitioned)
        label = f"model version {partition}" if partition else "the analysis"
        if not selection:
            print(f"neuro-pipeline: {label} is up to date; nothing to materialize", flush=True)
            continue
        names = sorted("/".join(k.path) for k in selection)
        print(f"neuro-pipeline: materializing {len(names)} assets of {label}: {', '.join(names)}", flush=True)
        # The daemon's run retries (dagster.yaml) are for the daemon's runs: this command's user
        # runs it again, and it resumes.
        run_id = str(uuid.uuid4())
        tags = {"trigger": "neuro-pipeline run", "dagster/max_retries": "0", LAUNCH_TAG: run_id}
        if cfg.execution.executor == "in_process":
            with stop.running(run_id), RunWatch(instance, run_id, _say, tagged=True) as watch:
                stop.watch = watch
                result = job.execute_in_process(instance=instance, partition_key=partition, run_id=run_id,
                                                asset_selection=sorted(selection), raise_on_error=False,
                                                tags={**tags, **owner_tags(run_id)})
        else:
            # The executor's own watch beats (assets.liveness.with_heartbeat); the run is found by its tag.
            with stop.running(None, launch=run_id):
                result = _execute_elsewhere(instance, partition, sorted(selection), tags)
        ran += 1
        if stop.requested:
            return stop.finish()
        if not result.success:
            return 1
    print(f"neuro-pipeline: {ran} run(s)", flush=True)
    return 0


#: Tag of the runs this process launches (to find a run whose id the executor chose).
LAUNCH_TAG = "neuro/launch"


def _repair_activations(cfg) -> bool:
    """Check the current activation set's files; forget the sentences of damaged ones (see
    ``neuro_pipeline.stages.activations.repair_activation_files``). Whether any was damaged."""
    from neuro_pipeline.stages.activations import repair_activation_files
    from neuro_pipeline.store import Store

    repair = repair_activation_files(cfg, Store(cfg.store_path))  # nothing when there is no store yet
    for line in repair.lines():
        _say(line)
    return bool(repair.damaged)


def _downstream(graph, keys: set[dg.AssetKey], allowed: set[dg.AssetKey]) -> set[dg.AssetKey]:
    """``keys`` and everything downstream of them within ``allowed``."""
    closure, frontier = set(keys), list(keys)
    while frontier:
        for child in graph.get(frontier.pop()).child_keys:
            if child in allowed and child not in closure:
                closure.add(child)
                frontier.append(child)
    return closure


def _say(message: str) -> None:
    print(f"neuro-pipeline: {message}", flush=True)


class _Cancel:
    """A cancel request (SIGUSR1; SIGTERM too when no ``neuro-pipeline run`` parent forwards it):
    a thread marks the current run CANCELING, which Dagster's execution reads when the SIGINT
    that follows reaches it (at its next safe point: a step's code), and then ends the run as
    CANCELED instead of failed. A run blocked on a pool slot, or no run, is interrupted at once
    (Dagster only notices interrupts inside a step)."""

    def __init__(self, instance: dg.DagsterInstance):
        self.instance = instance
        self.requested: int | None = None
        self.run_id: str | None = None
        self.launch: str | None = None
        self.last: tuple[str | None, str | None] = (None, None)
        self.watch = None
        self._wake = threading.Event()
        threading.Thread(target=self._cancel, name="neuro-cancel", daemon=True).start()
        signal.signal(signal.SIGUSR1, self._handle)
        signal.signal(signal.SIGUSR2, _interrupt)
        parent = os.environ.get(PARENT_ENV)
        if parent:
            _die_with_parent(int(parent))
        else:
            signal.signal(signal.SIGTERM, self._handle)

    @contextlib.contextmanager
    def running(self, run_id: str | None, launch: str | None = None):
        """While run ``run_id`` (or the run tagged ``launch``) executes: a cancel request is for it,
        and the KeyboardInterrupt that the request raises ends here."""
        self.run_id, self.launch, self.watch = run_id, launch, None
        self.last = (run_id, launch)
        try:
            yield
        except KeyboardInterrupt:
            if not self.requested:
                raise
        finally:
            self.run_id, self.launch, self.watch = None, None, None

    def _current(self, run_id: str | None = None, launch: str | None = None) -> dg.DagsterRun | None:
        run_id, launch = (run_id, launch) if run_id or launch else (self.run_id, self.launch)
        if run_id is not None:
            return self.instance.get_run_by_id(run_id)
        if launch is not None:
            runs = self.instance.get_runs(filters=dg.RunsFilter(tags={LAUNCH_TAG: launch}), limit=1)
            return runs[0] if runs else None
        return None

    def _handle(self, signum, frame) -> None:
        # Only flags here: the handler runs in the main thread wherever it is, possibly inside a
        # write to the instance's storage, which it must not enter again (a deadlock on its lock).
        if not self.requested:
            self.requested = signum
            self._wake.set()

    def _cancel(self) -> None:
        """The cancel thread: mark the run CANCELING, then interrupt the main thread."""
        self._wake.wait()
        run = self._current()
        if run is not None and run.status in (dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING):
            self.instance.report_run_canceling(run, message="neuro-pipeline run was asked to stop (Ctrl-C or "
                                                            "SIGTERM): canceling")
        if run is None or (self.watch is not None and self.watch.blocked):
            os.kill(os.getpid(), signal.SIGUSR2)  # raises KeyboardInterrupt: nothing is being written
        else:
            os.kill(os.getpid(), signal.SIGINT)  # through Dagster's interrupt handling, at a safe point

    def finish(self) -> int:
        """After a canceled run: its slots are free, the user is told what is kept."""
        run = self._current(*self.last)
        if run is not None and not run.is_finished:
            self.instance.report_run_canceled(run, message="neuro-pipeline run was stopped")
        if run is not None:
            # Dagster frees a step's slot when the step ends; a step interrupted while it waited
            # for one keeps its pending claim (freed as in assets.liveness.reap_dead_runs).
            self.instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        if run is not None and run.status == dg.DagsterRunStatus.SUCCESS:
            _say(f"run {run.run_id[:8]} had finished when the stop came; nothing was lost")
        else:
            what = f"run {run.run_id[:8]} canceled" if run is not None else "stopped before a run started"
            _say(f"{what}; the stages it finished are kept, and the next run resumes from them")
        return CANCELED


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _die_with_parent(parent: int) -> None:
    """Ask Linux to SIGKILL this process when its parent (``neuro-pipeline run``) dies, as a
    killed process group would: the parent puts it in a group of its own so that Ctrl-C
    reaches it only once, forwarded. Elsewhere a no-op."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the request was in place
        os._exit(1)


def _execute_elsewhere(instance: dg.DagsterInstance, partition: str | None, selection: list[dg.AssetKey],
                       tags: dict[str, str]) -> dg.ExecutionResult:
    """Run the analysis job with its configured executor (``execution.executor``: a process
    per step, or Celery workers), which rebuilds the job from ``assets.definitions`` in each
    step's process: the run is then the same as one launched from the UI."""
    import os

    job = dg.build_reconstructable_job("assets.definitions", "analysis_job",
                                       reconstructor_working_directory=os.getcwd())
    if partition is not None:
        tags = {**tags, "dagster/partition": partition}
    return dg.execute_job(job, instance=instance, asset_selection=selection, tags=tags, raise_on_error=False)


def _leave(rc: int) -> None:
    """Exit without tearing the interpreter down: the exit handlers run (temporary folders,
    logging) and the streams are flushed, but the modules (torch, transformers, Dagster,
    great-expectations) are not finalized one by one, which took 1-2 s after every run.
    Nothing is open by then: every store operation and every Dagster event is committed."""
    import atexit
    import logging
    import os

    atexit._run_exitfuncs()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)


def _main_or_canceled() -> int:
    try:
        return main()
    except KeyboardInterrupt:  # a cancel request between runs (see _Cancel)
        _say("stopped between runs; nothing was lost")
        return CANCELED


if __name__ == "__main__":
    _leave(_main_or_canceled())

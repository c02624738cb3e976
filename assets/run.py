"""``python -m assets.run``: what ``neuro-pipeline run`` executes in the Dagster instance.

1. Observe the inputs (model, corpus, settings: content-hash data versions); with a model
   registry, register its settled version folders as partitions.
2. Select what is stale or missing (Dagster's own staleness: a new data version upstream, a
   new ``code_version``) and everything downstream of it; ``--all`` selects everything.
3. Materialize the selection in-process, one run per model version, recorded in the
   instance like any other run (the UI shows them).

Nothing runs when nothing changed.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import warnings

from neuro_pipeline.heap import collector_paused

with collector_paused():  # (see neuro_pipeline.heap; the code location freezes it with its own imports)
    import dagster as dg

warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)


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
    closure, frontier = set(stale), list(stale)
    while frontier:
        for child in graph.get(frontier.pop()).child_keys:
            if child in keys and child not in closure:
                closure.add(child)
                frontier.append(child)
    return closure


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
    from assets.monitoring import MODEL_VERSIONS, registry_folders

    instance = dg.DagsterInstance.get()
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
    observe = defs.resolve_job_def("observe_inputs_job").execute_in_process(instance=instance, raise_on_error=False)
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
        label = f"model version {partition}" if partition else "the analysis"
        if not selection:
            print(f"neuro-pipeline: {label} is up to date; nothing to materialize", flush=True)
            continue
        names = sorted("/".join(k.path) for k in selection)
        print(f"neuro-pipeline: materializing {len(names)} assets of {label}: {', '.join(names)}", flush=True)
        tags = {"trigger": "neuro-pipeline run"}
        if cfg.execution.executor == "in_process":
            result = job.execute_in_process(instance=instance, partition_key=partition,
                                            asset_selection=sorted(selection), raise_on_error=False, tags=tags)
        else:
            result = _execute_elsewhere(instance, partition, sorted(selection), tags)
        ran += 1
        if not result.success:
            return 1
    print(f"neuro-pipeline: {ran} run(s)", flush=True)
    return 0


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


if __name__ == "__main__":
    _leave(main())

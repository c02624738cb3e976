"""Watching production models: the sensors that notice new model versions and changed
inputs, the automation sensor that reruns what went stale, and the safety-net schedule.

- ``model_registry_sensor`` (with ``monitoring.registry``): every settled new subfolder of the
  registry becomes a dynamic partition of ``model_versions`` and is observed (its content
  hash is the partition's data version); the automation sensor then launches its analysis
  (the partition is newly missing), exactly once. A version folder rewritten in place gets a
  new data version, which makes its partition stale. On a fresh instance the sensor first
  launches the corpus run, which every version's analysis needs.
- ``input_watch_sensor``: re-hashes the corpus, the settings and (without a registry) the
  model at its fixed path; a change is reported as a new data version of that input.
  Hashing is cheap when nothing changed: files whose stat is unchanged are not re-read.
- ``neuro_automation``: evaluates every asset's automation condition (eager, and only when
  the upstream blocking checks passed), so exactly the stale assets rerun.
- ``stale_safety_net``: a schedule that materializes whatever is still stale (an update the
  eager condition missed while a run was in flight).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import dagster as dg

from neuro_pipeline.stages.versions import model_version

from .resources import PipelineResource
from .sources import input_versions

#: The data version tag Dagster reads from observations (dagster._core.definitions.data_version).
DATA_VERSION_TAG = "dagster/data_version"
#: The name of the dynamic partitions that hold the registry's model versions.
MODEL_VERSIONS = "model_versions"
#: Analysis runs launched by the sensors and the automation carry this tag; dagster.yaml lets
#: one such run go at a time (DuckDB has one writer anyway), so versions are analysed one after
#: the other in the order they were requested and a drift compares with a finished analysis.
ANALYSIS_TAG = "neuro/analysis"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_WEIGHTS = ("*.safetensors", "pytorch_model*.bin", "*.pt")


def _natural(label: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", label)]


def registry_folders(registry: Path, settle_seconds: float, now: float | None = None) -> tuple[list[str], list[str]]:
    """The version folders of a registry that are ready to analyse (a valid name, a config.json
    and weights, and no file changed for ``settle_seconds``), in natural order, and a list of
    reasons for the folders that are not (yet)."""
    now = time.time() if now is None else now
    ready, waiting = [], []
    if not registry.is_dir():
        return [], [f"the registry {registry} does not exist"]
    for folder in sorted((p for p in registry.iterdir() if p.is_dir()), key=lambda p: _natural(p.name)):
        name = folder.name
        if name.startswith("."):
            continue  # a version being written (e.g. .v3.tmp-…) or hidden
        if not _NAME.fullmatch(name):
            waiting.append(f"{name}: not a valid version name (letters, digits, '_', '.', '-')")
            continue
        if not (folder / "config.json").is_file() or not any(any(folder.glob(g)) for g in _WEIGHTS):
            waiting.append(f"{name}: no config.json or no weights file yet")
            continue
        newest = max(p.stat().st_mtime for p in folder.rglob("*") if p.is_file())
        if now - newest < settle_seconds:
            waiting.append(f"{name}: written {now - newest:.0f} s ago; waiting until it settles")
            continue
        ready.append(name)
    return ready, waiting


def make_registry_sensor(partitions_def: dg.DynamicPartitionsDefinition, job: dg.UnresolvedAssetJobDefinition,
                         corpus_key: dg.AssetKey, model_key: dg.AssetKey, interval: int,
                         settle_seconds: int) -> dg.SensorDefinition:
    @dg.sensor(name="model_registry_sensor", job=job, minimum_interval_seconds=max(interval, 1),
               default_status=dg.DefaultSensorStatus.RUNNING,
               description="Registers each new model version folder of monitoring.registry as a partition and "
                           "records its content hash (the automation then analyses it); a version folder "
                           "rewritten in place gets a new data version (its partition turns stale).")
    def model_registry_sensor(context: dg.SensorEvaluationContext, pipeline: PipelineResource) -> dg.SensorResult:
        cfg = pipeline.load()
        ready, waiting = registry_folders(cfg.registry_dir, settle_seconds)
        known = set(context.instance.get_dynamic_partitions(partitions_def.name))
        seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
        new, events = [], []
        for label in ready:
            version = model_version(cfg.for_model_version(label))
            if label not in known:
                new.append(label)
            if seen.get(label) != version:
                events.append(dg.AssetObservation(model_key, partition=label, tags={DATA_VERSION_TAG: version},
                                                  metadata={"model_dir": str(cfg.registry_dir / label)}))
                if label in known:
                    context.log.info(f"model version {label} changed in place: new content hash {version[:12]}")
            seen[label] = version
        # The analyses themselves are launched by the automation (a new partition is newly
        # missing); launching them here as well raced with it and analysed a version twice.
        need_corpus = new and context.instance.get_latest_materialization_event(corpus_key) is None
        runs = [dg.RunRequest(run_key="corpus-bootstrap", asset_selection=[corpus_key],
                              tags={ANALYSIS_TAG: "corpus"})] if need_corpus else []
        if not new and not events:
            return dg.SensorResult(skip_reason="no new or changed model version" +
                                   (f" ({'; '.join(waiting)})" if waiting else ""), cursor=json.dumps(seen))
        if new:
            context.log.info(f"new model versions: {new}")
        return dg.SensorResult(
            run_requests=runs, asset_events=events, cursor=json.dumps(seen),
            dynamic_partitions_requests=[partitions_def.build_add_request(new)] if new else [])

    return model_registry_sensor


def make_input_sensor(interval: int) -> dg.SensorDefinition:
    @dg.sensor(name="input_watch_sensor", minimum_interval_seconds=max(interval, 1),
               default_status=dg.DefaultSensorStatus.RUNNING,
               description="Re-hashes the corpus, the analysis settings and a model at a fixed path; reports a "
                           "changed content hash as a new data version (the automation then reruns what it "
                           "makes stale).")
    def input_watch_sensor(context: dg.SensorEvaluationContext, pipeline: PipelineResource) -> dg.SensorResult:
        now = input_versions(pipeline.load())
        seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
        changed = {k: v for k, v in now.items() if seen.get(k) != v}
        if not changed:
            return dg.SensorResult(skip_reason="no input changed", cursor=json.dumps(now))
        context.log.info("new data versions: " + ", ".join(f"{k}={v[:12]}" for k, v in changed.items()))
        return dg.SensorResult(asset_events=[dg.AssetObservation(k, tags={DATA_VERSION_TAG: v})
                                             for k, v in changed.items()], cursor=json.dumps(now))

    return input_watch_sensor


def make_stale_schedule(job: dg.UnresolvedAssetJobDefinition, cron: str,
                        partitions_def: dg.DynamicPartitionsDefinition | None) -> dg.ScheduleDefinition:
    @dg.schedule(name="stale_safety_net", job=job, cron_schedule=cron, execution_timezone="UTC",
                 default_status=dg.DefaultScheduleStatus.RUNNING,
                 description="Materializes whatever is still stale or missing (the safety net for an update the "
                             "eager automation missed); nothing runs when everything is fresh.")
    def stale_safety_net(context: dg.ScheduleEvaluationContext):
        if partitions_def is None:
            return [dg.RunRequest(stale_assets_only=True, tags={"trigger": "stale_safety_net", ANALYSIS_TAG: "schedule"})]
        keys = context.instance.get_dynamic_partitions(partitions_def.name)
        return [dg.RunRequest(stale_assets_only=True, partition_key=k,
                              tags={"trigger": "stale_safety_net", ANALYSIS_TAG: "schedule"}) for k in keys]

    return stale_safety_net


def automation_sensor(interval: int = 15) -> dg.AutomationConditionSensorDefinition:
    return dg.AutomationConditionSensorDefinition(
        "neuro_automation", target=dg.AssetSelection.all(), default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=interval, run_tags={ANALYSIS_TAG: "automation"},
        description="Reruns exactly the stale assets: eager, and only when their upstream blocking checks passed.")

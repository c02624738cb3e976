"""The one Definitions object of the neuro-pipeline code location.

Lineage: inputs (model_checkpoint, corpus_files, analysis_settings; observed, content-hash
data versions) → annotated_corpus → token_activations → neuron_rankings/<method> (one per
configured method) and neuron_redundancy → method_agreement, probe_selectivity,
probe_ablation, class_neurons → evaluation_report → model_drift, each stage guarded by a
blocking great-expectations check.

Everything after the corpus is computed per model version: with ``monitoring.registry`` set,
those assets are partitioned by ``model_versions`` (one partition per registry folder);
otherwise the model at ``model.path`` is watched in place. The assets come from the
analysis configuration (``NEURO_PIPELINE_CONFIG``, or the embedded default) when the code
location loads: reload the code location after changing ``ranking.methods`` or the registry.
"""

import gc
import os
import warnings

from neuro_pipeline.heap import collector_paused

# Dagster, torch, SciPy and pandas make about 370,000 objects that live as long as the
# process; the collector is paused while they are imported and they are frozen at the end
# (see neuro_pipeline.heap and the last lines).
with collector_paused():
    import dagster as dg

    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)

    from neuro_pipeline.config import ConfigError, load_config

    from .checks import stage_checks
    from .liveness import dead_run_sensor, with_heartbeat
    from .monitoring import (
        MODEL_VERSIONS,
        automation_sensor,
        make_input_sensor,
        make_registry_sensor,
        make_stale_schedule,
    )
    from .resources import CONFIG_ENV, make_resources
    from .sources import analysis_settings, corpus_files, model_source
    from .stages import build_stages


def build_definitions(config_path: str | None = None) -> dg.Definitions:
    """The code location for one analysis configuration (default: ``$NEURO_PIPELINE_CONFIG``)."""
    path = config_path if config_path is not None else os.environ.get(CONFIG_ENV, "")
    cfg = load_config(path or None)
    mon = cfg.monitoring
    partitions = dg.DynamicPartitionsDefinition(name=MODEL_VERSIONS) if cfg.registry_dir is not None else None
    model_checkpoint = model_source(partitions)
    sources = [model_checkpoint, corpus_files, analysis_settings]
    analysis = build_stages(cfg, {s.key.path[-1]: s for s in sources}, partitions)
    observe_inputs_job = dg.define_asset_job(
        "observe_inputs_job", selection=dg.AssetSelection.assets(*[s.key for s in sources]),
        description="Observe the model, corpus and settings: records their content-hash data versions.")
    analysis_job = dg.define_asset_job(
        "analysis_job", selection=dg.AssetSelection.assets(*analysis.all),
        description="Materialize the whole analysis: corpus → activations → rankings → evaluation → report → "
                    "drift, with their checks" + (" (one model version per run)." if partitions else "."))
    sensors = [make_input_sensor(mon.watch_seconds), automation_sensor(), dead_run_sensor()]
    if partitions is not None:
        sensors.insert(0, make_registry_sensor(partitions, analysis_job, analysis.stage("annotated_corpus").key,
                                               model_checkpoint.key, mon.watch_seconds, mon.settle_seconds))
    return dg.Definitions(
        assets=[*sources, *analysis.all],
        asset_checks=stage_checks(analysis, mon.alert_severity),
        jobs=[observe_inputs_job, analysis_job],
        sensors=sensors,
        schedules=[make_stale_schedule(analysis_job, mon.stale_schedule, partitions)],
        resources=make_resources(path),
        executor=with_heartbeat(make_executor(cfg.execution)),
    )


def make_executor(execution) -> dg.ExecutorDefinition:
    """The executor of ``execution.executor``. The default runs every step in the run's
    process: steps share the imported model code and never compete for the DuckDB file (one
    writer at a time), and a run does not pay an import per step."""
    if execution.executor == "celery":
        try:
            from dagster_celery import celery_executor

            from .celery_worker import celery_settings
        except ImportError as exc:
            raise ConfigError("execution.executor is celery but dagster-celery is not installed; install "
                              "neuro-pipeline with its 'distributed' extra: pip install -e '.[distributed]'") from exc
        # The workers' settings (assets/celery_worker.py): tasks acknowledged when they end, so
        # that a step whose worker is lost runs again on another one (at most MAX_DELIVERIES times).
        return celery_executor.configured({"broker": execution.broker, "backend": execution.backend,
                                           "config_source": celery_settings()}, name="celery_executor")
    if execution.executor == "multiprocess":
        return dg.multiprocess_executor.configured({"max_concurrent": execution.max_concurrent or 0},
                                                   name="multiprocess_executor")
    return dg.in_process_executor


def analysis_job() -> dg.JobDefinition:
    """The analysis job of this code location (what ``python -m assets.run`` rebuilds in every
    step's process when steps run elsewhere)."""
    return defs.resolve_job_def("analysis_job")


with collector_paused():
    defs = build_definitions()
# What was imported and built so far lives as long as the process: later full collections
# (in a run, during its stages) skip it instead of walking it each time.
gc.freeze()

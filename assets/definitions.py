"""The one Definitions object of the neuro-pipeline code location.

Lineage: inputs (model_checkpoint, corpus_files, analysis_settings; observed, content-hash
data versions) → annotated_corpus → token_activations → neuron_rankings/<method> (one per
configured method) and neuron_redundancy → method_agreement → evaluation_report, each
stage guarded by a blocking great-expectations check.

The ranking assets come from the analysis configuration (``NEURO_PIPELINE_CONFIG``, or the
embedded default) when the code location loads: reload the code location after changing
``ranking.methods``.
"""

import os
import warnings

import dagster as dg

warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)

from neuro_pipeline.config import load_config  # noqa: E402

from .checks import INPUT_CHECKS, derived_check, ranking_check, report_check  # noqa: E402
from .resources import CONFIG_ENV, make_resources  # noqa: E402
from .sources import SOURCES  # noqa: E402
from .stages import analysis_assets, annotated_corpus, neuron_redundancy, ranking_asset, token_activations  # noqa: E402


def build_definitions(config_path: str | None = None) -> dg.Definitions:
    """The code location for one analysis configuration (default: ``$NEURO_PIPELINE_CONFIG``)."""
    path = config_path if config_path is not None else os.environ.get(CONFIG_ENV, "")
    cfg = load_config(path or None)
    rankings = [ranking_asset(m.name, m.method, m.diversify) for m in cfg.ranking.methods]
    agreement, selectivity, ablation, class_neurons, report = analysis_assets(rankings)
    stages = [annotated_corpus, token_activations, *rankings, neuron_redundancy, agreement, selectivity, ablation,
              class_neurons, report]
    observe_inputs_job = dg.define_asset_job(
        "observe_inputs_job", selection=dg.AssetSelection.assets(*[s.key for s in SOURCES]),
        description="Observe the model, corpus and settings: records their content-hash data versions.")
    analysis_job = dg.define_asset_job(
        "analysis_job", selection=dg.AssetSelection.assets(*stages),
        executor_def=dg.in_process_executor,
        description="Materialize the whole analysis: corpus → activations → rankings → agreement → report, "
                    "with their checks.")
    return dg.Definitions(
        assets=[*SOURCES, *stages],
        asset_checks=[*INPUT_CHECKS, *[ranking_check(a, m.name) for a, m in zip(rankings, cfg.ranking.methods)],
                      *[derived_check(a) for a in (neuron_redundancy, agreement, selectivity, ablation, class_neurons)],
                      report_check(report)],
        jobs=[observe_inputs_job, analysis_job],
        resources=make_resources(path),
    )


defs = build_definitions()

"""The one Definitions object of the neuro-pipeline code location.

Lineage: inputs (model_checkpoint, corpus_files, analysis_settings; observed, content-hash
data versions) → annotated_corpus → token_activations → neuron_rankings → evaluation_report,
each stage guarded by a blocking great-expectations check.
"""

import warnings

import dagster as dg

warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)

from .checks import CHECKS  # noqa: E402
from .resources import make_resources  # noqa: E402
from .sources import SOURCES  # noqa: E402
from .stages import STAGES  # noqa: E402

observe_inputs_job = dg.define_asset_job(
    "observe_inputs_job", selection=dg.AssetSelection.assets(*[s.key for s in SOURCES]),
    description="Observe the model, corpus and settings: records their content-hash data versions.")

analysis_job = dg.define_asset_job(
    "analysis_job", selection=dg.AssetSelection.assets(*STAGES),
    executor_def=dg.in_process_executor,
    description="Materialize the whole analysis: corpus → activations → rankings → report, with their checks.")

defs = dg.Definitions(
    assets=[*SOURCES, *STAGES],
    asset_checks=CHECKS,
    jobs=[observe_inputs_job, analysis_job],
    resources=make_resources(),
)

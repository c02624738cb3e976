"""Deprecated: the stages moved to :mod:`neuro_pipeline.stages`, one module per stage.

This module re-exports the public names it used to define, so existing imports keep
working; import from :mod:`neuro_pipeline` (the entry points) or :mod:`neuro_pipeline.stages`
instead.
"""

from __future__ import annotations

import warnings

from neuro_pipeline.stages import (  # noqa: F401  (re-exported)
    AblationSummary,
    ActivationSummary,
    AgreementSummary,
    ClassNeuronsSummary,
    CorpusSummary,
    DriftSummary,
    InterventionSummary,
    Progress,
    RankingSummary,
    RedundancySummary,
    ReportSummary,
    SelectivitySummary,
    Split,
    StoredRanking,
    activation_set_id,
    check_activations,
    check_corpus,
    check_drift,
    check_each_task,
    check_ranking,
    check_report,
    corpus_version,
    current_activation_set,
    each_task,
    extraction_shards,
    latest_summary,
    load_split,
    materialize_ablation,
    materialize_activations,
    materialize_agreement,
    materialize_class_neurons,
    materialize_corpus,
    materialize_drift,
    materialize_interventions,
    materialize_ranking,
    materialize_rankings,
    materialize_redundancy,
    materialize_report,
    materialize_selectivity,
    merge_activation_shards,
    model_version,
    neuron_name,
    ranking_names,
    read_ranking,
    run_analysis,
    settings_version,
    versions_summary,
)
from neuro_pipeline.stages.common import selection_probe_params  # noqa: F401
from neuro_pipeline.stages.drift import drift_thresholds, model_versions, previous_version  # noqa: F401
from neuro_pipeline.stages.rankings import fitted_summary, ranking_probe  # noqa: F401

#: The name the stored-ranking reader had here.
ranking_of = read_ranking

warnings.warn("neuro_pipeline.pipeline is deprecated: import the stages from neuro_pipeline (run_analysis, "
              "materialize_*) or neuro_pipeline.stages", DeprecationWarning, stacklevel=2)

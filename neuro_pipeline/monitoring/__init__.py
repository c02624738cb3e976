"""Monitoring across model versions: how far the important neurons and the probe's scores drifted.

Start here: :func:`ranking_drift` (global rankings: top-k overlap, entered/left neurons,
Spearman of scores), :func:`class_ranking_drift` (per-class rankings),
:func:`class_metric_drift` (per-class accuracy, F1, selectivity), :func:`activation_drift`
(per-layer correlation of each unit's activations between versions), then
:func:`drift_alerts` with :class:`DriftThresholds`, and :func:`summarize_drift` for
metadata. The report section is :mod:`neuro_pipeline.report.drift`.
"""

from neuro_pipeline.monitoring.drift import (
    DriftThresholds,
    activation_drift,
    class_metric_drift,
    class_ranking_drift,
    drift_alerts,
    ranking_drift,
    summarize_drift,
)

__all__ = [
    "DriftThresholds",
    "activation_drift",
    "class_metric_drift",
    "class_ranking_drift",
    "drift_alerts",
    "ranking_drift",
    "summarize_drift",
]

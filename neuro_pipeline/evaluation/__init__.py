"""Evaluating neuron rankings: probe accuracy with the top, random and bottom neurons.

Start here: :func:`evaluate_selections` retrains a probe on each selection of a ranking's
neurons and returns one row per probe; :func:`summarize_selections` averages the random
draws; :func:`evaluate_probe` scores one probe overall and per class.
"""

from neuro_pipeline.evaluation.selection import (
    DEFAULT_SELECTION_PROBE_PARAMS,
    evaluate_probe,
    evaluate_selections,
    random_neurons,
    summarize_selections,
)

__all__ = [
    "DEFAULT_SELECTION_PROBE_PARAMS",
    "evaluate_probe",
    "evaluate_selections",
    "random_neurons",
    "summarize_selections",
]

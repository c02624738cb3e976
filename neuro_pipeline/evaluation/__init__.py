"""Evaluating neuron rankings: probe accuracy with the top, random and bottom neurons.

Start here: :func:`evaluate_selections` retrains a probe on each selection of a ranking's
neurons and returns one row per probe (:func:`fit_selections` then :func:`score_selections`
do the same in two halves, so that the training matrix can go before the test one comes);
:func:`summarize_selections` averages the random draws; :func:`evaluate_probe` scores one
probe overall and per class.
"""

from neuro_pipeline.evaluation.selection import (
    DEFAULT_SELECTION_PROBE_PARAMS,
    evaluate_probe,
    evaluate_selections,
    fit_selections,
    random_neurons,
    score_selections,
    summarize_selections,
)

__all__ = [
    "DEFAULT_SELECTION_PROBE_PARAMS",
    "evaluate_probe",
    "evaluate_selections",
    "fit_selections",
    "random_neurons",
    "score_selections",
    "summarize_selections",
]

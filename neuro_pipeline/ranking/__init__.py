"""Neuron-ranking methods behind one interface, looked up by name.

Start here: ``get_ranker("linear_probe").fit(X, y)`` returns a fitted
:class:`NeuronRanker`; :func:`ranking_table` turns it into the table the pipeline stores.
A method module registers its class with ``@register_ranker("name")`` and is imported at
the bottom of this file, so that ``RANKERS`` lists every method.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from neuro_pipeline.ranking._base import NeuronRanker, check_fitted, validate_matrix

#: Registered ranking methods: name -> NeuronRanker subclass.
RANKERS: dict[str, type[NeuronRanker]] = {}


def register_ranker(name: str):
    """Class decorator that registers a :class:`NeuronRanker` subclass under ``name``.

    Raises
    ------
    ValueError
        If ``name`` is already taken by another class.
    TypeError
        If the decorated class is not a ``NeuronRanker`` subclass.
    """

    def decorator(cls: type[NeuronRanker]) -> type[NeuronRanker]:
        if not (isinstance(cls, type) and issubclass(cls, NeuronRanker)):
            raise TypeError(f"register_ranker({name!r}) expects a NeuronRanker subclass; got {cls!r}.")
        if name in RANKERS and RANKERS[name] is not cls:
            raise ValueError(f"Ranking method {name!r} is already registered by {RANKERS[name].__name__}.")
        RANKERS[name] = cls
        return cls

    return decorator


def get_ranker(name: str, **params) -> NeuronRanker:
    """An unfitted ranker of the method ``name``, with ``params`` as hyperparameters.

    Raises
    ------
    ValueError
        If ``name`` is not registered (the message lists the registered names).

    Examples
    --------
    >>> get_ranker("linear_probe", l1=1e-3, l2=1e-3).search_stride
    100
    """
    try:
        cls = RANKERS[name]
    except KeyError:
        raise ValueError(f"Unknown ranking method {name!r}; choose one of {sorted(RANKERS)}.") from None
    return cls(**params)


def ranking_table(ranker: NeuronRanker) -> pl.DataFrame:
    """One row per neuron of a fitted ranker: ``neuron`` (Int32), ``score`` (Float64) and
    ``rank`` (Int32, 1 = best), sorted by rank. Neurons the method did not rank (greedy
    methods rank a prefix) come last with a null rank and a null score, so every stored
    score is finite. Any object with ``ranking_`` and ``scores_`` will do, such as a stored ranking.
    """
    check_fitted(ranker)
    order = ranker.ranking_
    ranked = np.isfinite(ranker.scores_[order])
    return pl.DataFrame(
        {
            "neuron": pl.Series(order, dtype=pl.Int32),
            "score": pl.Series(np.where(ranked, ranker.scores_[order], np.nan), dtype=pl.Float64).fill_nan(None),
            # ranking_ puts unranked (-inf) neurons last, so ranks are 1..n_ranked_ then nulls.
            "rank": pl.Series(np.arange(1, len(order) + 1), dtype=pl.Int32).set(
                pl.Series(~ranked), None
            ),
        }
    )


# Method modules register themselves on import.
from neuro_pipeline.ranking.attribution import AttributionRanker  # noqa: E402
from neuro_pipeline.ranking.gaussian import GaussianProbeRanker  # noqa: E402
from neuro_pipeline.ranking.iou import IoURanker  # noqa: E402
from neuro_pipeline.ranking.linear_probe import LinearProbeRanker  # noqa: E402
from neuro_pipeline.ranking.mean_select import MeanSelectRanker  # noqa: E402
from neuro_pipeline.ranking.probeless import ProbelessRanker  # noqa: E402

__all__ = [
    "RANKERS",
    "GaussianProbeRanker",
    "IoURanker",
    "LinearProbeRanker",
    "MeanSelectRanker",
    "NeuronRanker",
    "ProbelessRanker",
    "check_fitted",
    "get_ranker",
    "ranking_table",
    "register_ranker",
    "validate_matrix",
]

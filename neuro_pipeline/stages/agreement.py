"""Method agreement (Fan et al. 2023): how far the configured rankings agree, and their
NeuronVote consensus, stored as the ranking ``neuron_vote`` (table ``agreement``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from neuro_pipeline.config import PipelineConfig
from neuro_pipeline.stages.common import current_activation_set, keyed, layer_unit, neuron_name, stage_key
from neuro_pipeline.stages.metadata import Metadata, Table
from neuro_pipeline.stages.rankings import read_rankings
from neuro_pipeline.store import ActivationSet, Store
from neuro_pipeline.store.tables import agreement as tables


@dataclass
class AgreementSummary:
    activation_set: str
    task: str
    methods: list[str]
    ns: list[int]
    pairs: list[dict[str, Any]]
    votes: list[dict[str, Any]]
    vote_top: list[str]


class FixedRanking:
    """A ranking given as an order, with what :func:`~neuro_pipeline.ranking.ranking_table`
    reads of a fitted ranker (``ranking_``, ``scores_``): scores n, n-1, ..., 1 in that order."""

    def __init__(self, order: np.ndarray, n_neurons: int):
        self.ranking_ = np.asarray(order, dtype=np.int64)
        self.scores_ = np.empty(n_neurons)
        self.scores_[self.ranking_] = np.arange(n_neurons, 0, -1, dtype=np.float64)


def materialize_agreement(cfg: PipelineConfig, store: Store) -> AgreementSummary:
    """How far the configured methods agree (Fan et al. 2023): top-n Jaccard overlap of every
    pair, each method against the NeuronVote of the others, and the NeuronVote consensus
    ranking of all methods, stored as the ranking named ``neuron_vote``."""
    from neuro_pipeline.analysis import neuron_vote, topn_overlap, vote_agreement
    from neuro_pipeline.ranking import ranking_table

    aset = current_activation_set(cfg, store)
    stored = {r.name: r for r in read_rankings(cfg, store, aset)}
    n_neurons = aset.n_neurons
    # Greedy methods rank a prefix: compare only what they ranked.
    rankings = {name: r.order[:r.n_ranked] for name, r in stored.items()}
    ns = [n for n in cfg.ranking.agreement_n if n <= n_neurons]
    key = stage_key(cfg, aset)
    schema = {"kind": pl.Utf8, "method_a": pl.Utf8, "method_b": pl.Utf8, "n": pl.Int32, "overlap": pl.Int32,
              "jaccard": pl.Float64}
    writes: list[tuple[str, pl.DataFrame, dict[str, object]]] = []
    if len(rankings) < 2:
        table = pl.DataFrame(schema=schema)
        pairs = votes = []
        vote_top: list[str] = []
    else:
        pair_table = topn_overlap(rankings, ns, allow_partial=True, n_neurons=n_neurons)
        vote_table = vote_agreement(rankings, ns, allow_partial=True, n_neurons=n_neurons)
        table = pl.concat([
            pair_table.select(pl.lit("pair").alias("kind"), "method_a", "method_b", "n", "overlap", "jaccard"),
            vote_table.select(pl.lit("vote").alias("kind"), pl.col("method").alias("method_a"),
                              pl.lit("neuron_vote (others)").alias("method_b"), "n",
                              pl.col("vote_overlap").alias("overlap"), pl.col("vote_jaccard").alias("jaccard")),
        ], how="vertical_relaxed").cast(schema)
        consensus = neuron_vote(rankings, allow_partial=True, n_neurons=n_neurons)
        vote = FixedRanking(consensus, n_neurons)
        vote_rows = keyed(ranking_table(vote).with_columns(*layer_unit(aset.hidden_size)), key,
                          model_version=aset.model_version, params_hash="consensus", method="neuron_vote")
        writes.append(("rankings", vote_rows, {**key, "method": "neuron_vote"}))
        pairs = pair_table.to_dicts()
        votes = vote_table.to_dicts()
        vote_top = [neuron_name(int(n), aset.hidden_size) for n in consensus[:10]]
    # The consensus ranking and the agreement table are replaced together, or not at all.
    store.replace_each([*writes, ("agreement", keyed(table, key), key)])
    return AgreementSummary(activation_set=aset.activation_set, task=cfg.task, methods=list(rankings), ns=ns,
                            pairs=pairs, votes=votes, vote_top=vote_top)


def read_agreement(cfg: PipelineConfig, store: Store, aset: ActivationSet) -> pl.DataFrame:
    """kind, method_a, method_b, n, overlap, jaccard."""
    return tables.read(store, stage_key(cfg, aset))


def check_agreement(cfg: PipelineConfig, store: Store):
    """great-expectations suite over the overlaps: rows exist when two or more methods are
    configured, every Jaccard in [0, 1]."""
    from neuro_pipeline.quality import validate_table

    aset = current_activation_set(cfg, store)
    frame = tables.jaccards(store, cfg.name, aset.activation_set)
    return validate_table("method_agreement", frame, min_rows=0 if len(cfg.ranking.methods) < 2 else 1,
                          ranges={"jaccard": (0.0, 1.0)}, not_null=("jaccard",))


def metadata(s: AgreementSummary) -> Metadata:
    md: Metadata = {"methods": ", ".join(s.methods), "neuron_vote_top10": ", ".join(s.vote_top)}
    ns = s.ns
    pairs: dict = {}
    for r in s.pairs:
        pairs.setdefault((r["method_a"], r["method_b"]), {})[r["n"]] = r["jaccard"]
    md["pairwise_jaccard"] = Table(["method a", "method b", *[f"n={n}" for n in ns]],
                                   [[a, b, *[f"{v.get(n, float('nan')):.2f}" for n in ns]]
                                    for (a, b), v in pairs.items()])
    votes: dict = {}
    for r in s.votes:
        votes.setdefault(r["method"], {})[r["n"]] = r["vote_jaccard"]
    md["jaccard_with_vote_of_others"] = Table(["method", *[f"n={n}" for n in ns]],
                                              [[m, *[f"{v.get(n, float('nan')):.2f}" for n in ns]]
                                               for m, v in votes.items()])
    for m, v in votes.items():
        if 100 in v:
            md[f"vote_jaccard_{m}_n100"] = float(v[100])
    return md

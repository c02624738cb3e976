"""Analyses on top of activations and rankings: top words, redundancy, method agreement.

Start here:

- :func:`top_words` / :func:`top_words_table`: the word types that drive a neuron furthest
  from its mean (NeuroX's ``get_top_words``), for one neuron or many;
- :func:`redundancy_by_layer`: how many independent neurons each layer has, by correlation
  clustering (Dalvi et al. 2020); :func:`correlation_clusters`,
  :func:`independent_neurons` and :func:`neuron_clusters_by_layer` are the parts;
- :func:`vote_agreement`: how well each ranking method agrees with the others (Fan et al.
  2023's AvgOverlap and NeuronVote), built on :func:`topn_overlap` and :func:`neuron_vote`.
"""

from neuro_pipeline.analysis.agreement import neuron_vote, topn_overlap, vote_agreement
from neuro_pipeline.analysis.corpus_search import top_words, top_words_table
from neuro_pipeline.analysis.redundancy import (
    constant_neurons,
    correlation_clusters,
    diversify_ranking,
    independent_neurons,
    neuron_clusters_by_layer,
    redundancy_by_layer,
    summarize_clusters,
)

__all__ = [
    "constant_neurons",
    "correlation_clusters",
    "diversify_ranking",
    "independent_neurons",
    "neuron_clusters_by_layer",
    "neuron_vote",
    "redundancy_by_layer",
    "summarize_clusters",
    "top_words",
    "top_words_table",
    "topn_overlap",
    "vote_agreement",
]

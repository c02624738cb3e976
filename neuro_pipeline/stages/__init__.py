"""The pipeline's stages as plain functions, one module per stage.

Start here to see what the pipeline computes. Each stage module has a ``materialize_*``
function that reads what earlier stages stored, computes, writes its tables to the
:class:`~neuro_pipeline.store.Store` in one transaction and returns a small summary (plain
Python values); a ``check_*`` function (its great-expectations suite); the ``read_*``
functions later stages use to read its results; and ``metadata(summary)``, what the
Dagster UI shows of it. A researcher can call them from a notebook in order, or call
:func:`run_analysis` for the whole chain; the Dagster code location calls exactly the same
functions, one per asset.

=================  ===============================================================
module             stage
=================  ===============================================================
``corpus``         the annotated corpus (tokens, concept labels, balancing)
``activations``    every layer's activations per model version
``rankings``       one ranking per configured method
``redundancy``     correlation clusters of the neurons
``agreement``      how far the methods agree; the NeuronVote consensus
``selectivity``    control-task selectivity of selections and layers
``ablation``       keep / remove the top, random, bottom neurons at the probe
``class_neurons``  layers of each class's neurons; fewest neurons per class
``interventions``  ablation inside the live model (masked-word predictions)
``report``         probe accuracy of every selection; the HTML/Markdown report
``drift``          what moved since the previous model version
=================  ===============================================================
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from neuro_pipeline.config import PipelineConfig
from neuro_pipeline.stages.ablation import AblationSummary, check_ablation, materialize_ablation
from neuro_pipeline.stages.activations import (
    ActivationSummary,
    check_activations,
    extraction_shards,
    materialize_activations,
    merge_activation_shards,
)
from neuro_pipeline.stages.agreement import AgreementSummary, check_agreement, materialize_agreement
from neuro_pipeline.stages.class_neurons import ClassNeuronsSummary, check_class_neurons, materialize_class_neurons
from neuro_pipeline.stages.common import (
    Progress,
    Split,
    check_each_task,
    current_activation_set,
    each_task,
    load_split,
    neuron_name,
    ranking_names,
)
from neuro_pipeline.stages.corpus import CorpusSummary, check_corpus, materialize_corpus
from neuro_pipeline.stages.drift import DriftSummary, check_drift, materialize_drift, versions_summary
from neuro_pipeline.stages.interventions import (
    InterventionSummary,
    check_interventions,
    materialize_interventions,
)
from neuro_pipeline.stages.rankings import (
    RankingSummary,
    StoredRanking,
    check_ranking,
    materialize_ranking,
    materialize_rankings,
    ranking_probe,
    read_ranking,
)
from neuro_pipeline.stages.redundancy import RedundancySummary, check_redundancy, materialize_redundancy
from neuro_pipeline.stages.report import ReportSummary, check_report, latest_summary, materialize_report
from neuro_pipeline.stages.selectivity import SelectivitySummary, check_selectivity, materialize_selectivity
from neuro_pipeline.stages.versions import activation_set_id, corpus_version, model_version, settings_version
from neuro_pipeline.store import Store


def run_analysis(cfg: PipelineConfig, *, progress: Progress | None = None) -> dict[str, Any]:
    """Run the stages in order without Dagster (for notebooks and scripts): corpus,
    activations, redundancy, then for every task the rankings, agreement, selectivity,
    ablation, class neurons, report and drift. Returns every stage's summary as plain data
    (the first task's at the top level, every task's under ``tasks``)."""
    store = Store(cfg.store_path)
    corpus = materialize_corpus(cfg, store)
    acts = materialize_activations(cfg, store, progress=progress)
    redundancy = materialize_redundancy(cfg, store)
    out: dict[str, Any] = {"corpus": asdict(corpus), "activations": asdict(acts), "redundancy": asdict(redundancy)}
    for task in cfg.tasks:
        t = cfg.for_task(task)
        rankings = materialize_rankings(t, store)
        stages = {"rankings": [asdict(r) for r in rankings], "agreement": materialize_agreement(t, store),
                  "selectivity": materialize_selectivity(t, store), "ablation": materialize_ablation(t, store),
                  "class_neurons": materialize_class_neurons(t, store), "report": materialize_report(t, store),
                  "drift": materialize_drift(t, store)}
        stages = {k: v if isinstance(v, list) else asdict(v) for k, v in stages.items()}
        if task == cfg.tasks[0]:
            out.update(stages)
        out.setdefault("tasks", {})[task] = stages
    return out


__all__ = [
    "AblationSummary", "ActivationSummary", "AgreementSummary", "ClassNeuronsSummary", "CorpusSummary",
    "DriftSummary", "InterventionSummary", "Progress", "RankingSummary", "RedundancySummary", "ReportSummary",
    "SelectivitySummary", "Split", "StoredRanking",
    "activation_set_id", "check_ablation", "check_activations", "check_agreement", "check_class_neurons",
    "check_corpus", "check_drift", "check_each_task", "check_interventions", "check_ranking", "check_redundancy",
    "check_report", "check_selectivity", "corpus_version", "current_activation_set", "each_task",
    "extraction_shards", "latest_summary", "load_split", "materialize_ablation", "materialize_activations",
    "materialize_agreement", "materialize_class_neurons", "materialize_corpus", "materialize_drift",
    "materialize_interventions", "materialize_ranking", "materialize_rankings", "materialize_redundancy",
    "materialize_report", "materialize_selectivity", "merge_activation_shards", "model_version", "neuron_name",
    "ranking_names", "ranking_probe", "read_ranking", "run_analysis", "settings_version", "versions_summary",
]

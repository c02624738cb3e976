"""Stage 1, the annotated corpus: read (or generate) the corpus, key every word, label it for
every concept task, and store it (tables ``tokens``, ``task_labels``, ``task_balance``,
``sentence_pairs``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import polars as pl

from neuro_pipeline.config import PipelineConfig
from neuro_pipeline.corpus.build import SplitFiles, balance_table, concept_label_table, read_splits, train_labels
from neuro_pipeline.stages.metadata import Json, Metadata, Table
from neuro_pipeline.stages.versions import corpus_version
from neuro_pipeline.store import Store
from neuro_pipeline.store.tables import corpus as tables


@dataclass
class CorpusSummary:
    corpus_id: str
    version: str
    n_sentences: dict[str, int]
    n_tokens: dict[str, int]
    n_labels: int
    label_counts: list[dict[str, Any]]
    sources: list[str]
    #: Label counts per split of each concept task, and the balancing counts of every task.
    tasks: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    balance: list[dict[str, Any]] = field(default_factory=list)
    #: Sentences fed with a second segment (sentence pairs).
    n_pairs: int = 0
    #: The analysis's first task (the corpus's own labels, or its first concept).
    task: str = ""


def corpus_files(cfg: PipelineConfig) -> dict[str, SplitFiles]:
    """The configured files of each split, resolved against the config's folder."""
    c = cfg.corpus
    return {split: SplitFiles(cfg.path(getattr(c, split)), cfg.path(getattr(c, f"{split}_labels")),
                              cfg.path(getattr(c, f"{split}_pairs"))) for split in ("train", "dev", "test")}


def materialize_corpus(cfg: PipelineConfig, store: Store) -> CorpusSummary:
    """Read the corpus, key every word, label it for every concept task, and store the
    ``tokens`` rows (with ``task_labels`` and the ``task_balance`` counts)."""
    from neuro_pipeline.corpus import pairs_table, sentences_to_table

    splits = read_splits(cfg.corpus, corpus_files(cfg), source=cfg.source)
    table = sentences_to_table(splits, corpus_id=cfg.name)
    pairs = pairs_table(splits, corpus_id=cfg.name)
    labels = concept_label_table(table, cfg.concepts, cfg.base_dir, cfg.name)
    concepts = {c.name for c in cfg.concepts}
    balance = balance_table({task: train_labels(table, labels, task if task in concepts else None)
                             for task in cfg.tasks} if cfg.balance is not None else {}, cfg.balance, cfg.name)
    store.write_tokens(table, labels, balance, pairs)
    summary = summarize_corpus(cfg, table, labels, balance)
    summary.n_pairs = pairs.height
    return summary


def summarize_corpus(cfg: PipelineConfig, table: pl.DataFrame, task_labels: pl.DataFrame | None = None,
                     balance: pl.DataFrame | None = None) -> CorpusSummary:
    """Sentences and words per split, label counts, sources, and each concept's label counts."""
    per_split = table.group_by("split").agg(pl.col("sentence_id").n_unique().alias("s"), pl.len().alias("t"))
    counts = (table.group_by("label", "split").len().pivot(on="split", index="label", values="len")
              .fill_null(0).sort("label"))
    tasks: dict[str, list[dict[str, Any]]] = {}
    if task_labels is not None and task_labels.height:
        with_split = task_labels.join(table.select("sentence_id", "position", "split"),
                                      on=["sentence_id", "position"])
        for (task,), grp in with_split.group_by("task", maintain_order=True):
            tasks[task] = (grp.group_by("label", "split").len().pivot(on="split", index="label", values="len")
                           .fill_null(0).sort("label").to_dicts())
    return CorpusSummary(
        tasks=tasks, balance=[] if balance is None else balance.to_dicts(),
        corpus_id=cfg.name, version=corpus_version(cfg),
        n_sentences={r["split"]: r["s"] for r in per_split.iter_rows(named=True)},
        n_tokens={r["split"]: r["t"] for r in per_split.iter_rows(named=True)},
        n_labels=table["label"].n_unique(),
        label_counts=counts.to_dicts(),
        sources=sorted(table["source"].unique().to_list()),
        task=cfg.task,
    )


def read_corpus_keys(cfg: PipelineConfig, store: Store) -> pl.DataFrame:
    """The distinct (sentence_hash, position) words of the corpus."""
    return tables.corpus_keys(store, cfg.name)


def read_first_occurrences(cfg: PipelineConfig, store: Store) -> pl.DataFrame:
    """Where each distinct sentence first occurs: sentence_hash, sentence_id, source, line."""
    return tables.first_occurrences(store, cfg.name)


def check_corpus(cfg: PipelineConfig, store: Store):
    """great-expectations suite over the stored tokens of this analysis (labels in the
    declared set, see :attr:`PipelineConfig.declared_labels`), and for every concept task
    exactly one label per word."""
    from neuro_pipeline.quality import validate_tokens

    tokens = store.read_tokens(cfg.name)
    report = validate_tokens(tokens, declared_labels=cfg.declared_labels)
    for concept in cfg.concepts:
        labels = tables.task_labels(store, cfg.name, concept.name)
        keys = tokens.select("sentence_id", "position")
        missing = keys.join(labels, on=["sentence_id", "position"], how="anti")
        extra = labels.join(keys, on=["sentence_id", "position"], how="anti")
        duplicated = labels.height - labels.unique(["sentence_id", "position"]).height
        outside = labels.filter(~pl.col("label").is_in([concept.name, "OTHER"])).height
        bad = missing.height + extra.height + duplicated + outside
        report.results.append({
            "expectation": "one_concept_label_per_word", "column": concept.name, "success": bad == 0,
            "unexpected_count": bad,
            "unexpected_examples": [f"sentence {r['sentence_id']} position {r['position']} has no label"
                                    for r in missing.head(5).iter_rows(named=True)],
            "observed_value": {"words": tokens.height, "labels": labels.height, "missing": missing.height,
                               "extra": extra.height, "duplicated": duplicated, "outside_label_set": outside},
        })
        report.success = report.success and bad == 0
    return report


def metadata(s: CorpusSummary) -> Metadata:
    splits = sorted(s.n_tokens)
    return {
        "dagster/row_count": sum(s.n_tokens.values()),
        "n_sentences": sum(s.n_sentences.values()),
        "n_labels": s.n_labels,
        "n_sentence_pairs": s.n_pairs,
        "corpus_version": s.version,
        "task": s.task,
        "sources": Json(s.sources),
        "splits": Table(["split", "sentences", "words"], [[k, s.n_sentences[k], s.n_tokens[k]] for k in splits]),
        "label_distribution": Table(["label", *splits], [[r["label"], *[r.get(k, 0) for k in splits]]
                                                        for r in s.label_counts]),
    }

"""From the configured corpus files to the tables the corpus stage stores: the sentences of
each split, the labels of every concept task, and the balancing counts.

Start here: :func:`read_splits` reads (or generates) the corpus and splits it;
:func:`concept_label_table` labels every word for each concept; :func:`balance_table` counts
the training words per class before and after undersampling. They take the corpus's own
settings (:class:`~neuro_pipeline.config.CorpusConfig`, resolved file paths), not the whole
analysis configuration.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import polars as pl

if TYPE_CHECKING:
    from neuro_pipeline.config import BalanceConfig, CorpusConfig
    from neuro_pipeline.corpus.concepts import ConceptSpec


class SplitFiles(NamedTuple):
    """The files of one split, resolved: words (a CoNLL-U, text or NeuroX words file), and for
    NeuroX's parallel format the labels and the optional second segments."""

    words: Path | None
    labels: Path | None = None
    pairs: Path | None = None


def read_splits(corpus: CorpusConfig, files: Mapping[str, SplitFiles], *, source: str = "") -> dict[str, list]:
    """The configured corpus as sentences per split (train, dev, test; empty splits left out).

    A demo corpus is generated; one given file (``train``) is split deterministically by
    sentence content (``dev_fraction``, ``test_fraction``, ``split_seed``); given dev or
    test files are used as they are. ``source`` names the configuration in errors."""
    from neuro_pipeline.corpus import generate_demo_corpus, read_conllu, read_parallel, split_sentences

    c = corpus
    if c.format == "demo":
        sentences = generate_demo_corpus(c.demo_sentences, seed=c.demo_seed)
        splits = split_sentences(sentences, dev_fraction=c.dev_fraction, test_fraction=c.test_fraction,
                                 seed=c.split_seed)
    else:
        def read(split: str):
            given = files.get(split)
            if given is None or given.words is None:
                return None
            if c.format == "conllu":
                return read_conllu(given.words, label_column=c.label_column)
            if c.format == "text":
                from neuro_pipeline.corpus.text import read_text

                return list(read_text(given.words, tokenizer=c.tokenizer, pairs=c.pairs).sentences)
            return read_parallel(given.words, given.labels, given.pairs)

        given = {s: read(s) for s in ("train", "dev", "test")}
        if given["test"] is None and given["dev"] is None:
            splits = split_sentences(given["train"], dev_fraction=c.dev_fraction,
                                     test_fraction=c.test_fraction, seed=c.split_seed)
        else:
            splits = {s: v for s, v in given.items() if v is not None}
    splits = {s: v for s, v in splits.items() if v}
    if "train" not in splits:
        raise ValueError(f"{source}: the corpus has no training sentences after splitting.")
    return splits


def concept_label_table(table: pl.DataFrame, concepts: Sequence[ConceptSpec], base_dir: str | Path,
                        corpus_id: str) -> pl.DataFrame:
    """The labels of every concept task for the words of a token table: corpus_id, task,
    sentence_id, position, label (empty without concepts). A concept sees whole sentences, so
    a rule may look at a word's neighbours."""
    from neuro_pipeline.corpus.concepts import load_concept

    if not concepts:
        return pl.DataFrame()
    sentences = (table.sort("sentence_id", "position").group_by("sentence_id", maintain_order=True)
                 .agg(pl.col("token"), pl.col("position")))
    frames = []
    for spec in concepts:
        concept = load_concept(spec, base_dir)
        labels = [concept.label_words(list(words)) for words in sentences["token"].to_list()]
        frames.append(sentences.select("sentence_id", "position").with_columns(
            pl.Series("label", labels, dtype=pl.List(pl.String))).explode("position", "label")
            .with_columns(pl.lit(corpus_id).alias("corpus_id"), pl.lit(spec.name).alias("task")))
    return pl.concat(frames).select("corpus_id", "task", pl.col("sentence_id").cast(pl.Int32),
                                    pl.col("position").cast(pl.Int32), "label")


def train_labels(table: pl.DataFrame, task_labels: pl.DataFrame, task: str | None) -> np.ndarray:
    """The training words' labels, in corpus order: the corpus's own (``task`` None) or those
    of the concept task ``task``."""
    train = table.filter(pl.col("split") == "train").sort("sentence_id", "position")
    if task is None:
        return train["label"].to_numpy()
    mine = task_labels.filter(pl.col("task") == task).select("sentence_id", "position", "label")
    return train.select("sentence_id", "position").join(mine, on=["sentence_id", "position"], how="left",
                                                          maintain_order="left")["label"].to_numpy()


def balance(labels: Any, settings: BalanceConfig):
    """:func:`~neuro_pipeline.corpus.balance_labels` of the labels with the configured seed and target."""
    from neuro_pipeline.corpus.balance import balance_labels

    return balance_labels(np.asarray(labels).astype(str), seed=settings.seed, target=settings.target)


def balance_table(labels_per_task: Mapping[str, Any], settings: BalanceConfig | None, corpus_id: str) -> pl.DataFrame:
    """Training words per class before and after undersampling, for every task
    (``labels_per_task``: task → its training labels); empty when balancing is off."""
    if settings is None:
        return pl.DataFrame()
    rows = []
    for task, labels in labels_per_task.items():
        result = balance(labels, settings)
        rows += [{"corpus_id": corpus_id, "task": task, "label": lab, "n_before": n,
                  "n_after": result.counts_after.get(lab, 0), "seed": settings.seed,
                  "target": str(settings.target)} for lab, n in sorted(result.counts_before.items())]
    return pl.DataFrame(rows)


__all__ = ["SplitFiles", "balance", "balance_table", "concept_label_table", "read_splits",
           "train_labels"]

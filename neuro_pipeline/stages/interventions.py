"""Do the model's own predictions depend on the top neurons? Each method's top neurons of a
class are set to their mean (or zero) inside the live model, and its masked-word predictions
are scored against layer-matched random neurons (table ``interventions``). Off unless
``interventions.enabled``."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from neuro_pipeline.config import PipelineConfig
from neuro_pipeline.stages.common import (
    Progress,
    Split,
    current_activation_set,
    keyed,
    ranking_names,
    stage_key,
    train_test,
)
from neuro_pipeline.stages.metadata import Json, Metadata, Table
from neuro_pipeline.stages.rankings import read_class_orders, read_ranking
from neuro_pipeline.store import ActivationSet, Store
from neuro_pipeline.store.tables import interventions as tables

log = logging.getLogger(__name__)


@dataclass
class InterventionSummary:
    activation_set: str
    task: str
    head: dict[str, Any]
    classes: list[str]
    methods: list[str]
    rows: list[dict[str, Any]]
    seconds: float


def intervention_classes(cfg: PipelineConfig, labels: np.ndarray) -> list[str]:
    """The classes to test: ``interventions.classes``, else the 5 most frequent training
    labels (a concept task's own label only, never ``OTHER``)."""
    if cfg.interventions.classes:
        return list(cfg.interventions.classes)
    values, counts = np.unique(np.asarray(labels).astype(str), return_counts=True)
    order = [str(values[i]) for i in np.argsort(-counts, kind="stable") if str(values[i]) not in ("OTHER", "_")]
    return order[:5]


def _sentences(split: Split, max_words: int, limit: int) -> tuple[list[list[str]], list[list[str]]]:
    """Whole sentences (words and labels) of a split, in corpus order, at most ``limit`` of
    them with at most ``max_words`` words each."""
    frame = pl.DataFrame({"sentence_id": split.keys["sentence_id"], "position": split.keys["position"],
                          "word": split.words.astype(str), "label": split.labels.astype(str)})
    grouped = (frame.sort("sentence_id", "position").group_by("sentence_id", maintain_order=True)
               .agg("word", "label").filter(pl.col("word").list.len() <= max_words).head(limit))
    return grouped["word"].to_list(), grouped["label"].to_list()


def head_text(record: dict[str, Any]) -> str:
    """How the masked-LM head came about, for the report."""
    if not record or record.get("source") != "trained":
        return "the checkpoint's own"
    held = record.get("heldout_subword_accuracy")
    return (f"trained here on the frozen encoder from {record.get('n_sentences', '?')} sentences"
            + (f", {held:.1%} held-out subword accuracy" if held is not None else ""))


def mlm_head_dir(cfg: PipelineConfig, aset: ActivationSet) -> Path:
    """Where a trained masked-LM head of this model version is kept (next to the store)."""
    return cfg.store_path.parent / "mlm_heads" / aset.activation_set


def materialize_interventions(cfg: PipelineConfig, store: Store, *, progress: Progress | None = None
                              ) -> InterventionSummary:
    """For each class and ranking, set the ranking's top ``interventions.k`` neurons of the
    class to their mean (or zero) inside the live model and score its masked-word predictions
    on words of the class and on other words, against ``n_random`` random sets of the same
    size and the same count per layer: table ``interventions``. The masked-LM head is the
    checkpoint's own, or one trained on the frozen encoder and kept under ``mlm_heads/`` next
    to the store."""
    from neuro_pipeline.extraction import load_model
    from neuro_pipeline.intervention.mlm import (
        checkpoint_mlm_head,
        concept_masks,
        load_mlm_head,
        masked_word_predictions,
        neuron_ablation_effects,
        save_mlm_head,
        summarize_ablation_effects,
        train_mlm_head,
    )

    start = time.perf_counter()
    ic = cfg.interventions
    aset = current_activation_set(cfg, store)
    key = stage_key(cfg, aset)
    train, test, _ = train_test(cfg, store, aset)
    classes = intervention_classes(cfg, train.labels)
    names = list(ic.methods) or ranking_names(cfg)
    model = load_model(cfg.model_dir, device=cfg.model.device, dtype=cfg.model.dtype,
                       component=cfg.model.component, random_init_seed=cfg.model.random_init_seed,
                       allow_pickle=cfg.model.allow_pickle)
    if model.kind != "encoder":
        raise ValueError(f"interventions measure masked-word prediction, which needs an encoder; "
                         f"{cfg.model_dir} is a {model.kind} model. Set interventions.enabled: false.")
    head = checkpoint_mlm_head(model)
    folder = mlm_head_dir(cfg, aset)
    if head is None and (folder / "mlm_head.json").is_file():
        head = load_mlm_head(model, folder)
    if head is None:
        head_words = [list(w) for w in store.read_tokens(cfg.name, splits=["train"])
                      .group_by("sentence_id", maintain_order=True).agg(pl.col("token").sort_by("position"))
                      ["token"].to_list()[:ic.head_sentences]]
        head = train_mlm_head(model, head_words, seed=ic.seed)
        save_mlm_head(head, folder)
    words, labels = _sentences(test, ic.max_words, ic.eval_sentences)
    means = train.X.mean(axis=0)
    per_class = {(m, label): neurons.tolist()
                 for m, classes_of in read_class_orders(cfg, store, aset, max_rank=ic.k).items()
                 for label, neurons in classes_of.items()}
    frames = []
    total = len(classes) * len(names)
    if progress is not None:
        progress(0, total)
    for i, label in enumerate(classes):
        if not any(label in sentence for sentence in labels):
            log.warning("interventions: no evaluation sentence has a word of class %r; skipped.", label)
            continue
        plan = concept_masks(labels, label, n_concept=2, n_outside=2, seed=ic.seed)
        baseline = masked_word_predictions(model, head, words, plan, labels=labels)
        for j, name in enumerate(names):
            neurons = per_class.get((name, label))
            source = "class"
            if neurons is None:  # a method without per-class rankings: its global top k
                neurons, source = read_ranking(cfg, store, aset, name).order[:ic.k].tolist(), "global"
            effects = neuron_ablation_effects(model, head, words, labels, plan, neurons, concept=label,
                                              n_random=ic.n_random, mode=ic.mode, means=means,
                                              top_k=list(ic.top_k), seed=ic.seed, baseline=baseline)
            layers = np.bincount(np.asarray(neurons) // aset.hidden_size, minlength=aset.n_layers)
            frames.append(summarize_ablation_effects(effects).with_columns(
                pl.lit(name).alias("method"), pl.lit(source).alias("ranking"),
                pl.lit(",".join(map(str, layers))).alias("layer_counts"), pl.lit(ic.mode).alias("mode")))
            if progress is not None:
                progress(i * len(names) + j + 1, total)
    table = (pl.concat(frames) if frames else pl.DataFrame()).rename({"concept": "label"}, strict=False)
    store.replace_rows("interventions", keyed(table, key), key)
    record = {k: v for k, v in getattr(head, "training_record", {}).items() if k != "model_dir"}
    return InterventionSummary(activation_set=aset.activation_set, task=cfg.task, head=record, classes=classes,
                               methods=names, rows=table.to_dicts(), seconds=round(time.perf_counter() - start, 3))


def read_interventions(cfg: PipelineConfig, store: Store, aset: ActivationSet) -> tuple[pl.DataFrame, str]:
    """The stored intervention rows, and how the masked-LM head came about (see :func:`head_text`)."""
    rows = tables.read(store, stage_key(cfg, aset))
    record = {}
    if rows.height and (mlm_head_dir(cfg, aset) / "mlm_head.json").is_file():
        record = json.loads((mlm_head_dir(cfg, aset) / "mlm_head.json").read_text(encoding="utf-8"))
    return rows, head_text(record)


def check_interventions(cfg: PipelineConfig, store: Store):
    """great-expectations suite over the accuracy rows: baseline, top-k and random accuracies in [0, 1]."""
    from neuro_pipeline.quality import validate_table

    aset = current_activation_set(cfg, store)
    frame = tables.accuracies(store, stage_key(cfg, aset))
    unit = (0.0, 1.0)
    return validate_table("model_interventions", frame, ranges={"baseline": unit, "top": unit, "random_mean": unit},
                          not_null=("baseline", "top", "random_mean"))


def metadata(s: InterventionSummary) -> Metadata:
    rows = [r for r in s.rows if r["group"] == "concept" and r["metric"] == "accuracy"
            and r["top_k"] == min(x["top_k"] for x in s.rows)] if s.rows else []
    md: Metadata = {"classes": ", ".join(s.classes), "methods": ", ".join(s.methods), "seconds": s.seconds,
                    "mlm_head": Json(s.head)}
    if rows:
        md["accuracy_drop"] = Table(
            ["class", "method", "baseline", "top-k ablated", "random-k ablated (95% interval)"],
            [[r["label"], r["method"], f"{r['baseline']:.3f}", f"{r['top']:.3f}",
              f"{r['random_mean']:.3f} [{r['random_low']:.3f}, {r['random_high']:.3f}]"] for r in rows])
    return md

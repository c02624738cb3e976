"""What every stage shares: the activation set of the configured model, a split's activation
matrix joined with its labels, the key of a stage's rows, and small helpers (neuron names,
threads, progress)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from neuro_pipeline.config import PipelineConfig
from neuro_pipeline.matrix import is_file_backed, new_matrix
from neuro_pipeline.stages.versions import activation_set_id, model_version
from neuro_pipeline.store import ActivationSet, Store
from neuro_pipeline.store.tables import activations as activation_tables
from neuro_pipeline.store.tables import corpus as corpus_tables

#: A progress callback: (done, total).
Progress = Callable[[int, int], None]


def current_activation_set(cfg: PipelineConfig, store: Store) -> ActivationSet:
    """The activation set of the configured model and extraction settings (must be materialized)."""
    return store.activation_set(activation_set_id(cfg, model_version(cfg)))


def stage_key(cfg: PipelineConfig, aset: ActivationSet) -> dict[str, str]:
    """The key of an analysis's rows for one task and activation set: analysis, activation_set, task."""
    return {"analysis": cfg.name, "activation_set": aset.activation_set, "task": cfg.task}


def keyed(frame: pl.DataFrame, key: dict[str, Any], **extra: Any) -> pl.DataFrame:
    """``frame`` with the key columns (and ``extra`` columns) set to constants, ready to store."""
    return frame.with_columns(*[pl.lit(v).alias(k) for k, v in {**key, **extra}.items()])


def layer_unit(hidden_size: int) -> list[pl.Expr]:
    """The ``layer`` and ``unit`` columns of a flat ``neuron`` column (layer-major)."""
    return [(pl.col("neuron") // hidden_size).cast(pl.Int32).alias("layer"),
            (pl.col("neuron") % hidden_size).cast(pl.Int32).alias("unit")]


def neuron_name(neuron: int, hidden_size: int) -> str:
    """Human name of a flat neuron index: ``L3:117`` is unit 117 of layer 3 (0 = embeddings)."""
    return f"L{neuron // hidden_size}:{neuron % hidden_size}"


def ranking_names(cfg: PipelineConfig) -> list[str]:
    """The names of the configured rankings, in config order (one ranking asset each)."""
    return [m.name for m in cfg.ranking.methods]


def selection_probe_params(cfg: PipelineConfig) -> dict[str, Any]:
    """Settings of every probe retrained on selected neurons (top/random/bottom, ablation,
    selectivity, layers, fewest neurons): the library default with ``evaluation.selection_probe``
    on top."""
    from neuro_pipeline.evaluation.selection import DEFAULT_SELECTION_PROBE_PARAMS

    return {**DEFAULT_SELECTION_PROBE_PARAMS, **cfg.evaluation.selection_probe}


def use_threads(cfg: PipelineConfig) -> None:
    """Apply ``model.threads`` (torch intra-op threads) to this process, if set."""
    if cfg.model.threads is not None:
        import torch

        if torch.get_num_threads() != cfg.model.threads:
            torch.set_num_threads(cfg.model.threads)


def check_device(device: str) -> None:
    """A clear error when ``model.device`` names hardware this machine does not have."""
    import torch

    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"model.device is {device!r} but this torch ({torch.__version__}) sees no CUDA "
                             "device; set model.device: cpu or install a CUDA build of torch.")
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise ValueError(f"model.device is {device!r} but only {torch.cuda.device_count()} CUDA device(s) exist.")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("model.device is 'mps' but this torch has no MPS (Apple GPU) support here; "
                         "set model.device: cpu.")


# --------------------------------------------------------------------- matrices
@dataclass
class Split:
    """One split's activation matrix (words × neurons) with each row's label, key
    (sentence_id, position) and word; sentences rejected for length are left out and counted."""

    X: np.ndarray
    labels: np.ndarray
    keys: pl.DataFrame
    n_skipped_rejected: int
    words: np.ndarray


def load_split(cfg: PipelineConfig, store: Store, aset: ActivationSet, split: str) -> Split:
    """Activation matrix and labels of one split, joined on keys; rejected sentences counted.
    The training split is undersampled when ``balance`` is set."""
    use_threads(cfg)
    tokens = store.read_tokens(cfg.name, splits=[split])
    if cfg.concept is not None:
        concept = corpus_tables.task_labels(store, cfg.name, cfg.task)
        tokens = tokens.drop("label").join(concept, on=["sentence_id", "position"], how="left", maintain_order="left")
        if tokens["label"].null_count():
            raise ValueError(f"{store.path}: {tokens['label'].null_count()} words have no label for concept task "
                             f"'{cfg.task}'; re-materialize annotated_corpus.")
    if split == "train" and cfg.balance is not None:
        from neuro_pipeline.corpus.build import balance

        tokens = tokens[balance(tokens["label"].to_numpy(), cfg.balance).indices]
    rejected = activation_tables.rejected_sentences(store, aset.activation_set)
    kept = tokens.filter(~pl.col("sentence_hash").is_in(rejected))
    # Larger than evaluation.matrix_memory_mb: a memory-mapped file the probes read in chunks,
    # its rows (and so the labels and keys) in the store's order so that it is filled
    # sequentially. In memory the rows stay in corpus order.
    out = new_matrix((kept.height, aset.n_neurons), limit_mb=cfg.evaluation.matrix_memory_mb,
                     folder=cfg.store_path.parent / "matrix_cache")
    if is_file_backed(out):
        kept = kept[store.storage_order(aset.activation_set, kept.select("sentence_hash", "position"))]
    X = store.read_activation_matrix(aset.activation_set, kept.select("sentence_hash", "position"), out=out)
    return Split(X=X, labels=kept["label"].to_numpy(), keys=kept.select("sentence_id", "position"),
                 n_skipped_rejected=tokens.height - kept.height, words=kept["token"].to_numpy())


def eval_split_name(cfg: PipelineConfig, store: Store) -> str:
    """The split results are measured on: test, else dev."""
    splits = corpus_tables.split_names(store, cfg.name)
    for name in ("test", "dev"):
        if name in splits:
            return name
    raise ValueError(f"corpus '{cfg.name}' has no test or dev split to evaluate on; give corpus.test "
                     "or a corpus.test_fraction above 0.")


def train_test(cfg: PipelineConfig, store: Store, aset: ActivationSet) -> tuple[Split, Split, str]:
    """The training split, the evaluation split and the evaluation split's name."""
    eval_split = eval_split_name(cfg, store)
    return load_split(cfg, store, aset, "train"), load_split(cfg, store, aset, eval_split), eval_split


# ------------------------------------------------------------------------ tasks
def each_task(cfg: PipelineConfig, stage: Callable[..., Any], *args: Any, **kwargs: Any) -> list[Any]:
    """Run a per-task stage for every task of the analysis (the corpus's labels, then each
    concept), in order; returns one summary per task."""
    return [stage(cfg.for_task(task), *args, **kwargs) for task in cfg.tasks]


def check_each_task(cfg: PipelineConfig, check: Callable[..., Any], *args: Any):
    """Run a per-task quality suite for every task and merge the outcomes (each result
    carries its task; the merged suite passes only when every task's does)."""
    from neuro_pipeline.quality import QualityReport

    reports = [(task, check(cfg.for_task(task), *args)) for task in cfg.tasks]
    if len(reports) == 1:
        return reports[0][1]
    merged = QualityReport(suite=reports[0][1].suite, success=all(r.success for _, r in reports))
    for task, report in reports:
        merged.results += [{**r, "expectation": f"{task}: {r['expectation']}"} for r in report.results]
    return merged

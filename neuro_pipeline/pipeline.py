"""The four stages as plain functions: corpus → activations → rankings → report.

Start here to see what the pipeline computes. Each ``materialize_*`` function reads what
the stage before it stored, computes, writes its tables to the :class:`~neuro_pipeline.store.Store`
in one transaction, and returns a small summary (plain Python values) that the Dagster
assets attach as metadata. A researcher can call them from a notebook in order, or call
:func:`run_analysis` for the whole chain; the Dagster code location calls exactly the
same functions, one per asset.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from neuro_pipeline.config import PipelineConfig
from neuro_pipeline.hashing import hash_directory, hash_file, short_version
from neuro_pipeline.matrix import is_file_backed, new_matrix
from neuro_pipeline.store import ActivationSet, Store, to_json

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (done, total)


# --------------------------------------------------------------------- versions
def model_version(cfg: PipelineConfig) -> str:
    """Content hash of the model directory (config, tokenizer, weights); for the random-weights
    control (``model.random_init_seed``) a hash of that and the seed."""
    version = hash_directory(cfg.model_dir)
    if cfg.model.random_init_seed is not None:
        from neuro_pipeline.extraction.model import random_init_version

        version = random_init_version(version, cfg.model.random_init_seed)
    return version


def corpus_version(cfg: PipelineConfig) -> str:
    """Hash of the corpus files' bytes and of the options that turn them into labelled tokens."""
    h = hashlib.sha256(cfg.section_hash("corpus", "concepts", "balance").encode())
    for split in ("train", "dev", "test"):
        for key in (split, f"{split}_labels", f"{split}_pairs"):
            path = cfg.path(getattr(cfg.corpus, key))
            if path is not None:
                h.update(f"{key}={hash_file(path)}".encode())
    for concept in cfg.concepts:
        for path in _concept_files(cfg, concept):
            h.update(f"{concept.name}={hash_file(path)}".encode())
    return h.hexdigest()[:16]


def _concept_files(cfg: PipelineConfig, concept) -> list[Path]:
    """Files a concept's labels depend on: its word list, or the module of its function."""
    if concept.words_file:
        return [cfg.path(concept.words_file)]
    if concept.function:
        import importlib.util

        module = concept.function.split(":")[0] if ":" in concept.function else concept.function.rsplit(".", 1)[0]
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            return []
        return [Path(spec.origin)] if spec is not None and spec.origin and Path(spec.origin).is_file() else []
    return []


def settings_version(cfg: PipelineConfig) -> str:
    """Hash of the settings that change results after the corpus: extraction, ranking, evaluation."""
    extra = "" if cfg.model.component is None else f"|component={cfg.model.component}"
    return hashlib.sha256(
        (cfg.section_hash("extraction", "ranking", "evaluation") + cfg.model.dtype + extra).encode()
    ).hexdigest()[:16]


def activation_set_id(cfg: PipelineConfig, model_ver: str) -> str:
    key = f"{model_ver}|{cfg.extraction.aggregation}|{cfg.model.dtype}|{cfg.extraction.long_sentences}"
    if cfg.extraction.storage_dtype != "float32":
        key += f"|storage={cfg.extraction.storage_dtype}"  # float32 sets keep the ids they always had
    if cfg.extraction.storage != "duckdb":
        key += f"|{cfg.extraction.storage}"
    if cfg.model.component is not None:
        key += f"|{cfg.model.component}"  # T5's encoder and decoder states are different sets
    return hashlib.sha256(key.encode()).hexdigest()[:16]


# ----------------------------------------------------------------------- corpus
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


def read_corpus(cfg: PipelineConfig) -> pl.DataFrame:
    """Read (or generate) the configured corpus and return its keyed token table."""
    from neuro_pipeline.corpus import sentences_to_table

    return sentences_to_table(read_splits(cfg), corpus_id=cfg.name)


def read_splits(cfg: PipelineConfig) -> dict[str, list]:
    """Read (or generate) the configured corpus as sentences per split (train, dev, test)."""
    from neuro_pipeline.corpus import generate_demo_corpus, read_conllu, read_parallel, split_sentences

    c = cfg.corpus
    if c.format == "demo":
        sentences = generate_demo_corpus(c.demo_sentences, seed=c.demo_seed)
        splits = split_sentences(sentences, dev_fraction=c.dev_fraction, test_fraction=c.test_fraction,
                                 seed=c.split_seed)
    else:
        def read(split: str):
            words = cfg.path(getattr(c, split))
            if words is None:
                return None
            if c.format == "conllu":
                return read_conllu(words, label_column=c.label_column)
            if c.format == "text":
                from neuro_pipeline.corpus.text import read_text

                return list(read_text(words, tokenizer=c.tokenizer, pairs=c.pairs).sentences)
            return read_parallel(words, cfg.path(getattr(c, f"{split}_labels")),
                                 cfg.path(getattr(c, f"{split}_pairs")))

        given = {s: read(s) for s in ("train", "dev", "test")}
        if given["test"] is None and given["dev"] is None:
            splits = split_sentences(given["train"], dev_fraction=c.dev_fraction,
                                     test_fraction=c.test_fraction, seed=c.split_seed)
        else:
            splits = {s: v for s, v in given.items() if v is not None}
    splits = {s: v for s, v in splits.items() if v}
    if "train" not in splits:
        raise ValueError(f"{cfg.source}: the corpus has no training sentences after splitting.")
    return splits


def task_label_table(cfg: PipelineConfig, table: pl.DataFrame) -> pl.DataFrame:
    """The labels of every concept task (``concepts`` in the config) for the corpus's words:
    corpus_id, task, sentence_id, position, label."""
    from neuro_pipeline.corpus.concepts import load_concept

    if not cfg.concepts:
        return pl.DataFrame()
    sentences = (table.sort("sentence_id", "position").group_by("sentence_id", maintain_order=True)
                 .agg(pl.col("token"), pl.col("position")))
    frames = []
    for c in cfg.concepts:
        concept = load_concept(c, cfg.base_dir)
        labels = [concept.label_words(list(words)) for words in sentences["token"].to_list()]
        frames.append(sentences.select("sentence_id", "position").with_columns(
            pl.Series("label", labels, dtype=pl.List(pl.String))).explode("position", "label")
            .with_columns(pl.lit(cfg.name).alias("corpus_id"), pl.lit(c.name).alias("task")))
    return pl.concat(frames).select("corpus_id", "task", pl.col("sentence_id").cast(pl.Int32),
                                    pl.col("position").cast(pl.Int32), "label")


def balance_table(cfg: PipelineConfig, table: pl.DataFrame, task_labels: pl.DataFrame) -> pl.DataFrame:
    """Training words per class before and after undersampling, for every task (empty when
    ``balance`` is off)."""
    if cfg.balance is None:
        return pl.DataFrame()
    rows = []
    for task in cfg.tasks:
        labels = _train_labels(cfg.for_task(task), table, task_labels)
        result = _balance(cfg, labels)
        rows += [{"corpus_id": cfg.name, "task": task, "label": lab, "n_before": n,
                  "n_after": result.counts_after.get(lab, 0), "seed": cfg.balance.seed,
                  "target": str(cfg.balance.target)} for lab, n in sorted(result.counts_before.items())]
    return pl.DataFrame(rows)


def _train_labels(cfg: PipelineConfig, table: pl.DataFrame, task_labels: pl.DataFrame) -> np.ndarray:
    train = table.filter(pl.col("split") == "train").sort("sentence_id", "position")
    if cfg.concept is None:
        return train["label"].to_numpy()
    mine = task_labels.filter(pl.col("task") == cfg.task).select("sentence_id", "position", "label")
    return train.select("sentence_id", "position").join(mine, on=["sentence_id", "position"], how="left",
                                                          maintain_order="left")["label"].to_numpy()


def _balance(cfg: PipelineConfig, labels: np.ndarray):
    from neuro_pipeline.corpus.balance import balance_labels

    return balance_labels(np.asarray(labels).astype(str), seed=cfg.balance.seed, target=cfg.balance.target)


def materialize_corpus(cfg: PipelineConfig, store: Store) -> CorpusSummary:
    """Stage 1: read the corpus, key every word, label it for every concept task, and store
    the ``tokens`` rows (with ``task_labels`` and the ``task_balance`` counts)."""
    from neuro_pipeline.corpus import pairs_table, sentences_to_table

    splits = read_splits(cfg)
    table = sentences_to_table(splits, corpus_id=cfg.name)
    pairs = pairs_table(splits, corpus_id=cfg.name)
    labels = task_label_table(cfg, table)
    balance = balance_table(cfg, table, labels)
    store.write_tokens(table, labels, balance, pairs)
    summary = summarize_corpus(cfg, table, labels, balance)
    summary.n_pairs = pairs.height
    return summary


def summarize_corpus(cfg: PipelineConfig, table: pl.DataFrame, task_labels: pl.DataFrame | None = None,
                     balance: pl.DataFrame | None = None) -> CorpusSummary:
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
    )


# ------------------------------------------------------------------ activations
@dataclass
class ActivationSummary:
    activation_set: str
    model_version: str
    model_dir: str
    n_layers: int
    hidden_size: int
    n_sentences: int
    n_extracted: int
    n_reused: int
    n_rows: int
    n_windowed: int
    n_rejected: int
    n_words_without_subwords: int
    #: The whole stage; ``load_seconds`` of it went to hashing and loading the model
    #: (nothing is loaded when every sentence is already stored), ``import_seconds`` of
    #: those to importing transformers (and torch) into a fresh process.
    seconds: float
    words_per_second: float | None
    load_seconds: float = 0.0
    import_seconds: float = 0.0
    model_label: str = ""
    #: Of ``seconds``, the time extraction waited for the store (writes that did not
    #: overlap with the model's work, the last one included).
    write_wait_seconds: float = 0.0
    #: Words extracted by this run (not reused).
    n_words_extracted: int = 0
    #: Extraction steps whose work this summary adds up (``execution.shard_sentences``).
    n_shards: int = 1
    #: Sentences this run found too long and recorded as rejected.
    n_rejected_new: int = 0


def _corpus_sentences(cfg: PipelineConfig, store: Store) -> pl.DataFrame:
    """One row per distinct sentence of the corpus, in corpus order: sentence_id,
    sentence_hash, split (of its first occurrence), token (the words), and pair (the second
    segment) for a pair corpus."""
    tokens = store.read_tokens(cfg.name)
    # One entry per distinct sentence: a sentence that occurs twice is extracted once.
    sentences = (tokens.group_by("sentence_id", maintain_order=True)
                 .agg(pl.col("sentence_hash").first(), pl.col("split").first(), pl.col("token").sort_by("position"))
                 .unique(subset="sentence_hash", keep="first", maintain_order=True))
    pairs = store.read_pairs(cfg.name)
    if pairs.height:
        sentences = sentences.join(pairs, on="sentence_id", how="left", maintain_order="left")
        if sentences["pair"].null_count():
            raise ValueError(f"{cfg.name}: {sentences['pair'].null_count()} of {sentences.height} sentences have "
                             "no second segment while the others are sentence pairs.")
    return sentences


def extraction_shards(cfg: PipelineConfig, store: Store) -> list[int]:
    """The shards of the corpus that still have sentences to extract (``execution.shard_sentences``
    distinct sentences each, in corpus order); ``[0]`` when none has (its step then only
    confirms that everything is stored). Without sharding, ``[0]``: the whole corpus."""
    size = cfg.execution.shard_sentences
    if size <= 0:
        return [0]
    sentences = _corpus_sentences(cfg, store)
    done = set(store.extracted_sentences(activation_set_id(cfg, model_version(cfg)))["sentence_hash"].to_list())
    pending = np.flatnonzero(~np.isin(sentences["sentence_hash"].to_numpy(), list(done)))
    return sorted({int(i) // size for i in pending}) or [0]


def materialize_activations(cfg: PipelineConfig, store: Store, *, progress: Progress | None = None,
                            flush_words: int = 8192, shard: int | None = None) -> ActivationSummary:
    """Stage 2: extract every layer for each corpus sentence not yet stored for this model version.

    Sentences are content-addressed by their hash, so unchanged sentences are reused and
    an interrupted run (even one killed with SIGKILL) resumes where it stopped: the
    activations are written every ``flush_words`` words, each write one transaction that
    also marks its sentences done.

    ``shard``: only that shard of ``execution.shard_sentences`` sentences (see
    :func:`extraction_shards`); shards may run at once, in different processes or on
    different machines, and :func:`merge_activation_shards` sums them up. The summary is
    then the shard's.
    """
    from neuro_pipeline.extraction import ExtractionStats, extract_activations, load_model
    from neuro_pipeline.extraction.model import import_model_code

    use_threads(cfg)
    sentences = _corpus_sentences(cfg, store)
    if shard is not None and cfg.execution.shard_sentences > 0:
        size = cfg.execution.shard_sentences
        if not 0 <= shard * size < max(sentences.height, 1):
            raise ValueError(f"{cfg.name}: no extraction shard {shard}: the corpus has {sentences.height} "
                             f"distinct sentences, {size} a shard.")
        sentences = sentences.slice(shard * size, size)
    start = time.perf_counter()
    import_seconds = 0.0
    version = model_version(cfg)
    set_id = activation_set_id(cfg, version)
    done = set(store.extracted_sentences(set_id)["sentence_hash"].to_list())
    todo = sentences.filter(~pl.col("sentence_hash").is_in(list(done)))
    known = store.query("SELECT count(*) AS n FROM activation_sets WHERE activation_set = ?", [set_id])["n"][0]
    if todo.is_empty() and known:
        # Nothing to extract: the model is not even loaded.
        aset, model = store.activation_set(set_id), None
    else:
        before_import = time.perf_counter()
        import_model_code()  # timed apart: a once-per-process cost, not extraction work
        import_seconds = time.perf_counter() - before_import
        check_device(cfg.model.device)
        model = load_model(cfg.model_dir, device=cfg.model.device, dtype=cfg.model.dtype,
                           component=cfg.model.component, random_init_seed=cfg.model.random_init_seed,
                           allow_pickle=cfg.model.allow_pickle)
        if model.version != version:
            raise RuntimeError(f"{cfg.model_dir}: the model changed while it was being read "
                               f"(version {short_version(version)} then {short_version(model.version)}); "
                               "run again once it is completely written.")
        aset = ActivationSet(
            activation_set=set_id, model_version=model.version,
            model_dir=str(cfg.model_dir), aggregation=cfg.extraction.aggregation, dtype=cfg.model.dtype,
            long_sentences=cfg.extraction.long_sentences, n_layers=model.n_layers, hidden_size=model.hidden_size,
            storage_dtype=cfg.extraction.storage_dtype,
            parquet_dir=None if cfg.parquet_dir is None else str(cfg.parquet_dir))
        store.register_activation_set(aset)
    store.register_model_version(cfg.name, aset, cfg.model_label or short_version(version))
    load_seconds = time.perf_counter() - start
    hashes = todo["sentence_hash"].to_list()
    words = todo["token"].to_list()
    seconds = todo["pair"].to_list() if "pair" in todo.columns else None
    stats = ExtractionStats()
    buffer: list[tuple[str, np.ndarray, bool]] = []
    buffered_words = 0
    # One split at a time (corpus order within each), so that every write holds one split's
    # sentences: reading a split's matrix then scans only that split's files.
    splits = todo["split"].to_list()
    groups = [np.flatnonzero(np.asarray(splits, dtype=object) == split) for split in dict.fromkeys(splits)]
    done_before = 0
    rejected_indices: list[int] = []

    def on_batch(n: int) -> None:
        if progress is not None:
            progress(done_before + n, len(words))

    windowed_before = 0
    with _BackgroundWriter(store, aset, inline=_write_inline(cfg)) as writer:
        for group in ([] if model is None else groups):
            n_rejected = len(stats.rejected_sentence_indices)
            for index, array in extract_activations(
                    model, [words[i] for i in group], aggregation=cfg.extraction.aggregation,
                    batch_size=cfg.model.batch_size, long_sentences=cfg.extraction.long_sentences, stats=stats,
                    progress=on_batch, pairs=None if seconds is None else [seconds[i] for i in group],
                    batch_tokens=cfg.model.pass_tokens()):
                windowed = stats.n_windowed_sentences > windowed_before
                windowed_before = stats.n_windowed_sentences
                buffer.append((hashes[group[index]], array, windowed))
                buffered_words += array.shape[0]
                if buffered_words >= flush_words:
                    writer.put(buffer)
                    buffer, buffered_words = [], 0
            rejected_indices += [int(group[i]) for i in stats.rejected_sentence_indices[n_rejected:]]
            if buffer and group is not groups[-1]:
                writer.put(buffer)
                buffer, buffered_words = [], 0
            done_before += len(group)
    if progress is not None and words:
        progress(len(words), len(words))
    rejected = [(hashes[i], len(words[i])) for i in rejected_indices]
    before_last = time.perf_counter()
    store.write_activations(aset, buffer, rejected)
    write_wait = writer.wait_seconds + time.perf_counter() - before_last
    seconds = time.perf_counter() - start
    extract_seconds = seconds - load_seconds
    counts = _stored_counts(store, aset.activation_set, sentences)
    return ActivationSummary(
        activation_set=aset.activation_set, model_version=version, model_dir=str(cfg.model_dir),
        n_layers=aset.n_layers, hidden_size=aset.hidden_size, n_sentences=sentences.height,
        n_extracted=len(hashes) - len(rejected), n_reused=sentences.height - len(hashes),
        n_words_without_subwords=stats.n_words_without_subwords,
        seconds=round(seconds, 3), load_seconds=round(load_seconds, 3), import_seconds=round(import_seconds, 3),
        write_wait_seconds=round(write_wait, 3), n_rejected_new=len(rejected),
        model_label=cfg.model_label, n_words_extracted=stats.n_words,
        words_per_second=(round(stats.n_words / extract_seconds, 1)
                          if stats.n_words and extract_seconds > 0 else None), **counts,
    )


def _stored_counts(store: Store, activation_set: str, sentences: pl.DataFrame) -> dict[str, int]:
    """Rows, windowed and rejected sentences as stored for ``sentences``; raises when one of
    them is not stored at all (a shard that did not run)."""
    status = store.extracted_sentences(activation_set)
    in_corpus = status.filter(pl.col("sentence_hash").is_in(sentences["sentence_hash"].to_list()))
    missing = sentences.height - in_corpus["sentence_hash"].n_unique()
    if missing:
        raise RuntimeError(f"activation set {activation_set}: {missing} of {sentences.height} sentences of the "
                           "corpus are not stored (an extraction shard did not finish); run the extraction again.")
    return {"n_rows": int(in_corpus.filter(pl.col("status") == "ok")["n_words"].sum() or 0),
            "n_windowed": int(in_corpus["windowed"].sum() or 0),
            "n_rejected": int((in_corpus["status"] == "rejected").sum())}


def merge_activation_shards(cfg: PipelineConfig, store: Store, parts: list[ActivationSummary]) -> ActivationSummary:
    """The summary of the whole corpus from its shards' summaries (:func:`materialize_activations`
    with ``shard``): checks that every sentence of the corpus is stored. ``seconds`` is the
    shards' summed work (they may have run at once), ``words_per_second`` per shard-second."""
    if not parts:
        raise ValueError("merge_activation_shards needs at least one shard's summary.")
    sentences = _corpus_sentences(cfg, store)
    first = parts[0]
    if any(p.activation_set != first.activation_set for p in parts):
        raise RuntimeError(f"the extraction shards wrote different activation sets "
                           f"{sorted({p.activation_set for p in parts})}: the model or the settings changed "
                           "during the run; run it again.")
    counts = _stored_counts(store, first.activation_set, sentences)
    extracted = sum(p.n_extracted for p in parts)
    words = sum(p.n_words_extracted for p in parts)
    work = sum(p.seconds - p.load_seconds for p in parts)
    return ActivationSummary(
        activation_set=first.activation_set, model_version=first.model_version, model_dir=first.model_dir,
        n_layers=first.n_layers, hidden_size=first.hidden_size, n_sentences=sentences.height,
        n_extracted=extracted, n_reused=sentences.height - extracted - sum(p.n_rejected_new for p in parts),
        n_words_without_subwords=sum(p.n_words_without_subwords for p in parts),
        seconds=round(sum(p.seconds for p in parts), 3), load_seconds=round(sum(p.load_seconds for p in parts), 3),
        import_seconds=round(sum(p.import_seconds for p in parts), 3),
        write_wait_seconds=round(sum(p.write_wait_seconds for p in parts), 3), model_label=first.model_label,
        words_per_second=round(words / work, 1) if words and work > 0 else None, n_words_extracted=words,
        n_shards=len(parts), **counts)


def current_activation_set(cfg: PipelineConfig, store: Store) -> ActivationSet:
    """The activation set of the configured model and extraction settings (must be materialized)."""
    return store.activation_set(activation_set_id(cfg, model_version(cfg)))


def _corpus_keys(cfg: PipelineConfig, store: Store) -> pl.DataFrame:
    """The distinct (sentence_hash, position) words of the corpus."""
    return store.query("SELECT DISTINCT sentence_hash, position FROM tokens WHERE corpus_id = ?", [cfg.name])


def activation_statistics(cfg: PipelineConfig, store: Store, aset: ActivationSet) -> tuple[pl.DataFrame, list[int]]:
    """One streaming pass over the corpus's activations (record batches; memory does not grow
    with the corpus): per layer the rows, the smallest and largest width and the non-finite
    values (layer, n_rows, width_min, width_max, n_nonfinite); and the constant ("dead")
    neurons, global ids of units whose value is the same on every word (NaN ignored)."""
    n_layers, hsz = aset.n_layers, aset.hidden_size
    n_rows = np.zeros(n_layers, dtype=np.int64)
    n_nonfinite = np.zeros(n_layers, dtype=np.int64)
    width_min = np.full(n_layers, np.iinfo(np.int64).max)
    width_max = np.full(n_layers, -1, dtype=np.int64)
    low = np.full((n_layers, hsz), np.inf, dtype=np.float32)
    high = np.full((n_layers, hsz), -np.inf, dtype=np.float32)
    for batch in store.activation_batches(aset.activation_set, _corpus_keys(cfg, store)):
        layer = batch.layer
        n_rows += np.bincount(layer, minlength=n_layers)
        np.minimum.at(width_min, layer, batch.width)
        np.maximum.at(width_max, layer, batch.width)
        layer = layer[batch.full]  # rows of another width fail the width expectation; skip their values
        values = batch.values
        bad = (~np.isfinite(values)).sum(axis=1)
        all_finite = not bad.any()
        if not all_finite:
            n_nonfinite += np.bincount(layer, weights=bad, minlength=n_layers).astype(np.int64)
        present_layers = np.unique(layer)
        for j in present_layers:
            # Files hold one layer after another, so a batch is mostly one layer: no copy then.
            rows = values if len(present_layers) == 1 else values[layer == j]
            if all_finite:
                np.minimum(low[j], rows.min(axis=0, initial=np.inf), out=low[j])
                np.maximum(high[j], rows.max(axis=0, initial=-np.inf), out=high[j])
                continue
            with np.errstate(invalid="ignore"):
                low[j] = np.fmin(low[j], np.nanmin(rows, axis=0, initial=np.inf))
                high[j] = np.fmax(high[j], np.nanmax(rows, axis=0, initial=-np.inf))
    present = n_rows > 0
    summary = pl.DataFrame({
        "layer": np.arange(n_layers)[present], "n_rows": n_rows[present], "width_min": width_min[present],
        "width_max": width_max[present], "n_nonfinite": n_nonfinite[present]},
        schema={"layer": pl.Int16, "n_rows": pl.Int64, "width_min": pl.Int64, "width_max": pl.Int64,
                "n_nonfinite": pl.Int64})
    constant = [int(j) * hsz + int(u) for j, u in zip(*np.nonzero((low == high) & present[:, None]))]
    return summary, constant


def activation_layer_summary(cfg: PipelineConfig, store: Store) -> tuple[pl.DataFrame, int, ActivationSet]:
    """Per-layer summary of the corpus's activations, for the quality suite.

    Returns the summary (layer, n_rows, width_min, width_max, n_nonfinite, and the
    corpus-wide n_missing_sentences and n_word_count_mismatch), the number of rows
    expected per layer (corpus words of sentences that were not rejected), and the
    activation set.
    """
    summary, expected, aset, _ = _activation_summary(cfg, store)
    return summary, expected, aset


def _activation_summary(cfg: PipelineConfig, store: Store) -> tuple[pl.DataFrame, int, ActivationSet, list[int]]:
    """:func:`activation_layer_summary` and the constant neurons, from one pass over the set."""
    aset = current_activation_set(cfg, store)
    summary, constant = activation_statistics(cfg, store, aset)
    expected = store.query(
        """
        WITH keys AS (SELECT DISTINCT sentence_hash, position FROM tokens WHERE corpus_id = $cid)
        SELECT count(*) AS n FROM keys k
        WHERE NOT EXISTS (SELECT 1 FROM activation_sentences s WHERE s.activation_set = $aset
                          AND s.sentence_hash = k.sentence_hash AND s.status = 'rejected')
        """, {"cid": cfg.name, "aset": aset.activation_set})["n"][0]
    # Every corpus sentence must have been processed, with exactly its number of words.
    consistency = store.query(
        """
        WITH sent AS (SELECT sentence_hash, count(*) AS n_words FROM tokens WHERE corpus_id = $cid
                      GROUP BY sentence_id, sentence_hash)
        SELECT count(*) FILTER (WHERE s.sentence_hash IS NULL) AS n_missing_sentences,
               count(*) FILTER (WHERE s.sentence_hash IS NOT NULL AND s.n_words <> sent.n_words)
                   AS n_word_count_mismatch
        FROM sent LEFT JOIN activation_sentences s
          ON s.sentence_hash = sent.sentence_hash AND s.activation_set = $aset
        """, {"cid": cfg.name, "aset": aset.activation_set})
    summary = summary.with_columns(
        pl.lit(int(consistency["n_missing_sentences"][0])).alias("n_missing_sentences"),
        pl.lit(int(consistency["n_word_count_mismatch"][0])).alias("n_word_count_mismatch"))
    return summary, int(expected), aset, constant


# --------------------------------------------------------------------- matrices
@dataclass
class Split:
    X: np.ndarray
    labels: np.ndarray
    keys: pl.DataFrame
    n_skipped_rejected: int
    words: np.ndarray


class _BackgroundWriter:
    """Writes buffers of extracted sentences to the store in a second thread while the model
    computes the next batches (DuckDB, pyarrow and torch release the GIL). At most one buffer
    waits while another is written, so memory stays bounded; a write error is raised in the
    extracting thread at the next :meth:`put` or when the ``with`` block ends. Leaving the
    block waits until every buffer is committed.

    ``inline=True`` writes in the extracting thread instead (see :func:`_write_inline`)."""

    def __init__(self, store: Store, activation_set: ActivationSet, *, inline: bool = False) -> None:
        import queue
        import threading

        self._store, self._set, self.inline = store, activation_set, inline
        self._queue: queue.Queue = queue.Queue(maxsize=1)
        self._error: BaseException | None = None
        #: Seconds the extracting thread waited for a write to finish (the store kept up if ~0),
        #: or spent writing when inline.
        self.wait_seconds = 0.0
        self._thread = threading.Thread(target=self._run, name="activation-writer", daemon=True)

    def _run(self) -> None:
        while True:
            buffer = self._queue.get()
            if buffer is None:
                return
            if self._error is None:
                try:
                    self._store.write_activations(self._set, buffer)
                except BaseException as exc:  # re-raised in the extracting thread
                    self._error = exc

    def put(self, buffer: list) -> None:
        if self._error is not None:
            raise self._error
        start = time.perf_counter()
        if self.inline:
            self._store.write_activations(self._set, buffer)
        else:
            self._queue.put(buffer)
        self.wait_seconds += time.perf_counter() - start

    def __enter__(self) -> _BackgroundWriter:
        if not self.inline:
            self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        if self.inline:
            return
        start = time.perf_counter()
        self._queue.put(None)
        self._thread.join()
        self.wait_seconds += time.perf_counter() - start
        if self._error is not None and exc_info[0] is None:
            raise self._error


def _write_inline(cfg: PipelineConfig) -> bool:
    """Whether extraction writes between batches rather than beside them: when torch's
    threads already take every core this process may use, a writer thread only preempts
    one of them, and torch's parallel kernels wait for the slowest thread (on 2 cores the
    stage was 2-10% slower with the writer beside it, 3 reps of 3: benchmarks/extraction.py
    --writers inline,thread)."""
    import os

    import torch

    if cfg.model.device != "cpu":
        return False
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return torch.get_num_threads() >= cores


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


def load_split(cfg: PipelineConfig, store: Store, aset: ActivationSet, split: str) -> Split:
    """Activation matrix and labels of one split, joined on keys; rejected sentences counted."""
    use_threads(cfg)
    tokens = store.read_tokens(cfg.name, splits=[split])
    if cfg.concept is not None:
        concept = store.query("SELECT sentence_id, position, label FROM task_labels WHERE corpus_id = ? AND task = ?",
                              [cfg.name, cfg.task])
        tokens = tokens.drop("label").join(concept, on=["sentence_id", "position"], how="left", maintain_order="left")
        if tokens["label"].null_count():
            raise ValueError(f"{store.path}: {tokens['label'].null_count()} words have no label for concept task "
                             f"'{cfg.task}'; re-materialize annotated_corpus.")
    if split == "train" and cfg.balance is not None:
        tokens = tokens[_balance(cfg, tokens["label"].to_numpy()).indices]
    rejected = store.query(
        "SELECT sentence_hash FROM activation_sentences WHERE activation_set = ? AND status = 'rejected'",
        [aset.activation_set])["sentence_hash"].to_list()
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


def _eval_split_name(store: Store, cfg: PipelineConfig) -> str:
    splits = store.query("SELECT DISTINCT split FROM tokens WHERE corpus_id = ?", [cfg.name])["split"].to_list()
    for name in ("test", "dev"):
        if name in splits:
            return name
    raise ValueError(f"corpus '{cfg.name}' has no test or dev split to evaluate on; give corpus.test "
                     "or a corpus.test_fraction above 0.")


# ---------------------------------------------------------------------- ranking
@dataclass
class RankingSummary:
    activation_set: str
    model_version: str
    task: str
    name: str
    method: str
    params_hash: str
    n_train: int
    n_neurons: int
    n_ranked: int
    seconds: float
    fitted: dict[str, Any]
    top_neurons: list[dict[str, Any]]
    top_per_class: dict[str, list[str]]
    top_words: dict[str, list[str]] = field(default_factory=dict)


def _keyed(frame: pl.DataFrame, key: dict[str, Any], **extra: Any) -> pl.DataFrame:
    """``frame`` with the key columns (and ``extra`` columns) set to constants, ready to store."""
    return frame.with_columns(*[pl.lit(v).alias(k) for k, v in {**key, **extra}.items()])


def _layer_unit(hidden_size: int) -> list[pl.Expr]:
    """The ``layer`` and ``unit`` columns of a flat ``neuron`` column (layer-major)."""
    return [(pl.col("neuron") // hidden_size).cast(pl.Int32).alias("layer"),
            (pl.col("neuron") % hidden_size).cast(pl.Int32).alias("unit")]


def neuron_name(neuron: int, hidden_size: int) -> str:
    """Human name of a flat neuron index: ``L3:117`` is unit 117 of layer 3 (0 = embeddings)."""
    return f"L{neuron // hidden_size}:{neuron % hidden_size}"


def ranking_names(cfg: PipelineConfig) -> list[str]:
    """The names of the configured rankings, in config order (one ranking asset each)."""
    return [m.name for m in cfg.ranking.methods]


def materialize_ranking(cfg: PipelineConfig, store: Store, name: str) -> RankingSummary:
    """Stage 3 for one configured method: fit it on the training split, store its global and
    per-class rankings, its hyperparameters, and the top words of its best neurons."""
    from neuro_pipeline.ranking import get_ranker, ranking_table

    spec = cfg.ranking.method(name)
    aset = current_activation_set(cfg, store)
    train = load_split(cfg, store, aset, "train")
    ranker = get_ranker(spec.method, **spec.params)
    params_json = to_json({"method": spec.method, **ranker.get_params()})
    params_hash = hashlib.sha256(params_json.encode()).hexdigest()[:12]
    start = time.perf_counter()
    if "groups" in inspect.signature(ranker.fit).parameters:
        # held-out data for hyperparameter choices is split by sentence, never inside one
        ranker.fit(train.X, train.labels, groups=train.keys["sentence_id"].to_numpy())
    else:
        ranker.fit(train.X, train.labels)
    seconds = time.perf_counter() - start
    fitted = fitted_summary(ranker)
    if spec.diversify:
        _diversify(cfg, store, aset, ranker, fitted)
    hsz = aset.hidden_size
    key = {"analysis": cfg.name, "activation_set": aset.activation_set, "task": cfg.task, "method": name}
    table = _keyed(ranking_table(ranker).with_columns(*_layer_unit(hsz)), key,
                   model_version=aset.model_version, params_hash=params_hash)
    class_rows = []
    for label, order in (getattr(ranker, "class_rankings_", None) or {}).items():
        order = np.asarray(order)
        class_rows.append(pl.DataFrame({
            "label": str(label), "neuron": order.astype(np.int32),
            "rank": np.arange(1, len(order) + 1, dtype=np.int32)}))
    class_table = (pl.concat(class_rows) if class_rows else
                   pl.DataFrame(schema={"label": pl.Utf8, "neuron": pl.Int32, "rank": pl.Int32}))
    class_table = _keyed(class_table.with_columns(*_layer_unit(hsz)), key, params_hash=params_hash)
    run = pl.DataFrame([{**key, "params_hash": params_hash, "params": params_json,
                         "fitted": to_json(fitted), "n_train": int(train.X.shape[0]), "seconds": seconds}])
    words = _keyed(_top_words(cfg, train, ranker, class_table, hsz), key)
    probes = _keyed(_probe_frame(getattr(ranker, "probe_", None), int(train.X.shape[0])), key,
                    params_hash=params_hash)
    store.replace_tables({"rankings": table, "class_rankings": class_table, "ranking_runs": run,
                          "top_words": words, "ranking_probes": probes}, key)
    top = table.sort("rank").head(10)
    return RankingSummary(
        activation_set=aset.activation_set, model_version=aset.model_version, task=cfg.task, name=name,
        method=spec.method, params_hash=params_hash, n_train=int(train.X.shape[0]),
        n_neurons=int(train.X.shape[1]), n_ranked=int(ranker.n_ranked_), seconds=round(seconds, 3), fitted=fitted,
        top_neurons=[{"neuron": neuron_name(r["neuron"], hsz), "score": r["score"]} for r in top.iter_rows(named=True)],
        top_per_class={lab: [neuron_name(n, hsz) for n in grp.sort("rank")["neuron"].head(5).to_list()]
                       for (lab,), grp in class_table.group_by("label", maintain_order=True)},
        top_words={neuron_name(n, hsz): grp.sort("rank")["word"].to_list()
                   for (n,), grp in words.filter(pl.col("source") == "global")
                   .group_by("neuron", maintain_order=True)},
    )


def _diversify(cfg: PipelineConfig, store: Store, aset: ActivationSet, ranker: Any, fitted: dict[str, Any]) -> None:
    """Reorder the ranker's global ranking by the stored correlation clusters (one neuron per
    cluster first); scores become ``n_neurons - position`` so that they sort into the new order."""
    from neuro_pipeline.analysis import diversify_ranking

    clusters = store.query(
        "SELECT neuron, cluster FROM redundancy_neurons WHERE analysis = ? AND activation_set = ? ORDER BY neuron",
        [cfg.name, aset.activation_set])
    if clusters.height != aset.n_neurons:
        raise ValueError(f"ranking with diversify: true needs the correlation clusters of activation set "
                         f"{aset.activation_set}; materialize neuron_redundancy first.")
    order = diversify_ranking(ranker.ranking_[:ranker.n_ranked_], clusters["cluster"].to_numpy())
    order = np.concatenate([order, ranker.ranking_[ranker.n_ranked_:]])
    scores = np.full(len(order), -np.inf)
    scores[order[:ranker.n_ranked_]] = len(order) - np.arange(ranker.n_ranked_, dtype=np.float64)
    ranker._set_scores(scores)
    fitted["diversified"] = True
    fitted["n_clusters"] = int(clusters["cluster"].n_unique())


#: Best neurons of each class whose top words are stored (besides the global top neurons).
TOP_WORDS_PER_CLASS = 3


def _top_words(cfg: PipelineConfig, train: Split, ranker: Any, class_table: pl.DataFrame, hsz: int) -> pl.DataFrame:
    """Corpus search (NeuroX's get_top_words) over the training words for the method's best
    neurons (``source = 'global'``) and the best few of each class (``source = <label>``)."""
    from neuro_pipeline.analysis import top_words_table

    r = cfg.ranking
    wanted = [("global", int(n)) for n in ranker.ranking_[:min(r.top_words_neurons, ranker.n_ranked_)]]
    if r.top_words_neurons:
        for (label,), grp in class_table.group_by("label", maintain_order=True):
            wanted += [(str(label), int(n)) for n in grp.sort("rank")["neuron"].head(TOP_WORDS_PER_CLASS).to_list()]
    schema = {"source": pl.Utf8, "neuron": pl.Int32, "layer": pl.Int32, "unit": pl.Int32, "rank": pl.Int32,
              "word": pl.Utf8, "score": pl.Float64, "count": pl.Int64}
    if not wanted or not r.top_words:
        return pl.DataFrame(schema=schema)
    neurons = sorted({n for _, n in wanted})
    found = top_words_table(train.words, train.X, neurons, num_tokens=r.top_words,
                            min_threshold=r.top_words_min_threshold)
    sources = pl.DataFrame({"source": [s for s, _ in wanted], "neuron": [n for _, n in wanted]},
                           schema={"source": pl.Utf8, "neuron": pl.Int32})
    return (sources.join(found.with_columns(pl.col("neuron").cast(pl.Int32)), on="neuron", how="inner")
            .with_columns(*_layer_unit(hsz))
            .select(list(schema)).cast(schema))


def materialize_rankings(cfg: PipelineConfig, store: Store) -> list[RankingSummary]:
    """Stage 3 for every configured method, in config order."""
    return [materialize_ranking(cfg, store, name) for name in ranking_names(cfg)]


_PROBE_SCHEMA = {"classes": pl.Utf8, "n_train": pl.Int32, "n_features": pl.Int32, "coef": pl.Binary,
                 "intercept": pl.Binary, "mean": pl.Binary, "scale": pl.Binary}


def _probe_frame(probe: Any, n_train: int) -> pl.DataFrame:
    """The fitted probe of a linear-probe ranking as one ``ranking_probes`` row (none for
    other methods), so that the report scores the very probe the ranking came from instead
    of fitting it again (on EWT with the default elastic net, a 16 s fit)."""
    import json

    from neuro_pipeline.probe import LinearProbe

    if not isinstance(probe, LinearProbe) or not hasattr(probe, "coef_"):
        return pl.DataFrame(schema=_PROBE_SCHEMA)
    return pl.DataFrame([{
        "classes": json.dumps([str(c) for c in probe.classes_]), "n_train": n_train,
        "n_features": int(probe.coef_.shape[1]),
        "coef": np.ascontiguousarray(probe.coef_, dtype="<f4").tobytes(),
        "intercept": np.ascontiguousarray(probe.intercept_, dtype="<f4").tobytes(),
        "mean": np.ascontiguousarray(probe.mean_, dtype="<f8").tobytes(),
        "scale": np.ascontiguousarray(probe.scale_, dtype="<f8").tobytes()}], schema=_PROBE_SCHEMA)


def ranking_probe(store: Store, key: dict[str, Any], method: str, params: dict[str, Any], train: Split) -> Any:
    """The probe stored by the linear-probe ranking ``method`` (see :func:`_probe_frame`) as a
    fitted ``LinearProbe(**params)``, or None when none is stored or it was not fitted on
    these training words (their count, the neurons or the classes differ): the caller then
    fits one."""
    import json

    from neuro_pipeline.probe import LinearProbe

    rows = store.query("SELECT * FROM ranking_probes WHERE analysis = ? AND activation_set = ? AND task = ? "
                       "AND method = ?", [key["analysis"], key["activation_set"], key["task"], method])
    if rows.height != 1:
        return None
    row = rows.row(0, named=True)
    classes = np.unique(train.labels)
    if (row["n_train"] != train.X.shape[0] or row["n_features"] != train.X.shape[1]
            or json.loads(row["classes"]) != [str(c) for c in classes]):
        log.info("the probe stored by ranking '%s' was fitted on other training words; fitting the full probe",
                 method)
        return None
    probe = LinearProbe(**params)
    probe.classes_ = classes
    probe.coef_ = np.frombuffer(row["coef"], dtype="<f4").reshape(len(classes), -1).copy()
    probe.intercept_ = np.frombuffer(row["intercept"], dtype="<f4").copy()
    probe.mean_ = np.frombuffer(row["mean"], dtype="<f8").copy()
    probe.scale_ = np.frombuffer(row["scale"], dtype="<f8").copy()
    probe.n_features_in_ = int(row["n_features"])
    return probe


def fitted_summary(ranker: Any) -> dict[str, Any]:
    """The fitted hyperparameters worth recording (e.g. the regularisation chosen on held-out data)."""
    out: dict[str, Any] = {}
    for name in ("l1_", "l2_", "n_ranked_"):
        if hasattr(ranker, name):
            out[name.rstrip("_")] = getattr(ranker, name)
    search = getattr(ranker, "lambda_search_", None)
    if isinstance(search, pl.DataFrame):
        out["lambda_search"] = search.to_dicts()
    return out


@dataclass
class StoredRanking:
    name: str
    method: str
    order: np.ndarray
    n_ranked: int
    fitted: dict[str, Any]


def ranking_of(cfg: PipelineConfig, store: Store, aset: ActivationSet, name: str) -> StoredRanking:
    """The stored global ranking (best first) of one configured method, with its fitted hyperparameters."""
    import json

    where = [cfg.name, aset.activation_set, cfg.task, name]
    ranked = store.query(
        "SELECT neuron, rank FROM rankings WHERE analysis = ? AND activation_set = ? AND task = ? AND method = ? "
        "ORDER BY rank NULLS LAST, neuron", where)
    runs = store.query(
        "SELECT params, fitted FROM ranking_runs WHERE analysis = ? AND activation_set = ? AND task = ? "
        "AND method = ?", where)
    if ranked.is_empty() or runs.is_empty():
        raise ValueError(f"no '{name}' ranking stored for analysis '{cfg.name}' and activation set "
                         f"{aset.activation_set}; materialize its neuron_rankings asset first.")
    return StoredRanking(name=name, method=json.loads(runs["params"][0]).get("method", name),
                         order=ranked["neuron"].to_numpy(), n_ranked=int(ranked["rank"].count()),
                         fitted=json.loads(runs["fitted"][0]))


# -------------------------------------------------------------- method agreement
@dataclass
class AgreementSummary:
    activation_set: str
    task: str
    methods: list[str]
    ns: list[int]
    pairs: list[dict[str, Any]]
    votes: list[dict[str, Any]]
    vote_top: list[str]


def materialize_agreement(cfg: PipelineConfig, store: Store) -> AgreementSummary:
    """How far the configured methods agree (Fan et al. 2023): top-n Jaccard overlap of every
    pair, each method against the NeuronVote of the others, and the NeuronVote consensus
    ranking of all methods, stored as the ranking named ``neuron_vote``."""
    from neuro_pipeline.analysis import neuron_vote, topn_overlap, vote_agreement
    from neuro_pipeline.ranking import ranking_table

    aset = current_activation_set(cfg, store)
    stored = {name: ranking_of(cfg, store, aset, name) for name in ranking_names(cfg)}
    n_neurons = aset.n_neurons
    # Greedy methods rank a prefix: compare only what they ranked.
    rankings = {name: r.order[:r.n_ranked] for name, r in stored.items()}
    ns = [n for n in cfg.ranking.agreement_n if n <= n_neurons]
    key = {"analysis": cfg.name, "activation_set": aset.activation_set, "task": cfg.task}
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
        vote = _FixedRanking(consensus, n_neurons)
        vote_rows = _keyed(ranking_table(vote).with_columns(*_layer_unit(aset.hidden_size)), key,
                           model_version=aset.model_version, params_hash="consensus", method="neuron_vote")
        writes.append(("rankings", vote_rows, {**key, "method": "neuron_vote"}))
        pairs = pair_table.to_dicts()
        votes = vote_table.to_dicts()
        vote_top = [neuron_name(int(n), aset.hidden_size) for n in consensus[:10]]
    # The consensus ranking and the agreement table are replaced together, or not at all.
    store.replace_each([*writes, ("agreement", _keyed(table, key), key)])
    return AgreementSummary(activation_set=aset.activation_set, task=cfg.task, methods=list(rankings), ns=ns,
                            pairs=pairs, votes=votes, vote_top=vote_top)


class _FixedRanking:
    """A ranking given as an order, with the attributes ranking_table reads."""

    def __init__(self, order: np.ndarray, n_neurons: int):
        self.ranking_ = np.asarray(order, dtype=np.int64)
        self.scores_ = np.empty(n_neurons)
        self.scores_[self.ranking_] = np.arange(n_neurons, 0, -1, dtype=np.float64)

    def _check_fitted(self) -> None:
        return None


# -------------------------------------------------------------------- redundancy
@dataclass
class RedundancySummary:
    activation_set: str
    threshold: float
    layers: list[dict[str, Any]]
    n_neurons: int
    n_independent: int
    n_constant: int
    seconds: float


def materialize_redundancy(cfg: PipelineConfig, store: Store) -> RedundancySummary:
    """Correlation clustering of all neurons on the training split, and one independent
    neuron per cluster (Dalvi et al. 2020): tables ``redundancy_layers`` (per layer: clusters
    with members in it, independent neurons, constant neurons) and ``redundancy_neurons``.

    Clusters may span layers: on MiniLM almost no neuron is redundant within its own layer
    (UD EWT: 379-382 clusters of 384 per layer) but the residual stream carries units from
    layer to layer (872 clusters of all 2,688 neurons)."""
    from neuro_pipeline.analysis import neuron_clusters_by_layer, summarize_clusters

    start = time.perf_counter()
    aset = current_activation_set(cfg, store)
    train = load_split(cfg, store, aset, "train")
    threshold = float(cfg.ranking.redundancy_threshold)
    neurons = neuron_clusters_by_layer(train.X, n_layers=aset.n_layers, hidden_size=aset.hidden_size,
                                       threshold=threshold, across_layers=True)
    layers = summarize_clusters(neurons)
    key = {"analysis": cfg.name, "activation_set": aset.activation_set}
    store.replace_tables({
        "redundancy_layers": _keyed(layers, key, threshold=threshold),
        "redundancy_neurons": _keyed(neurons, key),
    }, key)
    rows = layers.to_dicts()
    return RedundancySummary(
        activation_set=aset.activation_set, threshold=threshold, layers=rows, n_neurons=aset.n_neurons,
        n_independent=int(sum(r["n_independent"] for r in rows)),
        n_constant=int(sum(r["n_constant"] for r in rows)), seconds=round(time.perf_counter() - start, 3))


# ------------------------------------------------------------------ selectivity
@dataclass
class SelectivitySummary:
    activation_set: str
    task: str
    k: int
    rows: list[dict[str, Any]]
    layers: list[dict[str, Any]]
    seconds: float


def _train_test(cfg: PipelineConfig, store: Store, aset: ActivationSet) -> tuple[Split, Split, str]:
    eval_split = _eval_split_name(store, cfg)
    return load_split(cfg, store, aset, "train"), load_split(cfg, store, aset, eval_split), eval_split


def materialize_selectivity(cfg: PipelineConfig, store: Store, *, progress: Progress | None = None) -> SelectivitySummary:
    """Control task (Hewitt & Liang 2019): task accuracy, control accuracy and selectivity
    of a probe on all neurons, on each method's top ``evaluation.selectivity_fraction``,
    and on each layer alone: tables ``selectivity`` and ``layer_probes``."""
    import math

    from neuro_pipeline.evaluation.control import control_labels, evaluate_selectivity
    from neuro_pipeline.evaluation.layers import layerwise_probing

    start = time.perf_counter()
    aset = current_activation_set(cfg, store)
    stored = [ranking_of(cfg, store, aset, name) for name in ranking_names(cfg)]
    train, test, _ = _train_test(cfg, store, aset)
    seed = cfg.evaluation.control_seed
    k = math.ceil(cfg.evaluation.selectivity_fraction * aset.n_neurons)
    selections = {"all": np.arange(aset.n_neurons)}
    selections.update({r.name: r.order[:min(k, r.n_ranked)] for r in stored})
    total = len(selections) + 1
    if progress is not None:
        progress(0, total)
    rows = []
    by_class = None
    for i, (name, columns) in enumerate(selections.items()):
        result = evaluate_selectivity(train.X, train.words, train.labels, test.X, test.words, test.labels,
                                      {name: columns}, seed=seed, by_class=name == "all",
                                      probe_params=selection_probe_params(cfg))
        if name == "all":
            result, by_class = result
        rows.append(result)
        if progress is not None:
            progress(i + 1, total)
    table = pl.concat(rows).rename({"selection": "method"})
    control_train = control_labels(train.words, train.labels, train.words, seed=seed)
    control_test = control_labels(train.words, train.labels, test.words, seed=seed)
    layers = layerwise_probing(train.X, train.labels, test.X, test.labels, n_layers=aset.n_layers,
                               hidden_size=aset.hidden_size, control_train=control_train, control_test=control_test,
                               probe_params=selection_probe_params(cfg))
    if progress is not None:
        progress(total, total)
    key = {"analysis": cfg.name, "activation_set": aset.activation_set, "task": cfg.task}
    store.replace_tables({
        "selectivity": _keyed(table, key, control_seed=seed),
        "layer_probes": _keyed(layers, key, control_seed=seed),
        "class_selectivity": _keyed(by_class.drop("selection"), key, control_seed=seed),
    }, key)
    return SelectivitySummary(activation_set=aset.activation_set, task=cfg.task, k=k, rows=table.to_dicts(),
                              layers=layers.to_dicts(), seconds=round(time.perf_counter() - start, 3))


# --------------------------------------------------------------------- ablation
@dataclass
class AblationSummary:
    activation_set: str
    task: str
    methods: list[str]
    rows: list[dict[str, Any]]
    seconds: float


def materialize_ablation(cfg: PipelineConfig, store: Store, *, progress: Progress | None = None) -> AblationSummary:
    """Ablation at the probe, as NeuroX reports it: keep or remove the top / random / bottom
    neurons, retraining the probe or zeroing the rest in the full probe, for the rankings in
    ``evaluation.ablation_methods`` (default: the first method): table ``ablation``."""
    from neuro_pipeline.evaluation.ablation import ablate

    start = time.perf_counter()
    aset = current_activation_set(cfg, store)
    names = list(cfg.evaluation.ablation_methods) or ranking_names(cfg)[:1]
    train, test, _ = _train_test(cfg, store, aset)
    if progress is not None:
        progress(0, len(names))
    frames = []
    for i, name in enumerate(names):
        r = ranking_of(cfg, store, aset, name)
        frames.append(ablate(train.X, train.labels, test.X, test.labels, r.order,
                             fractions=cfg.evaluation.ablation_fractions, ks=cfg.evaluation.ablation_ks,
                             n_random=cfg.evaluation.n_random, seed=cfg.evaluation.seed, n_ranked=r.n_ranked,
                             zero_value=("mean", "zero"), modes=cfg.evaluation.ablation_modes,
                             probe_params=selection_probe_params(cfg))
                      .with_columns(pl.lit(name).alias("method")))
        if progress is not None:
            progress(i + 1, len(names))
    table = pl.concat(frames)
    key = {"analysis": cfg.name, "activation_set": aset.activation_set, "task": cfg.task}
    store.replace_rows("ablation", _keyed(table, key), key)
    return AblationSummary(activation_set=aset.activation_set, task=cfg.task, methods=names,
                           rows=table.to_dicts(), seconds=round(time.perf_counter() - start, 3))


# ------------------------------------------------------------- interventions
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


def _head_text(record: dict[str, Any]) -> str:
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
    """Do the model's own predictions depend on the top neurons? For each class and ranking,
    set the ranking's top ``interventions.k`` neurons of the class to their mean (or zero)
    inside the live model and score its masked-word predictions on words of the class and
    on other words, against ``n_random`` random sets of the same size and the same count per
    layer: table ``interventions``. The masked-LM head is the checkpoint's own, or one
    trained on the frozen encoder and kept under ``mlm_heads/`` next to the store."""
    from neuro_pipeline.extraction import load_model
    from neuro_pipeline.intervention.mlm import (checkpoint_mlm_head, concept_masks, load_mlm_head,
                                                 masked_word_predictions, neuron_ablation_effects, save_mlm_head,
                                                 summarize_ablation_effects, train_mlm_head)

    start = time.perf_counter()
    ic = cfg.interventions
    aset = current_activation_set(cfg, store)
    key = {"analysis": cfg.name, "activation_set": aset.activation_set, "task": cfg.task}
    train, test, _ = _train_test(cfg, store, aset)
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
    class_top = store.query(
        "SELECT method, label, list(neuron ORDER BY rank) AS neurons FROM class_rankings WHERE analysis = ? "
        "AND activation_set = ? AND task = ? AND rank <= ? GROUP BY method, label", [*key.values(), ic.k])
    per_class = {(r["method"], r["label"]): r["neurons"] for r in class_top.iter_rows(named=True)}
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
                neurons, source = ranking_of(cfg, store, aset, name).order[:ic.k].tolist(), "global"
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
    store.replace_rows("interventions", _keyed(table, key), key)
    record = {k: v for k, v in getattr(head, "training_record", {}).items() if k != "model_dir"}
    return InterventionSummary(activation_set=aset.activation_set, task=cfg.task, head=record, classes=classes,
                               methods=names, rows=table.to_dicts(), seconds=round(time.perf_counter() - start, 3))


# ------------------------------------------------------------- class neurons
@dataclass
class ClassNeuronsSummary:
    activation_set: str
    task: str
    method: str
    distribution: list[dict[str, Any]]
    minimal: list[dict[str, Any]]
    seconds: float


def materialize_class_neurons(cfg: PipelineConfig, store: Store, *, progress: Progress | None = None) -> ClassNeuronsSummary:
    """Where the neurons are: the layers of each class's top 10 neurons for every method with
    per-class rankings (table ``layer_distribution``), and per class the fewest of the first
    such method's neurons whose probe reaches ``evaluation.minimal_share`` of the full
    probe's F1 (table ``minimal_neurons``)."""
    from neuro_pipeline.evaluation.layers import layer_distribution, minimal_neuron_sets

    start = time.perf_counter()
    aset = current_activation_set(cfg, store)
    key = {"analysis": cfg.name, "activation_set": aset.activation_set, "task": cfg.task}
    class_rankings = store.query(
        "SELECT method, label, list(neuron ORDER BY rank) AS neurons FROM class_rankings WHERE analysis = ? "
        "AND activation_set = ? AND task = ? GROUP BY method, label ORDER BY method, label", list(key.values()))
    by_method: dict[str, dict[str, np.ndarray]] = {}
    for row in class_rankings.iter_rows(named=True):
        by_method.setdefault(row["method"], {})[row["label"]] = np.asarray(row["neurons"])
    names = [n for n in ranking_names(cfg) if n in by_method]
    distribution = pl.concat([
        layer_distribution(by_method[n], hidden_size=aset.hidden_size, n_layers=aset.n_layers)
        .with_columns(pl.lit(n).alias("method")) for n in names]) if names else pl.DataFrame()
    minimal = pl.DataFrame()
    method = names[0] if names else ""
    if names:
        train, test, _ = _train_test(cfg, store, aset)
        minimal = minimal_neuron_sets(train.X, train.labels, test.X, test.labels, by_method[method],
                                      target_share=cfg.evaluation.minimal_share,
                                      probe_params=selection_probe_params(cfg)).with_columns(
            pl.lit(method).alias("method"))
    if progress is not None:
        progress(1, 1)
    store.replace_tables({
        "layer_distribution": _keyed(distribution, key),
        "minimal_neurons": _keyed(minimal, key),
    }, key)
    return ClassNeuronsSummary(activation_set=aset.activation_set, task=cfg.task, method=method,
                               distribution=distribution.to_dicts(), minimal=minimal.to_dicts(),
                               seconds=round(time.perf_counter() - start, 3))


# ------------------------------------------------------------------- evaluation
@dataclass
class ReportSummary:
    activation_set: str
    model_version: str
    task: str
    methods: list[str]
    n_train: int
    n_test: int
    eval_split: str
    accuracy: float
    majority_baseline: float
    n_test_unseen_label: int
    selections: list[dict[str, Any]]
    per_class: list[dict[str, Any]]
    html_path: str
    markdown_path: str
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


def materialize_report(cfg: PipelineConfig, store: Store, *, progress: Progress | None = None) -> ReportSummary:
    """Stage 4: probe accuracy with all neurons, and with each method's top and bottom
    neurons against random ones; the report.

    The full probe is the first linear-probe ranking's own fitted probe, stored by that
    ranking (:func:`ranking_probe`): its settings, the regularisation it chose on held-out
    training data, the same training words. It is fitted here with those settings only
    when none is stored for these words, and with the selection-probe default when no
    linear probe is configured. Every selection retrains a probe on its neurons only
    (NeuroX's keep-neurons protocol); the random draws (``evaluation.n_random`` per size) do
    not depend on the method and are evaluated once.
    """
    from neuro_pipeline.evaluation import evaluate_probe
    from neuro_pipeline.evaluation.selection import DEFAULT_SELECTION_PROBE_PARAMS, fit_selections, score_selections
    from neuro_pipeline.probe import LinearProbe, column_stats
    from neuro_pipeline.report.render import staged_report

    start = time.perf_counter()
    aset = current_activation_set(cfg, store)
    stored = [ranking_of(cfg, store, aset, name) for name in ranking_names(cfg)]
    eval_split = _eval_split_name(store, cfg)
    key = {"analysis": cfg.name, "activation_set": aset.activation_set, "task": cfg.task}
    q = list(key.values())
    class_top = store.query(
        "SELECT method, label, neuron, rank FROM class_rankings WHERE analysis = ? AND activation_set = ? "
        "AND task = ? AND rank <= 5 ORDER BY method, label, rank", q)
    n_fractions = len(cfg.evaluation.fractions)
    total = 1 + n_fractions * (cfg.evaluation.n_random + 2 * len(stored))
    done = [0]

    def tick() -> None:
        done[0] += 1
        if progress is not None:
            progress(min(done[0], total), total)

    if progress is not None:
        progress(0, total)

    # Every probe is trained before the test split is loaded, and the training matrix is
    # dropped first: the stage holds one split's matrix at a time (on EWT with MiniLM its
    # peak fell by the test matrix, 258 MB).
    train = load_split(cfg, store, aset, "train")
    lca = next((r for r in stored if r.method == "linear_probe" and "l1" in r.fitted), None)
    full_params = (_full_probe_params(cfg, lca) if lca is not None else dict(DEFAULT_SELECTION_PROBE_PARAMS))
    # One standardisation of the training matrix serves the full probe and every retrained one.
    stats = column_stats(train.X)
    # The full probe is the linear-probe ranking's own (the same settings and penalties, on
    # the same words), scored rather than fitted again.
    probe = None if lca is None else ranking_probe(store, key, lca.name, full_params, train)
    if probe is None:
        probe = LinearProbe(**full_params).fit(train.X, train.labels, column_stats=stats)
    tick()
    common = dict(fractions=cfg.evaluation.fractions, n_random=cfg.evaluation.n_random, seed=cfg.evaluation.seed,
                  probe_params=selection_probe_params(cfg), column_stats=stats)
    random_fits = fit_selections(train.X, train.labels, stored[0].order, selections=("random",), on_probe=tick,
                                 **common)
    method_fits = [fit_selections(train.X, train.labels, r.order, selections=("top", "bottom"), n_ranked=r.n_ranked,
                                  on_probe=tick, **common) for r in stored]
    flips = _heatmap_flips(train, class_top, stored[0].name)
    train_labels, n_train, n_skipped_train = train.labels, int(train.X.shape[0]), train.n_skipped_rejected
    del train, stats

    test = load_split(cfg, store, aset, eval_split)
    full = evaluate_probe(probe, test.X, test.labels)
    labels, counts = np.unique(train_labels, return_counts=True)
    majority = str(labels[np.argmax(counts)])
    baseline = float(np.mean(test.labels == majority))
    random_rows = score_selections(random_fits, test.X, test.labels)
    per_method = [pl.concat([score_selections(fits, test.X, test.labels), random_rows])
                  .with_columns(pl.lit(r.name).alias("method")) for r, fits in zip(stored, method_fits)]
    selections = pl.concat(per_method)
    if progress is not None:
        progress(total, total)  # skipped selections (partial rankings) never ticked
    metrics = pl.concat([metrics_table(full, sel.drop("method"), baseline).with_columns(pl.lit(r.name).alias("method"))
                         for r, sel in zip(stored, per_method)])
    from neuro_pipeline.evaluation.metrics import class_metrics, confusion_table

    predicted = probe.predict(test.X)
    labels_all = sorted(set(map(str, np.unique(train_labels))) | set(map(str, np.unique(test.labels))))
    cm = class_metrics(test.labels.astype(str), predicted.astype(str), labels=labels_all)
    confusion = confusion_table(test.labels.astype(str), predicted.astype(str), labels=labels_all)
    per_class = cm.to_dicts()
    words = store.query(
        "SELECT method, neuron, list(word ORDER BY rank) AS words FROM top_words WHERE analysis = ? "
        "AND activation_set = ? AND task = ? AND source = 'global' GROUP BY method, neuron", q)
    on = cfg.stages  # a stage that is off contributes no section, even if old rows of it are stored

    def stage_query(stage: str, sql: str, params: list) -> pl.DataFrame:
        return store.query(sql, params) if getattr(on, stage) else pl.DataFrame()

    agreement = stage_query(
        "method_agreement", "SELECT kind, method_a, method_b, n, overlap, jaccard FROM agreement WHERE analysis = ? "
        "AND activation_set = ? AND task = ? ORDER BY kind, method_a, method_b, n", q)
    redundancy = stage_query(
        "neuron_redundancy", "SELECT * EXCLUDE (analysis, activation_set) FROM redundancy_layers WHERE analysis = ? "
        "AND activation_set = ? ORDER BY layer", q[:2])
    selectivity = stage_query(
        "probe_selectivity", "SELECT method, k, task_accuracy, control_accuracy, selectivity FROM selectivity WHERE analysis = ? "
        "AND activation_set = ? AND task = ?", q)
    layer_probes = stage_query(
        "probe_selectivity", "SELECT layer, n_neurons, accuracy, control_accuracy, selectivity FROM layer_probes WHERE analysis = ? "
        "AND activation_set = ? AND task = ? ORDER BY layer", q)
    ablation = stage_query(
        "probe_ablation", "SELECT method, mode, selection, fraction, k, avg(accuracy) AS accuracy, stddev_samp(accuracy) AS std, "
        "zero_value FROM ablation WHERE analysis = ? AND activation_set = ? AND task = ? "
        "GROUP BY ALL ORDER BY method, k, mode, selection, zero_value", q)
    distribution = stage_query(
        "class_neurons", "SELECT method, label, layer, n_neurons, share FROM layer_distribution WHERE analysis = ? "
        "AND activation_set = ? AND task = ? ORDER BY method, label, layer", q)
    minimal = stage_query(
        "class_neurons", "SELECT method, label, n_neurons, reached_f1, target_f1, full_f1 FROM minimal_neurons WHERE analysis = ? "
        "AND activation_set = ? AND task = ? ORDER BY label", q)
    interventions = store.query(
        "SELECT * EXCLUDE (analysis, activation_set, task) FROM interventions WHERE analysis = ? "
        "AND activation_set = ? AND task = ?", q) if cfg.interventions.enabled else pl.DataFrame()
    head_record = {}
    if interventions.height and (mlm_head_dir(cfg, aset) / "mlm_head.json").is_file():
        import json

        head_record = json.loads((mlm_head_dir(cfg, aset) / "mlm_head.json").read_text(encoding="utf-8"))
    hsz = aset.hidden_size
    top_words = {(r["method"], int(r["neuron"])): r["words"] for r in words.iter_rows(named=True)}
    heatmaps = _class_heatmaps(cfg, test, flips, stored[0].name, hsz, top_words)
    out_dir = cfg.reports_dir / cfg.name / short_version(aset.model_version)
    if cfg.task != cfg.tasks[0]:
        out_dir = out_dir / cfg.task  # each further task (a concept) gets its own page
    summary = ReportSummary(
        activation_set=aset.activation_set, model_version=aset.model_version, task=cfg.task,
        methods=[r.name for r in stored], n_train=n_train, n_test=int(test.X.shape[0]),
        eval_split=eval_split, accuracy=float(full["accuracy"]), majority_baseline=baseline,
        n_test_unseen_label=int(full["n_unseen"]), selections=selection_rows(selections),
        per_class=per_class, html_path=str(out_dir / "report.html"), markdown_path=str(out_dir / "report.md"),
        seconds=0.0,
        extra={"full_probe": full_params, "fitted": {r.name: r.fitted for r in stored},
               "hidden_size": hsz, "n_layers": aset.n_layers,
               "model_dir": aset.model_dir, "aggregation": aset.aggregation, "dtype": aset.dtype,
               "corpus_version": corpus_version(cfg), "config_source": cfg.source,
               "top_per_class": {(m, lab): [neuron_name(n, hsz) for n in grp["neuron"].to_list()]
                                 for (m, lab), grp in class_top.group_by("method", "label", maintain_order=True)},
               "top_neurons": {r.name: [(neuron_name(int(n), hsz), top_words.get((r.name, int(n)), []))
                                        for n in r.order[:min(5, r.n_ranked)]] for r in stored},
               "agreement": agreement.to_dicts(), "redundancy": redundancy.to_dicts(),
               "selectivity": selectivity.to_dicts(), "layer_probes": layer_probes.to_dicts(),
               "ablation": ablation.to_dicts(), "layer_distribution": distribution.to_dicts(),
               "minimal_neurons": minimal.to_dicts(), "confusion": confusion.to_dicts(),
               "interventions": interventions.to_dicts(),
               "mlm_head": {"source": _head_text(head_record)},
               "heatmaps": heatmaps,
               "n_skipped_rejected": n_skipped_train + test.n_skipped_rejected,
               "selection_probe": ", ".join(f"{k}={v:g}" for k, v in DEFAULT_SELECTION_PROBE_PARAMS.items())},
    )
    summary.seconds = round(time.perf_counter() - start, 3)
    # Metrics and the report row are replaced in one transaction once the page is rendered,
    # and the page is renamed into place only after that commit: a failure anywhere leaves
    # the previous report's rows and files as they were.
    with staged_report(summary, out_dir):
        store.replace_tables({
            "metrics": _keyed(metrics, key), "class_metrics": _keyed(cm, key), "confusion": _keyed(confusion, key),
            "reports": pl.DataFrame([{**key, "model_version": aset.model_version,
                                      "html_path": summary.html_path, "markdown_path": summary.markdown_path}]),
        }, key)
    return summary


def selection_probe_params(cfg: PipelineConfig) -> dict[str, Any]:
    """Settings of every probe retrained on selected neurons (top/random/bottom, ablation,
    selectivity, layers, fewest neurons): the library default with ``evaluation.selection_probe``
    on top."""
    from neuro_pipeline.evaluation.selection import DEFAULT_SELECTION_PROBE_PARAMS

    return {**DEFAULT_SELECTION_PROBE_PARAMS, **cfg.evaluation.selection_probe}


def _full_probe_params(cfg: PipelineConfig, lca: StoredRanking) -> dict[str, Any]:
    """The full probe of the report: the linear-probe ranking's probe settings (solver and
    budget as configured) with the penalties it chose."""
    from neuro_pipeline.probe import LinearProbe
    from neuro_pipeline.ranking import get_ranker

    probe_keys = set(LinearProbe().get_params()) - {"l1", "l2", "warm_start"}
    configured = get_ranker("linear_probe", **cfg.ranking.method(lca.name).params).get_params()
    defaults = LinearProbe().get_params()
    # Only what differs from the probe's defaults, so the report's record stays short.
    return {"l1": lca.fitted["l1"], "l2": lca.fitted["l2"],
            **{k: v for k, v in configured.items() if k in probe_keys and v != defaults[k]}}


def _heatmap_flips(train: Split, class_top: pl.DataFrame, method: str) -> dict[str, tuple[int, bool]]:
    """Per class, the strongest neuron by ``method`` and whether its heatmap flips its sign:
    a neuron can encode a class by firing negatively on it, decided on the training words
    (the class's mean activation below the others'), so that the class's words are blue on
    every heatmap (see :func:`_class_heatmaps`)."""
    best = class_top.filter((pl.col("method") == method) & (pl.col("rank") == 1))
    train_labels = train.labels.astype(str)
    flips = {}
    for label, neuron in best.select("label", "neuron").iter_rows():
        column = train.X[:, int(neuron)]
        is_class = train_labels == label
        flips[label] = (int(neuron), bool(is_class.any() and (~is_class).any()
                                          and column[is_class].mean() < column[~is_class].mean()))
    return flips


def _class_heatmaps(cfg: PipelineConfig, test: Split, flips: dict[str, tuple[int, bool]], method: str, hsz: int,
                    top_words: dict) -> list[dict[str, Any]]:
    """For the strongest neuron of each class (``flips``, from :func:`_heatmap_flips`), its
    activations over the first ``evaluation.heatmap_sentences`` test sentences that contain
    the class, as SVG; a flipped neuron is shown with its sign flipped, and its title says so."""
    from neuro_pipeline.report.heatmap import neuron_heatmaps_svg
    from neuro_pipeline.report.render import short_word

    n_sentences = cfg.evaluation.heatmap_sentences
    if not n_sentences or not flips:
        return []
    keys = test.keys.with_columns(pl.Series("label", test.labels.astype(str)), pl.int_range(pl.len()).alias("row"))
    out = []
    for label, (neuron, flip) in flips.items():
        ids = keys.filter(pl.col("label") == label)["sentence_id"].unique(maintain_order=True).head(n_sentences)
        sentences, values, marked = [], [], []
        for sid in ids.to_list():
            rows = keys.filter(pl.col("sentence_id") == sid).sort("position")["row"].to_numpy()
            sentences.append([str(w) for w in test.words[rows]])
            values.append((-1.0 if flip else 1.0) * np.asarray(test.X[rows, int(neuron)], dtype=np.float64))
            marked.append((test.labels[rows].astype(str) == label).tolist())
        if sentences:
            name = neuron_name(int(neuron), hsz)
            title = f"−{name} ({label}, sign flipped)" if flip else f"{name} ({label})"
            out.append({"label": label, "neuron": name, "flipped": flip,
                        "svg": neuron_heatmaps_svg(sentences, values, neuron_name=title, marked=marked,
                                                   top_words=[short_word(w, 16) for w in
                                                              top_words.get((method, int(neuron)), [])[:8]] or None)})
    return out


def metrics_table(full: dict[str, Any], selections: pl.DataFrame, baseline: float) -> pl.DataFrame:
    """Tidy metric rows: scope (overall/class), label, selection, fraction, k, draw, metric, value."""
    rows: list[dict[str, Any]] = [
        {"scope": "overall", "label": None, "selection": "all", "fraction": 1.0, "k": None, "draw": None,
         "metric": "accuracy", "value": float(full["accuracy"])},
        {"scope": "overall", "label": None, "selection": "majority_baseline", "fraction": None, "k": None,
         "draw": None, "metric": "accuracy", "value": baseline},
    ]
    for lab, vals in full["per_class"].items():
        for metric, value in vals.items():
            rows.append({"scope": "class", "label": str(lab), "selection": "all", "fraction": 1.0, "k": None,
                         "draw": None, "metric": metric, "value": float(value)})
    for r in selections.iter_rows(named=True):
        rows.append({"scope": "overall", "label": None, "selection": r["selection"], "fraction": float(r["fraction"]),
                     "k": int(r["k"]), "draw": r.get("draw"), "metric": "accuracy", "value": float(r["accuracy"])})
    return pl.DataFrame(rows, schema={"scope": pl.Utf8, "label": pl.Utf8, "selection": pl.Utf8,
                                      "fraction": pl.Float64, "k": pl.Int32, "draw": pl.Int32,
                                      "metric": pl.Utf8, "value": pl.Float64})


def selection_rows(selections: pl.DataFrame) -> list[dict[str, Any]]:
    """Mean (and spread over random draws) accuracy per method, selection and fraction, for display."""
    agg = (selections.group_by("method", "selection", "fraction", "k", maintain_order=True)
           .agg(pl.col("accuracy").mean().alias("accuracy"), pl.col("accuracy").std().alias("std"),
                pl.len().alias("n_draws"))
           .sort("method", "fraction",
                 pl.col("selection").replace_strict({"top": 0, "random": 1, "bottom": 2}, default=3),
                 maintain_order=True))
    return agg.to_dicts()


# ------------------------------------------------------------------------ drift
@dataclass
class DriftSummary:
    activation_set: str
    task: str
    label: str
    previous_activation_set: str | None
    previous_label: str | None
    ks: list[int]
    n_alerts: int
    alerts: list[dict[str, Any]]
    ranking: list[dict[str, Any]]
    metrics: list[dict[str, Any]]
    summary: dict[str, Any]
    html_path: str | None
    seconds: float
    layers: list[dict[str, Any]] = field(default_factory=list)


def drift_thresholds(cfg: PipelineConfig):
    from neuro_pipeline.monitoring import DriftThresholds

    m = cfg.monitoring
    return DriftThresholds(max_accuracy_drop=m.max_accuracy_drop, max_selectivity_drop=m.max_selectivity_drop,
                           min_jaccard=m.min_jaccard, alert_k=m.alert_k, min_support=m.min_support)


def model_versions(cfg: PipelineConfig, store: Store) -> pl.DataFrame:
    """The model versions this analysis has seen, oldest first: activation_set, model_version,
    label, model_dir, registered_at, aggregation, dtype, long_sentences, has_report."""
    return store.query(
        """
        SELECT v.activation_set, v.model_version, v.label, v.model_dir, v.registered_at, s.aggregation, s.dtype,
               s.long_sentences,
               EXISTS (SELECT 1 FROM reports r WHERE r.analysis = v.analysis AND r.activation_set = v.activation_set
                       AND r.task = $task) AS has_report
        FROM model_versions v JOIN activation_sets s USING (activation_set)
        WHERE v.analysis = $analysis ORDER BY v.registered_at, v.label
        """, {"analysis": cfg.name, "task": cfg.task})


def previous_version(cfg: PipelineConfig, store: Store, aset: ActivationSet) -> dict[str, Any] | None:
    """The version analysed before ``aset`` (in the order versions were first seen) with the same
    extraction settings and a finished report; None for the first version."""
    versions = model_versions(cfg, store)
    mine = versions.filter(pl.col("activation_set") == aset.activation_set)
    if mine.is_empty():
        raise ValueError(f"{store.path}: activation set {aset.activation_set} is not registered for analysis "
                         f"'{cfg.name}'; materialize token_activations first.")
    me = mine.row(0, named=True)
    earlier = versions.filter(
        (pl.col("registered_at") < me["registered_at"]) & (pl.col("model_version") != aset.model_version)
        & (pl.col("aggregation") == aset.aggregation) & (pl.col("dtype") == aset.dtype)
        & (pl.col("long_sentences") == aset.long_sentences) & pl.col("has_report"))
    return earlier.row(-1, named=True) if earlier.height else None


def materialize_drift(cfg: PipelineConfig, store: Store) -> DriftSummary:
    """Stage 5: what moved inside the model since the previous version: top-k overlap and
    rank correlation of every ranking, per-class neuron sets, per-class accuracy and
    selectivity; threshold alerts; the drift section of the report page. Tables
    ``drift_runs``, ``drift_rankings``, ``drift_classes``, ``drift_metrics``, ``drift_alerts``."""
    from neuro_pipeline.monitoring import (class_metric_drift, class_ranking_drift, drift_alerts, ranking_drift,
                                           summarize_drift)
    from neuro_pipeline.report.drift import drift_html, drift_markdown
    from neuro_pipeline.report.render import insert_drift_section

    start = time.perf_counter()
    aset = current_activation_set(cfg, store)
    key = {"analysis": cfg.name, "activation_set": aset.activation_set, "task": cfg.task}
    me = model_versions(cfg, store).filter(pl.col("activation_set") == aset.activation_set).row(0, named=True)
    prev = previous_version(cfg, store, aset)
    ks = sorted(cfg.monitoring.drift_ks)
    report = store.query("SELECT html_path FROM reports WHERE analysis = ? AND activation_set = ? AND task = ?",
                         list(key.values()))
    html_path = report["html_path"][0] if report.height else None
    name = lambda n: neuron_name(int(n), aset.hidden_size)  # noqa: E731
    if prev is None:
        store.replace_tables({
            "drift_runs": pl.DataFrame([{**key, "previous_activation_set": None, "label": me["label"],
                                         "previous_label": None, "model_version": aset.model_version,
                                         "previous_model_version": None, "n_alerts": 0}],
                                       schema_overrides={"previous_activation_set": pl.String,
                                                         "previous_label": pl.String,
                                                         "previous_model_version": pl.String}),
            **{t: pl.DataFrame() for t in ("drift_rankings", "drift_classes", "drift_metrics", "drift_alerts",
                                           "drift_layers")},
        }, key)
        if html_path:
            insert_drift_section(Path(html_path).parent, drift_html(None, me["label"], None, None, None, None),
                                 drift_markdown(None, me["label"], None, None, None, None))
        return DriftSummary(activation_set=aset.activation_set, task=cfg.task, label=me["label"],
                            previous_activation_set=None,
                            previous_label=None, ks=ks, n_alerts=0, alerts=[], ranking=[], metrics=[], summary={},
                            html_path=html_path, seconds=round(time.perf_counter() - start, 3))

    def both(sql: str) -> tuple[pl.DataFrame, pl.DataFrame]:
        return tuple(store.query(sql, [cfg.name, a, cfg.task]) for a in (prev["activation_set"], aset.activation_set))

    rankings = both("SELECT method, neuron, score, rank FROM rankings WHERE analysis = ? AND activation_set = ? "
                    "AND task = ?")
    classes = both("SELECT method, label, neuron, rank FROM class_rankings WHERE analysis = ? "
                   "AND activation_set = ? AND task = ?")
    metric_sql = """
        SELECT c.label, c.support, c.accuracy, c.f1, s.selectivity FROM class_metrics c
        LEFT JOIN class_selectivity s USING (analysis, activation_set, task, label)
        WHERE c.analysis = $analysis AND c.activation_set = $aset AND c.task = $task
        UNION ALL BY NAME
        SELECT '(all)' AS label,
               (SELECT sum(support) FROM class_metrics c WHERE c.analysis = $analysis AND c.activation_set = $aset
                AND c.task = $task)::INTEGER AS support,
               (SELECT avg(value) FROM metrics m WHERE m.analysis = $analysis AND m.activation_set = $aset
                AND m.task = $task AND m.selection = 'all' AND m.metric = 'accuracy' AND m.scope = 'overall')
               AS accuracy, NULL::DOUBLE AS f1,
               (SELECT max(selectivity) FROM selectivity s WHERE s.analysis = $analysis AND s.activation_set = $aset
                AND s.task = $task AND s.method = 'all') AS selectivity
    """
    metrics = tuple(store.query(metric_sql, {"analysis": cfg.name, "aset": a, "task": cfg.task})
                    for a in (prev["activation_set"], aset.activation_set))
    ranking = ranking_drift(*rankings, ks)
    layers = _layer_drift(cfg, store, prev, aset)
    class_drift = class_ranking_drift(*classes, ks)
    metric_drift = class_metric_drift(*metrics)
    alerts = drift_alerts(ranking, class_drift, metric_drift, drift_thresholds(cfg))
    summary = summarize_drift(ranking, class_drift, metric_drift, alerts)
    prev_key = {"previous_activation_set": prev["activation_set"]}
    store.replace_tables({
        "drift_runs": pl.DataFrame([{**key, **prev_key, "label": me["label"], "previous_label": prev["label"],
                                     "model_version": aset.model_version,
                                     "previous_model_version": prev["model_version"], "n_alerts": alerts.height}]),
        "drift_rankings": _keyed(ranking, key, **prev_key),
        "drift_classes": _keyed(class_drift, key, **prev_key),
        "drift_metrics": _keyed(metric_drift, key, **prev_key),
        "drift_alerts": _keyed(alerts, key, **prev_key),
        "drift_layers": _keyed(layers, key, **prev_key),
    }, key)
    if html_path:
        from neuro_pipeline.report.drift import layer_drift_html, layer_drift_markdown

        args = (prev["label"], me["label"], ranking, class_drift, metric_drift, alerts)
        options = dict(neuron_name=name, k=cfg.monitoring.alert_k, method=cfg.ranking.methods[0].name)
        insert_drift_section(Path(html_path).parent,
                             drift_html(*args, **options) + layer_drift_html(layers),
                             drift_markdown(*args, **options) + layer_drift_markdown(layers))
    return DriftSummary(
        activation_set=aset.activation_set, task=cfg.task, label=me["label"],
        previous_activation_set=prev["activation_set"],
        previous_label=prev["label"], ks=ks, n_alerts=alerts.height, alerts=alerts.to_dicts(),
        ranking=ranking.drop("entered", "left").to_dicts(), metrics=metric_drift.to_dicts(), summary=summary,
        html_path=html_path, seconds=round(time.perf_counter() - start, 3), layers=layers.to_dicts())


def _layer_drift(cfg: PipelineConfig, store: Store, prev: dict[str, Any], aset: ActivationSet) -> pl.DataFrame:
    """Per layer, how well each unit's activations in this version correlate with the same
    unit's in ``prev``, over the evaluation words both versions extracted (joined on keys).
    Empty when the two versions do not share a neuron layout."""
    from neuro_pipeline.monitoring import activation_drift

    before = store.activation_set(prev["activation_set"])
    if (before.n_layers, before.hidden_size) != (aset.n_layers, aset.hidden_size):
        log.info("drift: %s and %s have different layouts; no per-unit correlation", before.activation_set,
                 aset.activation_set)
        return pl.DataFrame()
    split = _eval_split_name(store, cfg)
    a, b = load_split(cfg, store, before, split), load_split(cfg, store, aset, split)
    rows = (a.keys.with_row_index("ia").join(b.keys.with_row_index("ib"), on=["sentence_id", "position"])
            .sort("ia"))
    if rows.height < 2:
        return pl.DataFrame()
    return activation_drift(a.X[rows["ia"].to_numpy()], b.X[rows["ib"].to_numpy()], n_layers=aset.n_layers,
                            hidden_size=aset.hidden_size).with_columns(pl.lit(rows.height).alias("n_words"))


def check_drift(cfg: PipelineConfig, store: Store) -> tuple[bool, pl.DataFrame, dict[str, Any]]:
    """Re-judge the stored drift of the current version against the thresholds in the config
    now (so changing a threshold needs no recomputation). Returns (passed, alerts, info)."""
    from neuro_pipeline.monitoring import drift_alerts

    aset = current_activation_set(cfg, store)
    key = [cfg.name, aset.activation_set, cfg.task]
    run = store.query("SELECT * FROM drift_runs WHERE analysis = ? AND activation_set = ? AND task = ?", key)
    if run.is_empty():
        raise ValueError(f"{store.path}: no drift record for this model version; materialize model_drift first.")
    info = run.drop("analysis", "activation_set", "task", "created_at").row(0, named=True)
    if info["previous_activation_set"] is None:
        return True, pl.DataFrame(), info
    frames = [store.query(f"SELECT * EXCLUDE (analysis, activation_set, task, previous_activation_set) FROM {t} "
                          "WHERE analysis = ? AND activation_set = ? AND task = ?", key)
              for t in ("drift_rankings", "drift_classes", "drift_metrics")]
    alerts = drift_alerts(*frames, drift_thresholds(cfg))
    return alerts.is_empty(), alerts, info


# ------------------------------------------------------------------ whole chain
def run_analysis(cfg: PipelineConfig, *, progress: Progress | None = None) -> dict[str, Any]:
    """Run the four stages in order without Dagster (for notebooks and scripts)."""
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


def latest_summary(cfg: PipelineConfig) -> dict[str, Any]:
    """What the last successful run stored for this analysis: accuracy, top neurons, file paths."""
    store = Store(cfg.store_path)
    reports = store.query(
        "SELECT r.*, s.hidden_size FROM reports r JOIN activation_sets s USING (activation_set) "
        "WHERE analysis = ? ORDER BY created_at DESC LIMIT 1", [cfg.name])
    if reports.is_empty():
        raise ValueError(f"{cfg.store_path}: no report for analysis '{cfg.name}' yet; run the pipeline first.")
    rep = reports.row(0, named=True)
    key = [cfg.name, rep["activation_set"], rep["task"]]
    metrics = store.query(
        "SELECT method, selection, fraction, avg(value) AS accuracy FROM metrics WHERE analysis = ? AND "
        "activation_set = ? AND task = ? AND scope = 'overall' AND metric = 'accuracy' "
        "GROUP BY ALL ORDER BY method, fraction NULLS FIRST, selection", key)
    first = ranking_names(cfg)[0]
    top = store.query(
        "SELECT label, list(neuron ORDER BY rank) AS neurons FROM class_rankings WHERE analysis = ? AND "
        "activation_set = ? AND task = ? AND method = ? AND rank <= 3 GROUP BY label ORDER BY label", [*key, first])
    return {
        "report": rep, "metrics": metrics.to_dicts(), "top_per_class_method": first,
        "top_per_class": {r["label"]: [neuron_name(n, rep["hidden_size"]) for n in r["neurons"]]
                          for r in top.iter_rows(named=True)},
        "store": str(cfg.store_path),
    }


def versions_summary(cfg: PipelineConfig) -> list[dict[str, Any]]:
    """One row per model version this analysis has seen, oldest first: label, version,
    full-probe accuracy, selectivity, and the drift against its predecessor (the Jaccard of
    each method's top sets at the alert k, the accuracy change, the number of alerts)."""
    store = Store(cfg.store_path)
    rows = store.query(
        """
        SELECT v.label, v.model_version, v.activation_set, v.registered_at,
               (SELECT avg(value) FROM metrics m WHERE m.analysis = v.analysis AND m.activation_set = v.activation_set
                AND m.task = $task AND m.selection = 'all' AND m.metric = 'accuracy' AND m.scope = 'overall') AS accuracy,
               (SELECT max(selectivity) FROM selectivity s WHERE s.analysis = v.analysis
                AND s.activation_set = v.activation_set AND s.task = $task AND s.method = 'all') AS selectivity,
               d.previous_label, d.n_alerts,
               (SELECT accuracy_delta FROM drift_metrics x WHERE x.analysis = v.analysis
                AND x.activation_set = v.activation_set AND x.task = $task AND x.label = '(all)') AS accuracy_delta,
               (SELECT html_path FROM reports r WHERE r.analysis = v.analysis AND r.activation_set = v.activation_set
                AND r.task = $task) AS html_path
        FROM model_versions v LEFT JOIN drift_runs d
          ON d.analysis = v.analysis AND d.activation_set = v.activation_set AND d.task = $task
        WHERE v.analysis = $analysis ORDER BY v.registered_at, v.label
        """, {"analysis": cfg.name, "task": cfg.task})
    k = cfg.monitoring.alert_k or max(cfg.monitoring.drift_ks)
    jaccard = store.query(
        "SELECT activation_set, method, jaccard FROM drift_rankings WHERE analysis = ? AND task = ? AND k = ? "
        "AND status = 'both' ORDER BY method", [cfg.name, cfg.task, k])
    out = []
    for r in rows.iter_rows(named=True):
        mine = jaccard.filter(pl.col("activation_set") == r["activation_set"])
        out.append({**r, "k": k, "jaccard": dict(zip(mine["method"].to_list(), mine["jaccard"].to_list()))})
    return out


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


# ---------------------------------------------------------------- quality gates
def check_corpus(cfg: PipelineConfig, store: Store):
    """great-expectations suite over the stored tokens of this analysis (labels in the
    declared set, see :attr:`PipelineConfig.declared_labels`), and for every concept task
    exactly one label per word."""
    from neuro_pipeline.quality import validate_tokens

    tokens = store.read_tokens(cfg.name)
    report = validate_tokens(tokens, declared_labels=cfg.declared_labels)
    for concept in cfg.concepts:
        labels = store.query("SELECT sentence_id, position, label FROM task_labels WHERE corpus_id = ? AND task = ?",
                             [cfg.name, concept.name])
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


def check_activations(cfg: PipelineConfig, store: Store):
    """great-expectations suite over the per-layer summary of this corpus's activations,
    plus: which sentences and layers hold NaN or Inf (failing), the constant ("dead")
    neurons, and the sentences windowed or rejected for length (reported)."""
    from neuro_pipeline.quality import validate_activation_summary

    summary, expected, aset, constant = _activation_summary(cfg, store)
    report = validate_activation_summary(summary, expected_rows=expected, hidden_size=aset.hidden_size)
    if summary.height != aset.n_layers:
        report.success = False
        report.results.append({"expectation": "all_layers_present", "column": "layer", "success": False,
                               "unexpected_count": aset.n_layers - summary.height, "unexpected_examples": [],
                               "observed_value": summary.height})
    params = {"cid": cfg.name, "aset": aset.activation_set}
    if int(summary["n_nonfinite"].sum() or 0):
        where = _nonfinite_sentences(cfg, store, aset)
        report.results.append({
            "expectation": "sentences_with_nan_or_inf", "column": "act", "success": False,
            "unexpected_count": where.height,
            "unexpected_examples": [f"{r['source']}:{r['line']} (sentence {r['sentence_id']}) layers {r['layers']}"
                                    for r in where.head(10).iter_rows(named=True)],
            "observed_value": where.height})
    report.results.append({
        "expectation": "constant_neurons", "column": "act", "success": True, "unexpected_count": len(constant),
        "unexpected_examples": [f"L{n // aset.hidden_size}:{n % aset.hidden_size}" for n in constant[:50]],
        "observed_value": {"n_constant": len(constant), "n_neurons": aset.n_neurons}})
    lengths = store.query(
        """
        SELECT count(*) FILTER (WHERE s.windowed) AS windowed, count(*) FILTER (WHERE s.status = 'rejected') AS rejected,
               list(t.source || ':' || t.line::VARCHAR) FILTER (WHERE s.status = 'rejected') AS rejected_at
        FROM (SELECT sentence_hash, any_value(source) AS source, min(line) AS line
              FROM tokens WHERE corpus_id = $cid GROUP BY sentence_hash) t
        JOIN activation_sentences s ON s.sentence_hash = t.sentence_hash AND s.activation_set = $aset
        """, params).row(0, named=True)
    report.results.append({
        "expectation": "sentences_over_the_model_limit", "column": "sentence", "success": True,
        "unexpected_count": int(lengths["rejected"] or 0),
        "unexpected_examples": sorted(set(lengths["rejected_at"] or []))[:10],
        "observed_value": {"windowed": int(lengths["windowed"] or 0), "rejected": int(lengths["rejected"] or 0),
                           "policy": aset.long_sentences}})
    report.success = report.success and not any(not r["success"] for r in report.results)
    return report


def _nonfinite_sentences(cfg: PipelineConfig, store: Store, aset: ActivationSet) -> pl.DataFrame:
    """Where the corpus's activations hold NaN or Inf: one row per sentence (sentence_id,
    source, line of its first occurrence) with the layers concerned; a second streamed pass,
    run only when the first found such values."""
    bad = set()
    for batch in store.activation_batches(aset.activation_set, _corpus_keys(cfg, store), with_hash=True):
        rows = ~np.isfinite(batch.values).all(axis=1)
        if rows.any():
            bad.update(zip(batch.sentence_hash[batch.full][rows].tolist(), batch.layer[batch.full][rows].tolist()))
    bad_frame = pl.DataFrame(sorted(bad), schema={"sentence_hash": pl.Utf8, "layer": pl.Int64}, orient="row")
    first = store.query("SELECT sentence_hash, min(sentence_id) AS sentence_id, any_value(source) AS source, "
                        "min(line) AS line FROM tokens WHERE corpus_id = ? GROUP BY sentence_hash", [cfg.name])
    return (bad_frame.join(first, on="sentence_hash")
            .group_by("sentence_id", "source", "line").agg(pl.col("layer").unique().sort().alias("layers"))
            .sort("sentence_id"))


def check_ranking(cfg: PipelineConfig, store: Store, name: str):
    """great-expectations suite over one method's stored global ranking: a permutation of the
    neurons with finite scores, and its hyperparameters recorded."""
    from neuro_pipeline.quality import validate_rankings

    aset = current_activation_set(cfg, store)
    where = [cfg.name, aset.activation_set, cfg.task, name]
    ranking = store.query(
        "SELECT neuron, score, rank FROM rankings WHERE analysis = ? AND activation_set = ? AND task = ? "
        "AND method = ?", where)
    runs = store.query(
        "SELECT params FROM ranking_runs WHERE analysis = ? AND activation_set = ? AND task = ? AND method = ?",
        where)
    report = validate_rankings(ranking, n_neurons=aset.n_neurons)
    recorded = runs.height == 1 and bool(runs["params"][0]) and runs["params"][0] != "{}"
    report.results.append({"expectation": "hyperparameters_recorded", "column": "params", "success": recorded,
                           "unexpected_count": 0 if recorded else 1, "unexpected_examples": [],
                           "observed_value": runs.height})
    report.success = report.success and recorded
    return report


def check_report(cfg: PipelineConfig, store: Store):
    """great-expectations suite over the stored metrics: accuracies in [0, 1], probe above baseline."""
    from neuro_pipeline.quality import validate_metrics

    aset = current_activation_set(cfg, store)
    metrics = store.query(
        "SELECT scope, label, selection, fraction, k, draw, metric, value FROM metrics WHERE analysis = ? "
        "AND activation_set = ? AND task = ?", [cfg.name, aset.activation_set, cfg.task])
    baseline = metrics.filter(pl.col("selection") == "majority_baseline")["value"]
    return validate_metrics(metrics.filter(pl.col("selection") != "majority_baseline"),
                            majority_baseline=float(baseline[0]) if len(baseline) else 0.0)


def check_derived(cfg: PipelineConfig, store: Store, asset: str):
    """great-expectations suite over the table(s) a derived evaluation asset wrote: rows
    exist, accuracies in [0, 1], selectivity in [-1, 1], overlaps in [0, 1]."""
    from neuro_pipeline.quality import validate_table

    aset = current_activation_set(cfg, store)
    key = [cfg.name, aset.activation_set]
    where = "WHERE analysis = ? AND activation_set = ?"
    unit, signed = (0.0, 1.0), (-1.0, 1.0)
    if asset == "probe_selectivity":
        frame = store.query(f"SELECT task_accuracy, control_accuracy, selectivity FROM selectivity {where}", key)
        return validate_table(asset, frame, ranges={"task_accuracy": unit, "control_accuracy": unit,
                                                    "selectivity": signed},
                              not_null=("task_accuracy", "control_accuracy", "selectivity"))
    if asset == "probe_ablation":
        frame = store.query(f"SELECT accuracy, k FROM ablation {where}", key)
        return validate_table(asset, frame, ranges={"accuracy": unit}, not_null=("accuracy", "k"))
    if asset == "class_neurons":
        frame = store.query(f"SELECT share FROM layer_distribution {where}", key)
        return validate_table(asset, frame, min_rows=0, ranges={"share": unit})
    if asset == "method_agreement":
        frame = store.query(f"SELECT jaccard FROM agreement {where}", key)
        return validate_table(asset, frame, min_rows=0 if len(cfg.ranking.methods) < 2 else 1,
                              ranges={"jaccard": unit}, not_null=("jaccard",))
    if asset == "neuron_redundancy":
        frame = store.query(f"SELECT n_neurons, n_independent FROM redundancy_layers {where}", key)
        return validate_table(asset, frame, ranges={"n_independent": (0, aset.hidden_size)},
                              not_null=("n_independent",))
    if asset == "model_interventions":
        frame = store.query(f"SELECT baseline, top, random_mean, random_low, random_high FROM interventions {where} "
                            "AND task = ? AND metric = 'accuracy'", [*key, cfg.task])
        return validate_table(asset, frame, ranges={"baseline": unit, "top": unit, "random_mean": unit},
                              not_null=("baseline", "top", "random_mean"))
    raise ValueError(f"no quality suite for asset {asset!r}")

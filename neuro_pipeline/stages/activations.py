"""Stage 2, token activations: every layer of the model for every corpus word, per model
version, content-addressed by sentence (an edited corpus re-extracts only the sentences that
changed), and its quality suite.

Start here: :func:`materialize_activations` extracts what is not stored yet and writes it
while the model computes the next batches; :func:`check_activations` checks every stored
row in one streamed pass (rows per layer, widths, NaN and Inf, constant neurons, sentences
windowed or rejected for length, and that every Parquet file of the set is intact);
:func:`repair_activation_files` removes damaged files (truncated, deleted) from the
catalogue so that the next extraction redoes exactly their sentences."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import polars as pl

from neuro_pipeline.config import PipelineConfig
from neuro_pipeline.hashing import short_version
from neuro_pipeline.stages.common import Progress, check_device, current_activation_set, use_threads
from neuro_pipeline.stages.corpus import read_corpus_keys, read_first_occurrences
from neuro_pipeline.stages.metadata import FilePath, Metadata
from neuro_pipeline.stages.versions import activation_set_id, model_version
from neuro_pipeline.store import ActivationSet, Store
from neuro_pipeline.store.activations import DamagedFile, DiskFullError
from neuro_pipeline.store.tables import activations as tables


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
    known = tables.is_registered(store, set_id)
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
    try:
        with BackgroundWriter(store, aset, inline=writes_inline(cfg)) as writer:
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
    except DiskFullError as exc:
        raise _disk_full(store, set_id, hashes, exc) from None
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


def _disk_full(store: Store, activation_set: str, hashes: list[str], exc: DiskFullError) -> DiskFullError:
    """The error a run that filled the disk ends with: the failed write (which file, which
    folder) and how many of the run's sentences were stored completely (on one line: the
    command shows it as the run's cause)."""
    stored = set(store.extracted_sentences(activation_set)["sentence_hash"].to_list()).intersection(hashes)
    return DiskFullError(
        f"{exc.what} {len(stored)} of the {len(hashes)} sentences this run had to extract were stored completely "
        "(the next run reuses them); nothing half-written was kept: no partial file, and no sentence is marked "
        "done without all of its rows.", exc.advice)


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


def activation_statistics(cfg: PipelineConfig, store: Store, aset: ActivationSet, *,
                          damage: FileDamage | None = None) -> tuple[pl.DataFrame, list[int]]:
    """One streaming pass over the corpus's activations (record batches; memory does not grow
    with the corpus): per layer the rows, the smallest and largest width and the non-finite
    values (layer, n_rows, width_min, width_max, n_nonfinite); and the constant ("dead")
    neurons, global ids of units whose value is the same on every word (NaN ignored).
    ``damage``: damaged Parquet files, not read (their sentences' rows count as missing)."""
    n_layers, hsz = aset.n_layers, aset.hidden_size
    n_rows = np.zeros(n_layers, dtype=np.int64)
    n_nonfinite = np.zeros(n_layers, dtype=np.int64)
    width_min = np.full(n_layers, np.iinfo(np.int64).max)
    width_max = np.full(n_layers, -1, dtype=np.int64)
    low = np.full((n_layers, hsz), np.inf, dtype=np.float32)
    high = np.full((n_layers, hsz), -np.inf, dtype=np.float32)
    keys, skipped = _readable_keys(cfg, store, damage)
    for batch in store.activation_batches(aset.activation_set, keys, exclude_files=skipped):
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


def _readable_keys(cfg: PipelineConfig, store: Store, damage: FileDamage | None
                   ) -> tuple[pl.DataFrame, list[str]]:
    """The corpus's words whose rows can be read (none of a damaged file's sentences), and the
    files not to scan."""
    keys = read_corpus_keys(cfg, store)
    if damage is None or not damage.files:
        return keys, []
    return (keys.filter(~pl.col("sentence_hash").is_in(damage.sentence_hashes)),
            [d.file for d in damage.files])


def _activation_summary(cfg: PipelineConfig, store: Store, aset: ActivationSet, damage: FileDamage | None
                        ) -> tuple[pl.DataFrame, int, list[int]]:
    """What the quality suite judges, from one pass over the set: the per-layer summary (layer,
    n_rows, width_min, width_max, n_nonfinite, and the corpus-wide n_missing_sentences and
    n_word_count_mismatch), the rows expected per layer (corpus words of sentences that were
    not rejected), and the constant neurons."""
    summary, constant = activation_statistics(cfg, store, aset, damage=damage)
    expected = tables.expected_rows(store, cfg.name, aset.activation_set)
    # Every corpus sentence must have been processed, with exactly its number of words.
    consistency = tables.coverage(store, cfg.name, aset.activation_set)
    summary = summary.with_columns(
        pl.lit(consistency["n_missing_sentences"]).alias("n_missing_sentences"),
        pl.lit(consistency["n_word_count_mismatch"]).alias("n_word_count_mismatch"))
    return summary, expected, constant


class BackgroundWriter:
    """Writes buffers of extracted sentences to the store in a second thread while the model
    computes the next batches (DuckDB, pyarrow and torch release the GIL). At most one buffer
    waits while another is written, so memory stays bounded; a write error is raised in the
    extracting thread at the next :meth:`put` or when the ``with`` block ends. Leaving the
    block waits until every buffer is committed.

    ``inline=True`` writes in the extracting thread instead (see :func:`writes_inline`)."""

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

    def __enter__(self) -> BackgroundWriter:
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


def writes_inline(cfg: PipelineConfig) -> bool:
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


def check_activations(cfg: PipelineConfig, store: Store):
    """great-expectations suite over the per-layer summary of this corpus's activations,
    plus: every Parquet file of the set present and readable with the rows the catalogue
    lists (failing, with each damaged file and the sentences it held; the rest of the suite
    then judges the other files), which sentences and layers hold NaN or Inf (failing), the
    constant ("dead") neurons, and the sentences windowed or rejected for length (reported)."""
    from neuro_pipeline.quality import validate_activation_summary

    aset = current_activation_set(cfg, store)
    damage = find_damaged_files(cfg, store, aset)
    summary, expected, constant = _activation_summary(cfg, store, aset, damage)
    report = validate_activation_summary(summary, expected_rows=expected, hidden_size=aset.hidden_size)
    if aset.parquet_dir is not None:
        report.results.append(_files_result(cfg, store, damage))
    if summary.height != aset.n_layers:
        report.success = False
        report.results.append({"expectation": "all_layers_present", "column": "layer", "success": False,
                               "unexpected_count": aset.n_layers - summary.height, "unexpected_examples": [],
                               "observed_value": summary.height})
    if int(summary["n_nonfinite"].sum() or 0):
        where = _nonfinite_sentences(cfg, store, aset, damage)
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
    lengths = tables.sentence_lengths(store, cfg.name, aset.activation_set)
    report.results.append({
        "expectation": "sentences_over_the_model_limit", "column": "sentence", "success": True,
        "unexpected_count": int(lengths["rejected"] or 0),
        "unexpected_examples": sorted(set(lengths["rejected_at"] or []))[:10],
        "observed_value": {"windowed": int(lengths["windowed"] or 0), "rejected": int(lengths["rejected"] or 0),
                           "policy": aset.long_sentences}})
    report.success = report.success and not any(not r["success"] for r in report.results)
    return report


def _nonfinite_sentences(cfg: PipelineConfig, store: Store, aset: ActivationSet,
                         damage: FileDamage | None = None) -> pl.DataFrame:
    """Where the corpus's activations hold NaN or Inf: one row per sentence (sentence_id,
    source, line of its first occurrence) with the layers concerned; a second streamed pass,
    run only when the first found such values."""
    bad = set()
    keys, skipped = _readable_keys(cfg, store, damage)
    for batch in store.activation_batches(aset.activation_set, keys, with_hash=True, exclude_files=skipped):
        rows = ~np.isfinite(batch.values).all(axis=1)
        if rows.any():
            bad.update(zip(batch.sentence_hash[batch.full][rows].tolist(), batch.layer[batch.full][rows].tolist()))
    bad_frame = pl.DataFrame(sorted(bad), schema={"sentence_hash": pl.Utf8, "layer": pl.Int64}, orient="row")
    first = read_first_occurrences(cfg, store)
    return (bad_frame.join(first, on="sentence_hash")
            .group_by("sentence_id", "source", "line").agg(pl.col("layer").unique().sort().alias("layers"))
            .sort("sentence_id"))


# ------------------------------------------------------------ damaged activation files

@dataclass
class FileDamage:
    """The damaged Parquet files of an activation set (missing, truncated or unreadable, or
    another row count than the catalogue lists) and the sentences whose rows they held."""

    activation_set: str
    #: Each damaged file with its reason and the sentences the catalogue reads from it.
    files: list[DamagedFile]
    #: Sentences stored before files were recorded per sentence that no intact file holds.
    lost: list[str]

    @property
    def sentence_hashes(self) -> list[str]:
        """Every sentence whose rows are gone (the files' and the ``lost`` ones)."""
        return sorted({h for d in self.files for h in d.sentence_hashes} | set(self.lost))


def find_damaged_files(cfg: PipelineConfig, store: Store, aset: ActivationSet | None = None) -> FileDamage:
    """The damaged files of the analysis's current activation set (default ``aset``): a stat
    and a footer read per file, no data (see :meth:`Store.damaged_activation_files`)."""
    aset = current_activation_set(cfg, store) if aset is None else aset
    files, lost = store.damaged_activation_files(aset)
    return FileDamage(aset.activation_set, files, lost)


def _where(first: pl.DataFrame, hashes) -> list[str]:
    """``source:line (sentence N)`` of the sentences of this corpus among ``hashes``, in corpus order."""
    rows = first.filter(pl.col("sentence_hash").is_in(list(hashes))).sort("sentence_id")
    return [f"{r['source']}:{r['line']} (sentence {r['sentence_id']})" for r in rows.iter_rows(named=True)]


def _files_result(cfg: PipelineConfig, store: Store, damage: FileDamage) -> dict:
    """The expectation that every Parquet file of the set is intact: fails naming each damaged
    file, why, and the sentences of this corpus it held (``source:line (sentence N)``, the
    first 10 per file, with their count)."""
    first = read_first_occurrences(cfg, store) if damage.files or damage.lost else None
    examples, n_sentences = [], 0
    for d in damage.files[:10]:
        where = _where(first, d.sentence_hashes)
        n_sentences += len(where)
        shown = ", ".join(where[:10]) + (f", … ({len(where) - 10} more)" if len(where) > 10 else "")
        examples.append(f"{d.file}: {d.reason}; it held {len(where)} sentence(s) of this corpus"
                        + (f": {shown}" if where else "")
                        + (f" (and {len(d.sentence_hashes) - len(where)} of other corpora)"
                           if len(d.sentence_hashes) > len(where) else ""))
    if damage.lost:
        where = _where(first, damage.lost)
        examples.append(f"{len(where)} sentence(s) stored before files were recorded per sentence are in no intact "
                        f"file: {', '.join(where[:10])}")
    in_corpus = len(_where(first, damage.sentence_hashes)) if first is not None else 0
    return {"expectation": "activation_files_intact", "column": "file", "success": not damage.files,
            "unexpected_count": len(damage.files), "unexpected_examples": examples,
            "observed_value": {"n_damaged_files": len(damage.files), "n_sentences": in_corpus,
                               "n_sentences_all_corpora": len(damage.sentence_hashes),
                               "repair": "the next `neuro-pipeline run` removes them from the catalogue and "
                                         "extracts their sentences again" if damage.files else None}}


@dataclass
class ActivationRepair:
    """What :func:`repair_activation_files` did."""

    #: The analysis's current activation set (None when it is not stored yet or not in Parquet).
    activation_set: str | None
    #: The damaged files, each with its reason and the sentences it held (removed from the catalogue).
    damaged: list[DamagedFile]
    #: Every sentence removed from the catalogue: the next extraction redoes these.
    sentence_hashes: list[str]
    #: Of those, the sentences of this analysis's corpus, as ``source:line (sentence N)``.
    sentences_in_corpus: list[str]
    #: Damaged files deleted (those that still existed: truncated or unreadable).
    deleted_files: list[str]

    @property
    def n_files(self) -> int:
        return len(self.damaged)

    @property
    def n_sentences(self) -> int:
        return len(self.sentence_hashes)

    def lines(self) -> list[str]:
        """One line per damaged file, for the user."""
        deleted = set(self.deleted_files)
        return [f"{d.file}: {d.reason}; {len(d.sentence_hashes)} sentence(s) will be extracted again"
                + ("; the file was deleted" if d.file in deleted else "") for d in self.damaged]


def repair_activation_files(cfg: PipelineConfig, store: Store) -> ActivationRepair:
    """Find the damaged Parquet files of the analysis's current activation set (a missing,
    truncated or unreadable file, or one with another row count than catalogued: a stat and
    a footer read per file, no data), remove the catalogue rows of their sentences and the
    files' own rows in one transaction, and delete the damaged files that still exist. The
    next :func:`materialize_activations` then extracts exactly those sentences again; nothing
    else changes. Nothing is done (and nothing is created) when the store, the set or its
    Parquet files do not exist yet."""
    if not store.path.exists():
        return ActivationRepair(None, [], [], [], [])
    try:
        version = model_version(cfg)
    except OSError:  # no model (yet): the run reports it; nothing of it can be stored
        return ActivationRepair(None, [], [], [], [])
    set_id = activation_set_id(cfg, version)
    if not tables.is_registered(store, set_id):
        return ActivationRepair(None, [], [], [], [])
    aset = store.activation_set(set_id)
    if aset.parquet_dir is None:
        return ActivationRepair(None, [], [], [], [])
    damage = find_damaged_files(cfg, store, aset)
    if not damage.files and not damage.lost:
        return ActivationRepair(set_id, [], [], [], [])
    deleted = store.forget_damaged_files(aset, damage.files, damage.lost)
    hashes = damage.sentence_hashes
    return ActivationRepair(set_id, damage.files, hashes, _where(read_first_occurrences(cfg, store), hashes), deleted)


def read_model_versions(cfg: PipelineConfig, store: Store) -> pl.DataFrame:
    """The model versions this analysis has seen, oldest first: activation_set, model_version,
    label, model_dir, registered_at, aggregation, dtype, long_sentences, has_report (a report
    of the configured task is stored for it)."""
    return tables.version_history(store, cfg.name, cfg.task)


def metadata(s: ActivationSummary) -> Metadata:
    return {
        "dagster/row_count": s.n_rows,
        "model_version": s.model_version[:12],
        "activation_set": s.activation_set,
        "model_dir": FilePath(s.model_dir),
        "n_layers": s.n_layers,
        "hidden_size": s.hidden_size,
        "n_neurons": s.n_layers * s.hidden_size,
        "n_sentences": s.n_sentences,
        "n_extracted": s.n_extracted,
        "n_reused": s.n_reused,
        "n_windowed_sentences": s.n_windowed,
        "n_rejected_sentences": s.n_rejected,
        "n_words_without_subwords": s.n_words_without_subwords,
        "extraction_seconds": s.seconds,
        "model_load_seconds": s.load_seconds,
        "import_seconds": s.import_seconds,
        "write_wait_seconds": s.write_wait_seconds,
        "words_per_second": s.words_per_second if s.words_per_second is not None else 0.0,
        **({"model_label": s.model_label} if s.model_label else {}),
        **({"n_shards": s.n_shards} if s.n_shards > 1 else {}),
    }

"""The DuckDB store: every table the pipeline writes, and the only module that imports duckdb.

Start here: :class:`Store` wraps one DuckDB file. Connections are opened per operation
and closed right after (DuckDB allows one writer process at a time, so nobody holds the
file longer than a write). Every write is one transaction that first deletes the rows it
replaces, so a failed write leaves the previous good rows in place.

Tables (keys first):

``tokens``            corpus_id, sentence_id, position → split, token, label, sentence_hash, source, line
``activation_sets``   activation_set → model_version, model_dir, aggregation, dtype, n_layers, hidden_size
``activation_sentences`` activation_set, sentence_hash → n_words, status ('ok' or 'rejected'), windowed
``activations``       activation_set, sentence_hash, position, layer → act FLOAT[] (hidden_size values)
``rankings``          analysis, activation_set, task, method, params_hash, neuron → layer, unit, score, rank
``class_rankings``    analysis, activation_set, task, method, params_hash, label, neuron → rank, weight
``ranking_runs``      analysis, activation_set, task, method, params_hash → params, fitted, n_train, seconds
``ranking_probes``    analysis, activation_set, task, method, params_hash → the fitted probe of a linear-probe
                      ranking: classes (JSON), n_train, n_features, coef/intercept (float32 bytes),
                      mean/scale (float64 bytes)
``top_words``         analysis, activation_set, task, method, source, neuron, rank → layer, unit, word, score, count
``agreement``         analysis, activation_set, task, kind, method_a, method_b, n → overlap, jaccard
``redundancy_layers`` analysis, activation_set, layer → threshold, n_neurons, n_constant, n_clusters, n_independent, …
``redundancy_neurons`` analysis, activation_set, neuron → layer, unit, cluster, is_constant, is_representative
``metrics``           analysis, activation_set, task, method, scope, label, selection, fraction, draw, metric → value
``selectivity``       analysis, activation_set, task, method (or 'all') → k, task/control accuracy, selectivity
``layer_probes``      analysis, activation_set, task, layer → n_neurons, accuracy, control_accuracy, selectivity
``ablation``          analysis, activation_set, task, method, mode, selection, k, draw, zero_value → accuracy
``layer_distribution`` analysis, activation_set, task, method, label, layer → n_neurons, share
``minimal_neurons``   analysis, activation_set, task, method, label → n_neurons, F1s, neurons
``class_metrics``     analysis, activation_set, task, label → support, accuracy, precision, f1
``confusion``         analysis, activation_set, task, true_label, predicted_label → count
``reports``           analysis, activation_set, task → model_version, html_path, markdown_path
``task_labels``       corpus_id, task, sentence_id, position → label (the words' labels of each concept task)
``task_balance``      corpus_id, task, label → training words before and after undersampling, seed, target
``model_versions``    analysis, activation_set → model_version, label, model_dir, registered_at (first analysis)
``class_selectivity`` analysis, activation_set, task, label → support, task/control accuracy, selectivity
``drift_runs``        analysis, activation_set, task → previous_activation_set, labels, versions, n_alerts
``drift_rankings``    analysis, activation_set, task, method, k → overlap, jaccard, entered, left, spearman, …
``drift_classes``     analysis, activation_set, task, method, label, k → overlap, jaccard, entered, left, …
``drift_metrics``     analysis, activation_set, task, label → accuracy/F1/selectivity before, after, delta
``drift_layers``      analysis, activation_set, task, layer → correlation of each unit with itself in the previous version
``drift_alerts``      analysis, activation_set, task → kind, method, label, k, value, threshold, message
``sentence_pairs``    corpus_id, sentence_id → pair (the second segment of a sentence-pair corpus)
``store_schema``      fingerprint of the schema the file was last brought up to (write connections skip
                      the DDL when it is current)

Concurrency: DuckDB lets one process open a file at a time. A process that finds the file
locked by another waits (with a log message naming the other process) and retries, up to
``lock_timeout`` seconds (default 600, or ``NEURO_PIPELINE_LOCK_TIMEOUT``); since every
operation holds the file only for one read or one write transaction, two runs against the
same file interleave their operations and both finish. DuckDB's own memory is capped at
512 MB per process (``NEURO_PIPELINE_DUCKDB_MEMORY``): uncapped, its buffer pool grew with
every write of a long extraction (peak RSS 1.06 → 1.91 GB from 8k to 52k words) and the
writes slowed down; larger operations spill to disk. At 512 MB, extracting EWT dev into
DuckDB rows peaked at 1,537 MB; at 256 MB with 4,096-word writes, 1,173 MB (not the default:
with it the two-runs-at-once fault test failed a blocking check, not yet understood).

Activations are content-addressed: an *activation set* is one (model version, aggregation,
dtype, long-sentence mode) combination, and its rows are keyed by the sentence's content
hash, so editing a corpus re-extracts only the sentences that changed. The layout (one row
per word and layer holding a ``FLOAT[]`` of the layer's units) was chosen by measurement;
see ``benchmarks/store_layouts.py``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import polars as pl

from neuro_pipeline.types import TOKEN_COLUMNS

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    corpus_id VARCHAR NOT NULL, split VARCHAR NOT NULL, sentence_id INTEGER NOT NULL,
    position INTEGER NOT NULL, token VARCHAR NOT NULL, label VARCHAR NOT NULL,
    sentence_hash VARCHAR NOT NULL, source VARCHAR NOT NULL, line INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS sentence_pairs (
    corpus_id VARCHAR NOT NULL, sentence_id INTEGER NOT NULL, pair VARCHAR[] NOT NULL);
CREATE TABLE IF NOT EXISTS activation_sets (
    activation_set VARCHAR PRIMARY KEY, model_version VARCHAR NOT NULL, model_dir VARCHAR NOT NULL,
    aggregation VARCHAR NOT NULL, dtype VARCHAR NOT NULL, long_sentences VARCHAR NOT NULL,
    n_layers INTEGER NOT NULL, hidden_size INTEGER NOT NULL, created_at TIMESTAMP DEFAULT current_timestamp);
CREATE TABLE IF NOT EXISTS activation_sentences (
    activation_set VARCHAR NOT NULL, sentence_hash VARCHAR NOT NULL, n_words INTEGER NOT NULL,
    status VARCHAR NOT NULL, windowed BOOLEAN NOT NULL);
CREATE TABLE IF NOT EXISTS activations (
    activation_set VARCHAR NOT NULL, sentence_hash VARCHAR NOT NULL, position INTEGER NOT NULL,
    layer SMALLINT NOT NULL, act FLOAT[] NOT NULL);
CREATE TABLE IF NOT EXISTS activations16 (
    activation_set VARCHAR NOT NULL, sentence_hash VARCHAR NOT NULL, position INTEGER NOT NULL,
    layer SMALLINT NOT NULL, act USMALLINT[] NOT NULL);
ALTER TABLE activation_sets ADD COLUMN IF NOT EXISTS storage_dtype VARCHAR DEFAULT 'float32';
ALTER TABLE activation_sets ADD COLUMN IF NOT EXISTS parquet_dir VARCHAR;
ALTER TABLE activation_sets ADD COLUMN IF NOT EXISTS parquet_layout VARCHAR;
ALTER TABLE activation_sentences ADD COLUMN IF NOT EXISTS file VARCHAR;
CREATE TABLE IF NOT EXISTS activation_files (
    activation_set VARCHAR NOT NULL, file VARCHAR NOT NULL, n_rows BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS interventions (
    analysis VARCHAR NOT NULL, activation_set VARCHAR NOT NULL, task VARCHAR NOT NULL, method VARCHAR NOT NULL,
    label VARCHAR NOT NULL, top_k INTEGER NOT NULL, "group" VARCHAR NOT NULL, metric VARCHAR NOT NULL,
    n_words BIGINT, n_neurons INTEGER, n_random INTEGER, baseline DOUBLE, top DOUBLE, random_mean DOUBLE,
    random_low DOUBLE, random_high DOUBLE, top_drop DOUBLE, random_drop DOUBLE, random_share_below_top DOUBLE,
    ranking VARCHAR, layer_counts VARCHAR, mode VARCHAR);
CREATE TABLE IF NOT EXISTS rankings (
    analysis VARCHAR NOT NULL, activation_set VARCHAR NOT NULL, model_version VARCHAR NOT NULL,
    task VARCHAR NOT NULL, method VARCHAR NOT NULL, params_hash VARCHAR NOT NULL,
    neuron INTEGER NOT NULL, layer INTEGER NOT NULL, unit INTEGER NOT NULL,
    score DOUBLE, rank INTEGER);
CREATE TABLE IF NOT EXISTS class_rankings (
    analysis VARCHAR NOT NULL, activation_set VARCHAR NOT NULL, task VARCHAR NOT NULL,
    method VARCHAR NOT NULL, params_hash VARCHAR NOT NULL, label VARCHAR NOT NULL,
    neuron INTEGER NOT NULL, layer INTEGER NOT NULL, unit INTEGER NOT NULL,
    rank INTEGER NOT NULL, weight DOUBLE);
CREATE TABLE IF NOT EXISTS ranking_runs (
    analysis VARCHAR NOT NULL, activation_set VARCHAR NOT NULL, task VARCHAR NOT NULL,
    method VARCHAR NOT NULL, params_hash VARCHAR NOT NULL, params VARCHAR NOT NULL,
    fitted VARCHAR NOT NULL, n_train INTEGER NOT NULL, seconds DOUBLE NOT NULL,
    created_at TIMESTAMP DEFAULT current_timestamp);
CREATE TABLE IF NOT EXISTS ranking_probes (
    analysis VARCHAR NOT NULL, activation_set VARCHAR NOT NULL, task VARCHAR NOT NULL,
    method VARCHAR NOT NULL, params_hash VARCHAR NOT NULL, classes VARCHAR NOT NULL,
    n_train INTEGER NOT NULL, n_features INTEGER NOT NULL, coef BLOB NOT NULL, intercept BLOB NOT NULL,
    mean BLOB NOT NULL, scale BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS top_words (
    analysis VARCHAR NOT NULL, activation_set VARCHAR NOT NULL, task VARCHAR NOT NULL,
    method VARCHAR NOT NULL, source VARCHAR NOT NULL, neuron INTEGER NOT NULL, layer INTEGER NOT NULL,
    unit INTEGER NOT NULL, rank INTEGER NOT NULL, word VARCHAR NOT NULL, score DOUBLE NOT NULL,
    count BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS agreement (
    analysis VARCHAR NOT NULL, activation_set VARCHAR NOT NULL, task VARCHAR NOT NULL,
    kind VARCHAR NOT NULL, method_a VARCHAR NOT NULL, method_b VARCHAR NOT NULL, n INTEGER NOT NULL,
    overlap INTEGER NOT NULL, jaccard DOUBLE NOT NULL);
CREATE TABLE IF NOT EXISTS redundancy_layers (
    analysis VARCHAR NOT NULL, activation_set VARCHAR NOT NULL, layer INTEGER NOT NULL,
    threshold DOUBLE NOT NULL, n_neurons BIGINT NOT NULL, n_constant BIGINT NOT NULL,
    n_clusters BIGINT NOT NULL, n_independent BIGINT NOT NULL, largest_cluster BIGINT,
    mean_cluster_size DOUBLE);
CREATE TABLE IF NOT EXISTS redundancy_neurons (
    analysis VARCHAR NOT NULL, activation_set VARCHAR NOT NULL, neuron INTEGER NOT NULL,
    layer INTEGER NOT NULL, unit INTEGER NOT NULL, cluster INTEGER NOT NULL,
    is_constant BOOLEAN NOT NULL, is_representative BOOLEAN NOT NULL);
CREATE TABLE IF NOT EXISTS metrics (
    analysis VARCHAR NOT NULL, activation_set VARCHAR NOT NULL, task VARCHAR NOT NULL,
    method VARCHAR NOT NULL, scope VARCHAR NOT NULL, label VARCHAR, selection VARCHAR NOT NULL,
    fraction DOUBLE, k INTEGER, draw INTEGER, metric VARCHAR NOT NULL, value DOUBLE);
CREATE TABLE IF NOT EXISTS selectivity (
    analysis VARCHAR NOT NULL, activation_set VARCHAR NOT NULL, task VARCHAR NOT NULL,
    method VARCHAR NOT NULL, k INTEGER NOT NULL, task_accuracy DOUBLE, control_accuracy DOUBLE,
    selectivity DOUBLE, control_seed INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS layer_probes (
    analysis VARCHAR NOT NULL, activation_set VARCHAR NOT NULL, task VARCHAR NOT NULL,
    layer INTEGER NOT NULL, n_neurons INTEGER NOT NULL, accuracy DOUBLE, control_accuracy DOUBLE,
    selectivity DOUBLE, control_seed INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS ablation (
    analysis VARCHAR NOT NULL, activation_set VARCHAR NOT NULL, task VARCHAR NOT NULL,
    method VARCHAR NOT NULL, mode VARCHAR NOT NULL, selection VARCHAR NOT NULL, fraction DOUBLE,
    k INTEGER NOT NULL, draw INTEGER, accuracy DOUBLE, zero_value VARCHAR);
CREATE TABLE IF NOT EXISTS layer_distribution (
    analysis VARCHAR NOT NULL, activation_set VARCHAR NOT NULL, task VARCHAR NOT NULL,
    method VARCHAR NOT NULL, label VARCHAR NOT NULL, layer INTEGER NOT NULL, n_neurons INTEGER NOT NULL,
    share DOUBLE);
CREATE TABLE IF NOT EXISTS minimal_neurons (
    analysis VARCHAR NOT NULL, activation_set VARCHAR NOT NULL, task VARCHAR NOT NULL,
    method VARCHAR NOT NULL, label VARCHAR NOT NULL, n_neurons INTEGER, reached_f1 DOUBLE,
    target_f1 DOUBLE, full_f1 DOUBLE, neurons INTEGER[]);
CREATE TABLE IF NOT EXISTS class_metrics (
    analysis VARCHAR NOT NULL, activation_set VARCHAR NOT NULL, task VARCHAR NOT NULL,
    label VARCHAR NOT NULL, support INTEGER NOT NULL, n_predicted INTEGER NOT NULL, accuracy DOUBLE,
    precision DOUBLE, f1 DOUBLE);
CREATE TABLE IF NOT EXISTS confusion (
    analysis VARCHAR NOT NULL, activation_set VARCHAR NOT NULL, task VARCHAR NOT NULL,
    true_label VARCHAR NOT NULL, predicted_label VARCHAR NOT NULL, count INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS reports (
    analysis VARCHAR NOT NULL, activation_set VARCHAR NOT NULL, task VARCHAR NOT NULL,
    model_version VARCHAR NOT NULL, html_path VARCHAR NOT NULL, markdown_path VARCHAR NOT NULL,
    created_at TIMESTAMP DEFAULT current_timestamp);
CREATE TABLE IF NOT EXISTS task_labels (
    corpus_id VARCHAR NOT NULL, task VARCHAR NOT NULL, sentence_id INTEGER NOT NULL, position INTEGER NOT NULL,
    label VARCHAR NOT NULL);
CREATE TABLE IF NOT EXISTS task_balance (
    corpus_id VARCHAR NOT NULL, task VARCHAR NOT NULL, label VARCHAR NOT NULL, n_before INTEGER NOT NULL,
    n_after INTEGER NOT NULL, seed INTEGER NOT NULL, target VARCHAR NOT NULL);
CREATE TABLE IF NOT EXISTS model_versions (
    analysis VARCHAR NOT NULL, activation_set VARCHAR NOT NULL, model_version VARCHAR NOT NULL,
    label VARCHAR NOT NULL, model_dir VARCHAR NOT NULL, registered_at TIMESTAMP NOT NULL);
CREATE TABLE IF NOT EXISTS class_selectivity (
    analysis VARCHAR NOT NULL, activation_set VARCHAR NOT NULL, task VARCHAR NOT NULL, label VARCHAR NOT NULL,
    support INTEGER NOT NULL, task_accuracy DOUBLE, control_accuracy DOUBLE, selectivity DOUBLE,
    control_seed INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS drift_runs (
    analysis VARCHAR NOT NULL, activation_set VARCHAR NOT NULL, task VARCHAR NOT NULL,
    previous_activation_set VARCHAR, label VARCHAR NOT NULL, previous_label VARCHAR,
    model_version VARCHAR NOT NULL, previous_model_version VARCHAR, n_alerts INTEGER NOT NULL,
    created_at TIMESTAMP DEFAULT current_timestamp);
CREATE TABLE IF NOT EXISTS drift_rankings (
    analysis VARCHAR NOT NULL, activation_set VARCHAR NOT NULL, task VARCHAR NOT NULL,
    previous_activation_set VARCHAR NOT NULL, method VARCHAR NOT NULL, k INTEGER NOT NULL,
    n_previous INTEGER, n_current INTEGER, overlap INTEGER, jaccard DOUBLE, entered INTEGER[], "left" INTEGER[],
    n_entered INTEGER, n_left INTEGER, spearman DOUBLE, n_scored INTEGER, status VARCHAR NOT NULL);
CREATE TABLE IF NOT EXISTS drift_classes (
    analysis VARCHAR NOT NULL, activation_set VARCHAR NOT NULL, task VARCHAR NOT NULL,
    previous_activation_set VARCHAR NOT NULL, method VARCHAR NOT NULL, label VARCHAR NOT NULL, k INTEGER NOT NULL,
    n_previous INTEGER, n_current INTEGER, overlap INTEGER, jaccard DOUBLE, entered INTEGER[], "left" INTEGER[],
    n_entered INTEGER, n_left INTEGER, status VARCHAR NOT NULL);
CREATE TABLE IF NOT EXISTS drift_metrics (
    analysis VARCHAR NOT NULL, activation_set VARCHAR NOT NULL, task VARCHAR NOT NULL,
    previous_activation_set VARCHAR NOT NULL, label VARCHAR NOT NULL,
    support_previous INTEGER, support_current INTEGER, accuracy_previous DOUBLE, accuracy_current DOUBLE,
    accuracy_delta DOUBLE, f1_previous DOUBLE, f1_current DOUBLE, f1_delta DOUBLE,
    selectivity_previous DOUBLE, selectivity_current DOUBLE, selectivity_delta DOUBLE, status VARCHAR NOT NULL);
CREATE TABLE IF NOT EXISTS drift_layers (
    analysis VARCHAR NOT NULL, activation_set VARCHAR NOT NULL, task VARCHAR NOT NULL,
    previous_activation_set VARCHAR NOT NULL, layer INTEGER NOT NULL, n_neurons INTEGER NOT NULL,
    n_constant INTEGER NOT NULL, corr_median DOUBLE, corr_p05 DOUBLE, corr_p95 DOUBLE, corr_mean DOUBLE,
    n_words INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS drift_alerts (
    analysis VARCHAR NOT NULL, activation_set VARCHAR NOT NULL, task VARCHAR NOT NULL,
    previous_activation_set VARCHAR NOT NULL, kind VARCHAR NOT NULL, method VARCHAR, label VARCHAR, k INTEGER,
    value DOUBLE, threshold DOUBLE, message VARCHAR NOT NULL);
"""
# The schema above, as a file last brought up to it records it (table ``store_schema``): a
# write connection to such a file skips the DDL, which took ~12 of the ~30 ms of opening
# the file, ~50 times a run. Any change to _SCHEMA changes the fingerprint, so files made
# before it get the new DDL on their next write connection.
_SCHEMA_FINGERPRINT = hashlib.sha256(_SCHEMA.encode()).hexdigest()[:16]
_SCHEMA_STAMP = f"""
CREATE TABLE IF NOT EXISTS store_schema (fingerprint VARCHAR NOT NULL);
DELETE FROM store_schema;
INSERT INTO store_schema VALUES ('{_SCHEMA_FINGERPRINT}');
"""


def _ensure_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create or migrate the tables unless the file records the current schema."""
    try:
        rows = con.execute("SELECT fingerprint FROM store_schema").fetchall()
    except duckdb.CatalogException:
        rows = []
    if rows != [(_SCHEMA_FINGERPRINT,)]:
        con.execute(_SCHEMA + _SCHEMA_STAMP)


class StoreError(RuntimeError):
    """The DuckDB file cannot be opened or does not hold what a stage needs."""


@dataclass(frozen=True)
class ActivationSet:
    """One extraction configuration of one model version; its id keys the activation rows."""

    activation_set: str
    model_version: str
    model_dir: str
    aggregation: str
    dtype: str
    long_sentences: str
    n_layers: int
    hidden_size: int
    #: How the values are stored: float32 in ``activations``; float16 or bfloat16 as their
    #: 16-bit patterns in ``activations16`` (half the disk and read volume).
    storage_dtype: str = "float32"
    #: Where the rows are: None = in the DuckDB file; a folder = Parquet files under
    #: ``<parquet_dir>/<activation_set>/``, listed in ``activation_files`` once committed.
    parquet_dir: str | None = None
    #: How a Parquet file holds a row's values: "bytes" (fixed-length little-endian bytes;
    #: sets created since this layout exists) or "list" (a Parquet LIST of numbers: older
    #: sets, which keep it so that their files stay uniform). Ignored for DuckDB rows.
    parquet_layout: str = "bytes"

    @property
    def n_neurons(self) -> int:
        return self.n_layers * self.hidden_size

    @property
    def table(self) -> str:
        """The table holding this set's rows."""
        return "activations" if self.storage_dtype == "float32" else "activations16"


#: Storage dtypes of activations (``extraction.storage_dtype``).
STORAGE_DTYPES = ("float32", "float16", "bfloat16")


def encode_activations(values: np.ndarray, storage_dtype: str) -> np.ndarray:
    """float32 values as stored: unchanged, or the uint16 bit patterns of float16 or
    bfloat16 (round to nearest even, as torch converts: torch's vectorised conversion does
    it, 6-8x faster than numpy's). Raises ValueError when a finite value overflows float16."""
    values = np.asarray(values, dtype=np.float32)
    if storage_dtype == "float32":
        return values
    if storage_dtype not in STORAGE_DTYPES:
        raise ValueError(f"Unknown storage dtype {storage_dtype!r}; choose one of {list(STORAGE_DTYPES)}.")
    import torch

    source = torch.from_numpy(np.ascontiguousarray(values))
    converted = source.to(torch.float16 if storage_dtype == "float16" else torch.bfloat16)
    if storage_dtype == "float16":
        overflow = torch.isinf(converted) & torch.isfinite(source)
        if bool(overflow.any()):
            raise ValueError(f"{int(overflow.sum())} activation values exceed float16's range (largest "
                             f"|value| {float(source[overflow].abs().max()):.4g} > 65504); use "
                             "extraction.storage_dtype: bfloat16 or float32.")
    return converted.view(torch.int16).numpy().view(np.uint16)


def decode_activations(stored: np.ndarray, storage_dtype: str) -> np.ndarray:
    """Inverse of :func:`encode_activations`: float32 values."""
    if storage_dtype == "float32":
        return np.asarray(stored, dtype=np.float32)
    bits = np.asarray(stored, dtype=np.uint16)
    if storage_dtype == "float16":
        return bits.view(np.float16).astype(np.float32)
    return (bits.astype(np.uint32) << 16).view(np.float32)


@dataclass
class ActivationBatch:
    """Stored rows of one read batch (:meth:`Store.activation_batches`), in any order."""

    #: Layer of each row.
    layer: np.ndarray
    #: Number of values stored in each row (hidden_size unless the store is damaged).
    width: np.ndarray
    #: Rows holding exactly hidden_size values.
    full: np.ndarray
    #: The values of the ``full`` rows, float32, shape (full.sum(), hidden_size).
    values: np.ndarray
    #: Sentence hash of each row, when asked for.
    sentence_hash: np.ndarray | None = None


def _row_values(column, aset: ActivationSet) -> tuple[np.ndarray, np.ndarray]:
    """(values per row, stored values as a (rows, hidden_size) array) of an Arrow column of
    activations: bytes (the Parquet ``bytes`` layout: read in place, no per-value work) or
    lists (DuckDB rows, the ``list`` layout). The array is returned only when every row
    has hidden_size values (else an empty one)."""
    import pyarrow as pa

    element = np.dtype(np.float32 if aset.storage_dtype == "float32" else np.uint16)
    hsz, n = aset.hidden_size, len(column)
    if pa.types.is_fixed_size_binary(column.type):
        width = np.full(n, column.type.byte_width // element.itemsize, dtype=np.int64)
        start, stop = column.offset * column.type.byte_width, (column.offset + n) * column.type.byte_width
    elif pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
        offsets = np.frombuffer(column.buffers()[1], dtype=np.int64 if pa.types.is_large_binary(column.type)
                                else np.int32)[column.offset:column.offset + n + 1]
        width = np.diff(offsets).astype(np.int64) // element.itemsize
        start, stop = int(offsets[0]), int(offsets[-1])
    else:
        if pa.types.is_fixed_size_list(column.type):
            width = np.full(n, column.type.list_size, dtype=np.int64)
        else:
            import pyarrow.compute as pc

            width = pc.list_value_length(column).to_numpy(zero_copy_only=False).astype(np.int64)
        if (width != hsz).any():
            return width, np.empty((0, hsz), dtype=element)
        return width, column.flatten().to_numpy(zero_copy_only=False).astype(element, copy=False).reshape(n, hsz)
    if (width != hsz).any():
        return width, np.empty((0, hsz), dtype=element)
    data = column.buffers()[-1]
    return width, np.frombuffer(data, dtype=np.uint8)[start:stop].view(element).reshape(n, hsz)


#: Columns of ``activation_sentences`` every storage writes (Parquet adds ``file``).
_SENTENCE_COLUMNS = "activation_set, sentence_hash, n_words, status, windowed"

def _not_done(con: duckdb.DuckDBPyConnection, activation_set: str, todo: list, status: pl.DataFrame
              ) -> tuple[list, pl.DataFrame]:
    """``todo`` (sentence_hash, array, windowed) and the ``status`` rows without the sentences
    that ``activation_sentences`` already holds, read inside the writing transaction."""
    done = {r[0] for r in con.execute("SELECT sentence_hash FROM activation_sentences WHERE activation_set = ?",
                                      [activation_set]).fetchall()}
    if not done.intersection(status["sentence_hash"].to_list()):
        return todo, status
    return ([t for t in todo if t[0] not in done],
            status.filter(~pl.col("sentence_hash").is_in(list(done))))


def _in_wanted(aset: ActivationSet) -> str:
    """How a read joins the stored rows ``a`` with the wanted words ``w`` (see Store._scan):
    on keys, and for Parquet on the file the catalogue names for the sentence."""
    keys = "a.sentence_hash = w.sentence_hash AND a.position = w.position"
    return keys if aset.parquet_dir is None else f"{keys} AND (w.file_index IS NULL OR a.file_index = w.file_index)"


def _act_sql(aset: ActivationSet) -> str:
    """The SELECT expression of a stored row's values ``a.act``: cast to a fixed size for
    lists, as they are for bytes."""
    if aset.parquet_dir is not None and aset.parquet_layout == "bytes":
        return "a.act"
    element = "FLOAT" if aset.storage_dtype == "float32" else "USMALLINT"
    return f"a.act::{element}[{aset.hidden_size}]"


#: Rows per record batch when activations are read (they stream; see read_activation_matrix).
#: Reading EWT test's matrix (257 MB, MiniLM) peaked ~400 MB above the start with 4,096
#: rows against ~470 MB with 16,384, in the same time (~0.5 s); fewer rows were slower.
_READ_BATCH_ROWS = 4_096


def _memory_limit() -> str:
    return os.environ.get("NEURO_PIPELINE_DUCKDB_MEMORY", "512MB")


def _read_memory_mb(n_keys: int) -> int:
    """DuckDB memory for reading ``n_keys`` words: the hash tables of the keys (a join, a
    DISTINCT; about 256 bytes a key) and the row groups being decoded (192 MB). Whatever
    DuckDB caches counts towards the process's peak: at 512 MB, loading EWT
    dev's matrix peaked 0.5 GB above its result. Measured too tight: 64 MB (out of memory
    with 269k keys) and 96 MB + 200 B/key (out of memory scanning EWT dev + test from
    Parquet while checking the activations)."""
    return 192 + n_keys * 256 // 2**20


class Store:
    """One DuckDB file holding every stage's tables.

    Parameters
    ----------
    path : str or Path
        The database file; created (with its folder) on first write.
    """

    def __init__(self, path: str | Path, *, lock_timeout: float | None = None) -> None:
        self.path = Path(path)
        if lock_timeout is None:
            lock_timeout = float(os.environ.get("NEURO_PIPELINE_LOCK_TIMEOUT", "600"))
        self.lock_timeout = lock_timeout

    def _open(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        """Open the file, waiting while another process holds its lock."""
        start = time.monotonic()
        delay, last_log = 0.02, None
        while True:
            try:
                return duckdb.connect(str(self.path), read_only=read_only, config={"memory_limit": _memory_limit()})
            except duckdb.IOException as exc:
                message = str(exc)
                if "not a valid DuckDB database" in message or "not a DuckDB" in message:
                    raise StoreError(
                        f"{self.path}: the file exists but is not a DuckDB database (corrupt, or another "
                        "kind of file). Nothing was changed; move it aside or point `store:` in "
                        "pipeline.yaml at another file.") from exc
                if "lock" not in message:
                    raise StoreError(f"{self.path}: cannot open the DuckDB file: {message}") from exc
                holder = re.search(r"held in (.*?) \(PID (\d+)\)", message)
                who = f"PID {holder.group(2)} ({holder.group(1)})" if holder else "another process"
                waited = time.monotonic() - start
                if waited >= self.lock_timeout:
                    raise StoreError(
                        f"{self.path}: still locked by {who} after waiting {waited:.0f} s (lock_timeout "
                        f"{self.lock_timeout:g} s); nothing was written. Run again when it has finished, "
                        "or raise NEURO_PIPELINE_LOCK_TIMEOUT.") from exc
                if last_log is None or time.monotonic() - last_log >= 30:
                    log.warning("%s is locked by %s; waiting for it (up to %g s).", self.path, who,
                                self.lock_timeout)
                    last_log = time.monotonic()
                time.sleep(min(delay, max(0.0, self.lock_timeout - waited)))
                delay = min(delay * 2, 0.5)

    @contextlib.contextmanager
    def connect(self, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """Open the file for one operation; the schema is created on first use."""
        if read_only and not self.path.exists():
            raise StoreError(f"{self.path}: the store does not exist yet; run the pipeline first.")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = self._open(read_only)
        try:
            if not read_only:
                _ensure_schema(con)
            yield con
        finally:
            con.close()

    @contextlib.contextmanager
    def streaming(self, n_keys: int = 0) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection for a read whose result streams in record batches
        (``con.sql(...).to_arrow_reader(rows)``): DuckDB's memory is capped low for it
        (see :func:`_read_memory_mb`), since what DuckDB caches counts towards the process's
        peak; ``n_keys`` is the size of the key table the read joins."""
        with self.connect() as con:
            # Rows in any order: DuckDB then streams them instead of buffering to keep order.
            con.execute(f"SET memory_limit = '{_read_memory_mb(n_keys)}MB'; SET preserve_insertion_order = false")
            try:
                yield con
            finally:
                con.execute(f"SET memory_limit = '{_memory_limit()}'; RESET preserve_insertion_order")

    @contextlib.contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A write transaction: committed on success, rolled back on any error."""
        with self.connect() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    # ---------------------------------------------------------------- tokens
    def write_tokens(self, table: pl.DataFrame, task_labels: pl.DataFrame | None = None,
                     balance: pl.DataFrame | None = None, pairs: pl.DataFrame | None = None) -> None:
        """Replace the token rows of the corpus ids present in ``table`` (and, in the same
        transaction, their concept-task labels, balancing counts and sentence pairs)."""
        missing = [c for c in TOKEN_COLUMNS if c not in table.columns]
        if missing:
            raise ValueError(f"token table lacks columns {missing}; expected {list(TOKEN_COLUMNS)}.")
        frame = table.select(TOKEN_COLUMNS)
        corpus_ids = frame["corpus_id"].unique().to_list()
        with self.transaction() as con:
            for name in ("tokens", "task_labels", "task_balance", "sentence_pairs"):
                con.execute(f"DELETE FROM {name} WHERE corpus_id IN (SELECT unnest(?))", [corpus_ids])
            con.execute("INSERT INTO tokens SELECT * FROM frame")
            if task_labels is not None and task_labels.height:
                labels = task_labels.select("corpus_id", "task", "sentence_id", "position", "label")  # noqa: F841
                con.execute("INSERT INTO task_labels SELECT * FROM labels")
            if balance is not None and balance.height:
                counts = balance.select("corpus_id", "task", "label", "n_before", "n_after", "seed",  # noqa: F841
                                        pl.col("target").cast(pl.String))
                con.execute("INSERT INTO task_balance SELECT * FROM counts")
            if pairs is not None and pairs.height:
                second = pairs.select("corpus_id", "sentence_id", "pair")  # noqa: F841
                con.execute("INSERT INTO sentence_pairs SELECT * FROM second")

    def read_tokens(self, corpus_id: str, *, splits: Sequence[str] | None = None) -> pl.DataFrame:
        """The token rows of one corpus, ordered by sentence and position."""
        sql = f"SELECT {', '.join(TOKEN_COLUMNS)} FROM tokens WHERE corpus_id = $cid"
        params: dict = {"cid": corpus_id}
        if splits is not None:
            sql += " AND split IN (SELECT unnest($splits))"
            params["splits"] = list(splits)
        with self.connect() as con:
            frame = con.sql(sql + " ORDER BY sentence_id, position", params=params).pl()
        if frame.is_empty():
            raise StoreError(f"{self.path}: no tokens for corpus '{corpus_id}'"
                             + (f" in splits {list(splits)}" if splits else "")
                             + "; materialize annotated_corpus first.")
        return frame

    def read_pairs(self, corpus_id: str) -> pl.DataFrame:
        """The second segments of the corpus's sentence pairs: sentence_id, pair (list of
        words); empty when the corpus has none."""
        with self.connect() as con:
            return con.sql("SELECT sentence_id, pair FROM sentence_pairs WHERE corpus_id = $cid "
                           "ORDER BY sentence_id", params={"cid": corpus_id}).pl()

    # ----------------------------------------------------------- activations
    def register_activation_set(self, aset: ActivationSet) -> None:
        """Record (or update) an activation set. A set already stored keeps its Parquet
        layout, so that all of its files are written the same way."""
        with self.transaction() as con:
            row = con.execute("SELECT coalesce(parquet_layout, 'list') FROM activation_sets WHERE activation_set = ?",
                              [aset.activation_set]).fetchone()
            layout = row[0] if row else aset.parquet_layout
            con.execute("DELETE FROM activation_sets WHERE activation_set = ?", [aset.activation_set])
            con.execute(
                "INSERT INTO activation_sets (activation_set, model_version, model_dir, aggregation, dtype, "
                "long_sentences, n_layers, hidden_size, storage_dtype, parquet_dir, parquet_layout) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [aset.activation_set, aset.model_version, aset.model_dir, aset.aggregation, aset.dtype,
                 aset.long_sentences, aset.n_layers, aset.hidden_size, aset.storage_dtype, aset.parquet_dir,
                 layout],
            )

    def register_model_version(self, analysis: str, aset: ActivationSet, label: str) -> None:
        """Record the first time an analysis sees an activation set (a model version under one
        extraction setting); the order of these records defines each version's predecessor.
        A later call for the same set keeps the first time and updates the label."""
        with self.transaction() as con:
            row = con.execute("SELECT registered_at FROM model_versions WHERE analysis = ? AND activation_set = ?",
                              [analysis, aset.activation_set]).fetchone()
            con.execute("DELETE FROM model_versions WHERE analysis = ? AND activation_set = ?",
                        [analysis, aset.activation_set])
            con.execute(
                "INSERT INTO model_versions VALUES (?, ?, ?, ?, ?, coalesce(?::TIMESTAMP, current_timestamp))",
                [analysis, aset.activation_set, aset.model_version, label, aset.model_dir,
                 row[0] if row else None])

    def activation_set(self, activation_set: str) -> ActivationSet:
        with self.connect() as con:
            return self._activation_set(con, activation_set)

    def _activation_set(self, con: duckdb.DuckDBPyConnection, activation_set: str) -> ActivationSet:
        row = con.execute(
            "SELECT activation_set, model_version, model_dir, aggregation, dtype, long_sentences, "
            "n_layers, hidden_size, coalesce(storage_dtype, 'float32'), parquet_dir, "
            "coalesce(parquet_layout, 'list') FROM activation_sets WHERE activation_set = ?", [activation_set]
        ).fetchone()
        if row is None:
            raise StoreError(f"{self.path}: unknown activation set '{activation_set}'; "
                             "materialize token_activations first.")
        return ActivationSet(*row)

    def extracted_sentences(self, activation_set: str) -> pl.DataFrame:
        """Sentences already processed for an activation set: sentence_hash, n_words, status, windowed."""
        with self.connect() as con:
            return con.sql(
                "SELECT sentence_hash, n_words, status, windowed FROM activation_sentences "
                "WHERE activation_set = ?", params=[activation_set]).pl()

    def write_activations(
        self,
        activation_set: str | ActivationSet,
        sentences: Sequence[tuple[str, np.ndarray, bool]],
        rejected: Sequence[tuple[str, int]] = (),
    ) -> None:
        """Append the activations of whole sentences in one transaction.

        Parameters
        ----------
        activation_set : str or ActivationSet
            The set the rows belong to (registered with :meth:`register_activation_set`);
            passing the set itself saves looking it up.
        sentences : sequence of (sentence_hash, array, windowed)
            ``array`` has shape (n_words, n_layers, hidden_size). A sentence whose hash
            is already stored is skipped (duplicates in a corpus share one entry), also when
            another process stored it while this one was computing: the check is made in
            the writing transaction.
        rejected : sequence of (sentence_hash, n_words)
            Sentences the extractor refused (too long); recorded so they are reported,
            not silently missing, and not retried.
        """
        aset = activation_set if isinstance(activation_set, ActivationSet) else self.activation_set(activation_set)
        activation_set = aset.activation_set
        seen: set[str] = set()
        todo = []
        for h, arr, windowed in sentences:
            if h in seen:
                continue
            if not np.issubdtype(arr.dtype, np.floating):
                raise TypeError(f"activations must be floating point, got {arr.dtype}.")
            if arr.ndim != 3 or arr.shape[1:] != (aset.n_layers, aset.hidden_size):
                raise ValueError(f"activations of sentence {h} have shape {arr.shape}; expected "
                                 f"(n_words, {aset.n_layers}, {aset.hidden_size}).")
            seen.add(h)
            todo.append((h, arr, windowed))
        rejected = [(h, n) for h, n in dict(rejected).items() if h not in seen]
        if not todo and not rejected:
            return
        status = pl.DataFrame({
            "activation_set": activation_set,
            "sentence_hash": [h for h, _, _ in todo] + [h for h, _ in rejected],
            "n_words": [a.shape[0] for _, a, _ in todo] + [n for _, n in rejected],
            "status": ["ok"] * len(todo) + ["rejected"] * len(rejected),
            "windowed": [bool(w) for _, _, w in todo] + [False] * len(rejected),
        }, schema={"activation_set": pl.Utf8, "sentence_hash": pl.Utf8, "n_words": pl.Int32,
                   "status": pl.Utf8, "windowed": pl.Boolean})
        if aset.parquet_dir is not None:
            self._write_parquet(aset, todo, status)
            return
        with self.transaction() as con:
            # Another process may have stored some of these sentences while this one computed them.
            todo, status = _not_done(con, activation_set, todo, status)
            index = pl.DataFrame({
                "activation_set": activation_set,
                "sentence_hash": [h for h, a, _ in todo for _ in range(a.shape[0])],
                "position": np.concatenate([np.arange(a.shape[0], dtype=np.int32) for _, a, _ in todo])
                if todo else np.zeros(0, np.int32),
            }, schema={"activation_set": pl.Utf8, "sentence_hash": pl.Utf8, "position": pl.Int32})
            if todo:
                stacked = encode_activations(np.concatenate([a for _, a, _ in todo], axis=0), aset.storage_dtype)
                element = pl.Float32 if aset.storage_dtype == "float32" else pl.UInt16
                for layer in range(stacked.shape[1]):
                    frame = index.with_columns(
                        pl.lit(layer, pl.Int16).alias("layer"),
                        pl.Series("act", np.ascontiguousarray(stacked[:, layer]),
                                  dtype=pl.Array(element, stacked.shape[2])).cast(pl.List(element)),
                    )
                    con.execute(f"INSERT INTO {aset.table} SELECT * FROM frame")
            con.execute(f"INSERT INTO activation_sentences ({_SENTENCE_COLUMNS}) SELECT * FROM status")

    def _write_parquet(self, aset: ActivationSet, todo: list[tuple[str, np.ndarray, bool]],
                       status: pl.DataFrame) -> None:
        """One Parquet file for the buffer (rows ordered by layer, so a layer's reads skip the
        other row groups), renamed into place, then listed in ``activation_files`` in the
        transaction that marks its sentences done (with the file each is in, so that a read
        scans only the files holding its words). A crash before that commit leaves an
        unlisted file, which is never read (and is removed by :meth:`remove_unlisted_files`).

        Layout ``bytes`` (sets created since 2026-12): ``act`` is each row's values as
        fixed-length little-endian bytes (FIXED_LEN_BYTE_ARRAY of hidden_size x 4 bytes, or
        x 2 for 16-bit storage), which is written and read as plain memory: 1.3-1.8x cheaper
        to write and 1.25-3.5x to read than the ``list`` layout of older sets (a Parquet LIST
        of floats, whose repetition levels cost more than the values; kept readable), and
        about 10x cheaper to write than DuckDB rows (``benchmarks/store_layouts.py``)."""
        import uuid

        import pyarrow as pa
        import pyarrow.parquet as pq

        files = []
        file_of_sentence: list[str | None] = [None] * status.height
        if todo:
            folder = Path(aset.parquet_dir) / aset.activation_set
            folder.mkdir(parents=True, exist_ok=True)
            n_layers, width = aset.n_layers, aset.hidden_size
            counts = np.array([a.shape[0] for _, a, _ in todo], dtype=np.int64)
            n = int(counts.sum())
            element = np.float32 if aset.storage_dtype == "float32" else np.uint16
            # Layer-major rows, filled sentence by sentence: one copy of the values.
            values = np.empty((n_layers, n, width), dtype=element)
            offset = 0
            for (_, arr, _), count in zip(todo, counts):
                values[:, offset:offset + count] = encode_activations(arr, aset.storage_dtype).transpose(1, 0, 2)
                offset += count
            sentence = np.repeat(np.arange(len(todo), dtype=np.int32), counts)
            position = np.concatenate([np.arange(c, dtype=np.int32) for c in counts])
            hashes = pa.DictionaryArray.from_arrays(pa.array(np.tile(sentence, n_layers)),
                                                    pa.array([h for h, _, _ in todo], pa.string()))
            flat = values.reshape(-1)
            if aset.parquet_layout == "bytes":
                act = pa.FixedSizeBinaryArray.from_buffers(pa.binary(width * flat.itemsize), n * n_layers,
                                                           [None, pa.py_buffer(flat)])
            else:  # "list": the layout of sets created before the bytes layout
                act = (pa.FixedSizeListArray.from_arrays(pa.array(flat), width)
                       .cast(pa.list_(pa.from_numpy_dtype(element))))
            table = pa.table({
                "sentence_hash": hashes,
                "position": pa.array(np.tile(position, n_layers), pa.int32()),
                "layer": pa.array(np.repeat(np.arange(n_layers, dtype=np.int16), n), pa.int16()),
                "act": act,
            })
            name = f"part-{uuid.uuid4().hex}.parquet"
            tmp = folder / f".{name}.tmp"
            # Floats do not compress (lz4 left 85 of 85 MB) and per-page dictionaries and
            # statistics over them cost ~12% of the write: only the key columns get them.
            keys = ["sentence_hash", "position", "layer"]
            pq.write_table(table, tmp, compression={**{k: "lz4" for k in keys}, "act": "none"},
                           use_dictionary=["sentence_hash"], write_statistics=keys, row_group_size=max(1, n))
            tmp.replace(folder / name)
            files.append((aset.activation_set, str(folder / name), table.num_rows))
            file_of_sentence[:len(todo)] = [str(folder / name)] * len(todo)
        status = status.with_columns(pl.Series("file", file_of_sentence, dtype=pl.Utf8))
        try:
            with self.transaction() as con:
                # Sentences another process stored meanwhile keep their file; this file's rows
                # of them are never read (reads take a sentence's rows from its own file).
                kept, status = _not_done(con, aset.activation_set, todo, status)
                listed = pl.DataFrame(files if kept else [], orient="row",  # noqa: F841
                                      schema={"activation_set": pl.Utf8, "file": pl.Utf8, "n_rows": pl.Int64})
                con.execute("INSERT INTO activation_files SELECT * FROM listed")
                con.execute(f"INSERT INTO activation_sentences ({_SENTENCE_COLUMNS}, file) SELECT * FROM status")
        except BaseException:
            for _, file, _ in files:
                Path(file).unlink(missing_ok=True)
            raise
        if files and not kept:
            Path(files[0][1]).unlink(missing_ok=True)

    def activation_files(self, activation_set: str) -> list[str]:
        """The committed Parquet files of a set (empty for a set stored in DuckDB)."""
        with self.connect() as con:
            return self._activation_files(con, activation_set)

    @staticmethod
    def _activation_files(con: duckdb.DuckDBPyConnection, activation_set: str) -> list[str]:
        return [r[0] for r in con.execute("SELECT file FROM activation_files WHERE activation_set = ? "
                                          "ORDER BY file", [activation_set]).fetchall()]

    def _sentence_files(self, aset: ActivationSet, keys: pl.DataFrame) -> tuple[list[str], pl.DataFrame]:
        """The committed Parquet files that hold the sentences of ``keys``, and the file each
        of those sentences is read from (``sentence_hash``, ``file``; file null for a sentence
        stored before files were recorded per sentence, whose rows may then be in any file:
        every file is scanned)."""
        hashes = keys.select(pl.col("sentence_hash").cast(pl.Utf8).unique())  # noqa: F841
        with self.connect() as con:
            listed = self._activation_files(con, aset.activation_set)
            located = con.sql(
                "SELECT s.sentence_hash, any_value(s.file) AS file FROM activation_sentences s "
                "JOIN hashes h USING (sentence_hash) WHERE s.activation_set = ? AND s.status = 'ok' "
                "GROUP BY s.sentence_hash", params=[aset.activation_set]).pl()
        holding = set(located["file"].drop_nulls().to_list())
        if located["file"].null_count():
            return listed, located
        return [f for f in listed if f in holding], located

    def activation_relation(self, aset: ActivationSet, files: Sequence[str] | None = None
                            ) -> tuple[str, dict[str, object]]:
        """SQL for the set's activation rows (columns sentence_hash, position, layer, act and
        activation_set; for Parquet also file_index, the file's place in ``files``) and its
        parameters: the DuckDB table, or ``read_parquet`` over the committed files (or over
        ``files``). A Parquet file may hold rows of a sentence that another file holds too
        (two runs that extracted it at once); the sentence's rows are those of the file
        ``activation_sentences`` names (join with :func:`_in_wanted`). ``act`` is as stored: a
        LIST for DuckDB rows and the ``list`` layout, bytes for the ``bytes`` layout (see
        :meth:`_write_parquet`)."""
        if aset.parquet_dir is None:
            return aset.table, {}
        if files is None:
            files = self.activation_files(aset.activation_set)
        element = "BLOB" if aset.parquet_layout == "bytes" else (
            "FLOAT[]" if aset.storage_dtype == "float32" else "USMALLINT[]")
        if not files:
            return (f"(SELECT NULL::VARCHAR AS activation_set, NULL::VARCHAR AS sentence_hash, NULL::INTEGER AS "
                    f"position, NULL::SMALLINT AS layer, NULL::{element} AS act, NULL::BIGINT AS file_index "
                    "WHERE false)"), {}
        return (f"(SELECT $set_id AS activation_set, sentence_hash, position, layer, act, file_index "
                f"FROM read_parquet($files))"), {"files": list(files), "set_id": aset.activation_set}

    def storage_order(self, activation_set: str, keys: pl.DataFrame) -> np.ndarray:
        """Indices into ``keys`` in the order the store holds those words (DuckDB rows: their
        row ids; Parquet: file, then row in the file), the same on every call; words it does
        not hold come last. Reading a matrix in this order fills its rows nearly sequentially,
        which is what a memory-mapped matrix needs: scattered in key order, a 2.8 GB matrix in
        a 1 GB memory cgroup re-read and re-wrote its pages for minutes."""
        aset = self.activation_set(activation_set)
        n = keys.height
        with self._scan(aset, keys) as (con, files):
            if aset.parquet_dir is None:
                source, order, params = f"{aset.table} a", "a.rowid", {"aset": activation_set}
                where = "a.activation_set = $aset AND a.layer = 0"
            else:
                if not files:
                    return np.arange(n)
                source = "(SELECT *, file_index FROM read_parquet($files, file_row_number = true)) a"
                order, params, where = "a.file_index, a.file_row_number", {"files": files}, "a.layer = 0"
            found = con.sql(f"SELECT w.idx FROM wanted w JOIN {source} ON {_in_wanted(aset)} WHERE {where} "
                            f"ORDER BY {order}, w.idx", params=params).fetchnumpy()["idx"]
        missing = np.setdiff1d(np.arange(n), found)
        return np.concatenate([found, missing]).astype(np.int64)

    @contextlib.contextmanager
    def _scan(self, aset: ActivationSet, keys: pl.DataFrame
              ) -> Iterator[tuple[duckdb.DuckDBPyConnection, list[str] | None]]:
        """A connection for one streamed read of ``aset``'s rows, holding the numbered keys as
        the temporary table ``wanted`` (idx, sentence_hash, position, and for a Parquet set
        file_index: the place in the files to scan of the file the word's sentence is
        catalogued in; null when it was stored before files were recorded), and the files to
        scan (None for DuckDB rows). A Parquet set is read by a DuckDB of its own: the store
        file is not held while the files are scanned, so the other processes of a run
        (extraction shards, other workers) keep writing; rows in DuckDB are read through the
        store. Join the rows with :func:`_in_wanted`."""
        wanted = keys.select(pl.int_range(0, keys.height, dtype=pl.Int64).alias("idx"),
                             pl.col("sentence_hash").cast(pl.Utf8), pl.col("position").cast(pl.Int32))
        if aset.parquet_dir is None:
            with self.streaming(keys.height) as con:
                con.execute("CREATE TEMP TABLE wanted AS SELECT *, NULL::BIGINT AS file_index FROM wanted")
                yield con, None
            return
        files, located = self._sentence_files(aset, keys)
        place = {file: i for i, file in enumerate(files)}
        file_index = pl.col("file").replace_strict(place, default=None, return_dtype=pl.Int64)
        located = located.select("sentence_hash", file_index.alias("file_index"))
        wanted = wanted.join(located, on="sentence_hash", how="left")  # noqa: F841
        con = duckdb.connect(":memory:", config={"memory_limit": f"{_read_memory_mb(keys.height)}MB",
                                                 "preserve_insertion_order": False})
        try:
            con.execute("CREATE TEMP TABLE wanted AS SELECT * FROM wanted")
            yield con, files
        finally:
            con.close()

    def remove_unlisted_files(self, aset: ActivationSet, *, older_than_seconds: float = 3600) -> int:
        """Delete Parquet files of the set that no commit lists (left by a crash) and that are
        older than ``older_than_seconds`` (a younger one may belong to a run about to commit
        it); their count. Unlisted files are never read, so this only frees disk."""
        if aset.parquet_dir is None:
            return 0
        folder = Path(aset.parquet_dir) / aset.activation_set
        listed = set(self.activation_files(aset.activation_set))
        removed = 0
        now = time.time()
        for path in list(folder.glob("part-*.parquet")) + list(folder.glob(".part-*.tmp")):
            if str(path) not in listed and now - path.stat().st_mtime >= older_than_seconds:
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    def activation_batches(self, activation_set: str, keys: pl.DataFrame, *,
                           with_hash: bool = False) -> Iterator[ActivationBatch]:
        """The set's rows of the given words (distinct ``sentence_hash``, ``position``), every
        layer, decoded, in batches in any order, with DuckDB's memory capped: one pass over
        activations larger than memory. A Parquet set is scanned without holding the store
        file (as :meth:`read_activation_matrix` does)."""
        aset = self.activation_set(activation_set)
        with self._scan(aset, keys) as (con, files):
            relation, params = self.activation_relation(aset, files)
            hash_sql = ", a.sentence_hash" if with_hash else ""
            reader = con.sql(
                f"SELECT a.layer, a.act{hash_sql} FROM wanted w JOIN {relation} a ON {_in_wanted(aset)} "
                "WHERE a.activation_set = $aset",
                params={**params, "aset": activation_set}).to_arrow_reader(_READ_BATCH_ROWS)
            for batch in reader:
                width, raw = _row_values(batch.column(1), aset)
                full = width == aset.hidden_size
                values = raw if full.all() else _row_values(batch.column(1).filter(full), aset)[1]
                yield ActivationBatch(
                    layer=batch.column(0).to_numpy().astype(np.int64), width=width, full=full,
                    values=decode_activations(values, aset.storage_dtype),
                    sentence_hash=batch.column(2).to_numpy(zero_copy_only=False) if with_hash else None)

    def read_activation_matrix(
        self,
        activation_set: str,
        keys: pl.DataFrame,
        *,
        layers: Sequence[int] | None = None,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """The activation matrix for the given words, rows in the order of ``keys``.

        Parameters
        ----------
        activation_set : str
        keys : polars.DataFrame
            Columns ``sentence_hash`` and ``position``: the words to fetch, joined on keys.
        layers : sequence of int, optional
            Layers to include (default all), concatenated in this order.
        out : numpy.ndarray, optional
            Where to write (float32 of the result's shape, e.g. a ``numpy.memmap``);
            default a new array.

        Returns
        -------
        numpy.ndarray of float32, shape (len(keys), len(layers) * hidden_size)

        Raises
        ------
        StoreError
            If any requested word has no activations (never padded or dropped).
        """
        aset = self.activation_set(activation_set)
        layers = list(range(aset.n_layers)) if layers is None else [int(i) for i in layers]
        bad = [i for i in layers if not 0 <= i < aset.n_layers]
        if bad:
            raise ValueError(f"layers {bad} out of range; activation set has layers 0..{aset.n_layers - 1}.")
        if len(set(layers)) != len(layers):
            raise ValueError(f"layers {layers} name a layer twice.")
        hsz = aset.hidden_size
        n = keys.height
        if out is None:
            out = np.empty((n, len(layers) * hsz), dtype=np.float32)
        elif out.shape != (n, len(layers) * hsz) or out.dtype != np.float32 or not out.flags.c_contiguous:
            raise ValueError(f"out must be a C-contiguous float32 array of shape {(n, len(layers) * hsz)}; "
                             f"got {out.dtype} {out.shape}.")
        position = np.full(aset.n_layers, -1, dtype=np.int64)
        position[layers] = np.arange(len(layers))
        cells = out.reshape(n, len(layers), hsz)  # a view: (word, requested layer, unit)
        filled = np.zeros((n, len(layers)), dtype=bool)
        n_rows = 0
        with self._scan(aset, keys) as (con, files):
            relation, params = self.activation_relation(aset, files)
            # One pass over the set for every layer; rows arrive in any order, in record
            # batches, and are scattered into place, so neither DuckDB nor Python holds more
            # than one batch besides the result.
            reader = con.sql(
                f"SELECT w.idx, a.layer, {_act_sql(aset)} AS act FROM wanted w JOIN {relation} a "
                f"ON {_in_wanted(aset)} WHERE a.activation_set = $aset "
                f"AND a.layer IN ({', '.join(str(int(i)) for i in layers)})",
                params={**params, "aset": activation_set}).to_arrow_reader(_READ_BATCH_ROWS)
            for batch in reader:
                idx = batch.column(0).to_numpy()
                pos = position[batch.column(1).to_numpy()]
                width, values = _row_values(batch.column(2), aset)
                if (width != hsz).any():
                    raise StoreError(f"{self.path}: activation set '{activation_set}' holds rows of "
                                     f"{int(width[width != hsz][0])} values where {hsz} were expected.")
                cells[idx, pos] = decode_activations(values, aset.storage_dtype)
                filled[idx, pos] = True
                n_rows += len(idx)
        if filled.all() and n_rows != filled.size:
            raise StoreError(f"{self.path}: activation set '{activation_set}' holds {n_rows - filled.size} "
                             "duplicate rows of the requested words; the store is inconsistent.")
        if not filled.all():
            row, j = (int(v[0]) for v in np.nonzero(~filled))
            example = keys.row(row, named=True)
            raise StoreError(
                f"{self.path}: activation set '{activation_set}' lacks {int((~filled[:, j]).sum())} of {n} "
                f"requested words in layer {layers[j]} (e.g. sentence {example.get('sentence_hash')} "
                f"position {example.get('position')}); re-materialize token_activations.")
        return out

    # ------------------------------------------------- rankings and metrics
    def replace_rows(self, table: str, frame: pl.DataFrame, where: dict[str, object]) -> None:
        """Delete the rows matching ``where`` and insert ``frame``, in one transaction."""
        self.replace_tables({table: frame}, where)

    def replace_tables(self, frames: dict[str, pl.DataFrame], where: dict[str, object]) -> None:
        """For every table, delete the rows matching ``where`` and insert its frame, all in one
        transaction: readers see either every table's old rows or every table's new rows."""
        self.replace_each([(table, frame, where) for table, frame in frames.items()])

    def replace_each(self, items: Sequence[tuple[str, pl.DataFrame, dict[str, object]]]) -> None:
        """Like :meth:`replace_tables` with a ``where`` of its own for each (table, frame,
        where) item; all in one transaction."""
        unknown = sorted({table for table, _, _ in items} - _WRITABLE)
        if unknown:
            raise ValueError(f"unknown table '{unknown[0]}'; choose one of {sorted(_WRITABLE)}.")
        for _, frame, where in items:
            for name in [*where, *frame.columns]:
                check_identifier(name)
        with self.transaction() as con:
            for table, frame, where in items:
                cond = " AND ".join(f"{k} = ${k}" for k in where) or "TRUE"
                con.execute(f"DELETE FROM {table} WHERE {cond}", where)
                if frame.height:
                    cols = ", ".join(f'"{c}"' for c in frame.columns)
                    con.register("_frame", frame)
                    con.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM _frame")
                    con.unregister("_frame")

    def query(self, sql: str, params: Sequence | dict | None = None) -> pl.DataFrame:
        """Run a read query and return a polars DataFrame."""
        with self.connect() as con:
            return con.sql(sql, params=params).pl()


#: Column names that may appear in SQL text; values are always bound parameters.
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def check_identifier(name: str) -> str:
    """``name`` if it is a plain lower-case SQL identifier, else ValueError: table and column
    names are the only parts of a statement built from text, and only these pass."""
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
        raise ValueError(f"{name!r} is not a valid column name; expected lower-case letters, digits "
                         "and '_', starting with a letter or '_' (at most 63 characters).")
    return name


_WRITABLE = {"rankings", "class_rankings", "ranking_runs", "ranking_probes", "top_words", "agreement",
             "redundancy_layers", "redundancy_neurons", "metrics", "selectivity", "layer_probes", "ablation",
             "layer_distribution", "minimal_neurons", "class_metrics", "confusion", "reports", "class_selectivity",
             "drift_runs", "drift_rankings", "drift_classes", "drift_metrics", "drift_alerts", "drift_layers",
             "interventions"}


def to_json(obj: object) -> str:
    """JSON for the params/fitted columns (numpy scalars and arrays made plain)."""
    def default(o: object) -> object:
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
        return str(o)
    return json.dumps(obj, sort_keys=True, default=default)


__all__ = ["ActivationSet", "Store", "StoreError", "to_json"]

"""Activation sets: how extracted activations are stored and read back.

Activations are content-addressed: an *activation set* is one (model version, aggregation,
dtype, long-sentence mode) combination, and its rows are keyed by the sentence's content
hash, so editing a corpus re-extracts only the sentences that changed. The layout (one row
per word and layer holding a ``FLOAT[]`` of the layer's units) was chosen by measurement;
see ``benchmarks/store_layouts.py``. Where the rows are is chosen per set: Parquet files catalogued
in the DuckDB file (the default; ``activation_files`` lists them) or rows of the DuckDB file
itself (``activations``, ``activations16``).

Start here: :class:`ActivationStorage` (part of :class:`~neuro_pipeline.store.Store`)
registers sets, writes whole sentences in one transaction each
(:meth:`ActivationStorage.write_activations`) and reads a split's matrix in one streamed
pass (:meth:`ActivationStorage.read_activation_matrix`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import polars as pl

from neuro_pipeline.options import STORAGE_DTYPES
from neuro_pipeline.store.engine import StoreError, read_memory_mb


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


class DiskFullError(StoreError):
    """A write of activations failed because the disk (or the user's quota) is full; nothing of
    that write was kept. ``what``: what failed; ``advice``: what to do (the message is both)."""

    def __init__(self, what: str, advice: str = "Free space on that disk and run again.") -> None:
        super().__init__(f"{what} {advice}")
        self.what, self.advice = what, advice


def is_disk_full(exc: BaseException) -> bool:
    """Whether an error of a write (Python's, pyarrow's or DuckDB's) says the disk or the
    quota is full."""
    if isinstance(exc, DiskFullError):
        return True
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc).lower()
    return any(s in text for s in ("no space left on device", "disk quota exceeded", "errno 28]", "errno 122]"))


@dataclass(frozen=True)
class DamagedFile:
    """A committed Parquet file of an activation set that cannot be read as catalogued
    (:meth:`ActivationStorage.damaged_activation_files`)."""

    file: str
    #: Why: missing, unreadable (truncated or corrupt; the Parquet footer cannot be read), or
    #: another number of rows than the catalogue lists.
    reason: str
    #: The rows ``activation_files`` lists for it.
    n_rows: int
    #: The sentences the catalogue reads from this file (``activation_sentences.file``).
    sentence_hashes: tuple[str, ...]


def _file_damage(path: str, n_rows: int) -> str | None:
    """Why a listed Parquet file cannot be read as catalogued, or None when its footer reads and
    counts ``n_rows`` rows. Reads the footer only (a few KB), never the data."""
    import pyarrow.parquet as pq

    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return f"cannot be opened ({exc.strerror or exc})"
    try:
        found = pq.read_metadata(path).num_rows
    except Exception as exc:  # pyarrow raises OSError or ArrowInvalid for a torn footer
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return f"unreadable: truncated or corrupt ({size:,} bytes; {detail})"
    if found != n_rows:
        return f"holds {found:,} rows where the catalogue lists {n_rows:,}"
    return None


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


def _reason(exc: BaseException) -> str:
    """The first line of an error's message (pyarrow and DuckDB add details below it)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


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


class ActivationStorage:
    """The activation-set part of the store (mixed into :class:`~neuro_pipeline.store.Store`,
    which provides ``path``, ``connect`` and ``transaction``)."""

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

        Raises
        ------
        DiskFullError
            When the disk (or quota) is full: nothing of this write is kept (no partial
            Parquet file, no catalogue row); earlier writes stay as they were.
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
        try:
            self._write_rows(aset, todo, status)
        except BaseException as exc:
            if is_disk_full(exc):
                raise DiskFullError(f"the disk is full: writing {len(todo)} sentences into the store {self.path} "
                                    f"failed ({_reason(exc)}); the transaction was rolled back.") from exc
            raise

    def _write_rows(self, aset: ActivationSet, todo: list[tuple[str, np.ndarray, bool]],
                    status: pl.DataFrame) -> None:
        """The sentences' rows into the DuckDB table of the set, and their catalogue rows, in
        one transaction."""
        activation_set = aset.activation_set
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
                    frame = index.with_columns(  # noqa: F841 (read by DuckDB by name)
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
            try:
                pq.write_table(table, tmp, compression={**{k: "lz4" for k in keys}, "act": "none"},
                               use_dictionary=["sentence_hash"], write_statistics=keys, row_group_size=max(1, n))
                tmp.replace(folder / name)
            except BaseException as exc:
                # Nothing half-written stays behind: the partial file is removed (it would never
                # be read, but it holds disk space and looks like data).
                tmp.unlink(missing_ok=True)
                if is_disk_full(exc):
                    raise DiskFullError(
                        f"the disk is full: writing the activation file {name} ({len(todo)} sentences, "
                        f"{table.num_rows:,} rows) in {folder} failed ({_reason(exc)}); the partial file was "
                        "removed.", "Free space on that disk (or set extraction.parquet_dir to a folder on another "
                        "one) and run again.") from exc
                raise
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
        except BaseException as exc:
            for _, file, _ in files:
                Path(file).unlink(missing_ok=True)
            if is_disk_full(exc) and not isinstance(exc, DiskFullError):
                raise DiskFullError(
                    f"the disk is full: recording {len(todo)} sentences in the store {self.path} failed "
                    f"({_reason(exc)}); their file was removed and the transaction rolled back.") from exc
            raise
        if files and not kept:
            Path(files[0][1]).unlink(missing_ok=True)

    def damaged_activation_files(self, aset: ActivationSet) -> tuple[list[DamagedFile], list[str]]:
        """The committed Parquet files of a set that cannot be read as catalogued (missing,
        truncated or unreadable, or another row count than ``activation_files`` lists), each
        with the sentences the catalogue reads from it; and the sentences stored before files
        were recorded per sentence (``file`` null) that no intact file holds any more. Cheap:
        one stat and one footer read per file; only when a file is damaged and such older
        sentences exist are the intact files' ``sentence_hash`` columns read. Empty for a set
        stored in DuckDB."""
        if aset.parquet_dir is None:
            return [], []
        with self.connect() as con:
            listed = con.execute("SELECT file, n_rows FROM activation_files WHERE activation_set = ? ORDER BY file",
                                 [aset.activation_set]).fetchall()
        reasons = {file: (reason, n_rows) for file, n_rows in listed
                   if (reason := _file_damage(file, n_rows)) is not None}
        if not reasons:
            return [], []
        bad = pl.DataFrame({"file": list(reasons)}, schema={"file": pl.Utf8})  # noqa: F841
        with self.connect() as con:
            held = con.sql("SELECT s.file, s.sentence_hash FROM activation_sentences s JOIN bad USING (file) "
                           "WHERE s.activation_set = ? AND s.status = 'ok' ORDER BY s.file, s.sentence_hash",
                           params=[aset.activation_set]).fetchall()
            unfiled = [r[0] for r in con.execute(
                "SELECT sentence_hash FROM activation_sentences WHERE activation_set = ? AND status = 'ok' "
                "AND file IS NULL ORDER BY sentence_hash", [aset.activation_set]).fetchall()]
        by_file: dict[str, list[str]] = {file: [] for file in reasons}
        for file, sentence_hash in held:
            by_file[file].append(sentence_hash)
        damaged = [DamagedFile(file, reason, n_rows, tuple(by_file[file]))
                   for file, (reason, n_rows) in reasons.items()]
        lost: list[str] = []
        if unfiled:
            intact = [file for file, _ in listed if file not in reasons]
            found: set[str] = set()
            if intact:
                reader = duckdb.connect(":memory:")
                try:
                    found = {r[0] for r in reader.execute("SELECT DISTINCT sentence_hash FROM read_parquet(?)",
                                                          [intact]).fetchall()}
                finally:
                    reader.close()
            lost = [h for h in unfiled if h not in found]
        return damaged, lost

    def forget_damaged_files(self, aset: ActivationSet, damaged: Sequence[DamagedFile],
                             lost: Collection[str] = ()) -> list[str]:
        """Remove damaged files (:meth:`damaged_activation_files`) from the catalogue: in one
        transaction, the catalogue rows of the sentences read from them (and of ``lost``,
        older sentences without a recorded file that no intact file holds) and the files'
        rows in ``activation_files``; then delete those of the files that still exist. The
        next extraction then redoes exactly those sentences. Returns the deleted files."""
        if not damaged and not lost:
            return []
        files = pl.DataFrame({"file": [d.file for d in damaged]}, schema={"file": pl.Utf8})  # noqa: F841
        unfiled = pl.DataFrame({"sentence_hash": list(lost)}, schema={"sentence_hash": pl.Utf8})  # noqa: F841
        with self.transaction() as con:
            con.execute("DELETE FROM activation_sentences WHERE activation_set = ? AND status = 'ok' "
                        "AND (file IN (SELECT file FROM files) OR "
                        "(file IS NULL AND sentence_hash IN (SELECT sentence_hash FROM unfiled)))",
                        [aset.activation_set])
            con.execute("DELETE FROM activation_files WHERE activation_set = ? AND file IN (SELECT file FROM files)",
                        [aset.activation_set])
        deleted = []
        for d in damaged:
            path = Path(d.file)
            if path.exists():
                path.unlink(missing_ok=True)
                deleted.append(d.file)
        return deleted

    def activation_files(self, activation_set: str) -> list[str]:
        """The committed Parquet files of a set (empty for a set stored in DuckDB)."""
        with self.connect() as con:
            return self._activation_files(con, activation_set)

    @staticmethod
    def _activation_files(con: duckdb.DuckDBPyConnection, activation_set: str) -> list[str]:
        return [r[0] for r in con.execute("SELECT file FROM activation_files WHERE activation_set = ? "
                                          "ORDER BY file", [activation_set]).fetchall()]

    def _sentence_files(self, aset: ActivationSet, keys: pl.DataFrame, exclude_files: Collection[str] = ()
                        ) -> tuple[list[str], pl.DataFrame]:
        """The committed Parquet files that hold the sentences of ``keys``, and the file each
        of those sentences is read from (``sentence_hash``, ``file``; file null for a sentence
        stored before files were recorded per sentence, whose rows may then be in any file:
        every file is scanned)."""
        hashes = keys.select(pl.col("sentence_hash").cast(pl.Utf8).unique())  # noqa: F841
        with self.connect() as con:
            listed = [f for f in self._activation_files(con, aset.activation_set) if f not in exclude_files]
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
        return ("(SELECT $set_id AS activation_set, sentence_hash, position, layer, act, file_index "
                "FROM read_parquet($files))"), {"files": list(files), "set_id": aset.activation_set}

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
    def _scan(self, aset: ActivationSet, keys: pl.DataFrame, exclude_files: Collection[str] = ()
              ) -> Iterator[tuple[duckdb.DuckDBPyConnection, list[str] | None]]:
        """A connection for one streamed read of ``aset``'s rows, holding the numbered keys as
        the temporary table ``wanted`` (idx, sentence_hash, position, and for a Parquet set
        file_index: the place in the files to scan of the file the word's sentence is
        catalogued in; null when it was stored before files were recorded), and the files to
        scan (None for DuckDB rows). A Parquet set is read by a DuckDB of its own: the store
        file is not held while the files are scanned, so the other processes of a run
        (extraction shards, other workers) keep writing; rows in DuckDB are read through the
        store. Join the rows with :func:`_in_wanted`. ``exclude_files``: Parquet files not to
        scan (damaged ones: their sentences are then not found)."""
        wanted = keys.select(pl.int_range(0, keys.height, dtype=pl.Int64).alias("idx"),
                             pl.col("sentence_hash").cast(pl.Utf8), pl.col("position").cast(pl.Int32))
        if aset.parquet_dir is None:
            with self.streaming(keys.height) as con:
                con.execute("CREATE TEMP TABLE wanted AS SELECT *, NULL::BIGINT AS file_index FROM wanted")
                yield con, None
            return
        files, located = self._sentence_files(aset, keys, exclude_files)
        place = {file: i for i, file in enumerate(files)}
        file_index = pl.col("file").replace_strict(place, default=None, return_dtype=pl.Int64)
        located = located.select("sentence_hash", file_index.alias("file_index"))
        wanted = wanted.join(located, on="sentence_hash", how="left")  # noqa: F841
        con = duckdb.connect(":memory:", config={"memory_limit": f"{read_memory_mb(keys.height)}MB",
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

    def activation_batches(self, activation_set: str, keys: pl.DataFrame, *, with_hash: bool = False,
                           exclude_files: Collection[str] = ()) -> Iterator[ActivationBatch]:
        """The set's rows of the given words (distinct ``sentence_hash``, ``position``), every
        layer, decoded, in batches in any order, with DuckDB's memory capped: one pass over
        activations larger than memory. A Parquet set is scanned without holding the store
        file (as :meth:`read_activation_matrix` does), without the ``exclude_files``."""
        aset = self.activation_set(activation_set)
        with self._scan(aset, keys, exclude_files) as (con, files):
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


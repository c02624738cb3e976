"""The DuckDB engine of the store: one file, connections opened per operation, each write
one transaction that replaces rows, and the schema every stage's tables declare.

Start here: :class:`Engine` opens the file (waiting while another process holds its lock),
hands out short connections (:meth:`Engine.connect`, :meth:`Engine.transaction`,
:meth:`Engine.streaming`) and replaces a stage's rows in one transaction
(:meth:`Engine.replace_tables`), so a failed write leaves the previous good rows in place.
The tables themselves are declared in :mod:`neuro_pipeline.store.tables`, one module per
stage; the activation sets in :mod:`neuro_pipeline.store.activations`.

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
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import duckdb
import numpy as np
import polars as pl

from neuro_pipeline.store.tables import SCHEMA, SCHEMA_FINGERPRINT, WRITABLE

log = logging.getLogger(__name__)

_SCHEMA_STAMP = f"""
CREATE TABLE IF NOT EXISTS store_schema (fingerprint VARCHAR NOT NULL);
DELETE FROM store_schema;
INSERT INTO store_schema VALUES ('{SCHEMA_FINGERPRINT}');
"""


def _ensure_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create or migrate the tables unless the file records the current schema (table
    ``store_schema``): a write connection to such a file skips the DDL, which took ~12 of the
    ~30 ms of opening the file, ~50 times a run. Any change to a table's schema changes the
    fingerprint, so files made before it get the new DDL on their next write connection."""
    try:
        rows = con.execute("SELECT fingerprint FROM store_schema").fetchall()
    except duckdb.CatalogException:
        rows = []
    if rows != [(SCHEMA_FINGERPRINT,)]:
        con.execute(SCHEMA + _SCHEMA_STAMP)


class StoreError(RuntimeError):
    """The DuckDB file cannot be opened or does not hold what a stage needs."""


def _memory_limit() -> str:
    return os.environ.get("NEURO_PIPELINE_DUCKDB_MEMORY", "512MB")


def read_memory_mb(n_keys: int) -> int:
    """DuckDB memory for reading ``n_keys`` words: the hash tables of the keys (a join, a
    DISTINCT; about 256 bytes a key) and the row groups being decoded (192 MB). Whatever
    DuckDB caches counts towards the process's peak: at 512 MB, loading EWT
    dev's matrix peaked 0.5 GB above its result. Measured too tight: 64 MB (out of memory
    with 269k keys) and 96 MB + 200 B/key (out of memory scanning EWT dev + test from
    Parquet while checking the activations)."""
    return 192 + n_keys * 256 // 2**20


class Engine:
    """One DuckDB file holding every stage's tables (see :class:`~neuro_pipeline.store.Store`).

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
                    # Said at once and every 30 s (`neuro-pipeline run` shows "waiting since" lines).
                    since = time.strftime("%H:%M:%S", time.localtime(time.time() - waited))
                    log.warning("%s: waiting since %s for the DuckDB lock, held by %s (up to %g s).", self.path,
                                since, who, self.lock_timeout)
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
        (see :func:`read_memory_mb`), since what DuckDB caches counts towards the process's
        peak; ``n_keys`` is the size of the key table the read joins."""
        with self.connect() as con:
            # Rows in any order: DuckDB then streams them instead of buffering to keep order.
            con.execute(f"SET memory_limit = '{read_memory_mb(n_keys)}MB'; SET preserve_insertion_order = false")
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

    # --------------------------------------------------------------- writes
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
        unknown = sorted({table for table, _, _ in items} - WRITABLE)
        if unknown:
            raise ValueError(f"unknown table '{unknown[0]}'; choose one of {sorted(WRITABLE)}.")
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


def to_json(obj: object) -> str:
    """JSON for the params/fitted columns (numpy scalars and arrays made plain)."""
    def default(o: object) -> object:
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
        return str(o)
    return json.dumps(obj, sort_keys=True, default=default)


"""Compare two pipeline stores table by table, and their activations by content.

A change of the code that should change no result is checked by running the same analysis
with the old and the new code and comparing the two stores::

    python -m neuro_pipeline.store.compare OLD/pipeline.duckdb NEW/pipeline.duckdb

It prints, per table, the row counts of both files and whether their rows are identical,
and exits 1 on any difference (2 when a file cannot be read).

What is compared, and what is not:

- Every table of both files (a table present in only one is a difference). Rows are
  compared as multisets: their order does not matter, duplicates do.
- Timing and timestamp columns are skipped and named in the output: columns of a
  TIMESTAMP type and columns named ``seconds`` or ``*_seconds``. JSON text columns holding
  such keys (``ranking_runs.fitted`` records ``fit_seconds`` per fit) are compared with
  those keys removed.
- Paths are compared relative to each store's own folder (the folder of its DuckDB file):
  a text value under that folder is read as ``<store>/...``, so two stores at different
  places compare equal; a path outside it (a model in site-packages, a corpus in a shared
  folder) is compared as it is. Parquet files are named ``part-<random uuid>.parquet``, so
  the ``file`` columns of ``activation_sentences`` and ``activation_files`` name each file
  by the first sentence hash it holds (``<store>/activations/<set>/part@<hash>``): equal
  when both stores grouped the same sentences into files.
- Floating-point columns compare exactly unless ``rtol``/``atol`` are given (then
  ``|a - b| <= atol + rtol * |b|`` after pairing the rows in sorted order); lists, blobs
  and activations always compare exactly.
- The activations themselves are compared by content for every activation set in both
  stores, wherever each stores them (Parquet files or DuckDB rows): a digest of each row's
  stored bytes per (sentence_hash, position, layer). For Parquet, only the rows of the
  file ``activation_sentences`` names for a sentence count, as the store reads them.

Both files are opened read-only; the store's own code is not used, so a store written by
older code can be compared with one written by newer code.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import sys
import tempfile
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

#: Column names holding durations (skipped), also as keys inside JSON text.
_TIMING_NAME = re.compile(r"(?:\w*_)?seconds")
#: A timing key inside JSON text: what marks a JSON column to compare without its timings.
_JSON_TIMING_KEY = r'"((?:\w*_)?seconds)"\s*:'
_FLOAT_TYPES = {"FLOAT", "DOUBLE", "REAL", "FLOAT4", "FLOAT8"}
#: Tables whose ``file`` column names Parquet files of activations.
_FILE_TABLES = ("activation_sentences", "activation_files")


@dataclass(kw_only=True)
class RowDifference:
    """Rows of one thing in both stores: the counts (None where a table is missing), the number
    of rows only one side holds, the first of those rows, and a difference of schema (a missing
    table or column, another type) or an error."""

    rows_a: int | None = 0
    rows_b: int | None = 0
    n_only_a: int = 0
    n_only_b: int = 0
    only_a: list[tuple] = field(default_factory=list)
    only_b: list[tuple] = field(default_factory=list)
    problem: str | None = None

    @property
    def identical(self) -> bool:
        return self.problem is None and self.rows_a == self.rows_b and self.n_only_a == self.n_only_b == 0


@dataclass(kw_only=True)
class TableComparison(RowDifference):
    """One table of both stores, its rows compared on the compared columns."""

    table: str
    columns: list[str] = field(default_factory=list)


@dataclass(kw_only=True)
class ActivationComparison(RowDifference):
    """The activation rows of one set in both stores, compared by a digest of each row."""

    activation_set: str
    storage_a: str
    storage_b: str


@dataclass
class StoreComparison:
    """The result of :func:`compare_stores`; :meth:`report` is what the command prints."""

    a: Path
    b: Path
    tables: list[TableComparison]
    activations: list[ActivationComparison]
    #: ``table.column`` of the columns left out (timings and timestamps, and those asked for).
    skipped: list[str]
    #: ``table.column`` of text columns holding paths under a store's folder, compared relative to it.
    relative_paths: list[str]
    #: ``table.column (keys)`` of JSON text columns compared without their timing keys.
    json_timings: list[str]
    #: Activation sets that only one store holds (also a difference of ``activation_sets``).
    sets_only_a: list[str] = field(default_factory=list)
    sets_only_b: list[str] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return (all(t.identical for t in self.tables) and all(s.identical for s in self.activations)
                and not self.sets_only_a and not self.sets_only_b)

    def report(self) -> str:
        """Per table and activation set: row counts and verdict, the first differing rows,
        then what was skipped or normalised and a summary line."""
        lines = [f"A: {self.a}", f"B: {self.b}", f"{'table':<24} {'rows A':>10} {'rows B':>10}  verdict"]
        for t in self.tables:
            verdict = "identical" if t.identical else "DIFFERS" + (f": {t.problem}" if t.problem else "")
            lines.append(f"{t.table:<24} {_count(t.rows_a):>10} {_count(t.rows_b):>10}  {verdict}")
            lines += _differing_rows(t.columns, t.n_only_a, t.only_a, t.n_only_b, t.only_b)
        for s in self.activations:
            verdict = "identical" if s.identical else "DIFFERS" + (f": {s.problem}" if s.problem else "")
            storage = s.storage_a if s.storage_a == s.storage_b else f"{s.storage_a} vs {s.storage_b}"
            lines.append(f"activations of set {s.activation_set} ({storage}): rows {s.rows_a:,} / {s.rows_b:,}  "
                         f"{verdict}")
            lines += _differing_rows(["sentence_hash", "position", "layer", "digest"], s.n_only_a, s.only_a,
                                     s.n_only_b, s.only_b)
        for side, sets in (("A", self.sets_only_a), ("B", self.sets_only_b)):
            if sets:
                lines.append(f"activation sets only in {side}: {', '.join(sets)}")
        if self.relative_paths:
            lines.append("paths compared relative to each store's folder: " + ", ".join(self.relative_paths))
        if any(t.table in _FILE_TABLES and "file" in t.columns for t in self.tables):
            lines.append("Parquet files named by the first sentence hash they hold: "
                         + ", ".join(f"{t}.file" for t in _FILE_TABLES))
        if self.json_timings:
            lines.append("JSON compared without timing keys: " + ", ".join(self.json_timings))
        skipped = ", ".join(self.skipped) or "none"
        if self.identical:
            lines.append(f"identical: {len(self.tables)} tables, activations of {len(self.activations)} sets; "
                         f"skipped columns: {skipped}")
        else:
            tables = [t.table for t in self.tables if not t.identical]
            sets = [s.activation_set for s in self.activations if not s.identical]
            lines.append(f"DIFFERENT: {len(tables)} of {len(self.tables)} tables ({', '.join(tables) or '-'}), "
                         f"activations of {len(sets)} of {len(self.activations)} sets"
                         f"{' (' + ', '.join(sets) + ')' if sets else ''}; skipped columns: {skipped}")
        return "\n".join(lines)


def compare_stores(a: str | Path, b: str | Path, *, skip_columns: Collection[str] = (), rtol: float = 0.0,
                   atol: float = 0.0, max_rows: int = 5) -> StoreComparison:
    """Compare the store files ``a`` and ``b`` (see the module's description).

    Parameters
    ----------
    a, b : str or Path
        The DuckDB files; their Parquet activations are found through their tables.
    skip_columns : collection of str
        Further columns to leave out, as ``column`` (in every table) or ``table.column``;
        timing and timestamp columns are always left out.
    rtol, atol : float
        Tolerances for FLOAT and DOUBLE columns (default exact).
    max_rows : int
        How many differing rows to keep per table and side.
    """
    a, b = Path(a), Path(b)
    for path in (a, b):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such store file")
    spill = tempfile.mkdtemp(prefix="compare-stores-")
    con = duckdb.connect(":memory:", config={"memory_limit": "1GB", "temp_directory": spill,
                                             "preserve_insertion_order": False})
    try:
        con.execute("SET enable_progress_bar = false")
        return _Comparer(con, a, b, set(skip_columns), rtol, atol, max_rows).run()
    finally:
        con.close()
        shutil.rmtree(spill, ignore_errors=True)


class _Comparer:
    """The comparison on one in-memory DuckDB with both files attached read-only as ``sa``
    and ``sb``; temporary macros ``rel_sa``/``rel_sb`` make paths relative to a store's folder."""

    def __init__(self, con: duckdb.DuckDBPyConnection, a: Path, b: Path, skip: set[str], rtol: float,
                 atol: float, max_rows: int) -> None:
        self.con, self.a, self.b = con, a, b
        self.skip, self.rtol, self.atol, self.max_rows = skip, rtol, atol, max_rows
        self.sides = {"sa": a, "sb": b}
        self.skipped: set[str] = set()
        self.relative: set[str] = set()
        self.json_timings: dict[str, set[str]] = {}

    def run(self) -> StoreComparison:
        con = self.con
        for alias, path in self.sides.items():
            con.execute(f"ATTACH {_literal(str(path))} AS {alias} (READ_ONLY)")
            folders = dict.fromkeys([str(path.absolute().parent), str(path.resolve().parent)])
            cases = " ".join(f"WHEN starts_with(p, {_literal(f + '/')}) THEN '<store>/' || p[{len(f) + 2}:]"
                             for f in folders)
            con.execute(f"CREATE TEMP MACRO rel_{alias}(p) AS CASE {cases} ELSE p END")
            con.execute(f"CREATE TEMP MACRO under_{alias}(p) AS "
                        + " OR ".join(f"starts_with(p, {_literal(f + '/')})" for f in folders))
            self._file_names(alias)
        con.create_function("strip_timing", _strip_timing, ["VARCHAR"], "VARCHAR")
        for name, kind in (("digest_bytes", "BLOB"), ("digest_f32", "FLOAT[]"), ("digest_u16", "USMALLINT[]")):
            con.create_function(name, _digests, [kind], "BLOB", type="arrow")
        self.tables = {alias: self._tables(alias) for alias in self.sides}
        tables_a, tables_b = self.tables["sa"], self.tables["sb"]
        tables = [self._compare_table(t, tables_a.get(t), tables_b.get(t)) for t in sorted({*tables_a, *tables_b})]
        sets_a, sets_b = self._activation_sets("sa"), self._activation_sets("sb")
        activations = [self._compare_activations(s, sets_a[s], sets_b[s]) for s in sorted(sets_a.keys() & sets_b)]
        return StoreComparison(
            a=self.a, b=self.b, tables=tables, activations=activations, skipped=sorted(self.skipped),
            relative_paths=sorted(self.relative),
            json_timings=[f"{c} ({', '.join(sorted(keys))})" for c, keys in sorted(self.json_timings.items())],
            sets_only_a=sorted(sets_a.keys() - sets_b), sets_only_b=sorted(sets_b.keys() - sets_a))

    # ------------------------------------------------------------------ tables
    def _tables(self, alias: str) -> dict[str, list[tuple[str, str]]]:
        """Table name (``schema.table`` outside ``main``) → its (column, type) pairs."""
        rows = self.con.execute(
            "SELECT schema_name, table_name, column_name, data_type FROM duckdb_columns() "
            "WHERE database_name = ? ORDER BY schema_name, table_name, column_index", [alias]).fetchall()
        tables: dict[str, list[tuple[str, str]]] = {}
        for schema, table, column, kind in rows:
            tables.setdefault(table if schema == "main" else f"{schema}.{table}", []).append((column, kind))
        return tables

    def _source(self, alias: str, table: str) -> str:
        schema, _, name = table.rpartition(".")
        return f"{alias}.{_ident(schema or 'main')}.{_ident(name)}"

    def _count(self, alias: str, table: str) -> int:
        return self.con.execute(f"SELECT count(*) FROM {self._source(alias, table)}").fetchone()[0]

    def _is_skipped(self, table: str, column: str, kind: str) -> bool:
        return (kind.startswith("TIMESTAMP") or bool(_TIMING_NAME.fullmatch(column))
                or column in self.skip or f"{table}.{column}" in self.skip)

    def _compare_table(self, table: str, cols_a: list[tuple[str, str]] | None,
                       cols_b: list[tuple[str, str]] | None) -> TableComparison:
        rows_a = self._count("sa", table) if cols_a is not None else None
        rows_b = self._count("sb", table) if cols_b is not None else None
        if cols_a is None or cols_b is None:
            return TableComparison(table=table, rows_a=rows_a, rows_b=rows_b,
                                   problem=f"only in {'A' if cols_b is None else 'B'}")
        types_a, types_b = dict(cols_a), dict(cols_b)
        problems = [f"column {c} only in {side}" for side, mine, other in (("A", types_a, types_b),
                                                                         ("B", types_b, types_a))
                    for c in mine if c not in other]
        problems += [f"column {c} is {types_a[c]} in A, {types_b[c]} in B"
                     for c in types_a if c in types_b and types_a[c] != types_b[c]]
        shared = [(c, k) for c, k in cols_a if c in types_b]
        for c, k in shared:
            if self._is_skipped(table, c, k) or self._is_skipped(table, c, types_b[c]):
                self.skipped.add(f"{table}.{c}")
        compared = [(c, k) for c, k in shared if f"{table}.{c}" not in self.skipped]
        result = TableComparison(table=table, rows_a=rows_a, rows_b=rows_b, columns=[c for c, _ in compared],
                                 problem="; ".join(problems) or None)
        if not compared:
            return result
        text = [c for c, k in compared if k == "VARCHAR" and types_b[c] == "VARCHAR"]
        self._inspect_text(table, text)
        exprs = {alias: [self._expression(alias, table, c, c in text) for c, _ in compared] for alias in self.sides}
        floats = [i for i, (c, k) in enumerate(compared) if k in _FLOAT_TYPES]
        try:
            if (self.rtol or self.atol) and floats:
                self._compare_with_tolerance(result, table, exprs, floats)
            else:
                self._compare_exactly(result, table, exprs)
        except duckdb.Error as exc:
            result.problem = "; ".join([*problems, f"cannot compare: {exc}".splitlines()[0]])
        return result

    def _inspect_text(self, table: str, columns: list[str]) -> None:
        """Note which text columns hold paths under a store's folder, and which hold JSON
        with timing keys (and which keys)."""
        if not columns:
            return
        for alias in self.sides:
            parts = [f"bool_or(under_{alias}({_ident(c)})), list_distinct(flatten(list("
                     f"regexp_extract_all({_ident(c)}, {_literal(_JSON_TIMING_KEY)}, 1))))" for c in columns]
            row = self.con.execute(f"SELECT {', '.join(parts)} FROM {self._source(alias, table)}").fetchone()
            for i, column in enumerate(columns):
                if row[2 * i]:
                    self.relative.add(f"{table}.{column}")
                if row[2 * i + 1]:
                    self.json_timings.setdefault(f"{table}.{column}", set()).update(row[2 * i + 1])

    def _expression(self, alias: str, table: str, column: str, is_text: bool) -> str:
        """The SELECT expression of a compared column, normalised as the module describes."""
        value = f"t.{_ident(column)}"
        if not is_text:
            return f"{value} AS {_ident(column)}"
        expr = f"rel_{alias}({value})"
        if table in _FILE_TABLES and column == "file":
            expr = f"coalesce((SELECT f.name FROM files_{alias} f WHERE f.file = {value}), {expr})"
        if f"{table}.{column}" in self.json_timings:
            expr = f"strip_timing({expr})"
        return f"{expr} AS {_ident(column)}"

    def _file_names(self, alias: str) -> None:
        """The temporary table ``files_<alias>`` (file, name): each Parquet file of the store
        named by its folder (relative to the store's) and the first sentence hash it holds."""
        has_file = self.con.execute(
            "SELECT count(*) FROM duckdb_columns() WHERE database_name = ? AND schema_name = 'main' "
            "AND table_name = 'activation_sentences' AND column_name = 'file'", [alias]).fetchone()[0]
        source = (f"SELECT file, min(sentence_hash) AS first FROM {alias}.main.activation_sentences "
                  "WHERE file IS NOT NULL GROUP BY file") if has_file else (
            "SELECT NULL::VARCHAR AS file, NULL::VARCHAR AS first LIMIT 0")
        self.con.execute(f"CREATE TEMP TABLE files_{alias} AS SELECT file, "
                         f"rel_{alias}(regexp_replace(file, '/[^/]*$', '')) || '/part@' || first AS name "
                         f"FROM ({source})")

    def _select(self, alias: str, table: str, exprs: list[str]) -> str:
        return f"SELECT {', '.join(exprs)} FROM {self._source(alias, table)} t"

    def _compare_exactly(self, result: TableComparison, table: str, exprs: dict[str, list[str]]) -> None:
        """Rows as multisets: EXCEPT ALL in both directions."""
        select_a, select_b = self._select("sa", table, exprs["sa"]), self._select("sb", table, exprs["sb"])
        result.n_only_a, result.only_a = self._except(select_a, select_b)
        result.n_only_b, result.only_b = self._except(select_b, select_a)

    def _except(self, first: str, second: str) -> tuple[int, list[tuple]]:
        self.con.execute(f"CREATE OR REPLACE TEMP TABLE only_rows AS ({first}) EXCEPT ALL ({second})")
        n = self.con.execute("SELECT count(*) FROM only_rows").fetchone()[0]
        rows = self.con.execute(f"SELECT * FROM only_rows ORDER BY ALL LIMIT {int(self.max_rows)}").fetchall()
        self.con.execute("DROP TABLE only_rows")
        return n, rows

    def _compare_with_tolerance(self, result: TableComparison, table: str, exprs: dict[str, list[str]],
                                floats: list[int]) -> None:
        """The other columns as multisets first; when they agree, rows are paired in sorted
        order and the float columns compared within ``atol + rtol * |b|``."""
        others = [i for i in range(len(result.columns)) if i not in floats]
        if others:
            select = {alias: self._select(alias, table, [e[i] for i in others]) for alias, e in exprs.items()}
            result.n_only_a, result.only_a = self._except(select["sa"], select["sb"])
            result.n_only_b, result.only_b = self._except(select["sb"], select["sa"])
            if result.n_only_a or result.n_only_b:
                result.columns = [result.columns[i] for i in others]
                return
        if result.rows_a != result.rows_b:
            return
        names = [_ident(c) for c in result.columns]
        order = ", ".join(names[i] for i in [*others, *floats])
        numbered = {alias: f"SELECT *, row_number() OVER (ORDER BY {order}) AS _n "
                           f"FROM ({self._select(alias, table, e)})" for alias, e in exprs.items()}
        close = " AND ".join(
            f"(x.{n} IS NOT DISTINCT FROM y.{n} OR abs(x.{n} - y.{n}) <= {float(self.atol)!r} + "
            f"{float(self.rtol)!r} * abs(y.{n}))" for n in (names[i] for i in floats))
        pairs = (f"FROM ({numbered['sa']}) x JOIN ({numbered['sb']}) y USING (_n) WHERE NOT ({close})")
        result.n_only_a = result.n_only_b = self.con.execute(f"SELECT count(*) {pairs}").fetchone()[0]
        fields = ", ".join(f"x.{n}" for n in names), ", ".join(f"y.{n}" for n in names)
        result.only_a = self.con.execute(f"SELECT {fields[0]} {pairs} ORDER BY _n LIMIT {self.max_rows}").fetchall()
        result.only_b = self.con.execute(f"SELECT {fields[1]} {pairs} ORDER BY _n LIMIT {self.max_rows}").fetchall()

    # ------------------------------------------------------------- activations
    def _activation_sets(self, alias: str) -> dict[str, tuple[str | None, str, str]]:
        """Activation set → (parquet_dir, Parquet layout, storage dtype)."""
        columns = {c for c, _ in self.tables[alias].get("activation_sets", [])}
        if not columns:
            return {}
        parquet = "parquet_dir" if "parquet_dir" in columns else "NULL"
        layout = "coalesce(parquet_layout, 'list')" if "parquet_layout" in columns else "'list'"
        dtype = "coalesce(storage_dtype, 'float32')" if "storage_dtype" in columns else "'float32'"
        rows = self.con.execute(f"SELECT activation_set, {parquet}, {layout}, {dtype} "
                                f"FROM {alias}.main.activation_sets").fetchall()
        return {r[0]: (r[1], r[2], r[3]) for r in rows}

    def _activation_rows(self, alias: str, activation_set: str, storage: tuple[str | None, str, str]) -> str:
        """SQL of the set's rows as (sentence_hash, position, layer, digest of the stored bytes)."""
        parquet_dir, layout, dtype = storage
        digest = "digest_bytes" if parquet_dir is not None and layout == "bytes" else (
            "digest_f32" if dtype == "float32" else "digest_u16")
        if parquet_dir is None:
            table = "activations" if dtype == "float32" else "activations16"
            return (f"SELECT sentence_hash, position, layer, {digest}(act) AS digest FROM {alias}.main.{table} "
                    f"WHERE activation_set = {_literal(activation_set)}")
        files = [r[0] for r in self.con.execute(
            f"SELECT file FROM {alias}.main.activation_files WHERE activation_set = ? ORDER BY file",
            [activation_set]).fetchall()]
        if not files:
            return "SELECT NULL::VARCHAR AS sentence_hash, NULL::INTEGER AS position, NULL::SMALLINT AS layer, " \
                   "NULL::BLOB AS digest LIMIT 0"
        has_file = any(c == "file" for c, _ in self.tables[alias].get("activation_sentences", []))
        file_match = "(s.file IS NULL OR s.file = p.filename)" if has_file else "TRUE"
        return (f"SELECT p.sentence_hash, p.position, p.layer, {digest}(p.act) AS digest "
                f"FROM read_parquet([{', '.join(_literal(f) for f in files)}], filename = true) p "
                f"JOIN {alias}.main.activation_sentences s ON s.activation_set = {_literal(activation_set)} "
                f"AND s.status = 'ok' AND s.sentence_hash = p.sentence_hash AND {file_match}")

    def _compare_activations(self, activation_set: str, storage_a: tuple, storage_b: tuple) -> ActivationComparison:
        def describe(storage: tuple) -> str:
            return f"Parquet, {storage[1]} layout" if storage[0] is not None else f"DuckDB rows, {storage[2]}"

        result = ActivationComparison(activation_set=activation_set, storage_a=describe(storage_a),
                                      storage_b=describe(storage_b))
        try:
            for alias, storage in (("sa", storage_a), ("sb", storage_b)):
                self.con.execute(f"CREATE OR REPLACE TEMP TABLE acts_{alias} AS "
                                 f"{self._activation_rows(alias, activation_set, storage)}")
            result.rows_a = self.con.execute("SELECT count(*) FROM acts_sa").fetchone()[0]
            result.rows_b = self.con.execute("SELECT count(*) FROM acts_sb").fetchone()[0]
            shown = "SELECT sentence_hash, position, layer, hex(digest)[:16] FROM "
            result.n_only_a, result.only_a = self._except(shown + "acts_sa", shown + "acts_sb")
            result.n_only_b, result.only_b = self._except(shown + "acts_sb", shown + "acts_sa")
        except duckdb.Error as exc:
            result.problem = f"cannot read the activations: {exc}".splitlines()[0]
        finally:
            self.con.execute("DROP TABLE IF EXISTS acts_sa; DROP TABLE IF EXISTS acts_sb")
        return result


def _digests(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    """MD5 of each row's stored bytes, for bytes (Parquet ``bytes`` layout) and for lists of
    float32 or uint16 (DuckDB rows, Parquet ``list`` layout) alike: the same values give the
    same digest however they are stored."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    n = len(arr)
    if pa.types.is_fixed_size_binary(arr.type):
        width = arr.type.byte_width
        data = memoryview(arr.buffers()[1])
        offsets = (np.arange(n + 1) + arr.offset) * width
    elif pa.types.is_binary(arr.type) or pa.types.is_large_binary(arr.type):
        kind = np.int64 if pa.types.is_large_binary(arr.type) else np.int32
        offsets = np.frombuffer(arr.buffers()[1], dtype=kind)[arr.offset:arr.offset + n + 1]
        data = memoryview(arr.buffers()[2])
    else:
        values = np.ascontiguousarray(arr.values.to_numpy(zero_copy_only=False))
        if pa.types.is_fixed_size_list(arr.type):
            offsets = (np.arange(n + 1) + arr.offset) * arr.type.list_size
        else:
            offsets = arr.offsets.to_numpy()
        offsets = offsets * values.itemsize
        data = memoryview(values).cast("B")
    valid = arr.is_valid().to_numpy(zero_copy_only=False)
    md5 = hashlib.md5
    return pa.array([md5(data[int(start):int(stop)]).digest() if ok else None
                     for start, stop, ok in zip(offsets[:-1], offsets[1:], valid)], pa.binary())


def _strip_timing(text: str) -> str:
    """JSON text without its timing keys (``seconds``, ``*_seconds``, at any depth),
    written with sorted keys; text that is not JSON unchanged."""
    if not text.lstrip().startswith(("{", "[")):
        return text
    try:
        value = json.loads(text)
    except ValueError:
        return text

    def drop(v: object) -> object:
        if isinstance(v, dict):
            return {k: drop(x) for k, x in v.items() if not _TIMING_NAME.fullmatch(k)}
        if isinstance(v, list):
            return [drop(x) for x in v]
        return v

    return json.dumps(drop(value), sort_keys=True)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _count(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


def _show(value: object) -> str:
    if isinstance(value, bytes):
        return f"<{len(value)} bytes {value[:8].hex()}…>"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _differing_rows(columns: list[str], n_a: int, rows_a: list[tuple], n_b: int, rows_b: list[tuple]) -> list[str]:
    lines = []
    for side, n, rows in (("A", n_a, rows_a), ("B", n_b, rows_b)):
        if n:
            lines.append(f"    {n:,} row(s) only in {side}, first {len(rows)} ({', '.join(columns)}):")
            lines += ["      (" + ", ".join(_show(v) for v in row) + ")" for row in rows]
    return lines


def main(argv: list[str] | None = None) -> int:
    """The command: print the comparison; exit 0 when identical, 1 on a difference, 2 when a
    file cannot be read."""
    parser = argparse.ArgumentParser(prog="python -m neuro_pipeline.store.compare",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("a", help="the first store (a DuckDB file)")
    parser.add_argument("b", help="the second store")
    parser.add_argument("--skip", action="append", default=[], metavar="[TABLE.]COLUMN",
                        help="a further column to leave out (repeatable)")
    parser.add_argument("--rtol", type=float, default=0.0, help="relative tolerance for float columns")
    parser.add_argument("--atol", type=float, default=0.0, help="absolute tolerance for float columns")
    parser.add_argument("--rows", type=int, default=5, help="differing rows shown per table (default 5)")
    args = parser.parse_args(argv)
    try:
        result = compare_stores(args.a, args.b, skip_columns=args.skip, rtol=args.rtol, atol=args.atol,
                                max_rows=args.rows)
    except (OSError, duckdb.Error) as exc:
        print(f"compare: {exc}", file=sys.stderr)
        return 2
    print(result.report())
    return 0 if result.identical else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

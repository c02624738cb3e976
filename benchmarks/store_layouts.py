"""Measure candidate layouts for the activation matrix in DuckDB (and Parquet beside it).

Writes and reads back an (n_words, n_layers, hidden) float32 matrix in each layout and
prints seconds, MB/s, file size and whether the round trip is exact, with ratios against
the chosen layout (per-layer rows of FLOAT[]), all measured in this one run.

    python benchmarks/store_layouts.py --words 25000 --layers 7 --hidden 384
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq


def _keys(n: int) -> pl.DataFrame:
    return pl.DataFrame({"sentence_hash": [f"{i // 20:016x}" for i in range(n)],
                         "position": np.arange(n, dtype=np.int32) % 20})


def wide(con, X3, keys):
    n, L, H = X3.shape
    frame = keys.with_columns(pl.Series("act", X3.reshape(n, L * H), dtype=pl.Array(pl.Float32, L * H)))
    t = time.perf_counter()
    con.execute("CREATE TABLE wide AS SELECT * FROM frame")
    con.execute("CHECKPOINT")
    w = time.perf_counter() - t
    t = time.perf_counter()
    A = con.sql("SELECT act FROM wide ORDER BY sentence_hash, position").pl()["act"].to_numpy()
    r = time.perf_counter() - t
    t = time.perf_counter()
    lo = (L // 2) * H
    con.sql(f"SELECT act[{lo + 1}:{lo + H}]::FLOAT[{H}] AS act FROM wide ORDER BY sentence_hash, position").pl()["act"].to_numpy()
    return w, r, A.reshape(n, L, H), time.perf_counter() - t


def per_layer(con, X3, keys, list_type=True):
    n, L, H = X3.shape
    col = "FLOAT[]" if list_type else f"FLOAT[{H}]"
    con.execute(f"CREATE TABLE pl_ (sentence_hash VARCHAR, position INT, layer SMALLINT, act {col})")
    t = time.perf_counter()
    for layer in range(L):
        s = pl.Series("act", np.ascontiguousarray(X3[:, layer]), dtype=pl.Array(pl.Float32, H))
        frame = keys.with_columns(pl.lit(layer, pl.Int16).alias("layer"), s.cast(pl.List(pl.Float32)) if list_type else s)
        con.execute("INSERT INTO pl_ SELECT * FROM frame")
    con.execute("CHECKPOINT")
    w = time.perf_counter() - t
    t = time.perf_counter()
    parts = [con.sql(f"SELECT act::FLOAT[{H}] AS act FROM pl_ WHERE layer = {layer} ORDER BY sentence_hash, position")
             .pl()["act"].to_numpy() for layer in range(L)]
    r = time.perf_counter() - t
    t = time.perf_counter()
    con.sql(f"SELECT act::FLOAT[{H}] AS act FROM pl_ WHERE layer = {L // 2} ORDER BY sentence_hash, position").pl()["act"].to_numpy()
    return w, r, np.stack(parts, axis=1), time.perf_counter() - t


def parquet(tmp: Path, X3, keys):
    n, L, H = X3.shape
    table = pa.table({"sentence_hash": keys["sentence_hash"].to_arrow(), "position": keys["position"].to_arrow(),
                      "act": pa.FixedSizeListArray.from_arrays(pa.array(X3.reshape(-1)), L * H)})
    t = time.perf_counter()
    pq.write_table(table, tmp / "acts.parquet", compression="zstd")
    w = time.perf_counter() - t
    t = time.perf_counter()
    A = (duckdb.connect().sql(f"SELECT act::FLOAT[{L * H}] AS act FROM read_parquet('{tmp / 'acts.parquet'}') ORDER BY sentence_hash, position")
         .pl()["act"].to_numpy())
    r = time.perf_counter() - t
    t = time.perf_counter()
    lo = (L // 2) * H
    (duckdb.connect().sql(f"SELECT act[{lo + 1}:{lo + H}]::FLOAT[{H}] AS act FROM read_parquet('{tmp / 'acts.parquet'}') "
                          "ORDER BY sentence_hash, position").pl()["act"].to_numpy())
    return w, r, A.reshape(n, L, H), time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--words", type=int, default=25000)
    ap.add_argument("--layers", type=int, default=7)
    ap.add_argument("--hidden", type=int, default=384)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    # Activation-like values: dense float32 (random, so compression cannot flatter a layout).
    X3 = rng.standard_normal((args.words, args.layers, args.hidden), dtype=np.float32)
    keys = _keys(args.words)
    mb = X3.nbytes / 1e6
    results = {}
    for name in ("per_layer_list", "per_layer_array", "wide_array", "parquet_zstd"):
        tmp = Path(tempfile.mkdtemp())
        db = tmp / "s.duckdb"
        con = duckdb.connect(str(db))
        if name == "per_layer_list":
            w, r, A, r1 = per_layer(con, X3, keys, list_type=True)
        elif name == "per_layer_array":
            w, r, A, r1 = per_layer(con, X3, keys, list_type=False)
        elif name == "wide_array":
            w, r, A, r1 = wide(con, X3, keys)
        else:
            w, r, A, r1 = parquet(tmp, X3, keys)
        con.close()
        size = sum(f.stat().st_size for f in tmp.iterdir()) / 1e6
        results[name] = {"write_s": round(w, 3), "read_s": round(r, 3), "write_mb_s": round(mb / w, 1),
                         "read_mb_s": round(mb / r, 1), "read_one_layer_s": round(r1, 3), "size_mb": round(size, 1), "exact": bool(np.array_equal(A, X3))}
        shutil.rmtree(tmp)
    ref = results["per_layer_list"]
    print(f"matrix {args.words} x {args.layers} x {args.hidden} float32 = {mb:.0f} MB; ratios vs per_layer_list")
    print(f"{'layout':<18}{'write s':>9}{'read s':>9}{'1 layer s':>10}{'MB':>8}{'w ratio':>9}{'r ratio':>9}"
          f"{'1L ratio':>9}  exact")
    for name, v in results.items():
        print(f"{name:<18}{v['write_s']:>9.2f}{v['read_s']:>9.2f}{v['read_one_layer_s']:>10.2f}{v['size_mb']:>8.0f}"
              f"{v['write_s'] / ref['write_s']:>9.2f}{v['read_s'] / ref['read_s']:>9.2f}"
              f"{v['read_one_layer_s'] / ref['read_one_layer_s']:>9.2f}  {v['exact']}")
    print(json.dumps({"words": args.words, "mb": round(mb, 1), "threads": os.cpu_count(), "results": results}))


if __name__ == "__main__":
    main()

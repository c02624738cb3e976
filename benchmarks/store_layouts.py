"""Measure the activation storages through the store itself: writes, reads, size.

Start here: an (n_words, n_layers, hidden) float32 matrix of sentences is written with
``Store.write_activations`` in buffers of 8,192 words (as extraction writes) and read back
with ``Store.read_activation_matrix`` (every layer, then one layer; three times, median), for
each storage:

* ``duckdb``: rows in the DuckDB file, one per word and layer, ``FLOAT[]`` values;
* ``parquet_list``: Parquet files whose ``act`` column is a LIST of floats (sets created
  before the bytes layout);
* ``parquet_bytes``: Parquet files whose ``act`` column holds each row's values as
  fixed-length bytes (the default).

Each is run ``--reps`` times, alternating between storages; medians are printed with ratios
against ``duckdb``, all measured in this one run, and whether the round trip is exact.

    .venv/bin/python -m benchmarks.store_layouts --words 25000 --layers 7 --hidden 384 --reps 3
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from neuro_pipeline.store import ActivationSet, Store

LAYOUTS = ("duckdb", "parquet_list", "parquet_bytes")


def _sentences(n_words: int, n_layers: int, hidden: int, seed: int = 0) -> list[tuple[str, np.ndarray, bool]]:
    """Sentences of 1-30 words of random float32 values (random, so nothing compresses)."""
    rng = np.random.default_rng(seed)
    out, done, i = [], 0, 0
    while done < n_words:
        n = min(int(rng.integers(1, 31)), n_words - done)
        out.append((f"{i:032x}", rng.standard_normal((n, n_layers, hidden), dtype=np.float32), False))
        done, i = done + n, i + 1
    return out


def measure(layout: str, sentences, n_layers: int, hidden: int, keys: pl.DataFrame) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bench-layouts-"))
    try:
        store = Store(tmp / "s.duckdb")
        aset = ActivationSet("bench", "v", "/m", "last", "float32", "window", n_layers, hidden,
                             parquet_dir=None if layout == "duckdb" else str(tmp / "acts"),
                             parquet_layout="list" if layout == "parquet_list" else "bytes")
        store.register_activation_set(aset)
        start = time.perf_counter()
        buffer, words = [], 0
        for item in sentences:
            buffer.append(item)
            words += item[1].shape[0]
            if words >= 8192:
                store.write_activations(aset, buffer)
                buffer, words = [], 0
        store.write_activations(aset, buffer)
        write = time.perf_counter() - start
        reads, reads_one = [], []
        for _ in range(3):  # the first read after the write is often slower (memory warm-up)
            start = time.perf_counter()
            X = store.read_activation_matrix("bench", keys)
            reads.append(time.perf_counter() - start)
            start = time.perf_counter()
            store.read_activation_matrix("bench", keys, layers=[n_layers // 2])
            reads_one.append(time.perf_counter() - start)
        read, read_one = statistics.median(reads), statistics.median(reads_one)
        expected = np.concatenate([a for _, a, _ in sentences]).reshape(len(keys), -1)
        size = sum(f.stat().st_size for f in tmp.rglob("*") if f.is_file()) / 1e6
        return {"write_s": write, "read_s": read, "read_one_layer_s": read_one, "size_mb": size,
                "exact": bool(np.array_equal(X, expected))}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--words", type=int, default=25000)
    ap.add_argument("--layers", type=int, default=7)
    ap.add_argument("--hidden", type=int, default=384)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    sentences = _sentences(args.words, args.layers, args.hidden)
    keys = pl.DataFrame({"sentence_hash": [h for h, a, _ in sentences for _ in range(a.shape[0])],
                         "position": np.concatenate([np.arange(a.shape[0]) for _, a, _ in sentences])})
    mb = args.words * args.layers * args.hidden * 4 / 1e6
    runs: dict[str, list[dict]] = {name: [] for name in LAYOUTS}
    warm = sentences[:50]
    measure("parquet_bytes", warm, args.layers, args.hidden, keys[:sum(a.shape[0] for _, a, _ in warm)])
    for _ in range(args.reps):
        for name in LAYOUTS:
            runs[name].append(measure(name, sentences, args.layers, args.hidden, keys))
    results = {name: {key: (statistics.median(r[key] for r in rs) if key != "exact" else all(r[key] for r in rs))
                      for key in rs[0]} for name, rs in runs.items()}
    ref = results["duckdb"]
    print(f"matrix {args.words} x {args.layers} x {args.hidden} float32 = {mb:.0f} MB; medians of {args.reps}, "
          "ratios against duckdb (below 1 is faster)")
    print(f"{'storage':<15}{'write s':>9}{'read s':>9}{'1 layer s':>10}{'MB':>7}{'w ratio':>9}{'r ratio':>9}"
          f"{'1L ratio':>9}  exact")
    for name, v in results.items():
        print(f"{name:<15}{v['write_s']:>9.2f}{v['read_s']:>9.2f}{v['read_one_layer_s']:>10.2f}{v['size_mb']:>7.0f}"
              f"{v['write_s'] / ref['write_s']:>9.2f}{v['read_s'] / ref['read_s']:>9.2f}"
              f"{v['read_one_layer_s'] / ref['read_one_layer_s']:>9.2f}  {v['exact']}")
    print(json.dumps({"words": args.words, "mb": round(mb, 1), "reps": args.reps,
                      "results": {n: {k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()}
                                  for n, r in results.items()},
                      "runs": {n: [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()} for r in rs]
                               for n, rs in runs.items()}}))


if __name__ == "__main__":
    main()

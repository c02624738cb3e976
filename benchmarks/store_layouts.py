"""Store layouts: which activation storage writes and reads fastest through the store, and
how large is it?

An (n_words, n_layers, hidden) float32 matrix of sentences is written with
``Store.write_activations`` in buffers of 8,192 words (as extraction writes) and read back
with ``Store.read_activation_matrix`` (every layer, then one layer; three times, median),
for each storage:

* ``duckdb``: rows in the DuckDB file, one per word and layer, ``FLOAT[]`` values (the
  reference);
* ``parquet_list``: Parquet files whose ``act`` column is a LIST of floats (sets created
  before the bytes layout);
* ``parquet_bytes``: Parquet files whose ``act`` column holds each row's values as
  fixed-length bytes (the default).

The storages alternate every round in this one process (the same values, a fresh store
each time); medians are printed with ratios against ``duckdb`` (below 1 is faster).
Quality next to time: whether the round trip is exact. The choice of the default was
made with these numbers; the question stays because docs/performance.md and
docs/storage.md quote them.

Reproduce the docs' numbers (docs/performance.md, "the storages through the store")::

    .venv/bin/python -m benchmarks.store_layouts --words 25000 --layers 7 --hidden 384 --rounds 5

``--quick``: 2,000 words, one round.
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from benchmarks import harness
from neuro_pipeline.store import ActivationSet, Store

QUESTION = "Which activation storage writes and reads fastest through the store, and how large is it?"

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
                "exact": float(np.array_equal(X, expected))}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv=None) -> int:
    ap = harness.parser(__doc__, rounds=3, threads=None, ewt=False, model=False)
    ap.add_argument("--words", type=int, default=25000)
    ap.add_argument("--layers", type=int, default=7)
    ap.add_argument("--hidden", type=int, default=384)
    args = harness.parse(ap, argv, quick={"words": 2000})
    sentences = _sentences(args.words, args.layers, args.hidden)
    keys = pl.DataFrame({"sentence_hash": [h for h, a, _ in sentences for _ in range(a.shape[0])],
                         "position": np.concatenate([np.arange(a.shape[0]) for _, a, _ in sentences])})
    mb = args.words * args.layers * args.hidden * 4 / 1e6
    warm = sentences[:50]
    measure("parquet_bytes", warm, args.layers, args.hidden, keys[:sum(a.shape[0] for _, a, _ in warm)])
    ab = harness.alternate_calls(
        {name: (lambda rnd, name=name: measure(name, sentences, args.layers, args.hidden, keys)) for name in LAYOUTS},
        args.rounds, reference="duckdb", speedup=False)
    rows = []
    for name in LAYOUTS:
        rows.append([name, *[ab.median(name, k) for k in ("write_s", "read_s", "read_one_layer_s", "size_mb")],
                     *[(f"{ab.ratio(name, k):.2f}" if name != "duckdb" else "1.00")
                       for k in ("write_s", "read_s", "read_one_layer_s")],
                     all(r["exact"] for r in ab.rounds[name])])
    harness.table(["storage", "write s", "read s", "1 layer s", "MB", "write ratio", "read ratio", "1 layer ratio",
                   "exact"], rows,
                  title=f"matrix {args.words} x {args.layers} x {args.hidden} float32 = {mb:.0f} MB; medians of "
                        f"{args.rounds} round(s), ratios against duckdb (below 1 is faster)")
    quality = {name: {"round_trip_exact": all(r["exact"] for r in ab.rounds[name])} for name in LAYOUTS}
    harness.report(args, "store_layouts", QUESTION, ab=ab, quality=quality, results={"mb": round(mb, 1)})
    return 0 if all(q["round_trip_exact"] for q in quality.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

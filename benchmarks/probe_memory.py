"""Benchmark: training the linear probe on an activation matrix larger than the memory allowed.

Start here: a corpus is made by repeating UD EWT dev (``benchmarks.scaling.write_corpus``:
every repeat is unique), its activations are extracted into Parquet storage, and then the
linear-probe ranking stage (``materialize_ranking``: read the training matrix from the
store, fit the probe, order the neurons, store the ranking) runs in a fresh process inside
a memory cgroup whose limit is below the matrix it trains on. With
``evaluation.matrix_memory_mb`` below the matrix, the store writes the matrix into a
memory-mapped file that the probe reads in row chunks: the kernel may reclaim its pages
at any time, so the process's own (anonymous) memory stays flat and the stage finishes.

Each size runs once in a fresh process; the parent records wall time and peak RSS
(``wait4``), and a thread in the child samples its anonymous resident memory (``RssAnon``)
every 0.1 s, since RSS also counts the mapped file's pages that happen to be cached.

    .venv/bin/python -m benchmarks.probe_memory --repeats 1,4 --cgroup-limit-mb 1000

The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.scaling import make_cgroup, write_corpus

ROOT = Path(__file__).resolve().parents[1]

_EXTRACT = """
import sys, torch
torch.set_num_threads(int(sys.argv[2]))
from neuro_pipeline.config import load_config
from neuro_pipeline.pipeline import materialize_activations, materialize_corpus
from neuro_pipeline.store import Store
cfg = load_config(sys.argv[1])
store = Store(cfg.store_path)
materialize_corpus(cfg, store)
materialize_activations(cfg, store)
"""

_PROBE = """
import sys, threading, time, torch
torch.set_num_threads(int(sys.argv[2]))
peak = {"anon": 0}
def sample():
    while True:
        for line in open("/proc/self/status"):
            if line.startswith("RssAnon:"):
                peak["anon"] = max(peak["anon"], int(line.split()[1]) // 1024)
        time.sleep(0.1)
threading.Thread(target=sample, daemon=True).start()
from neuro_pipeline.config import load_config
from neuro_pipeline.pipeline import materialize_ranking
from neuro_pipeline.store import Store
cfg = load_config(sys.argv[1])
imported = peak["anon"]
s = materialize_ranking(cfg, Store(cfg.store_path), "linear_probe")
time.sleep(0.2)
print("RESULT", s.n_train, s.n_neurons, s.seconds, imported, peak["anon"], flush=True)
"""


def run(command: list[str], cgroup: Path | None) -> tuple[str, float, float]:
    start = time.perf_counter()
    join = (lambda: (cgroup / "cgroup.procs").write_text(str(os.getpid()))) if cgroup else None
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=join)
    _, status, usage = os.wait4(proc.pid, 0)
    out, err = proc.stdout.read(), proc.stderr.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{command[-2]}: exit {os.waitstatus_to_exitcode(status)}\n{err[-3000:]}")
    return out, time.perf_counter() - start, usage.ru_maxrss / 1024


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", default="1,4", help="corpus sizes, in copies of EWT dev (comma list)")
    ap.add_argument("--cgroup-limit-mb", type=int, default=None,
                    help="run the largest size's probe stage in a memory cgroup with this limit (root, cgroup v1)")
    ap.add_argument("--matrix-memory-mb", type=float, default=256,
                    help="evaluation.matrix_memory_mb: matrices above it are memory-mapped (default 256)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=2, help="epochs of the minibatch solver")
    ap.add_argument("--workdir", default=None,
                    help="keep the corpora and stores here (a second run reuses the extracted activations)")
    args = ap.parse_args(argv)
    sizes = [float(r) for r in args.repeats.split(",")]
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="neuro-probe-memory-"))
    results = []
    try:
        for repeats in sizes:
            folder = workdir / f"x{repeats:g}"
            folder.mkdir(parents=True, exist_ok=True)
            n_sentences, n_words = write_corpus(folder / "corpus.conllu", repeats)
            (folder / "p.yaml").write_text(
                "name: mem\nstore: s.duckdb\nreports: r\nmodel: {batch_size: 64}\n"
                "extraction: {storage: parquet}\n"
                "corpus: {format: conllu, train: corpus.conllu, test_fraction: 0.0}\n"
                f"evaluation: {{matrix_memory_mb: {args.matrix_memory_mb}}}\n"
                "ranking: {methods: [{method: linear_probe, params: {l1: 0.001, l2: 0.0001, solver: minibatch, "
                f"max_epochs: {args.epochs}}}}}]}}\n", encoding="utf-8")
            print(f"x{repeats:g}: {n_words} words; extracting (what is not stored yet) ...", file=sys.stderr, flush=True)
            run([sys.executable, "-c", _EXTRACT, str(folder / "p.yaml"), str(args.threads)], None)
            cgroup = make_cgroup(args.cgroup_limit_mb) if args.cgroup_limit_mb and repeats == max(sizes) else None
            print(f"x{repeats:g}: probe stage" + (f" in a {args.cgroup_limit_mb} MB cgroup" if cgroup else ""),
                  file=sys.stderr, flush=True)
            try:
                out, wall, peak = run([sys.executable, "-c", _PROBE, str(folder / "p.yaml"), str(args.threads)],
                                      cgroup)
                cg = {}
                if cgroup is not None:
                    cg = {"cgroup_limit_mb": args.cgroup_limit_mb,
                          "cgroup_max_usage_mb": round(int((cgroup / "memory.max_usage_in_bytes").read_text())
                                                       / 2**20),
                          "cgroup_failcnt": int((cgroup / "memory.failcnt").read_text())}
            finally:
                if cgroup is not None:
                    cgroup.rmdir()
            _, n_train, n_neurons, seconds, imported, anon = next(
                line for line in out.splitlines() if line.startswith("RESULT")).split()
            result = {"repeats": repeats, "n_words": int(n_train), "matrix_mb": round(int(n_train) * int(n_neurons)
                                                                                      * 4 / 2**20),
                      "stage_s": float(seconds), "wall_s": round(wall, 1), "peak_rss_mb": round(peak),
                      "anon_after_imports_mb": int(imported), "peak_anon_mb": int(anon), **cg}
            print(json.dumps(result), file=sys.stderr, flush=True)
            results.append(result)
            if not args.workdir:
                shutil.rmtree(folder)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps({"results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

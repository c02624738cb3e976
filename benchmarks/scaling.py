"""Benchmark: extraction time and peak memory against corpus size, and a corpus whose
activations are larger than the memory the process may use.

Start here: each size is a corpus made by repeating UD EWT dev; every repeat r > 0 gets
the word ``§r`` at the start of each sentence, so that no sentence repeats (sentences are
content-addressed and would otherwise be extracted once). Each size runs the extraction
stage (``materialize_activations``: tokenise, forward, aggregate, write to the store) in a
fresh process into a fresh store, and the parent records that process's wall time and
peak resident memory (``wait4``). Memory stays flat when it does not grow with the corpus.

With ``--cgroup-limit-mb`` the largest size runs inside a cgroup (v1 memory controller,
as root) whose limit is below the size of its activations, showing that the stage streams
to the store instead of holding the activations.

    .venv/bin/python -m benchmarks.scaling --repeats 0.25,0.5,1,2 --plot benchmarks/scaling.svg
    .venv/bin/python -m benchmarks.scaling --repeats 0.25,0.5,1,2,4,10 --cgroup-limit-mb 1000

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

ROOT = Path(__file__).resolve().parents[1]
EWT_DEV = ROOT.parent / "shared" / "data" / "ud-en-ewt" / "en_ewt-ud-dev.conllu"

_CHILD = """
import sys, torch
torch.set_num_threads(int(sys.argv[2]))
from neuro_pipeline.config import load_config
from neuro_pipeline.pipeline import materialize_activations, materialize_corpus
from neuro_pipeline.store import Store
cfg = load_config(sys.argv[1])
store = Store(cfg.store_path)
materialize_corpus(cfg, store)
s = materialize_activations(cfg, store)
print("RESULT", s.n_rows, s.seconds, s.load_seconds, s.write_wait_seconds, flush=True)
"""


def write_corpus(path: Path, repeats: float) -> tuple[int, int]:
    """EWT dev repeated ``repeats`` times (a fraction takes that share of its sentences)."""
    from neuro_pipeline.corpus import read_conllu

    base = read_conllu(EWT_DEV)
    n_total = int(round(len(base) * repeats))
    blocks, n_words = [], 0
    for i in range(n_total):
        r, s = divmod(i, len(base))
        sentence = base[s]
        words = ([f"§{r}"] if r else []) + list(sentence.tokens)
        labels = (["SYM"] if r else []) + list(sentence.labels)
        n_words += len(words)
        blocks.append("\n".join(f"{j}\t{w}\t_\t{t}\t_\t_\t_\t_\t_\t_"
                                for j, (w, t) in enumerate(zip(words, labels), start=1)))
    path.write_text("\n\n".join(blocks) + "\n\n", encoding="utf-8")
    return n_total, n_words


def run_size(workdir: Path, repeats: float, threads: int, cgroup: Path | None, storage: str = "parquet") -> dict:
    folder = workdir / f"x{repeats:g}"
    folder.mkdir(parents=True, exist_ok=True)
    n_sentences, n_words = write_corpus(folder / "corpus.conllu", repeats)
    (folder / "p.yaml").write_text(
        f"name: scale\nstore: s.duckdb\nreports: r\nmodel: {{batch_size: 64}}\nextraction: {{storage: {storage}}}\n"
        "corpus: {format: conllu, train: corpus.conllu, test_fraction: 0.0}\n", encoding="utf-8")
    command = [sys.executable, "-c", _CHILD, str(folder / "p.yaml"), str(threads)]
    start = time.perf_counter()
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=(lambda: _join(cgroup)) if cgroup else None)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    out, err = proc.stdout.read(), proc.stderr.read()
    proc.returncode = os.waitstatus_to_exitcode(status)
    line = next((x for x in out.splitlines() if x.startswith("RESULT")), None)
    if proc.returncode != 0 or line is None:
        raise SystemExit(f"size {repeats}: exit {proc.returncode}\n{err[-3000:]}")
    _, n_rows, seconds, load, wait = line.split()
    activation_mb = n_words * 7 * 384 * 4 / 2**20
    store_mb = (folder / "s.duckdb").stat().st_size / 2**20
    (folder / "s.duckdb").unlink()
    if (folder / "activations").exists():
        store_mb += sum(f.stat().st_size for f in (folder / "activations").rglob("*.parquet")) / 2**20
        shutil.rmtree(folder / "activations")
    return {"repeats": repeats, "n_sentences": n_sentences, "n_words": n_words, "activation_mb": round(activation_mb),
            "store_mb": round(store_mb), "storage": storage, "wall_s": round(wall, 2), "stage_s": float(seconds),
            "load_s": float(load), "write_wait_s": float(wait),
            "words_per_s": round(n_words / (float(seconds) - float(load)), 1),
            "peak_rss_mb": round(usage.ru_maxrss / 1024), "cgroup_limit_mb": None}


def _join(cgroup: Path) -> None:
    (cgroup / "cgroup.procs").write_text(str(os.getpid()))


def make_cgroup(limit_mb: int) -> Path:
    cgroup = Path("/sys/fs/cgroup/memory") / f"neuro-scaling-{os.getpid()}"
    cgroup.mkdir()
    (cgroup / "memory.limit_in_bytes").write_text(str(limit_mb * 2**20))
    swap = cgroup / "memory.memsw.limit_in_bytes"
    if swap.exists():
        try:
            swap.write_text(str(limit_mb * 2**20))
        except OSError:
            pass
    return cgroup


def plot(results: list[dict], path: Path, storage: str = "parquet") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    words = [r["n_words"] / 1000 for r in results]
    left.plot(words, [r["stage_s"] - r["load_s"] for r in results], "o-")
    left.set_xlabel("corpus size (thousand words)")
    left.set_ylabel("extraction stage (s, model load excluded)")
    left.set_ylim(bottom=0)
    right.plot(words, [r["peak_rss_mb"] for r in results], "o-", label="peak RSS")
    right.plot(words, [r["activation_mb"] for r in results], "s--", label="activations (float32)")
    for r in results:
        if r.get("cgroup_limit_mb"):
            right.axhline(r["cgroup_limit_mb"], color="grey", linestyle=":", linewidth=1)
            right.annotate(f"run in a {r['cgroup_limit_mb']} MB memory cgroup",
                           (r["n_words"] / 1000, r["peak_rss_mb"]), textcoords="offset points", xytext=(-10, -28),
                           ha="right", fontsize=8)
    right.set_xlabel("corpus size (thousand words)")
    right.set_ylabel("MB")
    right.set_ylim(bottom=0)
    right.legend()
    fig.suptitle(f"Extraction of repeated UD EWT dev with MiniLM ({storage} storage)")
    fig.tight_layout()
    fig.savefig(path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", default="0.25,0.5,1,2", help="comma-separated multiples of EWT dev")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--storage", default="parquet", choices=["duckdb", "parquet"])
    ap.add_argument("--cgroup-limit-mb", type=int, default=None,
                    help="run the largest size in a memory cgroup with this limit")
    ap.add_argument("--plot", type=Path, default=None, help="write time and memory against size (SVG/PNG)")
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-scaling-"))
    sizes = [float(x) for x in args.repeats.split(",")]
    results = []
    for repeats in sizes:
        cgroup = make_cgroup(args.cgroup_limit_mb) if args.cgroup_limit_mb and repeats == max(sizes) else None
        try:
            result = run_size(workdir, repeats, args.threads, cgroup, args.storage)
            if cgroup is not None:
                result["cgroup_limit_mb"] = args.cgroup_limit_mb
                result["cgroup_max_usage_mb"] = round(int((cgroup / "memory.max_usage_in_bytes").read_text()) / 2**20)
                result["cgroup_failcnt"] = int((cgroup / "memory.failcnt").read_text())
        finally:
            if cgroup is not None:
                cgroup.rmdir()
        results.append(result)
        print(json.dumps(result), file=sys.stderr)
    if len(results) > 1:
        base = results[0]
        for r in results:
            r["time_ratio_vs_smallest"] = round((r["stage_s"] - r["load_s"]) / (base["stage_s"] - base["load_s"]), 2)
            r["size_ratio_vs_smallest"] = round(r["n_words"] / base["n_words"], 2)
    print(f"{'words':>8} {'act MB':>7} {'stage s':>8} {'words/s':>8} {'peak RSS MB':>11} {'time ratio':>10} {'size ratio':>10}",
          file=sys.stderr)
    for r in results:
        print(f"{r['n_words']:>8} {r['activation_mb']:>7} {r['stage_s'] - r['load_s']:>8.1f} {r['words_per_s']:>8} "
              f"{r['peak_rss_mb']:>11} {r.get('time_ratio_vs_smallest', 1):>10} {r.get('size_ratio_vs_smallest', 1):>10}",
              file=sys.stderr)
    if args.plot:
        plot(results, args.plot, args.storage)
    print(json.dumps({"threads": args.threads, "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

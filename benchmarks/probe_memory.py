"""Probe memory: does the linear-probe ranking stage finish on an activation matrix larger
than the memory the process may use, and how much of its own memory does it need?

A corpus is made by repeating UD EWT dev (``harness.repeated_corpus``: every repeat is
unique), its activations are extracted into Parquet storage (untimed, reused with
``--workdir``), and then the linear-probe ranking stage (``neuro_pipeline.stages.
materialize_ranking``: read the training matrix from the store, fit the probe, order the
neurons, store the ranking) runs in a fresh process, the largest size inside a memory
cgroup whose limit is below the matrix (``--cgroup-limit-mb``, root, cgroup v1). With
``evaluation.matrix_memory_mb`` below the matrix, the store writes the matrix into a
memory-mapped file that the probe reads in row chunks: the kernel may reclaim its pages at
any time, so the process's own (anonymous) memory stays flat and the stage finishes.

Each size's probe stage is measured from outside (wall time, peak RSS, ``wait4``) and, by a
thread inside it, its anonymous resident memory (``RssAnon``, every 0.1 s), since RSS also
counts the mapped file's pages that happen to be cached. The sizes alternate every round;
the reference is the smallest size (ratios against it). Quality next to time: the words the
probe trained on against the corpus's, the neurons it ranked, and the cgroup's failcnt.

Reproduce the docs' numbers (docs/performance.md, "the linear-probe stage on 269,479 words
… inside a 1 GB memory cgroup")::

    .venv/bin/python -m benchmarks.probe_memory --repeats 1,10 --cgroup-limit-mb 1000 --rounds 1

``--quick``: 2% and 4% of EWT dev, one round.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import threading
import time
from pathlib import Path

from benchmarks import harness

QUESTION = ("Does the linear-probe ranking stage finish on an activation matrix larger than the memory the process "
            "may use, and how much of its own memory does it need?")


def parse_args(argv=None):
    ap = harness.parser(__doc__, rounds=1)
    ap.add_argument("--repeats", default="1,4", help="corpus sizes, in copies of EWT dev (comma list)")
    ap.add_argument("--cgroup-limit-mb", type=int, default=None,
                    help="run the largest size's probe stage in a memory cgroup with this limit (root, cgroup v1)")
    ap.add_argument("--matrix-memory-mb", type=float, default=256,
                    help="evaluation.matrix_memory_mb: matrices above it are memory-mapped (default 256)")
    ap.add_argument("--epochs", type=int, default=2, help="epochs of the minibatch solver")
    ap.add_argument("--workdir", type=Path, default=None,
                    help="keep the corpora and stores here (a second run reuses the extracted activations)")
    ap.add_argument("--config", type=Path, default=None, help=argparse.SUPPRESS)  # a side's analysis
    return harness.parse(ap, argv, quick={"repeats": "0.02,0.04"})


def probe_side(args) -> dict:
    """One fresh process: the linear-probe ranking stage, its anonymous memory sampled."""
    peak = {"anon": 0}

    def sample():
        while True:
            with open("/proc/self/status", encoding="ascii") as status:
                for line in status:
                    if line.startswith("RssAnon:"):
                        peak["anon"] = max(peak["anon"], int(line.split()[1]) // 1024)
            time.sleep(0.1)

    threading.Thread(target=sample, daemon=True).start()
    from neuro_pipeline.config import load_config
    from neuro_pipeline.stages import materialize_ranking
    from neuro_pipeline.store import Store

    cfg = load_config(args.config)
    time.sleep(0.2)
    imported = peak["anon"]
    s = materialize_ranking(cfg, Store(cfg.store_path), "linear_probe")
    time.sleep(0.2)
    return {"ok": True, "n_train": s.n_train, "n_neurons": s.n_neurons, "n_ranked": s.n_ranked, "stage_s": s.seconds,
            "anon_after_imports_mb": imported, "peak_anon_mb": peak["anon"],
            "matrix_mb": s.n_train * s.n_neurons * 4 / 2**20,
            "fitted": {k: v for k, v in s.fitted.items() if isinstance(v, (int, float, str, bool))}}


def prepare(args, work: Path, repeats: float) -> tuple[Path, dict]:
    """The corpus, its analysis and its extracted activations (what is not stored yet)."""
    folder, n_sentences, n_words = harness.repeated_corpus_analysis(
        args, work, repeats, "mem",
        f"evaluation: {{matrix_memory_mb: {args.matrix_memory_mb}}}\n"
        "ranking: {methods: [{method: linear_probe, params: {l1: 0.001, l2: 0.0001, solver: minibatch, "
        f"max_epochs: {args.epochs}}}}}]}}\n")
    harness.say(f"x{repeats:g}: {n_words} words; extracting (what is not stored yet) ...")
    run = harness.run_measured([sys.executable, "-m", "benchmarks.scaling", "--side", "extract",
                                "--config", folder / "p.yaml"])
    if run.returncode != 0:
        raise harness.BenchError(f"x{repeats:g}: extraction failed\n{run.stderr[-3000:]}")
    return folder, {"repeats": repeats, "n_sentences": n_sentences, "n_words": n_words}


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.side == "probe":
        harness.side_result(probe_side(args))
        return 0
    work, cleanup = (args.workdir, lambda: None) if args.workdir else harness.workdir("probe-memory")
    try:
        sizes = harness.csv(args.repeats, float)
        sides, facts = [], {}
        for repeats in sizes:
            folder, f = prepare(args, work, repeats)
            side = harness.ours_side("probe_memory", "--config", folder / "p.yaml", name=f"x{repeats:g}",
                                     side="probe")
            if repeats == max(sizes) and args.cgroup_limit_mb:
                side.cgroup = lambda: harness.memory_cgroup(args.cgroup_limit_mb)
                f["cgroup_limit_mb"] = args.cgroup_limit_mb
            sides.append(side)
            facts[side.name] = f
        ab, _ = harness.alternate(sides, args.rounds, reference=sides[0].name, speedup=False)
        results = [{**facts[s.name], **{k: ab.median(s.name, k) for k in (
            "n_train", "n_ranked", "n_neurons", "matrix_mb", "stage_s", "wall_s", "peak_rss_mb", "anon_after_imports_mb",
            "peak_anon_mb", "cgroup_max_usage_mb", "cgroup_failcnt")}, "time_ratio_vs_smallest": ab.ratio(s.name, "stage_s") or 1.0}
            for s in sides]
        harness.table(["size", "words", "matrix MB", "stage s", "time ratio", "peak RSS MB", "anon after imports MB",
                       "peak anon MB", "cgroup limit MB", "cgroup failcnt"],
                      [[f"x{r['repeats']:g}", r["n_words"], r["matrix_mb"], r["stage_s"], r["time_ratio_vs_smallest"],
                        r["peak_rss_mb"], r["anon_after_imports_mb"], r["peak_anon_mb"], r.get("cgroup_limit_mb"),
                        r["cgroup_failcnt"]] for r in results],
                      title=f"The linear-probe stage against the matrix size (medians of {args.rounds} round(s); "
                            f"matrix_memory_mb {args.matrix_memory_mb:g}; {args.threads} threads)")
        quality = {f"x{r['repeats']:g}": {"words_trained_on": r["n_train"], "words_in_corpus": r["n_words"],
                                          "neurons_ranked": r["n_ranked"], "cgroup_failcnt": r["cgroup_failcnt"]}
                   for r in results}
        harness.report(args, "probe_memory", QUESTION, ab=ab, quality=quality, results=results)
        return 0
    finally:
        cleanup()
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

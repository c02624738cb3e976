"""Scaling: how do the extraction stage's time and peak memory grow with the corpus, up to
a corpus whose activations are larger than the memory the process may use?

Each size is EWT dev repeated ``--repeats`` times (every repeat r > 0 starts each sentence
with the word ``§r``, so no sentence repeats: sentences are content-addressed and would
otherwise be extracted once). Each size runs the extraction stage
(``neuro_pipeline.stages.materialize_corpus`` then ``materialize_activations``: tokenise,
forward, aggregate, write to the store) in a fresh process into a fresh store; the sizes
alternate every round, and each process is measured from outside (wall time, peak RSS).
The reference is the smallest size: time and size ratios are against it, so time linear in
the words shows as equal ratios, and flat memory as a flat peak RSS. Quality next to time:
the words stored against the words written, and the store's size against the activations'.

With ``--cgroup-limit-mb`` the largest size runs inside a memory cgroup (v1, as root)
whose limit is below its activations, showing that the stage streams to the store instead
of holding them (the cgroup's failcnt stays 0).

Reproduce the docs' numbers (docs/performance.md, "extraction time and peak memory against
corpus size"; ``benchmarks/scaling.json`` and ``scaling.svg`` hold that run)::

    .venv/bin/python -m benchmarks.scaling --repeats 0.25,0.5,1,2,4,10 --cgroup-limit-mb 1000 --rounds 1 \\
        --plot benchmarks/scaling.svg --out benchmarks/scaling.json

``--quick``: 1% and 2% of EWT dev, one round.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from benchmarks import harness

QUESTION = ("How do the extraction stage's time and peak memory grow with the corpus, up to activations larger "
            "than the memory the process may use?")


def parse_args(argv=None):
    ap = harness.parser(__doc__, rounds=1)
    ap.add_argument("--repeats", default="0.25,0.5,1,2", help="comma-separated multiples of EWT dev")
    ap.add_argument("--storage", default="parquet", choices=["duckdb", "parquet"])
    ap.add_argument("--cgroup-limit-mb", type=int, default=None,
                    help="run the largest size in a memory cgroup with this limit (root, cgroup v1)")
    ap.add_argument("--plot", type=Path, default=None, help="write time and memory against size (SVG/PNG)")
    ap.add_argument("--workdir", type=Path, default=None, help="keep the corpora here")
    ap.add_argument("--config", type=Path, default=None, help=argparse.SUPPRESS)  # the extract side's analysis
    return harness.parse(ap, argv, quick={"repeats": "0.01,0.02"})


def extract_side(args) -> dict:
    """One fresh process: the corpus and extraction stages on a fresh store."""
    from neuro_pipeline.config import load_config
    from neuro_pipeline.stages import materialize_activations, materialize_corpus
    from neuro_pipeline.store import Store

    cfg = load_config(args.config)
    store = Store(cfg.store_path)
    materialize_corpus(cfg, store)
    s = materialize_activations(cfg, store)
    folder = Path(cfg.store_path).parent
    store_mb = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and f.suffix in (".duckdb", ".parquet")
                   ) / 2**20
    return {"ok": True, "n_rows": s.n_rows, "stage_s": s.seconds, "load_s": s.load_seconds,
            "extract_s": s.seconds - s.load_seconds, "write_wait_s": s.write_wait_seconds, "store_mb": store_mb,
            "words_per_s": (s.n_words_extracted / (s.seconds - s.load_seconds)) if s.n_words_extracted else None}


def size_side(args, work: Path, repeats: float, largest: bool) -> tuple[harness.Side, dict]:
    folder, n_sentences, n_words = harness.repeated_corpus_analysis(args, work, repeats, "scale",
                                                                    extraction=args.storage)

    def wipe():
        (folder / "s.duckdb").unlink(missing_ok=True)
        shutil.rmtree(folder / "activations", ignore_errors=True)
        shutil.rmtree(folder / "r", ignore_errors=True)

    side = harness.ours_side("scaling", "--config", folder / "p.yaml", name=f"x{repeats:g}", side="extract")
    side.before, side.after = wipe, wipe
    if largest and args.cgroup_limit_mb:
        side.cgroup = lambda: harness.memory_cgroup(args.cgroup_limit_mb)
    facts = {"repeats": repeats, "n_sentences": n_sentences, "n_words": n_words,
             "activation_mb": n_words * 7 * 384 * 4 / 2**20}
    return side, facts


def plot(results: list[dict], path: Path, storage: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    words = [r["n_words"] / 1000 for r in results]
    left.plot(words, [r["extract_s"] for r in results], "o-")
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
    args = parse_args(argv)
    if args.side == "extract":
        harness.side_result(extract_side(args))
        return 0
    work, cleanup = (args.workdir, lambda: None) if args.workdir else harness.workdir("scaling")
    try:
        sizes = harness.csv(args.repeats, float)
        sides, facts = [], {}
        for repeats in sizes:
            side, f = size_side(args, work, repeats, repeats == max(sizes))
            sides.append(side)
            facts[side.name] = f
        ab, _ = harness.alternate(sides, args.rounds, reference=sides[0].name, speedup=False)
        results = []
        for side in sides:
            f = facts[side.name]
            r = {**f, **{k: ab.median(side.name, k) for k in ("extract_s", "load_s", "stage_s", "wall_s", "peak_rss_mb",
                                                             "words_per_s", "store_mb", "n_rows", "write_wait_s",
                                                             "cgroup_max_usage_mb", "cgroup_failcnt")}}
            r["time_ratio_vs_smallest"] = ab.ratio(side.name, "extract_s") or 1.0
            r["size_ratio_vs_smallest"] = f["n_words"] / facts[sides[0].name]["n_words"]
            if side.cgroup:
                r["cgroup_limit_mb"] = args.cgroup_limit_mb
            results.append(r)
        harness.table(["size", "words", "activations MB", "extract s", "words/s", "peak RSS MB", "time ratio",
                       "size ratio", "words stored", "store MB", "cgroup failcnt"],
                      [[f"x{r['repeats']:g}", r["n_words"], r["activation_mb"], r["extract_s"], r["words_per_s"],
                        r["peak_rss_mb"], r["time_ratio_vs_smallest"], r["size_ratio_vs_smallest"], r["n_rows"],
                        r["store_mb"], r["cgroup_failcnt"]] for r in results],
                      title=f"Extraction against corpus size (medians of {args.rounds} round(s); ratios against "
                            f"the smallest size; {args.threads} threads, {args.storage})")
        if args.plot:
            plot(results, args.plot, args.storage)
            harness.say(f"wrote {args.plot}")
        quality = {r["repeats"]: {"words_stored": r["n_rows"], "words_written": r["n_words"],
                                  "store_mb": r["store_mb"], "activation_mb": r["activation_mb"]} for r in results}
        harness.report(args, "scaling", QUESTION, ab=ab, quality=quality, results=results)
        return 0
    finally:
        cleanup()


if __name__ == "__main__":
    sys.exit(main())

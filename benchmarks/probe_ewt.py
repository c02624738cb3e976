"""Benchmark: rank neurons with LinearProbeRanker and evaluate the ranking, on cached activations.

Start here: this is the product's headline measurement. Given activations and labels of a
training and a test split as ``.npy`` files (for example all 7 hidden states of MiniLM on
UD EWT dev / test, 2688 neurons), it

1. fits ``LinearProbeRanker`` on the training split (penalties chosen on held-out sentences
   when ``--train-groups`` is given, ``--l1/--l2 auto``);
2. scores the probe on the test split (overall and per class);
3. retrains probes on the top / random / bottom 1, 5, 10 and 20 % of neurons
   (``evaluate_selections``) and checks top > random > bottom at every fraction;
4. optionally times one cold probe fit with the chosen penalties.

It prints a table on stderr and, as the last line of stdout, one JSON object (the fields
``test_accuracy`` and ``stages_s.*`` line up with ``../shared/bench/neurox_ref.py`` for
``ab.py``)::

    .venv/bin/python -m benchmarks.probe_ewt \\
        --train-acts /tmp/ewt_acts/dev_last_X.npy --train-labels /tmp/ewt_acts/dev_y.npy \\
        --train-groups /tmp/ewt_acts/dev_groups.npy \\
        --test-acts /tmp/ewt_acts/test_last_X.npy --test-labels /tmp/ewt_acts/test_y.npy \\
        --name last --threads 2

Activations are memory-mapped, so only the columns a probe needs are copied into memory.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import resource
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

from neuro_pipeline.evaluation import evaluate_probe, evaluate_selections, summarize_selections
from neuro_pipeline.probe import LinearProbe
from neuro_pipeline.ranking import LinearProbeRanker

logger = logging.getLogger("probe_ewt")


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train-acts", type=Path, required=True, help=".npy (n_train, n_neurons) float32 activations")
    ap.add_argument("--train-labels", type=Path, required=True, help=".npy (n_train,) labels")
    ap.add_argument("--train-groups", type=Path, help=".npy (n_train,) sentence ids, for a held-out split by sentence")
    ap.add_argument("--test-acts", type=Path, required=True)
    ap.add_argument("--test-labels", type=Path, required=True)
    ap.add_argument("--name", default="", help="label for this run, e.g. the subword aggregation")
    ap.add_argument("--l1", default="auto", help="probe L1 weight, or 'auto' (default)")
    ap.add_argument("--l2", default="auto", help="probe L2 weight, or 'auto' (default)")
    ap.add_argument("--fractions", default="0.01,0.05,0.10,0.20", help="comma-separated fractions of neurons")
    ap.add_argument("--n-random", type=int, default=3, help="random draws per fraction (default 3)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random draws and of the held-out split")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    ap.add_argument("--no-cold-fit", action="store_true", help="skip timing one cold probe fit")
    return ap.parse_args(argv)


def _penalty(value: str) -> float | str:
    return value if value == "auto" else float(value)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[probe_ewt] %(message)s", stream=sys.stderr)
    torch.set_num_threads(args.threads)
    stages: dict[str, float] = {}
    t_start = time.perf_counter()

    start = time.perf_counter()
    X_train = np.load(args.train_acts, mmap_mode="r")
    y_train = np.load(args.train_labels)
    X_test = np.load(args.test_acts, mmap_mode="r")
    y_test = np.load(args.test_labels)
    groups = np.load(args.train_groups) if args.train_groups else None
    stages["load"] = time.perf_counter() - start
    logger.info("train %s, test %s, %d threads", X_train.shape, X_test.shape, torch.get_num_threads())

    start = time.perf_counter()
    ranker = LinearProbeRanker(l1=_penalty(args.l1), l2=_penalty(args.l2), random_state=args.seed)
    ranker.fit(X_train, y_train, groups=groups)
    stages["rank"] = time.perf_counter() - start
    search = ranker.lambda_search_
    stages["lambda_search"] = float(search["fit_seconds"].sum()) if search is not None else 0.0
    logger.info("ranker fitted in %.1f s: l1=%g, l2=%g", stages["rank"], ranker.l1_, ranker.l2_)
    if search is not None:
        logger.info("penalty search:\n%s", search)

    start = time.perf_counter()
    full = evaluate_probe(ranker.probe_, X_test, y_test)
    stages["evaluate"] = time.perf_counter() - start

    cold = None
    if not args.no_cold_fit:
        start = time.perf_counter()
        cold_probe = LinearProbe(l1=ranker.l1_, l2=ranker.l2_).fit(X_train, y_train)
        cold = {"seconds": time.perf_counter() - start, "n_iter": cold_probe.n_iter_,
                "test_accuracy": cold_probe.score(X_test, y_test)}
        stages["train_probe"] = cold["seconds"]
        logger.info("cold probe fit: %.1f s, %d iterations", cold["seconds"], cold["n_iter"])

    start = time.perf_counter()
    fractions = tuple(float(f) for f in args.fractions.split(","))
    table = evaluate_selections(
        X_train, y_train, X_test, y_test, ranker.ranking_,
        fractions=fractions, n_random=args.n_random, seed=args.seed,
    )
    stages["evaluate_selections"] = time.perf_counter() - start
    summary = summarize_selections(table)

    acc = {(r["selection"], r["fraction"]): r for r in summary.iter_rows(named=True)}
    ordered = {f: acc[("top", f)]["accuracy_mean"] > acc[("random", f)]["accuracy_mean"] > acc[("bottom", f)]["accuracy_mean"]
               for f in fractions} if args.n_random else {}
    _print_table(args.name, full["accuracy"], summary, fractions, ordered)

    result = {
        "tool": "neuro_pipeline",
        "name": args.name,
        "ok": True,
        "test_accuracy": full["accuracy"],
        "test_accuracy_per_class": {str(k): v for k, v in full["per_class"].items()},
        "n_unseen_test": full["n_unseen"],
        "selections": {
            name: {
                f"{f:g}": {
                    "k": acc[(name, f)]["k"],
                    "accuracy": acc[(name, f)]["accuracy_mean"],
                    **({"std": acc[(name, f)]["accuracy_std"],
                        "draws": table.filter((pl.col("selection") == name) & (pl.col("fraction") == f))["accuracy"].to_list()}
                       if name == "random" else {}),
                }
                for f in fractions
            }
            for name in (["top", "random", "bottom"] if args.n_random else ["top", "bottom"])
        },
        "top_gt_random_gt_bottom": {f"{f:g}": v for f, v in ordered.items()},
        "chosen": {"l1": ranker.l1_, "l2": ranker.l2_},
        "lambda_search": search.to_dicts() if search is not None else None,
        "final_probe": {"n_iter": ranker.probe_.n_iter_, "converged": ranker.probe_.converged_,
                        "n_nonzero_neurons": int((ranker.probe_.coef_ != 0).any(axis=0).sum())},
        "cold_probe_fit": cold,
        "ordering_top20": ranker.ranking_[:20].tolist(),
        "stages_s": stages,
        "total_s": time.perf_counter() - t_start,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "n_tokens": {"train": int(X_train.shape[0]), "test": int(X_test.shape[0])},
        "n_neurons": int(X_train.shape[1]),
        "n_labels": int(len(ranker.classes_)),
        "torch_threads": torch.get_num_threads(),
        "versions": {"torch": torch.__version__, "numpy": np.__version__},
        "inputs": {k: str(v) for k, v in vars(args).items() if k.endswith(("acts", "labels", "groups"))},
    }
    print(json.dumps(result, default=_json_default))
    return 0


def _print_table(name: str, full: float, summary: pl.DataFrame, fractions, ordered) -> None:
    rows = {(r["selection"], r["fraction"]): r for r in summary.iter_rows(named=True)}
    lines = [f"{name or 'run'}: full probe test accuracy {full:.4f}",
             f"{'neurons':>9} {'k':>5} {'top':>7} {'random (mean ± std)':>21} {'bottom':>7}  top>random>bottom"]
    for f in fractions:
        top, bottom = rows[("top", f)], rows[("bottom", f)]
        random = rows.get(("random", f))
        rnd = f"{random['accuracy_mean']:.4f} ± {random['accuracy_std'] or 0:.4f}" if random else "-"
        lines.append(f"{f:>8.0%} {top['k']:>5} {top['accuracy_mean']:>7.4f} {rnd:>21} {bottom['accuracy_mean']:>7.4f}  "
                     f"{ordered.get(f, '-')}")
    print("\n".join(lines), file=sys.stderr)


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    raise TypeError(f"not JSON serialisable: {type(value)}")


if __name__ == "__main__":
    sys.exit(main())

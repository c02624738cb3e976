"""Our side of the same-matrix method-speed benchmark against NeuroX.

Start here: ``benchmarks/neurox_methods_ref.py`` times NeuroX's linear probe, probeless
ranking and IoU probe on activation matrices saved as ``.npy``; this script times ours on
the same files, with the same command-line arguments and the same JSON keys, so that
``../shared/bench/ab.py`` can run the two alternately and print ratios::

    NX="$HOME/.cache/neuro-bench/neurox-venv/bin/python"
    ARGS="--train-acts /tmp/ewt_acts/dev_last_X.npy --train-labels /tmp/ewt_acts/dev_y.npy \\
          --test-acts /tmp/ewt_acts/test_last_X.npy --test-labels /tmp/ewt_acts/test_y.npy --threads 2"
    python3 ../shared/bench/ab.py --names neurox ours --reps 3 \\
        --a "$NX benchmarks/neurox_methods_ref.py $ARGS" \\
        --b ".venv/bin/python -m benchmarks.methods_vs_neurox $ARGS" > ab-methods.json

Stages (wall seconds, ``time.perf_counter``, excluding loading the ``.npy`` files):

``train_probe``
    ``LinearProbe(l1, l2, solver=...)`` on all neurons (default: the minibatch solver, 2
    epochs, NeuroX's penalties l1 = l2 = 0); ``evaluate``: its test accuracy
    (``test_accuracy``); ``ordering``: ``LinearProbeRanker.from_probe(probe)`` (NeuroX's
    ``get_neuron_ordering``, search_stride 100).
``probeless``
    ``ProbelessRanker(merge="pairwise_sum")``, the paper's score (NeuroX's ``get_neuron_ordering``).
``iou``
    ``IoURanker``: average precision of every neuron for every tag, one-vs-rest, all tags
    at once (NeuroX: one binary call per tag).
``gaussian``
    Only with ``--stages ...,gaussian``: ``GaussianProbeRanker(max_neurons=50)``.

The last stdout line is one JSON object (``tool: "ours"``).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import numpy as np
import torch

from neuro_pipeline.probe import LinearProbe
from neuro_pipeline.ranking import GaussianProbeRanker, IoURanker, LinearProbeRanker, ProbelessRanker


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train-acts", required=True)
    ap.add_argument("--train-labels", required=True)
    ap.add_argument("--test-acts", required=True)
    ap.add_argument("--test-labels", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--l1", type=float, default=0.0)
    ap.add_argument("--l2", type=float, default=0.0)
    ap.add_argument("--solver", choices=["minibatch", "fista"], default="minibatch")
    ap.add_argument("--epochs", type=int, default=2, help="epochs of the minibatch solver (default 2)")
    ap.add_argument("--tol", type=float, default=1e-3, help="tolerance of the FISTA solver (default 1e-3)")
    ap.add_argument("--stages", default="probe,probeless,iou")
    # Accepted for command-line compatibility with neurox_methods_ref.py; ours ranks every tag at once.
    ap.add_argument("--iou-tags", type=int, default=None)
    ap.add_argument("--unseen-label", default=None)
    return ap.parse_args(argv)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    X = np.load(args.train_acts)
    y = np.load(args.train_labels)
    X_test = np.load(args.test_acts)
    y_test = np.load(args.test_labels)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    res: dict = {"tool": "ours", "ok": True, "stages_s": {}, "n_train": int(X.shape[0]), "n_test": int(X_test.shape[0]),
                 "n_neurons": int(X.shape[1]), "n_labels": int(len(np.unique(y))),
                 "settings": {"threads": args.threads, "l1": args.l1, "l2": args.l2, "solver": args.solver,
                              "epochs": args.epochs, "tol": args.tol, "seed": args.seed},
                 "versions": {"torch": torch.__version__, "numpy": np.__version__}}

    def timed(name, fn):
        start = time.perf_counter()
        out = fn()
        res["stages_s"][name] = time.perf_counter() - start
        print(f"[ours] {name}: {res['stages_s'][name]:.3f} s", file=sys.stderr, flush=True)
        return out

    if "probe" in stages:
        params = (dict(solver="minibatch", max_epochs=args.epochs, random_state=args.seed)
                  if args.solver == "minibatch" else dict(solver="fista", tol=args.tol))
        probe = timed("train_probe", lambda: LinearProbe(l1=args.l1, l2=args.l2, **params).fit(X, y))
        res["test_accuracy"] = timed("evaluate", lambda: probe.score(X_test, y_test))
        ranker = timed("ordering", lambda: LinearProbeRanker.from_probe(probe))
        res["probe"] = {"n_iter": int(probe.n_iter_), "objective": float(probe.objective_),
                        "ordering_top20": ranker.ranking_[:20].tolist()}
    if "probeless" in stages:
        ranker = timed("probeless", lambda: ProbelessRanker(merge="pairwise_sum").fit(X, y))
        res["probeless_top20"] = ranker.ranking_[:20].tolist()
    if "iou" in stages:
        ranker = timed("iou", lambda: IoURanker(threshold=0.05).fit(X, y))
        res["iou_n_tags"] = int(len(ranker.classes_))
    if "gaussian" in stages:
        ranker = timed("gaussian", lambda: GaussianProbeRanker(max_neurons=50).fit(X, y))
        res["gaussian_top10"] = ranker.selected_[:10].tolist()
    res["peak_rss_mb"] = _rss_mb()
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())

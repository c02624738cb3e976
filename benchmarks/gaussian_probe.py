"""Benchmark: greedy Gaussian-probe neuron selection on cached activations.

Start here: given activations and labels of a training and a test split as ``.npy`` files
(for example MiniLM's last layer on UD EWT dev / test), it

1. selects ``--max-neurons`` neurons with :class:`GaussianProbeRanker` on the training split,
   timing it and reading the peak resident memory of the process;
2. fits a :class:`GaussianProbe` on the top ``--top`` selected neurons and scores it on the
   test split (NeuroX's reference on this data: 60.8 % for the top 10);
3. retrains ``LinearProbe(l1=0, l2=1e-3)`` on the same neurons and scores it on the test split.

It prints a table on stderr and, as the last line of stdout, one JSON object::

    .venv/bin/python -m benchmarks.gaussian_probe \\
        --train-acts /tmp/ewt_acts/dev_last_X.npy --train-labels /tmp/ewt_acts/dev_y.npy \\
        --test-acts /tmp/ewt_acts/test_last_X.npy --test-labels /tmp/ewt_acts/test_y.npy
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import sys
import time
from pathlib import Path

import numpy as np

from neuro_pipeline.probe import LinearProbe
from neuro_pipeline.ranking.gaussian import GaussianProbe, GaussianProbeRanker


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train-acts", type=Path, required=True, help=".npy (n_train, n_neurons) activations")
    ap.add_argument("--train-labels", type=Path, required=True, help=".npy (n_train,) labels")
    ap.add_argument("--test-acts", type=Path, required=True)
    ap.add_argument("--test-labels", type=Path, required=True)
    ap.add_argument("--max-neurons", type=int, default=50, help="neurons to select greedily (default 50)")
    ap.add_argument("--top", type=int, default=10, help="selected neurons the probes are evaluated on (default 10)")
    ap.add_argument("--n-jobs", type=int, default=2, help="threads scoring candidates (default 2)")
    ap.add_argument("--verbose", action="store_true", help="log every greedy step")
    return ap.parse_args(argv)


def peak_rss_mb() -> float:
    """Peak resident memory of this process (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv=None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr)
    X = np.load(args.train_acts)  # in memory: the ranker reads every column at every step
    y = np.load(args.train_labels)
    X_test = np.load(args.test_acts, mmap_mode="r")
    y_test = np.load(args.test_labels)
    rss_loaded = peak_rss_mb()

    start = time.perf_counter()
    ranker = GaussianProbeRanker(max_neurons=args.max_neurons, n_jobs=args.n_jobs).fit(X, y)
    select_s = time.perf_counter() - start
    rss_peak = peak_rss_mb()

    top = ranker.selected_[: args.top]
    gauss = GaussianProbe().fit(X, y, neurons=top)
    gauss_acc = gauss.score(X_test, y_test)
    seen = np.isin(y_test, gauss.classes_)  # MI is defined on labels the probe knows
    gauss_mi, gauss_nmi = gauss.mutual_information(X_test[seen], y_test[seen])
    linear = LinearProbe(l1=0.0, l2=1e-3).fit(np.ascontiguousarray(X[:, top]), y)
    linear_acc = linear.score(np.ascontiguousarray(X_test[:, top]), y_test)

    result = {
        "n_tokens": int(X.shape[0]),
        "n_neurons": int(X.shape[1]),
        "n_classes": len(ranker.classes_),
        "max_neurons": int(args.max_neurons),
        "n_jobs": int(args.n_jobs),
        "select_s": round(select_s, 2),
        "peak_rss_mb": round(rss_peak, 1),
        "rss_after_load_mb": round(rss_loaded, 1),
        "x_mb": round(X.nbytes / 2**20, 1),
        "selected": ranker.selected_.tolist(),
        "mi_path_bits": [round(float(v), 5) for v in ranker.mi_path_],
        "top": int(args.top),
        "gaussian_test_accuracy": round(gauss_acc, 4),
        "gaussian_test_mi_bits": round(gauss_mi, 4),
        "gaussian_test_nmi": round(gauss_nmi, 4),
        "linear_test_accuracy": round(linear_acc, 4),
        "neurox_reference_gaussian_top10_accuracy": 0.608,
    }
    rows = [
        ("tokens x neurons x classes", f"{X.shape[0]} x {X.shape[1]} x {len(ranker.classes_)}"),
        (f"select {args.max_neurons} neurons (s)", f"{select_s:.1f}"),
        ("peak RSS / after loading X / X (MiB)", f"{rss_peak:.0f} / {rss_loaded:.0f} / {X.nbytes / 2**20:.0f}"),
        ("MI after 1, 10, last (bits)", ", ".join(f"{ranker.mi_path_[i]:.3f}" for i in (0, min(9, len(top) - 1), -1))),
        (f"GaussianProbe test acc, top {args.top}", f"{gauss_acc:.2%} (NeuroX: 60.8%)"),
        (f"LinearProbe(l1=0, l2=1e-3) test acc, top {args.top}", f"{linear_acc:.2%}"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}", file=sys.stderr)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()

"""Benchmark: every ranking method on the same activations, evaluated the same way.

Start here: for each method (a registered ranker with hyperparameters), this fits it on the
training activations, retrains a probe on its top and bottom 1/5/10/20 % of neurons and
scores it on the test activations (random draws of the same sizes are evaluated once and
shared), then compares the methods' top-n neuron sets (Jaccard) and each method with the
NeuronVote consensus of the others. It prints Markdown tables on stdout, followed by one
JSON line::

    .venv/bin/python -m benchmarks.methods_ewt \\
        --train-acts /tmp/ewt_acts/dev_last_X.npy --train-labels /tmp/ewt_acts/dev_y.npy \\
        --train-groups /tmp/ewt_acts/dev_groups.npy \\
        --test-acts /tmp/ewt_acts/test_last_X.npy --test-labels /tmp/ewt_acts/test_y.npy

The default method list is every registered method with its defaults, the LCA variants,
NeuroX's probeless score, and the univariate methods diversified over the correlation
clusters of the neurons (``"diversify": true`` in the params, as ``diversify: true`` in
``pipeline.yaml``); ``--methods name=method:{json params};...`` replaces it.
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import sys
import time

import numpy as np
import polars as pl
import torch

from neuro_pipeline.analysis import correlation_clusters, diversify_ranking, topn_overlap, vote_agreement
from neuro_pipeline.evaluation import evaluate_selections
from neuro_pipeline.ranking import get_ranker
from neuro_pipeline.report import markdown_table

DEFAULT_METHODS = {
    "lca": ("linear_probe", {}),
    "lca_lasso": ("linear_probe", {"penalty": "lasso"}),
    "lca_ridge": ("linear_probe", {"penalty": "ridge"}),
    "probeless": ("probeless", {}),
    "probeless_pairwise": ("probeless", {"merge": "pairwise_sum"}),
    "iou": ("iou", {}),
    "mean_select": ("mean_select", {}),
    "gaussian": ("gaussian", {"max_neurons": 50}),
    # diversify_ranking over the correlation clusters (pipeline: `diversify: true`)
    "probeless_diverse": ("probeless", {"diversify": True}),
    "iou_diverse": ("iou", {"diversify": True}),
    "mean_select_diverse": ("mean_select", {"diversify": True}),
}


def parse_methods(text: str | None) -> dict[str, tuple[str, dict]]:
    if not text:
        return dict(DEFAULT_METHODS)
    out = {}
    for item in text.split(";"):
        name, _, spec = item.partition("=")
        method, _, params = spec.partition(":")
        out[name.strip()] = (method.strip() or name.strip(), json.loads(params) if params.strip() else {})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train-acts", required=True)
    ap.add_argument("--train-labels", required=True)
    ap.add_argument("--train-groups", help="sentence id per training token (held-out splits by sentence)")
    ap.add_argument("--test-acts", required=True)
    ap.add_argument("--test-labels", required=True)
    ap.add_argument("--methods", help="name=method:{json params};... (default: every method and variant)")
    ap.add_argument("--fractions", default="0.01,0.05,0.10,0.20")
    ap.add_argument("--n-random", type=int, default=3)
    ap.add_argument("--agreement-n", default="10,30,50,70,100")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    torch.set_num_threads(args.threads)
    X = np.load(args.train_acts, mmap_mode="r")
    y = np.load(args.train_labels)
    groups = np.load(args.train_groups) if args.train_groups else None
    X_test = np.load(args.test_acts, mmap_mode="r")
    y_test = np.load(args.test_labels)
    fractions = [float(f) for f in args.fractions.split(",")]
    ns = [int(n) for n in args.agreement_n.split(",")]
    methods = parse_methods(args.methods)

    X_mem = np.ascontiguousarray(X)  # rankers read every column; one copy in memory
    rows, fits, rankings = [], {}, {}
    common = dict(fractions=fractions, n_random=args.n_random, seed=args.seed)
    start = time.perf_counter()
    random_rows = evaluate_selections(X, y, X_test, y_test, np.arange(X.shape[1]), selections=("random",), **common)
    random_seconds = time.perf_counter() - start
    clusters = None
    for name, (method, params) in methods.items():
        params = dict(params)
        diversify = params.pop("diversify", False)
        ranker = get_ranker(method, **params)
        start = time.perf_counter()
        if groups is not None and "groups" in inspect.signature(ranker.fit).parameters:
            ranker.fit(X_mem, y, groups=groups)
        else:
            ranker.fit(X_mem, y)
        if diversify:
            if clusters is None:
                clusters = correlation_clusters(X_mem)
            ranked = diversify_ranking(ranker.ranking_[: ranker.n_ranked_], clusters)
            ranker.ranking_ = np.concatenate([ranked, ranker.ranking_[ranker.n_ranked_:]])
        fits[name] = time.perf_counter() - start
        rankings[name] = ranker.ranking_[: ranker.n_ranked_]
        start = time.perf_counter()
        table = evaluate_selections(X, y, X_test, y_test, ranker.ranking_, selections=("top", "bottom"),
                                    n_ranked=ranker.n_ranked_, **common)
        print(f"[methods_ewt] {name}: fit {fits[name]:.1f} s, evaluation {time.perf_counter() - start:.0f} s",
              file=sys.stderr, flush=True)
        rows.append(table.with_columns(pl.lit(name).alias("method")))
    results = pl.concat(rows)
    random_mean = random_rows.group_by("fraction").agg(pl.col("accuracy").mean().alias("random"),
                                                       pl.col("accuracy").std().alias("random_std"))
    wide = (results.pivot(on="selection", index=["method", "fraction"], values="accuracy")
            .join(random_mean, on="fraction").sort("method", "fraction", maintain_order=True))
    order = {name: i for i, name in enumerate(methods)}
    wide = wide.with_columns(pl.col("method").replace_strict(order).alias("_o")).sort("_o", "fraction").drop("_o")

    def pct(v):
        return "–" if v is None else f"{100 * v:.1f}"

    print("## Retrained-probe test accuracy (%): top / random / bottom\n")
    header = ["method", "fit s", *[f"{100 * f:g}% top/rand/bottom" for f in fractions]]
    body = []
    for name in methods:
        cells = []
        for f in fractions:
            r = wide.filter((pl.col("method") == name) & (pl.col("fraction") == f)).row(0, named=True)
            cells.append(f"{pct(r.get('top'))} / {pct(r['random'])} / {pct(r.get('bottom'))}")
        body.append([name, f"{fits[name]:.1f}", *cells])
    print(markdown_table(header, body))
    pairs = topn_overlap(rankings, ns, allow_partial=True, n_neurons=X.shape[1])
    votes = vote_agreement(rankings, ns, allow_partial=True, n_neurons=X.shape[1])
    print("\n## Agreement: Jaccard of top-n sets with the NeuronVote of the other methods\n")
    print(markdown_table(["method", *[f"n={n}" for n in ns], "AvgOverlap n=100"],
                         [[m, *[f"{votes.filter((pl.col('method') == m) & (pl.col('n') == n))['vote_jaccard'][0]:.2f}"
                                for n in ns],
                           f"{votes.filter((pl.col('method') == m) & (pl.col('n') == ns[-1]))['avg_overlap_jaccard'][0]:.2f}"]
                          for m in methods]))
    print("\n## Pairwise Jaccard of the top-100 sets\n")
    names = list(methods)
    grid = {(a, b): j for a, b, j in pairs.filter(pl.col("n") == ns[-1]).select("method_a", "method_b", "jaccard").iter_rows()}
    print(markdown_table(["", *names], [[a, *[("1.00" if a == b else f"{grid.get((a, b), grid.get((b, a))):.2f}")
                                              for b in names]] for a in names]))
    print(json.dumps({"fit_s": fits, "random_eval_s": random_seconds, "selections": wide.to_dicts(),
                      "agreement_vote": votes.to_dicts()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

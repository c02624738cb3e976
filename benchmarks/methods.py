"""Ranking methods against NeuroX: how fast are our methods on the same activation matrix,
and how good are their rankings?

``--compare speed`` (default): NeuroX's methods and ours on the same ``.npy`` matrices,
alternately in one sitting (NeuroX, ours, …), each a fresh process; the loading of the
matrices is not timed. NeuroX's side is ``benchmarks/neurox_methods_ref.py`` in NeuroX
1.0.9's venv, ours ``python -m benchmarks.methods --side ours``. Stages (``--stages``):

``probe``
    NeuroX: ``train_logistic_regression_probe`` (10 epochs of Adam, batch 32, no
    shuffling, its default λ = 0), ``evaluate_probe``, ``get_neuron_ordering``. Ours:
    ``LinearProbe`` with the same penalties and our minibatch solver (``--epochs`` 2, or
    ``--solver fista``), its score, ``LinearProbeRanker.from_probe`` (the same ordering
    rule). Quality: test accuracy of each probe.
``probeless``
    NeuroX: ``probeless.get_neuron_ordering`` (1.0.9 has it). Ours: ``ProbelessRanker(merge=
    "pairwise_sum")``, the paper's score. Quality: overlap of the two top-20 sets.
``iou``
    NeuroX 1.0.9 has NO IoU probe: its side runs a RE-IMPLEMENTATION of NeuroX master's
    ``iou_probe.get_neuron_ordering`` (per-neuron ``average_precision_score`` in a Python
    loop), called once per tag, one-vs-rest, since it takes a binary ``y`` only. Ours:
    ``IoURanker`` (every tag at once). Quality: mean overlap of the per-tag top-20 sets.
``gaussian``
    Ours only (``--stages ...,gaussian``): ``GaussianProbeRanker(max_neurons=50)``. NeuroX
    1.0.9 has no Gaussian probe; master's calls ``torch.eig``, which current torch has
    removed, so it is not run here. Quality: a ``GaussianProbe`` and a ``LinearProbe(l1=0,
    l2=1e-3)`` on the top 10 neurons, scored on the test matrix, next to the 60.8% that
    NeuroX master reached on EWT's last layer in an earlier run with a ``torch.eig`` shim
    (a constant, not re-measured).

``--compare quality``: every method (registered rankers with their defaults, the LCA
variants, the paper's probeless score, the univariate methods diversified over correlation
clusters; ``--methods name=method:{json params};...`` replaces the list) is fitted on the
training matrix; a probe retrained on its top and bottom 1/5/10/20% of neurons is scored
on the test matrix, against random draws of the same sizes; the methods' top-n sets are
compared (Jaccard, and each against the NeuronVote of the others). Our side only; NeuroX's
numbers quoted in docs/methods.md come from NeuroX's own methods on the same matrices.

The matrices: ``--train-acts/--train-labels/--test-acts/--test-labels`` (``.npy``, e.g. from
``benchmarks.export_split``), or, when not given, built here by the pipeline's stages from
EWT dev (train) and test (``--max-sentences``) into ``--matrices`` (reused when present).

Reproduce the docs' numbers (docs/performance.md, "Ranking methods against NeuroX";
docs/methods.md, the method table)::

    .venv/bin/python -m benchmarks.methods --compare speed --rounds 3 --threads 2 --stages probe,probeless,iou
    .venv/bin/python -m benchmarks.methods --compare speed --rounds 1 --stages gaussian
    .venv/bin/python -m benchmarks.methods --compare quality --rounds 1

(``--matrices /tmp/ewt_acts`` keeps the extracted EWT matrices for the next command.)
``--quick``: 100 sentences of each split, one round, NeuroX's IoU on 2 tags (extrapolated), a
5-neuron Gaussian probe.
"""

from __future__ import annotations

import inspect
import json
import logging
import sys
import time
from pathlib import Path
from types import SimpleNamespace

from benchmarks import harness

QUESTION = ("How fast are our ranking methods against NeuroX's on the same activation matrix, and how good are "
            "the rankings (retrained-probe accuracy, agreement with NeuroX's orderings)?")
NEUROX_GAUSSIAN_TOP10_ACCURACY = 0.608  # NeuroX master + torch.eig shim, EWT last layer, earlier run
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
NEUROX_STAGES = ("probe", "probeless", "iou")


def parse_args(argv=None):
    ap = harness.parser(__doc__, rounds=3, neurox=True)
    ap.add_argument("--compare", choices=["speed", "quality"], default="speed")
    ap.add_argument("--train-acts", type=Path)
    ap.add_argument("--train-labels", type=Path)
    ap.add_argument("--train-groups", type=Path, help="sentence id per training word (held-out splits by sentence)")
    ap.add_argument("--test-acts", type=Path)
    ap.add_argument("--test-labels", type=Path)
    ap.add_argument("--matrices", type=Path, default=None,
                    help="without --train-acts: build the EWT matrices in this folder (reused when present)")
    ap.add_argument("--max-sentences", type=int, default=0, help="building the matrices: first N sentences (0: all)")
    ap.add_argument("--aggregation", default="last", choices=["first", "last", "average"])
    ap.add_argument("--seed", type=int, default=0)
    # speed
    ap.add_argument("--stages", default="probe,probeless,iou", help="speed: probe, probeless, iou, gaussian")
    ap.add_argument("--l1", type=float, default=0.0)
    ap.add_argument("--l2", type=float, default=0.0)
    ap.add_argument("--solver", choices=["minibatch", "fista"], default="minibatch")
    ap.add_argument("--epochs", type=int, default=2, help="epochs of our minibatch solver (default 2; NeuroX: 10)")
    ap.add_argument("--tol", type=float, default=1e-3, help="tolerance of our FISTA solver (default 1e-3)")
    ap.add_argument("--iou-tags", type=int, default=0,
                    help="NeuroX: time only the first N tags and extrapolate (0: all); ours always ranks all")
    ap.add_argument("--gaussian-neurons", type=int, default=50, help="neurons the Gaussian probe selects")
    # quality
    ap.add_argument("--methods", help="quality: name=method:{json params};... (default: every method and variant)")
    ap.add_argument("--fractions", default="0.01,0.05,0.10,0.20")
    ap.add_argument("--n-random", type=int, default=3)
    ap.add_argument("--agreement-n", default="10,30,50,70,100")
    args = harness.parse(ap, argv, quick={"max_sentences": 100, "gaussian_neurons": 5, "agreement_n": "5,10",
                                                "iou_tags": 2})
    given = [args.train_acts, args.train_labels, args.test_acts, args.test_labels]
    if any(given) and not all(given):
        ap.error("give all of --train-acts, --train-labels, --test-acts, --test-labels, or none")
    return args


# ----------------------------------------------------------------------------- the matrices
def build_matrices(args, folder: Path) -> SimpleNamespace:
    """EWT dev (train) and test through the pipeline's corpus and extraction stages, exported
    as ``benchmarks.export_split`` does; reused when the files are there."""
    agg = "mean" if args.aggregation == "average" else args.aggregation
    files = SimpleNamespace(train_acts=folder / f"dev_{agg}_X.npy", train_labels=folder / "dev_y.npy",
                            train_groups=folder / "dev_groups.npy", test_acts=folder / f"test_{agg}_X.npy",
                            test_labels=folder / "test_y.npy")
    if all(p.is_file() for p in vars(files).values()):
        harness.say(f"reusing the matrices in {folder}")
        return files
    from benchmarks.export_split import export
    from neuro_pipeline.config import config_from_dict
    from neuro_pipeline.stages import materialize_activations, materialize_corpus
    from neuro_pipeline.store import Store

    n = args.max_sentences
    train = harness.first_sentences(harness.ewt_file(args, "dev"), n, folder / "dev.conllu")
    test = harness.first_sentences(harness.ewt_file(args, "test"), n, folder / "test.conllu")
    cfg = config_from_dict({"name": "methods-bench", "store": str(folder / "store.duckdb"),
                            "reports": str(folder / "reports"),
                            "model": {"path": str(harness.model_dir(args)), "threads": args.threads},
                            "corpus": {"format": "conllu", "train": str(train), "test": str(test),
                                       "label_column": "upos"},
                            "extraction": {"aggregation": agg}}, source="benchmarks.methods", base_dir=str(folder))
    harness.say(f"extracting the matrices into {folder} ...")
    store = Store(cfg.store_path)
    materialize_corpus(cfg, store)
    materialize_activations(cfg, store)
    export(cfg, "train", folder / "dev")
    export(cfg, "test", folder / "test")
    return files


# ----------------------------------------------------------------------------- speed: our side
def ours_side(args) -> dict:
    import numpy as np
    import torch

    from neuro_pipeline.probe import LinearProbe
    from neuro_pipeline.ranking import (
        GaussianProbeRanker,
        IoURanker,
        LinearProbeRanker,
        ProbelessRanker,
    )
    from neuro_pipeline.ranking.gaussian import GaussianProbe

    torch.set_num_threads(args.threads)
    X, y = np.load(args.train_acts), np.load(args.train_labels)
    X_test, y_test = np.load(args.test_acts), np.load(args.test_labels)
    stages = harness.csv(args.stages)
    res: dict = {"tool": "ours", "ok": True, "stages_s": {}, "n_train": int(X.shape[0]), "n_test": int(X_test.shape[0]),
                 "n_neurons": int(X.shape[1]), "n_labels": len(np.unique(y))}

    def timed(name, fn):
        start = time.perf_counter()
        out = fn()
        res["stages_s"][name] = time.perf_counter() - start
        print(f"[ours] {name}: {res['stages_s'][name]:.3f} s", file=sys.stderr, flush=True)
        return out

    if "probe" in stages:
        params = ({"solver": "minibatch", "max_epochs": args.epochs, "random_state": args.seed}
                  if args.solver == "minibatch" else {"solver": "fista", "tol": args.tol})
        probe = timed("train_probe", lambda: LinearProbe(l1=args.l1, l2=args.l2, **params).fit(X, y))
        res["test_accuracy"] = timed("evaluate", lambda: probe.score(X_test, y_test))
        ranker = timed("ordering", lambda: LinearProbeRanker.from_probe(probe))
        res["probe_ordering"] = {"top20": ranker.ranking_[:20].tolist()}
    if "probeless" in stages:
        ranker = timed("probeless", lambda: ProbelessRanker(merge="pairwise_sum").fit(X, y))
        res["probeless_ordering"] = {"top20": ranker.ranking_[:20].tolist()}
    if "iou" in stages:
        ranker = timed("iou", lambda: IoURanker(threshold=0.05).fit(X, y))
        res["iou"] = {"n_tags": len(ranker.classes_),
                      "top20_per_tag": {str(c): r[:20].tolist() for c, r in ranker.class_rankings_.items()}}
    if "gaussian" in stages:
        ranker = timed("gaussian", lambda: GaussianProbeRanker(max_neurons=args.gaussian_neurons,
                                                               n_jobs=args.threads).fit(X, y))
        top = ranker.selected_[:10]
        gauss = GaussianProbe().fit(X, y, neurons=top)
        linear = LinearProbe(l1=0.0, l2=1e-3).fit(np.ascontiguousarray(X[:, top]), y)
        res["gaussian"] = {"selected": ranker.selected_.tolist(), "top": len(top),
                           "gaussian_top_test_accuracy": gauss.score(X_test, y_test),
                           "linear_top_test_accuracy": linear.score(np.ascontiguousarray(X_test[:, top]), y_test),
                           "mi_path_bits": [float(v) for v in ranker.mi_path_]}
    import resource

    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return res


def jaccard(a, b) -> float:
    a, b = set(a), set(b)
    return len(a & b) / len(a | b) if a | b else 1.0


def speed(args, files, nx) -> int:
    stages = harness.csv(args.stages)
    matrices = ["--train-acts", files.train_acts, "--train-labels", files.train_labels,
                "--test-acts", files.test_acts, "--test-labels", files.test_labels]
    shared = [*matrices, "--threads", args.threads, "--seed", args.seed, "--l1", args.l1, "--l2", args.l2]
    sides = [harness.ours_side("methods", *shared, "--stages", ",".join(stages), "--solver", args.solver,
                               "--epochs", args.epochs, "--tol", args.tol,
                               "--gaussian-neurons", args.gaussian_neurons)]
    nx_stages = [s for s in stages if s in NEUROX_STAGES]
    if nx is not None and nx_stages:
        sides.insert(0, harness.neurox_side(nx, harness.BENCHMARKS / "neurox_methods_ref.py", *shared,
                                            "--stages", ",".join(nx_stages),
                                            *(["--iou-tags", args.iou_tags] if args.iou_tags else [])))
    reference = "neurox" if len(sides) == 2 else None
    ab, runs = harness.alternate(sides, args.rounds, reference=reference)
    # IoU over every tag: NeuroX's time is extrapolated from --iou-tags tags when given.
    for side in ab.sides:
        for r in ab.rounds[side]:
            if "stages_s.iou" in r:
                r["iou_all_tags_s"] = r.get("iou_all_tags_s_estimated", r["stages_s.iou"])
    rows = [(f"{s} s", f"stages_s.{s}") for s in ("train_probe", "evaluate", "ordering", "probeless", "gaussian")
            if any(f"stages_s.{s}" in r for side in ab.sides for r in ab.rounds[side])]
    if "iou" in stages:
        rows.insert(-1 if "gaussian" in stages else len(rows),
                    (f"iou s, all tags{f' (NeuroX: {args.iou_tags} tags, extrapolated)' if args.iou_tags else ''}",
                     "iou_all_tags_s"))
    rows += [("peak RSS MB", "peak_rss_mb"), ("other processes, cores", "other_busy_cores", False),
             ("probe test accuracy", "test_accuracy", False)]
    first = sides[0].name
    harness.ab_table(ab, rows, title=f"Methods on the same matrix: {ab.median(first, 'n_train'):.0f} train × "
                                     f"{ab.median(first, 'n_neurons'):.0f} neurons, {args.threads} threads, "
                                     f"{args.rounds} round(s)")
    ours = runs["ours"][0].result
    quality: dict = {"ours": {"probe_test_accuracy": ab.median("ours", "test_accuracy")}}
    if reference:
        theirs = runs["neurox"][0].result
        quality["neurox"] = {"probe_test_accuracy": ab.median("neurox", "test_accuracy")}
        if "probeless" in nx_stages:
            quality["probeless_top20_jaccard_with_neurox"] = jaccard(ours["probeless_ordering"]["top20"],
                                                                     theirs["probeless_ordering"]["top20"])
        if "iou" in nx_stages:
            tags = theirs["iou"]["top20_per_tag"]
            quality["iou_top20_jaccard_with_neurox_mean_over_tags"] = harness.median(
                [jaccard(ours["iou"]["top20_per_tag"].get(t, []), top) for t, top in tags.items()]) if tags else None
    if "gaussian" in stages:
        quality["gaussian"] = {k: v for k, v in ours["gaussian"].items() if k != "mi_path_bits"}
        quality["gaussian"]["neurox_master_top10_accuracy_earlier_run"] = NEUROX_GAUSSIAN_TOP10_ACCURACY
    harness.quality_table(quality)
    notes = [] if reference or not nx_stages else ["NeuroX's venv was not found: our side only, no ratio"]
    harness.report(args, "methods", QUESTION, ab=ab, quality=quality, notes=notes)
    return 0


# ----------------------------------------------------------------------------- quality
def parse_methods(text: str | None) -> dict[str, tuple[str, dict]]:
    if not text:
        return dict(DEFAULT_METHODS)
    out = {}
    for item in text.split(";"):
        name, _, spec = item.partition("=")
        method, _, params = spec.partition(":")
        out[name.strip()] = (method.strip() or name.strip(), json.loads(params) if params.strip() else {})
    return out


def quality(args, files) -> int:
    import numpy as np
    import polars as pl
    import torch

    from neuro_pipeline.analysis import (
        correlation_clusters,
        diversify_ranking,
        topn_overlap,
        vote_agreement,
    )
    from neuro_pipeline.evaluation import evaluate_selections
    from neuro_pipeline.ranking import get_ranker
    from neuro_pipeline.report import markdown_table

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    torch.set_num_threads(args.threads)
    X = np.load(files.train_acts, mmap_mode="r")
    y = np.load(files.train_labels)
    groups = np.load(files.train_groups) if files.train_groups else None
    X_test = np.load(files.test_acts, mmap_mode="r")
    y_test = np.load(files.test_labels)
    fractions = harness.csv(args.fractions, float)
    ns = harness.csv(args.agreement_n, int)
    methods = parse_methods(args.methods)
    if args.quick and not args.methods:
        methods["gaussian"] = ("gaussian", {"max_neurons": args.gaussian_neurons})

    X_mem = np.ascontiguousarray(X)  # rankers read every column; one copy in memory
    rows, fits, rankings = [], {}, {}
    common = {"fractions": fractions, "n_random": args.n_random, "seed": args.seed}
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
        harness.say(f"{name}: fit {fits[name]:.1f} s, evaluation {time.perf_counter() - start:.0f} s")
        rows.append(table.with_columns(pl.lit(name).alias("method")))
    results = pl.concat(rows)
    random_mean = random_rows.group_by("fraction").agg(pl.col("accuracy").mean().alias("random"),
                                                       pl.col("accuracy").std().alias("random_std"))
    wide = (results.pivot(on="selection", index=["method", "fraction"], values="accuracy")
            .join(random_mean, on="fraction"))
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
    print(markdown_table(["method", *[f"n={n}" for n in ns], f"AvgOverlap n={ns[-1]}"],
                         [[m, *[f"{votes.filter((pl.col('method') == m) & (pl.col('n') == n))['vote_jaccard'][0]:.2f}"
                                for n in ns],
                           f"{votes.filter((pl.col('method') == m) & (pl.col('n') == ns[-1]))['avg_overlap_jaccard'][0]:.2f}"]
                          for m in methods]))
    print(f"\n## Pairwise Jaccard of the top-{ns[-1]} sets\n")
    names = list(methods)
    grid = {(a, b): j for a, b, j in pairs.filter(pl.col("n") == ns[-1]).select("method_a", "method_b", "jaccard").iter_rows()}
    print(markdown_table(["", *names], [[a, *[("1.00" if a == b else f"{grid.get((a, b), grid.get((b, a))):.2f}")
                                              for b in names]] for a in names]) + "\n")
    harness.report(args, "methods", QUESTION, quality={"selections": wide.to_dicts(), "agreement_vote": votes.to_dicts()},
                   results={"fit_s": fits, "random_eval_s": random_seconds,
                            "n_train": int(X.shape[0]), "n_test": int(X_test.shape[0]), "n_neurons": int(X.shape[1])})
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.side == "ours":
        harness.side_result(ours_side(args))
        return 0
    cleanup = None
    if args.train_acts:
        files = SimpleNamespace(train_acts=args.train_acts, train_labels=args.train_labels,
                                train_groups=args.train_groups, test_acts=args.test_acts, test_labels=args.test_labels)
    else:
        folder, cleanup = (args.matrices, None) if args.matrices else harness.workdir("methods")
        folder.mkdir(parents=True, exist_ok=True)
        files = build_matrices(args, folder)
    try:
        if args.compare == "quality":
            return quality(args, files)
        nx = harness.neurox_python(args) if any(s in NEUROX_STAGES for s in harness.csv(args.stages)) else None
        return speed(args, files, nx)
    finally:
        if cleanup:
            cleanup()


if __name__ == "__main__":
    sys.exit(main())

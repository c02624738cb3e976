"""Interventions: do the model's own masked-word predictions need the neurons each method
ranks for a class, more than random neurons?

On the embedded default model (all-MiniLM-L6-v2, a ``BertModel`` without a masked-LM head)
and UD EWT, this

1. extracts word activations of all 7 hidden states (2688 neurons) for the first
   ``--n-rank-sentences`` sentences of the ranking corpus (EWT dev) and ranks neurons for
   UPOS with each method (one multi-class fit per method; a class's neurons are the
   method's per-class ranking ``class_rankings_[c]``);
2. uses the checkpoint's masked-LM head or, as for MiniLM, trains a small BERT-style head
   on the frozen encoder over the ranking corpus (``--head-sentences``, default all),
   stored under ``--head-dir`` with its training settings and reused when the model version
   and settings match;
3. for each class, masks up to 2 words of the class and 2 other words per sentence in the
   first ``--n-eval-sentences`` sentences of EWT test with at most ``--max-eval-words``
   words, and scores the head's predictions (accuracy@1; accuracy@10, the true word among
   the head's 10 best guesses; log-likelihood) with no intervention (the reference), with
   the method's top-k neurons of that class mean-ablated, and with ``--n-random`` random
   sets of k neurons with the same per-layer counts (disjoint from the top-k) mean-ablated.

A quality question: nothing is timed against another tool (the seconds of each step are
printed for information). NeuroX has no intervention of this kind. It prints the command
and settings, the head's training record, one Markdown table per metric (masked-word
accuracy@1 and @10, mean word log-likelihood) and the JSON result; ``--parquet`` writes the
per-draw effects and the summary as Parquet files.

Reproduce the docs' numbers (docs/methods.md, "Interventions": 150 test sentences, k = 50,
10 draws)::

    .venv/bin/python -m benchmarks.interventions --threads 2

``--quick``: 60 ranking sentences (also the head's), 10 test sentences, DET only, two
methods, k = 5, 2 draws, a one-round head kept apart from the full one.
"""

from __future__ import annotations

import json
import logging
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

from benchmarks import harness
from neuro_pipeline.corpus.conllu import read_conllu
from neuro_pipeline.extraction import extract_activations, load_model
from neuro_pipeline.intervention.mlm import (
    checkpoint_mlm_head,
    concept_masks,
    load_mlm_head,
    masked_word_predictions,
    neuron_ablation_effects,
    save_mlm_head,
    summarize_ablation_effects,
    train_mlm_head,
)
from neuro_pipeline.ranking import get_ranker
from neuro_pipeline.report import markdown_table

QUESTION = ("Do the model's own masked-word predictions need the neurons each method ranks for a class, more than "
            "random neurons?")
DEFAULT_METHODS = "linear_probe,probeless,iou,mean_select,attribution"
# linear_probe with fixed penalties (its default grid search would triple the fit time);
# the other methods run with their defaults.
METHOD_PARAMS = {"linear_probe": {"l1": 1e-3, "l2": 1e-4}}


def parse_args(argv=None):
    ap = harness.parser(__doc__, rounds=1)
    ap.add_argument("--rank-conllu", type=Path, default=None,
                    help="corpus for ranking and for training the head (default: EWT dev)")
    ap.add_argument("--eval-conllu", type=Path, default=None, help="evaluation corpus (default: EWT test)")
    ap.add_argument("--n-rank-sentences", type=int, default=800)
    ap.add_argument("--n-eval-sentences", type=int, default=150)
    ap.add_argument("--max-eval-words", type=int, default=40, help="evaluate sentences of at most this many words")
    ap.add_argument("--classes", default="NOUN,VERB,ADJ,ADP,DET")
    ap.add_argument("--methods", default=DEFAULT_METHODS)
    ap.add_argument("--k", type=int, default=50, help="neurons ablated per method and class")
    ap.add_argument("--n-random", type=int, default=10)
    ap.add_argument("--top-k", default="1,10",
                    help="accuracy counts a word correct when the head ranks it within top k (comma list)")
    ap.add_argument("--mode", default="mean", choices=["mean", "zero"])
    ap.add_argument("--head-dir", type=Path, default=Path("/tmp/neuro_interventions/mlm_head"))
    ap.add_argument("--head-sentences", type=int, default=0, help="sentences the head trains on (0: all)")
    ap.add_argument("--head-epochs", type=int, default=4)
    ap.add_argument("--head-rounds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--parquet", type=Path, help="directory for effects.parquet and summary.parquet")
    args = harness.parse(ap, argv, quick={
        "n_rank_sentences": 60, "n_eval_sentences": 10, "classes": "DET", "methods": "probeless,mean_select",
        "k": 5, "n_random": 2, "head_sentences": 60, "head_epochs": 1, "head_rounds": 1,
        "head_dir": Path("/tmp/neuro_interventions/mlm_head_quick")})
    args.rank_conllu = (args.rank_conllu or harness.ewt_file(args, "dev")).resolve()
    args.eval_conllu = (args.eval_conllu or harness.ewt_file(args, "test")).resolve()
    return args


def get_head(loaded, sentences, args):
    """The checkpoint's head, else a stored head with the same settings, else a new one."""
    head = checkpoint_mlm_head(loaded)
    if head is not None:
        return head
    settings = {"n_rounds": args.head_rounds, "n_epochs": args.head_epochs, "seed": args.seed,
                "n_sentences_total": len(sentences), "corpus": str(args.rank_conllu)}
    try:
        head = load_mlm_head(loaded, args.head_dir)
        if head.training_record.get("benchmark_settings") == settings:
            return head
    except (FileNotFoundError, ValueError):
        pass
    head = train_mlm_head(loaded, sentences, n_rounds=args.head_rounds, n_epochs=args.head_epochs, seed=args.seed)
    head.training_record["benchmark_settings"] = settings
    save_mlm_head(head, args.head_dir)
    return head


def extract_matrix(loaded, sentences) -> np.ndarray:
    """(n_words, n_layers * hidden_size) float32, words in corpus order."""
    arrays = dict(extract_activations(loaded, sentences, aggregation="last"))
    return np.concatenate([arrays[i].reshape(len(sentences[i]), -1) for i in range(len(sentences))])


def fmt(value, digits=3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    top_ks = [int(k) for k in args.top_k.split(",")]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    model_dir = harness.model_dir(args)
    print("# Interventions: top-k vs random-k neuron ablation, masked-word prediction\n")
    print("command: .venv/bin/python -m benchmarks.interventions " + shlex.join(sys.argv[1:] if argv is None else argv))
    print(f"settings: model={'embedded all-MiniLM-L6-v2' if args.model == 'embedded' else model_dir.name}, "
          f"rank corpus={args.rank_conllu.name}[:{args.n_rank_sentences}], eval corpus={args.eval_conllu.name}"
          f"[:{args.n_eval_sentences}] (sentences of <= {args.max_eval_words} words), classes={classes}, methods={methods} {METHOD_PARAMS}, k={args.k}, "
          f"n_random={args.n_random}, accuracy@{top_ks}, ablation={args.mode} (mean = the neuron's mean over ranking words), "
          f"masks per sentence = 2 in-class + 2 other words, threads={args.threads}, seed={args.seed}\n")

    loaded = load_model(model_dir)
    rank_corpus = read_conllu(args.rank_conllu)
    eval_corpus = [s for s in read_conllu(args.eval_conllu)
                   if len(s.tokens) <= args.max_eval_words][: args.n_eval_sentences]
    all_rank_words = [list(s.tokens) for s in rank_corpus][: args.head_sentences or None]
    rank_words = all_rank_words[: args.n_rank_sentences]
    y = np.array([label for s in rank_corpus[: args.n_rank_sentences] for label in s.labels])
    eval_words = [list(s.tokens) for s in eval_corpus]
    eval_labels = [list(s.labels) for s in eval_corpus]

    t = time.perf_counter()
    head = get_head(loaded, all_rank_words, args)
    head_seconds = time.perf_counter() - t
    record = {k: v for k, v in head.training_record.items() if k != "model_dir"}
    print(f"## Masked-LM head ({record.get('source')}, {head_seconds:.0f} s here)\n")
    print("```\n" + json.dumps(record, indent=None, sort_keys=True) + "\n```\n")

    t = time.perf_counter()
    X = extract_matrix(loaded, rank_words)
    means = X.mean(axis=0)
    extract_seconds = time.perf_counter() - t
    rankers, fit_seconds = {}, {}
    for method in methods:
        t = time.perf_counter()
        rankers[method] = get_ranker(method, **METHOD_PARAMS.get(method, {})).fit(X, y)
        fit_seconds[method] = round(time.perf_counter() - t, 1)
    print(f"ranking activations: {X.shape} ({extract_seconds:.0f} s); fits (s): {fit_seconds}\n", flush=True)

    effects = []
    t = time.perf_counter()
    for concept in classes:
        plan = concept_masks(eval_labels, concept, n_concept=2, n_outside=2, seed=args.seed)
        baseline = masked_word_predictions(loaded, head, eval_words, plan, labels=eval_labels)
        for method in methods:
            neurons = rankers[method].class_rankings_[concept][: args.k]
            frame = neuron_ablation_effects(
                loaded, head, eval_words, eval_labels, plan, neurons, concept=concept,
                n_random=args.n_random, mode=args.mode, means=means, top_k=top_ks, seed=args.seed,
                baseline=baseline,
            )
            layers = np.bincount(np.asarray(neurons) // loaded.hidden_size, minlength=loaded.n_layers)
            effects.append(frame.with_columns(pl.lit(method).alias("method"),
                                              pl.lit(",".join(map(str, layers))).alias("layer_counts")))
        print(f"[interventions] {concept}: done at {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    eval_seconds = time.perf_counter() - t
    effects = pl.concat(effects)
    summary = pl.concat([
        summarize_ablation_effects(part.drop("method", "layer_counts")).with_columns(
            pl.lit(method).alias("method"), pl.lit(counts).alias("layer_counts"))
        for (method, counts, _), part in effects.group_by(["method", "layer_counts", "concept"], maintain_order=True)
    ])

    tables = [("accuracy", k, f"Masked-word accuracy@{k} (%)", 100, 1) for k in top_ks]
    tables.append(("log_likelihood", top_ks[0], "Mean word log-likelihood (nats)", 1, 2))
    for metric, top_k, title, scale, digits in tables:
        print(f"## {title}: baseline, top-{args.k} ablated, random-{args.k} ablated "
              f"(mean [95% CI over {args.n_random} draws]), share of random draws <= top\n")
        rows = []
        for r in summary.filter((pl.col("metric") == metric) & (pl.col("top_k") == top_k)).sort(
                pl.col("concept").replace_strict({c: i for i, c in enumerate(classes)}),
                pl.col("method").replace_strict({m: i for i, m in enumerate(methods)}),
                "group").iter_rows(named=True):
            rows.append([r["concept"], r["method"], r["layer_counts"], r["group"], r["n_words"],
                         fmt(scale * r["baseline"], digits), fmt(scale * r["top"], digits),
                         (f"{fmt(scale * r['random_mean'], digits)} [{fmt(scale * r['random_low'], digits)}, "
                          f"{fmt(scale * r['random_high'], digits)}]"),
                         fmt(scale * r["top_drop"], digits), fmt(scale * r["random_drop"], digits),
                         fmt(r["random_share_below_top"], 2)])
        print(markdown_table(["class", "method", "top-k per layer", "words", "n", "baseline", "top-k",
                              "random-k", "top drop", "random drop", "rand<=top"], rows))
        print()
    if args.parquet:
        args.parquet.mkdir(parents=True, exist_ok=True)
        effects.write_parquet(args.parquet / "effects.parquet")
        summary.write_parquet(args.parquet / "summary.parquet")
    total = time.perf_counter() - started
    harness.report(args, "interventions", QUESTION,
                   quality={"head": record,
                            "summary": summary.filter((pl.col("metric") == "accuracy")
                                                      | (pl.col("top_k") == top_ks[0])).to_dicts()},
                   results={"seconds": {"total": round(total, 1), "head": round(head_seconds, 1),
                                        "extract": round(extract_seconds, 1), "fits": fit_seconds,
                                        "interventions": round(eval_seconds, 1)}})
    return 0


if __name__ == "__main__":
    sys.exit(main())

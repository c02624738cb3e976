"""Extraction: how close is the extraction stage to a bare forward pass, how much faster is
it than NeuroX's extractor, and are its values NeuroX's?

``--against bare`` (default), in this one process: the extraction stage
(``neuro_pipeline.stages.materialize_activations``: tokenisation, length-sorted batches,
every layer's hidden states, subword→word aggregation, the write of every layer to the
store: Parquet by default, ``--storage duckdb`` for rows in the DuckDB file) is timed
against the least work any tool must do to get the same states: the forward pass with
``output_hidden_states=True``, nothing kept. The sides alternate every round (bare,
bare over the stage's batches, ours); medians, min–max and the ratio ours / bare.

* ``bare``: the issue's reference, ``--batch-size`` sentences a pass, uncapped;
* ``bare_same``: the same batches as the stage forms them (``--batch-size`` and the cap
  ``--batch-tokens``, by default the stage's own ``auto``), so that ours / bare_same is
  the stage's overhead alone, with the batching's gain taken out.

The stage's model load (hashing the files, importing the model code, loading weights) is
not counted; it is reported apart as ``load_s``. The bare passes get pre-tokenised batches,
so their time excludes tokenisation, which ours pays. Quality next to time: the words the
stage stored against the words of the corpus. ``--writers inline,thread`` times both ways
of writing each round (``neuro_pipeline.stages.activations.writes_inline`` picks one).

``--against neurox``: NeuroX 1.0.9's extractor (``../shared/bench/neurox_ref.py`` in its
venv: one sentence a pass, the model loaded inside the call; its ``extract_train`` stage)
alternates with our stage in a fresh process per round (``--side ours``), one side per
``--dtype``. NeuroX also extracts a one-sentence test file and then loads, probes and
orders (untimed here: only ``extract_train`` is compared); our time excludes the model load
as above (NeuroX's load inside its call is about 0.1 s; its imports are apart too). NeuroX
computes in fp32 only. Quality next to time: after the rounds, every value of our stored
activations is compared with NeuroX's HDF5 of the same sentences (max |difference|, per
layer; this is the equality check that used to be ``benchmarks/neurox_equality.py``).

Reproduce the docs' numbers (docs/performance.md, "End to end and per stage")::

    .venv/bin/python -m benchmarks.extraction --rounds 3 --threads 2                      # fp32 vs bare
    .venv/bin/python -m benchmarks.extraction --rounds 3 --threads 2 --dtype bfloat16     # bf16 vs bare
    .venv/bin/python -m benchmarks.extraction --against neurox --dtype float32,bfloat16 --rounds 3
    .venv/bin/python -m benchmarks.extraction --against neurox --max-sentences 300 --rounds 1   # equality

The corpus is EWT dev (``--corpus`` for another CoNLL-U file). ``--quick``: 30 sentences,
one round.
"""

from __future__ import annotations

import itertools
import shutil
import sys
import time
from pathlib import Path
from types import SimpleNamespace

from benchmarks import harness

QUESTION = ("How close is the extraction stage to a bare forward pass (fp32, bf16), how much faster than NeuroX's "
            "extractor, and are its values NeuroX's?")


def parse_args(argv=None):
    ap = harness.parser(__doc__, rounds=3, neurox=True)
    ap.add_argument("--against", choices=["bare", "neurox"], default="bare")
    ap.add_argument("--corpus", type=Path, default=None, help="a CoNLL-U file (default: EWT dev)")
    ap.add_argument("--max-sentences", type=int, default=0, help="only its first N sentences (0: all)")
    ap.add_argument("--dtype", default="float32", help="compute precision(s), comma list: float32, bfloat16")
    ap.add_argument("--storage-dtype", default="same",
                    help="extraction.storage_dtype: float32, float16, bfloat16, or same (= the compute dtype)")
    ap.add_argument("--storage", default="parquet", choices=["duckdb", "parquet"])
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--batch-tokens", default="auto",
                    help="the stage's model.batch_tokens: auto (its default), a number, or none")
    ap.add_argument("--aggregation", default="last", choices=["first", "last", "average"])
    ap.add_argument("--writers", default="auto",
                    help="--against bare: comma list of how the stage writes, each timed every round: auto (the "
                         "stage's own choice), inline (between batches) or thread (beside the model)")
    ap.add_argument("--atol", type=float, default=1e-5, help="--against neurox: the fp32 equality tolerance")
    ap.add_argument("--keep", type=Path, default=None, help="our side: the folder of its store")
    args = harness.parse(ap, argv, quick={"max_sentences": 30})
    args.corpus = (args.corpus or harness.ewt_file(args, "dev")).resolve()
    return args


def storage_dtype(args, dtype: str) -> str:
    return dtype if args.storage_dtype == "same" else args.storage_dtype


def batch_tokens(args):
    text = str(args.batch_tokens).lower()
    return {"auto": "auto", "none": None}[text] if text in ("auto", "none") else int(text)


def stage_config(args, folder: Path, corpus: Path, dtype: str):
    """The analysis the stage runs: the whole file as the training split, nothing else."""
    from neuro_pipeline.config import config_from_dict

    raw = {"name": "bench", "store": str(folder / "store.duckdb"), "reports": str(folder / "reports"),
           "model": {"path": str(harness.model_dir(args)), "dtype": dtype, "batch_size": args.batch_size,
                     "batch_tokens": batch_tokens(args), "threads": args.threads},
           "extraction": {"aggregation": "mean" if args.aggregation == "average" else args.aggregation,
                          "storage_dtype": storage_dtype(args, dtype), "storage": args.storage},
           "corpus": {"format": "conllu", "train": str(corpus), "test_fraction": 0.0}}
    return config_from_dict(raw, source="benchmarks.extraction", base_dir=str(folder))


def run_stage(cfg) -> dict[str, float]:
    """Our extraction stage on a fresh store: seconds without the model load, and the rest."""
    from neuro_pipeline.stages import materialize_activations, materialize_corpus
    from neuro_pipeline.store import Store

    Path(cfg.store_path).unlink(missing_ok=True)
    if cfg.parquet_dir is not None:
        shutil.rmtree(cfg.parquet_dir, ignore_errors=True)
    store = Store(cfg.store_path)
    materialize_corpus(cfg, store)
    s = materialize_activations(cfg, store)
    return {"ours_s": s.seconds - s.load_seconds, "load_s": s.load_seconds, "write_wait_s": s.write_wait_seconds,
            "n_rows": s.n_rows, "n_words_extracted": s.n_words_extracted, "n_rejected": s.n_rejected_new}


# ----------------------------------------------------------------------------- --against bare
def stage_batches(lengths: list[int], batch_size: int, cap: int | None) -> list[list[int]]:
    """The stage's batching rule (longest first; at most ``batch_size`` sentences and, with a
    cap, at most ``cap`` padded positions a pass, a longer sentence alone), as indices."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    out, start = [], 0
    while start < len(order):
        size = batch_size if cap is None else max(1, min(batch_size, cap // max(1, lengths[order[start]])))
        out.append(order[start:start + size])
        start += size
    return out


def against_bare(args, corpus: Path, n_words: int, dtype: str, tmp: Path) -> tuple:
    import torch

    import neuro_pipeline.stages.activations as activations_stage
    from neuro_pipeline.corpus import read_conllu
    from neuro_pipeline.extraction import load_model

    cfg0 = stage_config(args, tmp / "s0", corpus, dtype)
    model = load_model(cfg0.model_dir, dtype=dtype)
    words = [list(s.tokens) for s in read_conllu(corpus)]
    encodings = model.tokenizer(words, is_split_into_words=True, truncation=False)["input_ids"]
    too_long = sum(len(e) > model.max_length for e in encodings)
    if too_long:
        raise SystemExit(f"{too_long} sentences exceed {model.max_length} subwords; the bare pass cannot run "
                         "them: use --max-sentences or a shorter corpus")

    def padded(rows):
        width = max(len(encodings[i]) for i in rows)
        ids = torch.full((len(rows), width), model.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for row, i in enumerate(rows):
            ids[row, : len(encodings[i])] = torch.tensor(encodings[i])
            mask[row, : len(encodings[i])] = 1
        return {"input_ids": ids, "attention_mask": mask}

    lengths = [len(e) for e in encodings]
    # The bare pass: shortest first, --batch-size sentences a pass, no cap.
    shortest_first = sorted(range(len(lengths)), key=lambda i: lengths[i])
    bare_batches = [padded(shortest_first[i:i + args.batch_size]) for i in range(0, len(lengths), args.batch_size)]
    same_batches = [padded(b) for b in stage_batches(lengths, args.batch_size, cfg0.model.pass_tokens())]

    def forward(batches) -> float:
        start = time.perf_counter()
        with torch.inference_mode():
            for batch in batches:
                out = model.model(**batch, output_hidden_states=True)
                del out
        return time.perf_counter() - start

    auto_writer = activations_stage.writes_inline
    choice = {"auto": auto_writer, "inline": lambda cfg: True, "thread": lambda cfg: False}

    def ours(writer: str):
        def call(rnd: int) -> dict[str, float]:
            activations_stage.writes_inline = choice[writer]
            try:
                return run_stage(stage_config(args, tmp / f"s-{writer}", corpus, dtype))
            finally:
                activations_stage.writes_inline = auto_writer
        return call

    forward(bare_batches[:2])  # warm-up (allocator, kernels)
    calls = {"bare": lambda rnd: {"s": forward(bare_batches)},
             "bare_same": lambda rnd: {"s": forward(same_batches)},
             **{f"ours_{w}" if len(harness.csv(args.writers)) > 1 else "ours": ours(w)
                for w in harness.csv(args.writers)}}
    ab = harness.alternate_calls(calls, args.rounds, reference="bare", speedup=False)
    for name in ab.sides:
        for r in ab.rounds[name]:
            r["s"] = r.get("s", r.get("ours_s"))
            r["words_per_s"] = n_words / r["s"]
        harness.say(f"{dtype} {name}: " + ", ".join(f"{r['s']:.2f} s" for r in ab.rounds[name]))
    bare_same = ab.median("bare_same", "s")
    rows = []
    for name in ab.sides:
        sp = ab.spread(name, "s")
        rows.append([name, harness.fmt(sp["median"]) if sp["n"] == 1 else
                     f"{harness.fmt(sp['median'])} [{harness.fmt(sp['min'])}–{harness.fmt(sp['max'])}]",
                     ab.median(name, "words_per_s"), f"{ab.median(name, 's') / ab.median('bare', 's'):.2f}×",
                     f"{ab.median(name, 's') / bare_same:.2f}×", ab.median(name, "load_s"),
                     ab.median(name, "write_wait_s"), ab.median(name, "n_rows")])
    harness.table(["side", "s median [min–max]", "words/s", "/bare", "/bare_same", "load s", "write wait s",
                   "words stored"], rows,
                  title=f"{dtype} compute, {storage_dtype(args, dtype)} storage ({args.storage}); {n_words} words, "
                        f"batch {args.batch_size}, cap {cfg0.model.pass_tokens()}, {torch.get_num_threads()} threads, "
                        f"{args.rounds} round(s)")
    ours_names = [n for n in ab.sides if n.startswith("ours")]
    quality = {n: {"words_stored": ab.median(n, "n_rows"), "words_in_corpus": n_words,
                   "sentences_rejected": ab.median(n, "n_rejected")} for n in ours_names}
    summary = {n: {"ours_s": ab.median(n, "s"), "ratio_ours_over_bare": ab.median(n, "s") / ab.median("bare", "s"),
                   "ratio_over_bare_same": ab.median(n, "s") / bare_same,
                   "ours_words_per_s": ab.median(n, "words_per_s")} for n in ours_names}
    return ab, quality, summary


# ----------------------------------------------------------------------------- --against neurox
def ours_side(args) -> dict:
    """One fresh process: our stage once, with NeuroX's field names for ab.py."""
    import torch

    dtype = harness.csv(args.dtype)[0]
    folder, _ = harness.workdir("extraction", args.keep)
    corpus = args.corpus
    if args.max_sentences:
        corpus = harness.first_sentences(args.corpus, args.max_sentences, folder / "corpus.conllu")
    torch.set_num_threads(args.threads)
    r = run_stage(stage_config(args, folder, corpus, dtype))
    if args.keep is None:
        shutil.rmtree(folder, ignore_errors=True)
    return {"tool": "ours", "ok": True, "dtype": dtype, "stages_s": {"extract_train": r["ours_s"]},
            "extract_tokens_per_s_by_split": {"train": r["n_words_extracted"] / r["ours_s"]},
            "load_s": r["load_s"], "write_wait_s": r["write_wait_s"], "n_tokens": {"train": r["n_rows"]}}


def compare_with_neurox(args, hdf5: Path, folder: Path, dtype: str) -> dict:
    """Every stored value of our side against NeuroX's HDF5 of the same sentences."""
    import numpy as np

    from neuro_pipeline.interop import read_neurox_activations
    from neuro_pipeline.stages import current_activation_set, load_split
    from neuro_pipeline.store import Store

    theirs = read_neurox_activations(hdf5)
    cfg = stage_config(args, folder, folder / "corpus.conllu" if args.max_sentences else args.corpus, dtype)
    store = Store(cfg.store_path)
    split = load_split(cfg, store, current_activation_set(cfg, store), "train")
    ids = split.keys["sentence_id"].to_numpy()
    bounds = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1], True])
    ours = [split.X[a:b] for a, b in itertools.pairwise(bounds)]
    # NeuroX keys its sentences by its tokenizer's text, so sentences are matched by position
    # in the input file and by word count (as NeuroX's load_activations returns them).
    if len(ours) != len(theirs.activations) or any(
            o.shape[0] != t.shape[0] for o, t in zip(ours, theirs.activations)):
        return {"comparable": False, "detail": f"{len(ours)} vs {len(theirs.activations)} sentences or word counts differ"}
    worst = np.zeros(theirs.n_layers)
    above, total, max_value = 0, 0, 0.0
    for o, t in zip(ours, theirs.activations):
        diff = np.abs(o.reshape(t.shape).astype(np.float64) - t)
        worst = np.maximum(worst, diff.max(axis=(0, 2)))
        above += int((diff > args.atol).sum())
        total += diff.size
        max_value = max(max_value, float(np.abs(t).max()))
    return {"comparable": True, "n_sentences": len(ours), "n_values": total, "max_abs_diff": float(worst.max()),
            "max_abs_diff_by_layer": [float(x) for x in worst], "share_above_atol": above / total,
            "atol": args.atol, "max_abs_value": max_value, "within_atol": bool(worst.max() <= args.atol)}


def against_neurox(args, tmp: Path, nx: Path | None):
    dtypes = harness.csv(args.dtype)
    common = ["--corpus", args.corpus, "--model", harness.model_dir(args), "--aggregation", args.aggregation,
              "--threads", args.threads, "--batch-size", args.batch_size, "--batch-tokens", args.batch_tokens,
              "--storage", args.storage, "--storage-dtype", args.storage_dtype,
              *(["--max-sentences", args.max_sentences] if args.max_sentences else [])]
    sides = [harness.ours_side("extraction", *common, "--dtype", d, "--keep", tmp / f"ours-{d}", name=f"ours_{d}")
             for d in dtypes]
    nx_dir = tmp / "neurox"
    if nx is not None:
        # NeuroX needs a test file: one sentence keeps the stages after extract_train short.
        one = harness.first_sentences(harness.ewt_file(args, "test"), 1, tmp / "one-sentence.conllu")
        side = harness.neurox_side(nx, harness.NEUROX_REF, "--train", args.corpus, "--test", one,
                                   "--model", harness.model_dir(args), "--aggregation", args.aggregation,
                                   "--threads", args.threads, "--seed", 0, "--workdir", nx_dir,
                                   *(["--max-sentences", args.max_sentences] if args.max_sentences else []))
        side.before = lambda: shutil.rmtree(nx_dir, ignore_errors=True)
        sides.insert(0, side)
    ab, _ = harness.alternate(sides, args.rounds, reference="neurox" if nx else None)
    harness.ab_table(ab, [("extract_train s (ours: without model load)", "stages_s.extract_train"),
                          ("words/s", "extract_tokens_per_s_by_split.train", False),
                          ("peak RSS MB (whole process)", "peak_rss_mb"),
                          ("other processes, cores", "other_busy_cores", False)],
                     title=f"Extraction against NeuroX: {args.corpus.name}"
                           f"{f' (first {args.max_sentences} sentences)' if args.max_sentences else ''}, "
                           f"{args.threads} threads, {args.rounds} round(s)")
    quality = {}
    if nx is not None:
        for d in dtypes:
            quality[f"ours_{d}"] = compare_with_neurox(args, nx_dir / "train.hdf5", tmp / f"ours-{d}", d)
        harness.table(["side", "values", "max |diff|", "share > atol", "max |value|", "within atol"],
                      [[k, q.get("n_values"), q.get("max_abs_diff"), q.get("share_above_atol"), q.get("max_abs_value"),
                        q.get("within_atol")] for k, q in quality.items()],
                      title=f"Quality: our stored values against NeuroX's fp32 HDF5 (atol {args.atol})")
    return ab, quality


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.side == "ours":
        harness.side_result(ours_side(args))
        return 0
    tmp, cleanup = harness.workdir("extraction")
    notes = []
    try:
        if args.against == "neurox":
            nx = harness.neurox_python(args)
            if nx is None:
                notes.append("NeuroX's venv was not found: our side only, no ratio and no equality check")
            ab, quality = against_neurox(args, tmp, nx)
            harness.report(args, "extraction", QUESTION, ab=ab, quality=quality, notes=notes)
            return 0 if all(q.get("within_atol", True) for k, q in quality.items() if k == "ours_float32") else 1
        import torch

        torch.set_num_threads(args.threads)
        corpus = args.corpus
        if args.max_sentences:
            corpus = harness.first_sentences(args.corpus, args.max_sentences, tmp / "corpus.conllu")
        from neuro_pipeline.corpus import read_conllu

        n_words = sum(len(s.tokens) for s in read_conllu(corpus))
        results, quality, abs_ = {}, {}, {}
        for dtype in harness.csv(args.dtype):
            ab, q, summary = against_bare(args, corpus, n_words, dtype, tmp)
            abs_[dtype], quality[dtype], results[dtype] = ab.to_json(), q, summary
        out = SimpleNamespace(to_json=lambda: abs_)
        harness.report(args, "extraction", QUESTION, ab=out, quality=quality, results=results, notes=notes)
        return 0
    finally:
        cleanup()


if __name__ == "__main__":
    sys.exit(main())

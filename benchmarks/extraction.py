"""Benchmark: our extraction stage against a bare batched forward pass, in one process.

Start here: the extraction stage (``neuro_pipeline.pipeline.materialize_activations``:
tokenisation, length-sorted batches, every layer's hidden states, subword→word
aggregation, the write of every layer to the store: Parquet files by default, ``--storage
duckdb`` for rows in the DuckDB file) is timed against the least work any tool
must do to get the same states: the forward pass of the same length-sorted batches with
``output_hidden_states=True``, nothing kept. Both run on the same sentences, with the same
model object, threads and precision, alternately (A B A B …) so that drift on a shared
machine hits both; medians and min–max are printed with the ratio ours / bare.

The stage's own model load is not counted (it is reported apart as ``load_s``); the bare
pass is given pre-tokenised batches, so its figure excludes tokenisation, which ours pays.

Two bare passes are timed every rep:

* ``bare``: the issue's reference, ``--batch-size`` sentences a pass, uncapped;
* ``bare_same``: the same batches as the stage forms them (``--batch-size`` and the cap
  ``--batch-tokens``, by default the stage's own ``auto``), so that ``ratio_over_bare_same``
  is the stage's overhead alone, with the batching's gain taken out.

    .venv/bin/python -m benchmarks.extraction --corpus ../shared/data/ud-en-ewt/en_ewt-ud-dev.conllu \\
        --reps 3 --dtype float32 --threads 2

``--writers inline,thread`` times both ways of writing in every rep (see
``neuro_pipeline.pipeline._write_inline``).

The last stdout line is one JSON object (fields line up for ``../shared/bench/ab.py``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, required=True, help="a CoNLL-U file (all its sentences are extracted)")
    ap.add_argument("--model", default="embedded", help="model directory (default: the embedded MiniLM)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--storage-dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    ap.add_argument("--storage", default="parquet", choices=["duckdb", "parquet"])
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--batch-tokens", default="auto",
                    help="the stage's model.batch_tokens: auto (its default), a number, or none")
    ap.add_argument("--aggregation", default="last")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--max-sentences", type=int, default=None)
    ap.add_argument("--writers", default="auto",
                    help="comma-separated: how the stage writes, each timed in turn every rep: auto (the "
                         "stage's own choice), inline (between batches) or thread (beside the model)")
    return ap.parse_args(argv)


def bare_forward(model, batches) -> float:
    """Seconds for the forward passes alone, hidden states requested and dropped."""
    start = time.perf_counter()
    with torch.inference_mode():
        for batch in batches:
            out = model.model(**batch, output_hidden_states=True)
            del out
    return time.perf_counter() - start


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from neuro_pipeline.config import config_from_dict
    from neuro_pipeline.corpus import read_conllu
    from neuro_pipeline.extraction import load_model
    from neuro_pipeline.extraction.extract import _batches
    from neuro_pipeline.pipeline import materialize_activations, materialize_corpus
    from neuro_pipeline.store import Store

    sentences = read_conllu(args.corpus)[: args.max_sentences]
    words = [list(s.tokens) for s in sentences]
    n_words = sum(len(w) for w in words)
    corpus_file = args.corpus.resolve()
    model_dir = None if args.model == "embedded" else str(Path(args.model).resolve())

    tokens = args.batch_tokens.lower()
    batch_tokens = {"auto": "auto", "none": None}[tokens] if tokens in ("auto", "none") else int(tokens)
    tmp = Path(tempfile.mkdtemp(prefix="bench-extraction-"))
    if args.max_sentences:
        # A file of exactly these sentences, so that both sides see the same input.
        blocks = []
        for s in sentences:
            blocks.append("\n".join(f"{i}\t{w}\t_\t{t}\t_\t_\t_\t_\t_\t_"
                                    for i, (w, t) in enumerate(zip(s.tokens, s.labels), start=1)))
        corpus_file = tmp / "corpus.conllu"
        corpus_file.write_text("\n\n".join(blocks) + "\n\n", encoding="utf-8")

    def config(rep: int):
        raw = {"name": "bench", "store": str(tmp / f"s{rep}.duckdb"), "reports": str(tmp / "r"),
               "model": {"dtype": args.dtype, "batch_size": args.batch_size, "batch_tokens": batch_tokens,
                         **({"path": model_dir} if model_dir else {})},
               "extraction": {"aggregation": args.aggregation, "storage_dtype": args.storage_dtype,
                              "storage": args.storage},
               "corpus": {"format": "conllu", "train": str(corpus_file), "test_fraction": 0.0}}
        return config_from_dict(raw, source="bench", base_dir=str(tmp))

    cfg0 = config(0)
    model = load_model(cfg0.model_dir, dtype=args.dtype)
    encodings = model.tokenizer(words, is_split_into_words=True, truncation=False)["input_ids"]
    order = sorted(range(len(words)), key=lambda i: len(encodings[i]))

    def padded(chunk):
        width = max(len(c) for c in chunk)
        ids = torch.full((len(chunk), width), model.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, c in enumerate(chunk):
            ids[row, : len(c)] = torch.tensor(c)
            mask[row, : len(c)] = 1
        return {"input_ids": ids, "attention_mask": mask}

    batches = [padded([encodings[i] for i in order[start:start + args.batch_size]])
               for start in range(0, len(order), args.batch_size)]
    # The stage's own batching: longest first, at most batch_size sentences and the cap.
    longest_first = [SimpleNamespace(ids=encodings[i]) for i in reversed(order)]
    same = [padded([item.ids for item in batch])
            for batch in _batches(longest_first, args.batch_size, cfg0.model.pass_tokens())]
    too_long = sum(len(e) > model.max_length for e in encodings)
    if too_long:
        print(f"note: {too_long} sentences exceed {model.max_length} subwords; the bare pass "
              "cannot run them, use --max-sentences or a shorter corpus", file=sys.stderr)
        return 2

    import neuro_pipeline.pipeline as pipeline_module

    auto_writer = pipeline_module._write_inline
    writers = args.writers.split(",")
    bare_forward(model, batches[:2])  # warm-up (allocator, kernels)
    bare, bare_same, loads = [], [], []
    ours = {w: [] for w in writers}
    waits = {w: [] for w in writers}
    for rep in range(args.reps):
        bare.append(bare_forward(model, batches))
        bare_same.append(bare_forward(model, same))
        for writer in writers:
            pipeline_module._write_inline = {"auto": auto_writer, "inline": lambda cfg: True,
                                             "thread": lambda cfg: False}[writer]
            cfg = config(f"{rep + 1}-{writer}")
            store = Store(cfg.store_path)
            materialize_corpus(cfg, store)
            summary = materialize_activations(cfg, store)
            ours[writer].append(summary.seconds - summary.load_seconds)
            loads.append(summary.load_seconds)
            waits[writer].append(summary.write_wait_seconds)
            print(f"rep {rep + 1}: bare {bare[-1]:.2f} s, bare with the stage's batches {bare_same[-1]:.2f} s, "
                  f"ours ({writer} writes) {ours[writer][-1]:.2f} s (+ load {loads[-1]:.2f} s; "
                  f"{waits[writer][-1]:.2f} s of it waiting for the store)", file=sys.stderr)
            Path(cfg.store_path).unlink()
            shutil.rmtree(Path(cfg.store_path).parent / "activations", ignore_errors=True)
    pipeline_module._write_inline = auto_writer

    def stats(values):
        return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
                "max": round(max(values), 3)}

    first = writers[0]
    per_writer = {w: {"ours_s": stats(ours[w]), "write_wait_s": stats(waits[w]),
                      "ratio_ours_over_bare": round(statistics.median(ours[w]) / statistics.median(bare), 3),
                      "ratio_over_bare_same": round(statistics.median(ours[w]) / statistics.median(bare_same), 3),
                      "ours_words_per_s": round(n_words / statistics.median(ours[w]), 1)} for w in writers}
    result = {
        "corpus": str(args.corpus), "n_sentences": len(words), "n_words": n_words, "dtype": args.dtype,
        "storage_dtype": args.storage_dtype, "storage": args.storage,
        "batch_size": args.batch_size, "batch_tokens": cfg0.model.pass_tokens(),
        "threads": torch.get_num_threads(), "reps": args.reps,
        "bare_forward_s": stats(bare), "bare_same_batches_s": stats(bare_same), "load_s": stats(loads),
        "bare_words_per_s": round(n_words / statistics.median(bare), 1),
        # The first writer's figures under the plain names (for ab.py), each writer's apart.
        **per_writer[first],
        "writers": per_writer,
    }
    for w in writers:
        print(f"{len(words)} sentences, {n_words} words, {args.dtype}, batch {args.batch_size}, "
              f"{torch.get_num_threads()} threads, {w} writes: bare {result['bare_forward_s']['median']} s, bare with "
              f"the stage's batches {result['bare_same_batches_s']['median']} s, ours "
              f"{result['writers'][w]['ours_s']['median']} s (ratio {result['writers'][w]['ratio_ours_over_bare']}; "
              f"{result['writers'][w]['ratio_over_bare_same']} over the same batches), "
              f"{result['writers'][w]['ours_words_per_s']} words/s", file=sys.stderr)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

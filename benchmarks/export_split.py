"""Export one split of a materialized analysis as ``.npy`` files for the benchmarks.

Start here: the method benchmarks (``methods_ewt``, ``methods_vs_neurox``,
``gaussian_probe``, ``probe_ewt``) read plain ``.npy`` matrices so that NeuroX can read the
same bytes. This writes them from the DuckDB store of an analysis that has run, joined on
keys exactly as the pipeline's stages read them::

    .venv/bin/neuro-pipeline run --config examples/ewt-upos.yaml
    .venv/bin/python -m benchmarks.export_split --config examples/ewt-upos.yaml --split train --out /tmp/ewt_acts/dev
    .venv/bin/python -m benchmarks.export_split --config examples/ewt-upos.yaml --split test --out /tmp/ewt_acts/test

writes ``<out>_last_X.npy`` (float32, tokens × layers·hidden), ``<out>_y.npy`` (labels)
and ``<out>_groups.npy`` (sentence ids), with the aggregation in the file name.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from neuro_pipeline.config import load_config
from neuro_pipeline.pipeline import current_activation_set, load_split
from neuro_pipeline.store import Store


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True, help="the pipeline.yaml of an analysis that has run")
    ap.add_argument("--split", required=True, help="train, dev or test")
    ap.add_argument("--out", required=True, type=Path, help="path prefix of the three .npy files")
    args = ap.parse_args(argv)
    cfg = load_config(args.config)
    store = Store(cfg.store_path)
    split = load_split(cfg, store, current_activation_set(cfg, store), args.split)
    if split.X.shape[0] == 0:
        print(f"export_split: split {args.split!r} of analysis {cfg.name!r} has no words", file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    prefix = f"{args.out}_{cfg.extraction.aggregation}"
    np.save(f"{prefix}_X.npy", split.X)
    np.save(f"{args.out}_y.npy", split.labels.astype(str))
    np.save(f"{args.out}_groups.npy", split.keys["sentence_id"].to_numpy())
    print(f"{prefix}_X.npy {split.X.shape}, {args.out}_y.npy, {args.out}_groups.npy "
          f"({split.n_skipped_rejected} words of rejected sentences skipped)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Export one split of a materialized analysis as ``.npy`` files (a tool, not a question).

Start here: ``benchmarks.methods`` reads plain ``.npy`` matrices so that NeuroX's side
(``benchmarks/neurox_methods_ref.py``, in NeuroX's venv) reads the same bytes. This writes
them from the DuckDB store of an analysis that has run, joined on keys exactly as the
pipeline's stages read them (``neuro_pipeline.stages.load_split``)::

    .venv/bin/neuro-pipeline run --config examples/ewt-upos.yaml
    .venv/bin/python -m benchmarks.export_split --config examples/ewt-upos.yaml --split train --out /tmp/ewt_acts/dev
    .venv/bin/python -m benchmarks.export_split --config examples/ewt-upos.yaml --split test --out /tmp/ewt_acts/test

writes ``<out>_last_X.npy`` (float32, words × layers·hidden), ``<out>_y.npy`` (labels)
and ``<out>_groups.npy`` (sentence ids), with the aggregation in the file name.
``benchmarks.methods`` does the same by itself when it is given no matrices.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def export(cfg, split: str, out: Path) -> dict:
    """Write ``split`` of the analysis ``cfg`` as the three ``.npy`` files; returns their paths."""
    from neuro_pipeline.stages import current_activation_set, load_split
    from neuro_pipeline.store import Store

    store = Store(cfg.store_path)
    data = load_split(cfg, store, current_activation_set(cfg, store), split)
    if data.X.shape[0] == 0:
        raise SystemExit(f"export_split: split {split!r} of analysis {cfg.name!r} has no words")
    out.parent.mkdir(parents=True, exist_ok=True)
    paths = {"X": Path(f"{out}_{cfg.extraction.aggregation}_X.npy"), "y": Path(f"{out}_y.npy"),
             "groups": Path(f"{out}_groups.npy")}
    np.save(paths["X"], np.asarray(data.X, dtype=np.float32))
    np.save(paths["y"], data.labels.astype(str))
    np.save(paths["groups"], data.keys["sentence_id"].to_numpy())
    return {**paths, "shape": data.X.shape, "n_skipped_rejected": data.n_skipped_rejected}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True, help="the pipeline.yaml of an analysis that has run")
    ap.add_argument("--split", required=True, help="train, dev or test")
    ap.add_argument("--out", required=True, type=Path, help="path prefix of the three .npy files")
    args = ap.parse_args(argv)
    from neuro_pipeline.config import load_config

    r = export(load_config(args.config), args.split, args.out)
    print(f"{r['X']} {r['shape']}, {r['y']}, {r['groups']} ({r['n_skipped_rejected']} words of rejected "
          "sentences skipped)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

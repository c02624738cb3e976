"""Are our activations NeuroX's? The same sentences extracted by both, compared value by value.

Start here: NeuroX 1.0.9 (its venv from ``../shared/bench/setup_neurox.sh``) extracts the
first ``--max-sentences`` sentences of a CoNLL-U file with ``neurox_ref.py --workdir``,
which keeps its HDF5 file; we extract the same words with our batched extractor
(``extract_activations``, fp32, the same aggregation, batched as the pipeline batches on
the CPU: ``--batch-size`` sentences and at most ``--batch-tokens`` padded positions a pass)
and read NeuroX's file with our
strict reader (``read_neurox_activations``). Every sentence must have the same words and
the same shape; the script prints the largest absolute difference over every value, per
layer, and the share of values that differ by more than ``--atol``.

    .venv/bin/python -m benchmarks.neurox_equality --corpus ../shared/data/ud-en-ewt/en_ewt-ud-dev.conllu \\
        --max-sentences 300 --aggregation last

The last stdout line is one JSON object; the exit status is 1 when a value differs by more
than ``--atol``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
HARNESS = ROOT.parent / "shared" / "bench" / "neurox_ref.py"
NEUROX_PYTHON = Path.home() / ".cache" / "neuro-bench" / "neurox-venv" / "bin" / "python"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", required=True, help="a CoNLL-U file")
    ap.add_argument("--max-sentences", type=int, default=300)
    ap.add_argument("--aggregation", default="last", choices=["first", "last", "average"])
    ap.add_argument("--atol", type=float, default=1e-5)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--batch-tokens", type=int, default=None,
                    help="cap padded positions per pass (default: the pipeline's CPU default)")
    ap.add_argument("--neurox-python", default=str(NEUROX_PYTHON))
    a = ap.parse_args(argv)

    from neuro_pipeline.config import embedded_model_dir
    from neuro_pipeline.corpus import read_conllu
    from neuro_pipeline.config import AUTO_CPU_BATCH_TOKENS
    from neuro_pipeline.extraction import extract_activations, load_model
    from neuro_pipeline.interop import read_neurox_activations

    model_dir = embedded_model_dir()
    with tempfile.TemporaryDirectory(prefix="neurox-eq-") as work:
        # neurox_ref.py needs a test file too; the same file serves (only train is compared).
        subprocess.run([a.neurox_python, str(HARNESS), "--train", a.corpus, "--test", a.corpus,
                        "--model", str(model_dir), "--aggregation", a.aggregation, "--max-sentences",
                        str(a.max_sentences), "--workdir", work, "--seed", "0"],
                       check=True, stdout=subprocess.DEVNULL, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        theirs = read_neurox_activations(Path(work) / "train.hdf5")
    words = [list(s.tokens) for s in read_conllu(a.corpus)[:a.max_sentences]]
    # neurox_ref.py replaces whitespace inside a FORM by "_" (NeuroX splits on spaces).
    words = [[w.replace(" ", "_") for w in s] for s in words]
    # NeuroX keys its HDF5 sentences by the text its tokenizer produced (lower-cased, "##"
    # pieces), so sentences are matched by position in the input file and by word count.
    if len(theirs.sentences) != len(words) or any(
            t.shape[0] != len(w) for t, w in zip(theirs.activations, words)):
        raise SystemExit("NeuroX's file does not have one vector per input word in input order")
    model = load_model(model_dir, device="cpu", dtype="float32")
    ours = [None] * len(words)
    for index, array in extract_activations(model, words, aggregation="mean" if a.aggregation == "average"
                                            else a.aggregation, batch_size=a.batch_size,
                                            batch_tokens=a.batch_tokens or AUTO_CPU_BATCH_TOKENS):
        ours[index] = array
    diffs = [np.abs(o - t) for o, t in zip(ours, theirs.activations, strict=True)]
    stacked = np.concatenate(diffs, axis=0)  # (words, layers, units)
    result = {
        "n_sentences": len(words), "n_words": int(stacked.shape[0]), "n_values": int(stacked.size),
        "aggregation": a.aggregation, "max_abs_diff": float(stacked.max()),
        "max_abs_diff_by_layer": [float(x) for x in stacked.max(axis=(0, 2))],
        "share_above_atol": float((stacked > a.atol).mean()), "atol": a.atol,
        "max_abs_value": float(max(np.abs(t).max() for t in theirs.activations)),
    }
    print(json.dumps(result))
    return 0 if result["max_abs_diff"] <= a.atol else 1


if __name__ == "__main__":
    sys.exit(main())

"""Our side of the end-to-end benchmark: the pipeline doing NeuroX's standard work.

Start here: ``benchmarks/neurox_e2e_ref.py`` runs NeuroX's workflow (extract train and
test, load, probe, ordering, 8 retrained probes). This script runs ``neuro-pipeline run``
(a real Dagster run, a fresh DuckDB store and instance, every quality check) on an
analysis restricted to the same work:

* corpus: the same CoNLL-U train and test files, UPOS;
* extraction: every layer, the same aggregation, fp32 (``--dtype`` to change);
* ranking: the linear probe only, NeuroX's probe (``penalty: none``, ``solver: minibatch``,
  ``--epochs`` epochs of Adam) ordered as ``get_neuron_ordering`` does;
* evaluation: top, bottom and ``--n-random`` random neurons at each of ``--fractions``
  (default 0.10, 0.20 and 2 draws: 8 retrained probes, our default retrained probe), plus
  the full probe;
* the optional stages (agreement, redundancy, selectivity, ablation, class neurons) off.

It takes the same command-line arguments as ``neurox_ref.py`` so that
``../shared/bench/ab.py`` can run the two alternately::

    ARGS="--train $DATA/en_ewt-ud-dev.conllu --test $DATA/en_ewt-ud-test.conllu --model $MODEL \\
          --aggregation last --threads 2 --seed 0"
    python3 ../shared/bench/ab.py --names neurox ours --reps 3 \\
        --a "$NX benchmarks/neurox_e2e_ref.py $ARGS" --b ".venv/bin/python -m benchmarks.e2e $ARGS"

The last stdout line is one JSON object: ``total_s`` (the whole command), ``stages_s``
(Dagster's step durations: one per asset), ``test_accuracy`` (the full probe),
``retrained`` (accuracy of every retrained probe), ``peak_rss_mb`` (the largest process,
the Dagster run) and ``activation_matrix_mb`` (the training matrix the probe needs).
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
_STEP = re.compile(r'STEP_SUCCESS - Finished execution of step "([^"]+)" in ([\d.]+)(ms|s|m)')


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", required=True)
    ap.add_argument("--test", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--aggregation", default="last", choices=["first", "last", "average", "mean"])
    ap.add_argument("--label-column", default="upos")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fractions", default="0.10,0.20")
    ap.add_argument("--n-random", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=2, help="epochs of Adam of the probe (default 2)")
    ap.add_argument("--dtype", default="float32", help="model.dtype (compute precision)")
    ap.add_argument("--storage", default="parquet", choices=["duckdb", "parquet"])
    ap.add_argument("--storage-dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    ap.add_argument("--keep", default=None, help="keep the store, instance and logs in this folder")
    # Accepted for compatibility with neurox_ref.py's command line (the same ARGS for both).
    ap.add_argument("--max-sentences", type=int, default=0)
    ap.add_argument("--l1", type=float, default=0.0)
    ap.add_argument("--l2", type=float, default=0.0)
    return ap.parse_args(argv)


def analysis_config(a: argparse.Namespace, work: Path) -> dict:
    """The pipeline.yaml of NeuroX's work (see the module docstring)."""
    if a.max_sentences or a.l1 or a.l2:
        raise SystemExit("benchmarks.e2e: --max-sentences, --l1 and --l2 are not supported (full files, "
                         "NeuroX's default probe without penalties)")
    return {
        "name": "neurox-work",
        "store": str(work / "store.duckdb"),
        "reports": str(work / "reports"),
        "model": {"path": a.model, "threads": a.threads, "dtype": a.dtype},
        "corpus": {"format": "conllu", "train": str(Path(a.train).resolve()), "test": str(Path(a.test).resolve()),
                   "label_column": a.label_column},
        "extraction": {"aggregation": "mean" if a.aggregation == "average" else a.aggregation,
                       "storage": a.storage, "storage_dtype": a.storage_dtype},
        "ranking": {"methods": [{"method": "linear_probe",
                                 "params": {"penalty": "none", "solver": "minibatch", "max_epochs": a.epochs,
                                            "random_state": a.seed}}]},
        # The retrained probes keep our default (FISTA, l2 1e-3): two epochs of Adam cost a
        # quarter of the time but lose 1-4 points with 269 neurons (measured on EWT).
        "evaluation": {"fractions": [float(f) for f in a.fractions.split(",")], "n_random": a.n_random,
                       "seed": a.seed},
        "stages": {"method_agreement": False, "neuron_redundancy": False, "probe_selectivity": False,
                   "probe_ablation": False, "class_neurons": False},
    }


def step_seconds(log: str) -> dict[str, float]:
    """Dagster's duration of every step (asset) in a run log."""
    scale = {"ms": 1e-3, "s": 1.0, "m": 60.0}
    return {name: float(value) * scale[unit] for name, value, unit in _STEP.findall(log)}


def main(argv=None) -> int:
    a = parse_args(argv)
    start = time.perf_counter()
    if a.keep:
        work = Path(a.keep)
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
    else:
        work = Path(tempfile.mkdtemp(prefix="neuro-e2e-"))
    try:
        config = work / "pipeline.yaml"
        config.write_text(yaml.safe_dump(analysis_config(a, work)), encoding="utf-8")
        cmd = [str(Path(sys.executable).parent / "neuro-pipeline"), "run", "-c", str(config),
               "--home", str(work / ".neuro")]
        proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
        total = time.perf_counter() - start
        logs = sorted((work / ".neuro" / "logs").glob("run-*.log"))
        log = logs[-1].read_text(encoding="utf-8") if logs else ""
        if proc.returncode != 0:
            print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
            print(json.dumps({"tool": "ours", "ok": False, "error": f"neuro-pipeline run exited {proc.returncode}"}))
            return 1
        sys.path.insert(0, str(ROOT))
        from neuro_pipeline.store import Store

        store = Store(work / "store.duckdb")
        metrics = store.query("SELECT selection, fraction, k, draw, value AS accuracy FROM metrics "
                              "WHERE scope = 'overall' AND metric = 'accuracy' AND selection <> 'majority_baseline' "
                              "ORDER BY fraction, selection, draw")
        full = metrics.filter(metrics["selection"] == "all")["accuracy"][0]
        n_train = store.query("SELECT count(*) AS n FROM tokens WHERE split = 'train'")["n"][0]
        n_neurons = store.query("SELECT n_layers * hidden_size AS n FROM activation_sets")["n"][0]
        res = {
            "tool": "ours", "ok": True, "total_s": total,
            "stages_s": step_seconds(log),
            "test_accuracy": float(full),
            "retrained": metrics.filter(metrics["selection"] != "all").to_dicts(),
            # The Dagster run is the largest process (the CLI only relays its log).
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
            "activation_matrix_mb": n_train * n_neurons * 4 / 2**20,
            "n_train": int(n_train), "n_neurons": int(n_neurons),
            "settings": {k: v for k, v in vars(a).items() if k not in ("train", "test", "model", "keep")},
        }
        print(f"[ours] {total:.1f} s; steps: " + ", ".join(f"{k} {v:.1f} s" for k, v in res["stages_s"].items()),
              file=sys.stderr)
        print(json.dumps(res))
        return 0
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

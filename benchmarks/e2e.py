"""End to end against NeuroX: how much faster is a whole `neuro-pipeline run` than NeuroX's
standard workflow on the same work, at what accuracy and peak memory?

Two sides, run alternately (NeuroX, ours, NeuroX, ours, …) in one sitting, each a fresh
process measured from outside (wall time, CPU time, peak RSS of its largest process):

* ``neurox`` (the reference): ``benchmarks/neurox_e2e_ref.py`` run by NeuroX 1.0.9's venv.
  It is ``../shared/bench/neurox_ref.py`` unchanged (extract train and test, load the HDF5
  files, train the linear probe, evaluate, order the neurons) followed by what a NeuroX
  user does next: retrain a probe on the top, bottom and random neurons at each fraction
  (``--fractions`` 0.10,0.20 and ``--n-random`` 2: 8 probes) and evaluate each.
* ``ours``: ``neuro-pipeline run`` (a real Dagster run: a fresh DuckDB store and instance,
  every quality check) on an analysis restricted to the same work: the same CoNLL-U files
  and labels, every layer, the same aggregation, fp32; one ranking, NeuroX's probe
  (``linear_probe`` with ``penalty: none``, ``solver: minibatch``, ``--epochs`` epochs of
  Adam) ordered as ``get_neuron_ordering`` does; the report's top, bottom and random
  selections at the same fractions plus the full probe; the optional stages off.

Where the work differs: NeuroX trains its probe for 10 epochs, ours for 2 (``--epochs``);
our retrained probes are our default (FISTA, l2 1e-3), NeuroX's its default probe; ours
pays for Dagster (imports, instance, the observation run) and every check, which NeuroX
has none of. Quality is printed next to time: the full probe's test accuracy and every
retrained probe's.

Reproduce the docs' numbers (docs/performance.md, "End to end"; EWT dev for training and
test for evaluation, 2 threads each)::

    .venv/bin/python -m benchmarks.e2e --rounds 3 --threads 2

``--quick`` runs one round on the first 100 training and 400 test sentences: with fewer
test sentences, a UPOS tag of the training words (X) has no test word, its per-class
accuracy is NaN and the report's blocking check fails the run. ``--side ours`` runs our
side alone and prints its JSON (``neurox_ref.py``'s field names), e.g. for
``../shared/bench/ab.py``.
"""

from __future__ import annotations

import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import yaml

from benchmarks import harness

QUESTION = ("How much faster is a whole neuro-pipeline run than NeuroX's standard workflow (extract, load, probe, "
            "order, retrain on top/bottom/random) on the same work, at what accuracy and peak memory?")
_STEP = re.compile(r'STEP_SUCCESS - Finished execution of step "([^"]+)" in ([\d.]+)(ms|s|m)')


def parse_args(argv=None):
    ap = harness.parser(__doc__, rounds=3, neurox=True)
    ap.add_argument("--train", type=Path, default=None, help="CoNLL-U training file (default: EWT dev)")
    ap.add_argument("--test", type=Path, default=None, help="CoNLL-U test file (default: EWT test)")
    ap.add_argument("--max-sentences", type=int, default=0, help="only the first N sentences of each file (0: all)")
    ap.add_argument("--max-test-sentences", type=int, default=None,
                    help="only the first N sentences of the test file (default: --max-sentences)")
    ap.add_argument("--aggregation", default="last", choices=["first", "last", "average"])
    ap.add_argument("--label-column", default="upos")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fractions", default="0.10,0.20")
    ap.add_argument("--n-random", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=2, help="epochs of Adam of our probe (default 2; NeuroX: 10)")
    ap.add_argument("--dtype", default="float32", help="our model.dtype (compute precision)")
    ap.add_argument("--storage", default="parquet", choices=["duckdb", "parquet"])
    ap.add_argument("--storage-dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    ap.add_argument("--keep", type=Path, default=None, help="our side: keep the store, instance and logs here")
    args = harness.parse(ap, argv, quick={"max_sentences": 100, "max_test_sentences": 400})
    args.train = (args.train or harness.ewt_file(args, "dev")).resolve()
    args.test = (args.test or harness.ewt_file(args, "test")).resolve()
    return args


def analysis_config(a, work: Path, train: Path, test: Path) -> dict:
    """The pipeline.yaml of NeuroX's work (see the module docstring)."""
    return {
        "name": "neurox-work",
        "store": str(work / "store.duckdb"),
        "reports": str(work / "reports"),
        "model": {"path": str(harness.model_dir(a)), "threads": a.threads, "dtype": a.dtype},
        "corpus": {"format": "conllu", "train": str(train), "test": str(test), "label_column": a.label_column},
        "extraction": {"aggregation": "mean" if a.aggregation == "average" else a.aggregation,
                       "storage": a.storage, "storage_dtype": a.storage_dtype},
        "ranking": {"methods": [{"method": "linear_probe",
                                 "params": {"penalty": "none", "solver": "minibatch", "max_epochs": a.epochs,
                                            "random_state": a.seed}}]},
        # The retrained probes keep our default (FISTA, l2 1e-3): two epochs of Adam cost a
        # quarter of the time but lose 1-4 points with 269 neurons (measured on EWT).
        "evaluation": {"fractions": harness.csv(a.fractions, float), "n_random": a.n_random, "seed": a.seed},
        "stages": {"method_agreement": False, "neuron_redundancy": False, "probe_selectivity": False,
                   "probe_ablation": False, "class_neurons": False},
    }


def step_seconds(log: str) -> dict[str, float]:
    """Dagster's duration of every step (asset) in a run log."""
    scale = {"ms": 1e-3, "s": 1.0, "m": 60.0}
    return {name: float(value) * scale[unit] for name, value, unit in _STEP.findall(log)}


def run_ours(a) -> dict:
    """Our side: ``neuro-pipeline run`` on a fresh store; the figures as NeuroX's names them."""
    start = time.perf_counter()
    work, cleanup = harness.workdir("e2e", a.keep)
    try:
        train, test = a.train, a.test
        n_test = a.max_sentences if a.max_test_sentences is None else a.max_test_sentences
        if a.max_sentences or n_test:
            train = harness.first_sentences(a.train, a.max_sentences, work / "train.conllu")
            test = harness.first_sentences(a.test, n_test, work / "test.conllu")
        config = work / "pipeline.yaml"
        config.write_text(yaml.safe_dump(analysis_config(a, work, train, test)), encoding="utf-8")
        cmd = [str(Path(sys.executable).parent / "neuro-pipeline"), "run", "-c", str(config),
               "--home", str(work / ".neuro")]
        proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, check=False)
        total = time.perf_counter() - start
        logs = sorted((work / ".neuro" / "logs").glob("run-*.log"))
        log = logs[-1].read_text(encoding="utf-8") if logs else ""
        if proc.returncode != 0:
            print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
            return {"tool": "ours", "ok": False, "error": f"neuro-pipeline run exited {proc.returncode}"}
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
            "n_tokens": {"train": int(n_train)}, "n_neurons": int(n_neurons),
        }
        print(f"[ours] {total:.1f} s; steps: " + ", ".join(f"{k} {v:.1f} s" for k, v in res["stages_s"].items()),
              file=sys.stderr)
        return res
    finally:
        cleanup()


def retrained_summary(runs) -> dict[str, float]:
    """Median accuracy of each retrained selection ("top 0.1", "random 0.2", …) over rounds and draws."""
    values: dict[str, list[float]] = {}
    for run in runs:
        for r in (run.result or {}).get("retrained", []):
            values.setdefault(f"{r['selection']} {float(r['fraction']):g}", []).append(float(r["accuracy"]))
    return {k: harness.median(v) for k, v in sorted(values.items())}


def main(argv=None) -> int:
    a = parse_args(argv)
    if a.side == "ours":
        harness.side_result(run_ours(a))
        return 0
    work, cleanup = harness.workdir("e2e-inputs")
    train, test = a.train, a.test
    n_test = a.max_sentences if a.max_test_sentences is None else a.max_test_sentences
    if a.max_sentences or n_test:  # both sides read the same truncated files
        train = harness.first_sentences(a.train, a.max_sentences, work / "train.conllu")
        test = harness.first_sentences(a.test, n_test, work / "test.conllu")
    try:
        return run_ab(a, train, test)
    finally:
        cleanup()


def run_ab(a, train: Path, test: Path) -> int:
    common = ["--train", train, "--test", test, "--model", harness.model_dir(a), "--aggregation", a.aggregation,
              "--threads", a.threads, "--seed", a.seed, "--fractions", a.fractions, "--n-random", a.n_random]
    ours = harness.ours_side("e2e", *common, "--label-column", a.label_column, "--epochs", a.epochs,
                             "--dtype", a.dtype, "--storage", a.storage, "--storage-dtype", a.storage_dtype)
    nx = harness.neurox_python(a)
    sides = [ours]
    if nx is not None:
        sides.insert(0, harness.neurox_side(nx, harness.BENCHMARKS / "neurox_e2e_ref.py", *common,
                                            "--label-column", a.label_column.upper()))
    ab, runs = harness.alternate(sides, a.rounds, reference="neurox" if nx else None)
    rows = [("wall s", "wall_s"), ("CPU s", "cpu_s"), ("peak RSS MB", "peak_rss_mb"),
            ("other processes, cores", "other_busy_cores", False), ("full probe test accuracy", "test_accuracy", False)]
    ab_table(ab, rows, a, train, test)
    for side in ab.sides:
        stages = sorted({k for r in ab.rounds[side] for k in r if k.startswith("stages_s.")})
        harness.table(["stage", "median s"], [[k.removeprefix("stages_s."), ab.median(side, k)] for k in stages],
                      title=f"{side}: time per stage (median)")
    quality = {side: {"test_accuracy": ab.median(side, "test_accuracy"), "retrained": retrained_summary(runs[side])}
               for side in ab.sides}
    selections = sorted(set().union(*(q["retrained"] for q in quality.values())))
    harness.table(["retrained probe", *ab.sides], [[s, *[quality[side]["retrained"].get(s) for side in ab.sides]]
                                                  for s in selections],
                  title="Quality: test accuracy of the retrained probes (median over rounds and draws)")
    notes = [] if nx else ["NeuroX's venv was not found: our side only, no ratio"]
    harness.report(a, "e2e", QUESTION, ab=ab, quality=quality, notes=notes)
    return 0


def ab_table(ab, rows, a, train: Path, test: Path) -> None:
    from neuro_pipeline.corpus import read_conllu

    n = [len(read_conllu(f)) for f in (train, test)]
    harness.ab_table(ab, rows, title=f"End to end, {a.rounds} round(s): {n[0]} sentences of {a.train.name}, {n[1]} of "
                                     f"{a.test.name}, {a.threads} threads")


if __name__ == "__main__":
    sys.exit(main())

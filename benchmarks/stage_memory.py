"""Stage memory: which stage of an analysis sets a run's peak resident memory, and by how
much above the imports every run makes anyway?

The stages (``neuro_pipeline.stages``: corpus, its check, extraction, the activation check,
the rankings, the report) run one after another in one fresh process, as the default
in-process executor runs them, on a fresh store, after the imports a run makes anyway
(torch, transformers, great-expectations, the Dagster code location ``assets.definitions``);
a thread samples the process's resident memory (``VmRSS``) every 20 ms. Each round is a
new process (one side, repeated: medians and min–max over the rounds). Printed per stage:
its time, its peak and the memory left after it. Quality next to time: the report's full
probe accuracy, so that a run that got cheaper by doing less shows.

The analysis is UD EWT with the defaults (``examples/ewt-upos.yaml``: train on dev,
evaluate on test, every default method), its store in a scratch folder; ``--config``
runs another analysis instead (ITS STORE AND PARQUET FOLDER ARE DELETED FIRST).

Reproduce the docs' numbers (docs/performance.md, "Large corpora": the per-stage memory,
five runs)::

    .venv/bin/python -m benchmarks.stage_memory --rounds 5

``--quick``: the first 100 sentences of each split, one round.
"""

from __future__ import annotations

import shutil
import sys
import threading
import time
from pathlib import Path

from benchmarks import harness

QUESTION = "Which stage of an analysis sets a run's peak resident memory, and by how much above the imports?"
STAGES = ("corpus", "corpus check", "extraction", "activation check", "rankings", "report")


def parse_args(argv=None):
    ap = harness.parser(__doc__, rounds=1)
    ap.add_argument("--config", type=Path, default=None,
                    help="another analysis (its store is deleted first); default: EWT dev/test with the defaults")
    ap.add_argument("--max-sentences", type=int, default=0, help="the default analysis: first N sentences (0: all)")
    return harness.parse(ap, argv, quick={"max_sentences": 100})


def _rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return 0.0


def run_side(args) -> dict:
    """One fresh process: the imports, then every stage, each with its time and peak."""
    peak = [0.0]

    def sample() -> None:
        while True:
            peak[0] = max(peak[0], _rss_mb())
            time.sleep(0.02)

    threading.Thread(target=sample, daemon=True).start()
    import great_expectations  # noqa: F401  (what a run imports anyway)
    import transformers  # noqa: F401

    import assets.definitions  # noqa: F401
    from neuro_pipeline import stages as st
    from neuro_pipeline.config import load_config
    from neuro_pipeline.store import Store

    cfg = load_config(args.config)
    if cfg.parquet_dir is not None:
        shutil.rmtree(cfg.parquet_dir, ignore_errors=True)
    cfg.store_path.unlink(missing_ok=True)
    store = Store(cfg.store_path)
    result: dict = {"ok": True, "imports_mb": _rss_mb(), "stages": {}}
    calls = dict(zip(STAGES, (st.materialize_corpus, st.check_corpus, st.materialize_activations,
                              st.check_activations, st.materialize_rankings, st.materialize_report)))
    for name, stage in calls.items():
        peak[0] = _rss_mb()
        start = time.perf_counter()
        out = stage(cfg, store)
        time.sleep(0.05)  # one more sample
        result["stages"][name] = {"seconds": time.perf_counter() - start, "peak_mb": peak[0], "after_mb": _rss_mb()}
        if name == "report":
            result["report_accuracy"] = float(out.accuracy)
    return result


def default_config(args, folder: Path) -> Path:
    import yaml

    train = harness.first_sentences(harness.ewt_file(args, "dev"), args.max_sentences, folder / "dev.conllu")
    test = harness.first_sentences(harness.ewt_file(args, "test"), args.max_sentences, folder / "test.conllu")
    raw = {"name": "ewt-upos", "store": str(folder / "pipeline.duckdb"), "reports": str(folder / "reports"),
           "model": {"threads": args.threads, **({} if args.model == "embedded" else {"path": args.model})},
           "corpus": {"format": "conllu", "train": str(train), "test": str(test), "label_column": "upos"},
           "extraction": {"aggregation": "last"}}
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.side == "run":
        harness.side_result(run_side(args))
        return 0
    folder, cleanup = harness.workdir("stage-memory")
    try:
        config = args.config.resolve() if args.config else default_config(args, folder)
        ab, _ = harness.alternate([harness.ours_side("stage_memory", "--config", config, name="run", side="run")],
                                  args.rounds)

        def cell(key):
            sp = ab.spread("run", key)
            if sp is None:
                return None
            return harness.fmt(sp["median"]) if sp["n"] == 1 else \
                f"{harness.fmt(sp['median'])} [{harness.fmt(sp['min'])}–{harness.fmt(sp['max'])}]"

        rows = [["imports", None, cell("imports_mb"), cell("imports_mb")]]
        rows += [[name, cell(f"stages.{name}.seconds"), cell(f"stages.{name}.peak_mb"), cell(f"stages.{name}.after_mb")]
                 for name in STAGES]
        harness.table(["stage", "s", "peak MB", "after MB"], rows,
                      title=f"Resident memory per stage, one process ({args.rounds} round(s): median [min–max]); "
                            f"whole process peak {cell('peak_rss_mb')} MB")
        quality = {"report_accuracy": ab.median("run", "report_accuracy")}
        harness.quality_table(quality)
        harness.report(args, "stage_memory", QUESTION, ab=ab, quality=quality)
        return 0
    finally:
        cleanup()


if __name__ == "__main__":
    sys.exit(main())

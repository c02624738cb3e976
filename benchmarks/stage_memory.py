"""Benchmark: resident memory of each stage of an analysis, in one process.

Start here: the stages of ``pipeline.yaml`` (corpus, its check, extraction, the activation
check, the rankings, the report) run one after another in this process, as the default
in-process executor runs them, on a fresh store; a thread samples the process's resident
memory (``VmRSS``) every 20 ms and the script prints each stage's time, its peak and the
memory left after it, after the imports a run makes anyway (torch, transformers, Dagster,
great-expectations). It answers "which stage sets a run's peak, and by how much above the
imports".

    .venv/bin/python -m benchmarks.stage_memory --config pipeline.yaml

The configuration's store and Parquet folder are deleted first. The last stdout line is one
JSON object.
"""

from __future__ import annotations

import argparse
import json
import shutil
import threading
import time


def _rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return 0.0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True)
    args = ap.parse_args(argv)
    peak = [0.0]

    def sample() -> None:
        while True:
            peak[0] = max(peak[0], _rss_mb())
            time.sleep(0.02)

    threading.Thread(target=sample, daemon=True).start()
    import great_expectations  # noqa: F401  (what a run imports anyway)
    import transformers  # noqa: F401

    import assets.definitions  # noqa: F401
    from neuro_pipeline import pipeline as npl
    from neuro_pipeline.config import load_config
    from neuro_pipeline.store import Store

    cfg = load_config(args.config)
    if cfg.parquet_dir is not None:
        shutil.rmtree(cfg.parquet_dir, ignore_errors=True)
    cfg.store_path.unlink(missing_ok=True)
    store = Store(cfg.store_path)
    result = {"imports_mb": round(_rss_mb()), "stages": []}
    print(f"after the imports: {result['imports_mb']} MB")
    stages = [("corpus", npl.materialize_corpus), ("corpus check", npl.check_corpus),
              ("extraction", npl.materialize_activations), ("activation check", npl.check_activations),
              ("rankings", npl.materialize_rankings), ("report", npl.materialize_report)]
    for name, stage in stages:
        peak[0] = _rss_mb()
        start = time.perf_counter()
        stage(cfg, store)
        time.sleep(0.05)  # one more sample
        row = {"stage": name, "seconds": round(time.perf_counter() - start, 2), "peak_mb": round(peak[0]),
               "after_mb": round(_rss_mb())}
        result["stages"].append(row)
        print(f"{name:<17} {row['seconds']:6.1f} s   peak {row['peak_mb']:5d} MB   after {row['after_mb']:5d} MB")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

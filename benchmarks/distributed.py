"""Wall time of one analysis on 1 against 2 Celery workers (the distributed deployment).

Start here: the script starts a PostgreSQL and a Redis server on 127.0.0.1 (as
``tests/pipeline/test_distributed.py`` does), then for each repetition and each worker count,
alternately (A B A B), starts that many ``neuro-pipeline worker`` processes and times
``neuro-pipeline run --all`` on a fresh store: MiniLM (or ``--model``) on the first
``--train-sentences`` / ``--test-sentences`` sentences of the CoNLL-U files, extraction in
shards of ``--shard-sentences``, activations as Parquet, every default stage and check.
The Dagster instance (Postgres) is shared by the runs; ``--all`` makes each run do
everything.

    .venv/bin/python -m benchmarks.distributed --train ../shared/data/ud-en-ewt/en_ewt-ud-dev.conllu \\
        --test ../shared/data/ud-en-ewt/en_ewt-ud-test.conllu --workers 1,2 --reps 2

Prints one line per run and, last, one JSON object: the runs, the median wall time per
worker count and their ratio (1 worker / N workers), and the extraction shards' span.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.pipeline.services import start_postgres, start_redis, start_workers, stop_group  # noqa: E402

CLI = [sys.executable, "-m", "neuro_pipeline.cli"]
_SHARD = re.compile(r'(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d).*token_activations\.extract_shard\[(\w+)\] - '
                    r'(STEP_START|STEP_SUCCESS)')


def first_sentences(src: Path, n: int, dst: Path) -> Path:
    """The first ``n`` sentences of a CoNLL-U file (blocks separated by blank lines)."""
    blocks = [b for b in src.read_text(encoding="utf-8").split("\n\n") if b.strip()]
    dst.write_text("\n\n".join(blocks[:n]) + "\n\n", encoding="utf-8")
    return dst


def shard_span(log_text: str) -> float | None:
    """Seconds from the first shard's start to the last shard's end (Dagster's log lines,
    to the second)."""
    import datetime as dt

    stamps = [(dt.datetime.fromisoformat(m.group(1)), m.group(3)) for m in _SHARD.finditer(log_text)]
    starts = [t for t, kind in stamps if kind == "STEP_START"]
    ends = [t for t, kind in stamps if kind == "STEP_SUCCESS"]
    return (max(ends) - min(starts)).total_seconds() if starts and ends else None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", required=True)
    ap.add_argument("--test", required=True)
    ap.add_argument("--model", default=None, help="a model folder (default: the embedded MiniLM)")
    ap.add_argument("--train-sentences", type=int, default=800)
    ap.add_argument("--test-sentences", type=int, default=400)
    ap.add_argument("--shard-sentences", type=int, default=200)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--reps", type=int, default=2)
    args = ap.parse_args(argv)
    counts = [int(x) for x in args.workers.split(",")]

    work = Path(tempfile.mkdtemp(prefix="neuro-dist-bench-"))
    pg, stop_pg = start_postgres()
    redis, stop_redis = start_redis()
    env = {**os.environ, "NEURO_PIPELINE_POSTGRES_URL": pg.replace("postgresql://", "postgresql+psycopg2://"),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    runs = []
    try:
        train = first_sentences(Path(args.train), args.train_sentences, work / "train.conllu")
        test = first_sentences(Path(args.test), args.test_sentences, work / "test.conllu")
        for rep in range(args.reps):
            for n in counts:
                folder = work / f"rep{rep}-w{n}"
                folder.mkdir()
                cfg = {"name": "bench", "store": str(folder / "store" / "pipeline.duckdb"),
                       "reports": str(folder / "reports"),
                       "corpus": {"format": "conllu", "train": str(train), "test": str(test)},
                       "extraction": {"storage": "parquet"},
                       "execution": {"executor": "celery", "shard_sentences": args.shard_sentences,
                                     "broker": f"{redis}/0", "backend": f"{redis}/1",
                                     "instance": str(ROOT / "deploy" / "celery" / "dagster.yaml")}}
                if args.model:
                    cfg["model"] = {"path": args.model}
                (folder / "pipeline.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
                # One instance for every run (its home is shared): each run is --all.
                home = work / "home"
                workers = start_workers(folder, [f"w{i}" for i in range(n)], env, home=home)
                try:
                    start = time.perf_counter()
                    proc = subprocess.run([*CLI, "run", "--all", "-c", "pipeline.yaml", "--home", str(home)],
                                          cwd=folder, env=env, capture_output=True, text=True, timeout=3600)
                    wall = time.perf_counter() - start
                finally:
                    for worker in workers:
                        stop_group(worker)
                if proc.returncode != 0:
                    print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
                    raise SystemExit(f"run with {n} worker(s) failed")
                # The steps' events are logged where they ran: in the workers.
                span = shard_span("\n".join(p.read_text(errors="replace") for p in folder.glob("worker-*.log")))
                runs.append({"rep": rep, "workers": n, "wall_s": round(wall, 1), "shards_span_s": span})
                print(f"rep {rep}: {n} worker(s): {wall:.1f} s (extraction shards {span} s)", flush=True)
    finally:
        stop_redis()
        stop_pg()
        shutil.rmtree(work, ignore_errors=True)
    medians = {n: statistics.median(r["wall_s"] for r in runs if r["workers"] == n) for n in counts}
    spans = {n: statistics.median([r["shards_span_s"] for r in runs if r["workers"] == n and r["shards_span_s"]]
                                  or [float("nan")]) for n in counts}
    print(json.dumps({"runs": runs, "median_wall_s": medians, "median_shards_span_s": spans,
                      "ratio_first_over_each": {n: round(medians[counts[0]] / medians[n], 3) for n in counts},
                      "cpus": os.cpu_count()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Distributed: how long does one analysis take on 1 against 2 Celery workers (the
distributed deployment)?

A PostgreSQL and a Redis server start on 127.0.0.1 (as ``tests/pipeline/test_distributed.py``
starts them, with its helpers); then, alternately for each worker count (A B A B …), that
many ``neuro-pipeline worker`` processes start and ``neuro-pipeline run --all`` runs on a
fresh store: MiniLM (or ``--model``) on the first ``--train-sentences`` /
``--test-sentences`` sentences of EWT dev and test, extraction in shards of
``--shard-sentences``, activations as Parquet, every default stage and check (``--minimal``:
the optional stages off and one method). The Dagster instance (Postgres) is shared by the
runs; ``--all`` makes each run do everything. The reference is the first worker count:
ratios are its median wall time over each count's. Wall time and peak RSS are those of the
``neuro-pipeline run`` process (the steps run in the workers); the extraction shards' span
comes from the workers' logs. Quality next to time: the report's full-probe accuracy of
each run, which must not depend on the worker count.

Reproduce the docs' numbers (docs/performance.md, "Several workers")::

    .venv/bin/python -m benchmarks.distributed --workers 1,2 --rounds 2

``--quick``: one worker, one round, 100 training and 400 test sentences (with fewer test
sentences a training tag has no test word and the report's check fails), ``--minimal``.
"""

from __future__ import annotations

import os
import re
import shutil
import sys

import yaml

from benchmarks import harness

QUESTION = "How long does one analysis take on 1 against 2 Celery workers?"
CLI = [sys.executable, "-m", "neuro_pipeline.cli"]
_SHARD = re.compile(r'(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d).*token_activations\.extract_shard\[(\w+)\] - '
                    r'(STEP_START|STEP_SUCCESS)')


def parse_args(argv=None):
    ap = harness.parser(__doc__, rounds=2)
    ap.add_argument("--train-sentences", type=int, default=800)
    ap.add_argument("--test-sentences", type=int, default=400)
    ap.add_argument("--shard-sentences", type=int, default=200)
    ap.add_argument("--workers", default="1,2", help="worker counts, comma list (the first is the reference)")
    ap.add_argument("--minimal", action="store_true", help="the optional stages off and one method")
    return harness.parse(ap, argv, quick={"train_sentences": 100, "workers": "1", "shard_sentences": 50,
                                          "minimal": True})


def shard_span(log_text: str) -> float | None:
    """Seconds from the first shard's start to the last shard's end (Dagster's log lines,
    to the second)."""
    import datetime as dt

    stamps = [(dt.datetime.fromisoformat(m.group(1)), m.group(3)) for m in _SHARD.finditer(log_text)]
    starts = [t for t, kind in stamps if kind == "STEP_START"]
    ends = [t for t, kind in stamps if kind == "STEP_SUCCESS"]
    return (max(ends) - min(starts)).total_seconds() if starts and ends else None


def main(argv=None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(harness.ROOT))
    from tests.pipeline.services import (
        start_postgres,
        start_redis,
        start_workers,
        stop_group,
    )

    counts = harness.csv(args.workers, int)
    work, cleanup = harness.workdir("distributed")
    pg, stop_pg = start_postgres()
    redis, stop_redis = start_redis()
    env = {**os.environ, "NEURO_PIPELINE_POSTGRES_URL": pg.replace("postgresql://", "postgresql+psycopg2://"),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    spans: dict[str, list] = {}
    try:
        train = harness.first_sentences(harness.ewt_file(args, "dev"), args.train_sentences, work / "train.conllu")
        test = harness.first_sentences(harness.ewt_file(args, "test"), args.test_sentences, work / "test.conllu")
        home = work / "home"  # one instance for every run: each run is --all
        sides = []
        for n in counts:
            folder = work / f"w{n}"
            cfg = {"name": "bench", "store": str(folder / "store" / "pipeline.duckdb"),
                   "reports": str(folder / "reports"),
                   "model": {"threads": args.threads, **({} if args.model == "embedded" else {"path": args.model})},
                   "corpus": {"format": "conllu", "train": str(train), "test": str(test)},
                   "extraction": {"storage": "parquet"},
                   "execution": {"executor": "celery", "shard_sentences": args.shard_sentences,
                                 "broker": f"{redis}/0", "backend": f"{redis}/1",
                                 "instance": str(harness.ROOT / "deploy" / "celery" / "dagster.yaml")}}
            if args.minimal:
                cfg["ranking"] = {"methods": [{"method": "linear_probe"}]}
                cfg["stages"] = {"method_agreement": False, "neuron_redundancy": False, "probe_selectivity": False,
                                 "probe_ablation": False, "class_neurons": False}
            workers: list = []

            def before(folder=folder, cfg=cfg, n=n, workers=workers):
                shutil.rmtree(folder, ignore_errors=True)
                folder.mkdir(parents=True)
                (folder / "pipeline.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
                workers[:] = start_workers(folder, [f"w{i}" for i in range(n)], env, home=home)

            def after(folder=folder, n=n, workers=workers):
                for worker in workers:
                    stop_group(worker)
                # The steps' events are logged where they ran: in the workers.
                spans.setdefault(f"{n} worker(s)", []).append(
                    shard_span("\n".join(p.read_text(errors="replace") for p in folder.glob("worker-*.log"))))

            side = harness.Side(f"{n} worker(s)", [*CLI, "run", "--all", "-c", "pipeline.yaml", "--home", str(home)],
                                env=env, cwd=folder, before=before, after=after)
            sides.append(side)
        # The CLI prints no JSON: the run's accuracy is read from its store after each run.
        accuracies: dict[str, list] = {}
        for side in sides:
            inner_after = side.after

            def after_with_accuracy(side=side, inner_after=inner_after):
                inner_after()
                from neuro_pipeline.store import Store

                store = Store(side.cwd / "store" / "pipeline.duckdb")
                acc = store.query("SELECT value FROM metrics WHERE scope = 'overall' AND metric = 'accuracy' "
                                  "AND selection = 'all'")["value"]
                accuracies.setdefault(side.name, []).append(float(acc[0]) if len(acc) else None)

            side.after = after_with_accuracy
        ab, _ = harness.alternate(sides, args.rounds, reference=sides[0].name, timeout=3600, require_json=False)
        for side in sides:
            for i, r in enumerate(ab.rounds[side.name]):
                if spans[side.name][i] is not None:
                    r["shards_span_s"] = spans[side.name][i]
                if accuracies[side.name][i] is not None:
                    r["test_accuracy"] = accuracies[side.name][i]
        harness.ab_table(ab, [("wall s", "wall_s"), ("extraction shards' span s", "shards_span_s"),
                              ("peak RSS MB (the run command)", "peak_rss_mb"),
                              ("other processes (the workers too), cores", "other_busy_cores", False),
                              ("full probe test accuracy", "test_accuracy", False)],
                         title=f"{args.train_sentences} + {args.test_sentences} sentences, shards of "
                               f"{args.shard_sentences}, {os.cpu_count()} CPUs, {args.rounds} round(s)")
        quality = {name: {"test_accuracy": harness.median([a for a in accs if a is not None])}
                   for name, accs in accuracies.items()}
        harness.report(args, "distributed", QUESTION, ab=ab, quality=quality)
        return 0
    finally:
        stop_redis()
        stop_pg()
        cleanup()


if __name__ == "__main__":
    sys.exit(main())

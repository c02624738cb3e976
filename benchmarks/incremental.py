"""Incremental reruns: what does a rerun cost when nothing changed, and after 1% of the
corpus was edited, against the full run?

Three ``neuro-pipeline run`` commands in one fresh project folder, each a fresh process
measured from outside: the full run (the reference), a run with nothing changed, and a run
after editing every ``--edit-every``-th sentence (its final punctuation becomes "!", so
each edited sentence is new content, a new sentence hash). The corpus is the embedded
default's generator (``--sentences`` demo sentences, seed 0) written as CoNLL-U, analysed
with the embedded model and the default settings. Each round is a new project folder.
From the Dagster instance: what the extraction stage did (sentences extracted, seconds,
the model load and the import of transformers apart), with ratios against the full run.

The two sides' work differs on purpose: that is the question. Quality next to time: the
sentences the edit run extracted against the sentences edited (equal when only the edit is
re-extracted), and that the no-change run materialized nothing.

Reproduce the docs' numbers (docs/performance.md, "Incremental runs")::

    .venv/bin/python -m benchmarks.incremental --rounds 1

``--quick``: 200 sentences, every 10th edited, the optional stages off and one method.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from benchmarks import harness

QUESTION = "What does a rerun cost when nothing changed, and after 1% of the corpus was edited, against the full run?"


def parse_args(argv=None):
    ap = harness.parser(__doc__, rounds=1, ewt=False)
    ap.add_argument("--sentences", type=int, default=4000, help="demo sentences (seed 0)")
    ap.add_argument("--edit-every", type=int, default=100, help="edit every N-th sentence (100 = 1%%)")
    ap.add_argument("--minimal", action="store_true",
                    help="the optional stages off and one method (linear_probe): a cheaper full run")
    ap.add_argument("--workdir", type=Path, default=None, help="keep the project folders here")
    return harness.parse(ap, argv, quick={"sentences": 200, "edit_every": 10, "minimal": True})


def write_demo_conllu(path: Path, n: int, seed: int = 0) -> int:
    from neuro_pipeline.corpus.demo import generate_demo_corpus

    blocks = []
    for i, s in enumerate(generate_demo_corpus(n, seed=seed)):
        lines = [f"# sent_id = demo-{i}"]
        lines += [f"{j}\t{w}\t_\t{t}\t_\t_\t_\t_\t_\t_" for j, (w, t) in enumerate(zip(s.tokens, s.labels), start=1)]
        blocks.append("\n".join(lines) + "\n")
    path.write_text("\n".join(blocks) + "\n", encoding="utf-8")
    return len(blocks)


def edit(path: Path, every: int) -> int:
    """Edit every ``every``-th sentence: its final punctuation becomes '!' (or a '!' is
    appended when it has none), so each edited sentence is new content."""
    blocks = path.read_text(encoding="utf-8").split("\n\n")
    edited = 0
    for i, block in enumerate(blocks):
        lines = block.split("\n")
        last = lines[-1].split("\t")
        if i % every != 0 or len(last) != 10:
            continue
        if last[3] == "PUNCT" and last[1] != "!":
            last[1] = "!"
            lines[-1] = "\t".join(last)
        else:
            lines.append("\t".join([str(int(last[0]) + 1), "!", "_", "PUNCT"] + ["_"] * 6))
        blocks[i] = "\n".join(lines)
        edited += 1
    path.write_text("\n\n".join(blocks), encoding="utf-8")
    return edited


def extraction_event(home: Path) -> dict:
    """The last materialization of token_activations: its run and what it extracted."""
    import dagster as dg

    os.environ["DAGSTER_HOME"] = str(home)
    instance = dg.DagsterInstance.get()
    event = instance.get_latest_materialization_event(dg.AssetKey("token_activations"))
    md = event.asset_materialization.metadata
    return {"run_id": event.run_id, **{k: md[k].value for k in ("n_extracted", "n_reused", "extraction_seconds",
                                                                  "model_load_seconds", "import_seconds")}}


def config_text(args) -> str:
    text = "name: incremental\ncorpus: {format: conllu, train: corpus.conllu}\n"
    if args.model != "embedded":
        text += f"model: {{path: {harness.model_dir(args)}, threads: {args.threads}}}\n"
    else:
        text += f"model: {{threads: {args.threads}}}\n"
    if args.minimal:
        text += ("ranking: {methods: [{method: linear_probe}]}\n"
                 "stages: {method_agreement: false, neuron_redundancy: false, probe_selectivity: false, "
                 "probe_ablation: false, class_neurons: false}\n")
    return text


def one_round(args, folder: Path) -> list[dict]:
    folder.mkdir(parents=True)
    n = write_demo_conllu(folder / "corpus.conllu", args.sentences)
    (folder / "pipeline.yaml").write_text(config_text(args), encoding="utf-8")
    home = folder / ".neuro" / "dagster_home"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    command = [sys.executable, "-m", "neuro_pipeline.cli", "run", "-c", "pipeline.yaml"]

    def run(label: str):
        harness.say(f"{label} ...")
        r = harness.run_measured(command, side=label, env=env, cwd=folder)
        harness.say(f"{label}: {r.wall_s:.1f} s, peak RSS {r.peak_rss_mb:.0f} MB")
        (folder / f"{label}.log").write_text(r.stdout + r.stderr, encoding="utf-8")
        if r.returncode != 0:
            raise harness.BenchError(f"{label}: neuro-pipeline run failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
        return r

    rows = []
    full = run("full run")
    ev_full = extraction_event(home)
    rows.append({"run": "full run", "wall_s": full.wall_s, "peak_rss_mb": full.peak_rss_mb, **ev_full})
    same = run("nothing changed")
    ev_same = extraction_event(home)
    rows.append({"run": "nothing changed", "wall_s": same.wall_s, "peak_rss_mb": same.peak_rss_mb,
                 "up_to_date": "up to date; nothing to materialize" in same.stdout,
                 **({} if ev_same["run_id"] == ev_full["run_id"] else ev_same)})
    edited = edit(folder / "corpus.conllu", args.edit_every)
    after = run("edited")
    rows.append({"run": f"{edited} of {n} sentences edited ({100 * edited / n:.1f}%)", "edited": edited,
                 "wall_s": after.wall_s, "peak_rss_mb": after.peak_rss_mb, **extraction_event(home)})
    return rows


def main(argv=None) -> int:
    args = parse_args(argv)
    work, cleanup = (args.workdir, lambda: None) if args.workdir else harness.workdir("incremental")
    try:
        rounds = [one_round(args, work / f"round{i + 1}") for i in range(args.rounds)]
        labels = [r["run"] for r in rounds[0]]
        numbers = {label: [harness.flatten({k: v for k, v in r[i].items() if k != "run_id"}) for r in rounds]
                   for i, label in enumerate(labels)}
        ab = harness.ABResult(labels[0], numbers, [label for _ in rounds for label in labels], speedup=False)
        for label in labels:
            for r in ab.rounds[label]:
                if "extraction_seconds" in r:
                    r["work_s"] = r["extraction_seconds"] - r["model_load_seconds"]
                    r["without_import_s"] = r["extraction_seconds"] - r["import_seconds"]

        def pct(label, key):
            if label == ab.reference:
                return "100%" if ab.median(label, key) is not None else None
            ratio = ab.ratio(label, key)
            return None if ratio is None else f"{100 * ratio:.1f}%"

        rows = []
        for label in labels:
            rows.append([label, ab.median(label, "wall_s"), pct(label, "wall_s"),
                         int(ab.median(label, "n_extracted")) if "n_extracted" in ab.rounds[label][0] else "nothing",
                         ab.median(label, "extraction_seconds"), pct(label, "extraction_seconds"),
                         ab.median(label, "without_import_s"), pct(label, "without_import_s"),
                         ab.median(label, "work_s"), pct(label, "work_s")])
        harness.table(["run", "wall s", "vs full", "extracted", "stage s", "vs full", "-imp s", "vs full", "work s",
                       "vs full"], rows,
                      title=f"Incremental reruns of {args.sentences} demo sentences (medians of {args.rounds} "
                            f"round(s){'; minimal analysis' if args.minimal else ''})")
        print("stage s: the whole extraction stage; -imp s: the same without importing transformers into the run's "
              "fresh process; work s: forward passes, aggregation and writes only (no model hashing or loading).\n")
        edited = rounds[0][2]
        quality = {"edited_sentences": edited["edited"], "extracted_after_edit": edited["n_extracted"],
                   "only_edits_reextracted": edited["n_extracted"] == edited["edited"],
                   "no_change_run_materialized_nothing": bool(rounds[0][1].get("up_to_date"))
                   and "n_extracted" not in rounds[0][1]}
        harness.quality_table(quality)
        harness.report(args, "incremental", QUESTION, ab=ab, quality=quality, results=rounds)
        return 0
    finally:
        cleanup()


if __name__ == "__main__":
    sys.exit(main())

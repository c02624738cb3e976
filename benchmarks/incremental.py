"""Cost of incremental reruns on the embedded default: a full run, a run with nothing
changed, and a run after editing 1% of the corpus, all through ``neuro-pipeline run`` in one
fresh project folder, measured in this one run.

The embedded default generates its corpus; to edit it, this script writes the same 4,000
demo sentences (seed 0) to a CoNLL-U file and analyses that file with the embedded model
and the default settings. The edit changes the final punctuation of every 100th sentence
ending in "." to "!", so each edited sentence is new content (a new sentence hash).

Prints wall time of each command and, from the Dagster instance, what the extraction stage
did (sentences extracted, seconds), with ratios against the full run.

    python benchmarks/incremental.py [--workdir /tmp/incremental] [--edit-every 100]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def write_demo_conllu(path: Path, n: int = 4000, seed: int = 0) -> int:
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
    import dagster as dg

    os.environ["DAGSTER_HOME"] = str(home)
    instance = dg.DagsterInstance.get()
    event = instance.get_latest_materialization_event(dg.AssetKey("token_activations"))
    md = event.asset_materialization.metadata
    return {"run_id": event.run_id, **{k: md[k].value for k in ("n_extracted", "n_reused", "extraction_seconds",
                                                                  "model_load_seconds", "import_seconds")}}


def run(workdir: Path, label: str) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "neuro_pipeline.cli", "run", "-c", "pipeline.yaml"], cwd=workdir,
                          capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{label}: neuro-pipeline run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    (workdir / f"{label}.log").write_text(proc.stdout, encoding="utf-8")
    return seconds, proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default="/tmp/neuro-incremental")
    parser.add_argument("--edit-every", type=int, default=100, help="edit every N-th sentence (100 = 1%%)")
    args = parser.parse_args()
    workdir = Path(args.workdir)
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    n = write_demo_conllu(workdir / "corpus.conllu")
    (workdir / "pipeline.yaml").write_text("name: incremental\ncorpus: {format: conllu, train: corpus.conllu}\n",
                                           encoding="utf-8")
    home = workdir / ".neuro" / "dagster_home"
    rows = []
    full_s, _ = run(workdir, "full")
    full = extraction_event(home)
    rows.append(("full run", full_s, full))
    same_s, out = run(workdir, "no_change")
    same = extraction_event(home)
    assert "up to date; nothing to materialize" in out, out[-2000:]
    rows.append(("nothing changed", same_s, None if same["run_id"] == full["run_id"] else same))
    edited = edit(workdir / "corpus.conllu", args.edit_every)
    edit_s, _ = run(workdir, "edit")
    after = extraction_event(home)
    rows.append((f"{edited} of {n} sentences edited ({100 * edited / n:.1f}%)", edit_s, after))
    print(f"\nIncremental reruns of the embedded default ({n} demo sentences, MiniLM), {workdir}")
    def work(ev: dict) -> float:
        return ev["extraction_seconds"] - ev["model_load_seconds"]

    def no_import(ev: dict) -> float:
        return ev["extraction_seconds"] - ev["import_seconds"]

    print("{:<34} {:>7} {:>8} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}".format(
        "run", "wall s", "vs full", "extracted", "stage s", "vs full", "-imp s", "vs full", "work s", "vs full"))
    for label, wall, ev in rows:
        if ev is None:
            print("{:<34} {:>7.1f} {:>7.1%} {:>9}".format(label, wall, wall / full_s, "nothing"))
            continue
        print("{:<34} {:>7.1f} {:>7.1%} {:>9} {:>8.2f} {:>7.1%} {:>8.2f} {:>7.1%} {:>8.2f} {:>7.1%}".format(
            label, wall, wall / full_s, ev["n_extracted"], ev["extraction_seconds"],
            ev["extraction_seconds"] / full["extraction_seconds"], no_import(ev), no_import(ev) / no_import(full),
            work(ev), work(ev) / work(full)))
    print("\nstage s: the whole extraction stage; -imp s: the same without importing transformers into the "
          "run's fresh process; work s: forward passes, aggregation and writes only (no model hashing or loading).")


if __name__ == "__main__":
    main()

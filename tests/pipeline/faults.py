"""Shared pieces of the fault tests that go through the user's commands: a tiny analysis that
``neuro-pipeline run`` runs in a few seconds, one uninterrupted reference run of it (shared by
every fault test of the session), and the comparison of a recovered store with that reference
through the store-comparison script (``python -m neuro_pipeline.store.compare``).

The analysis extracts one sentence per batch: a resumed extraction then computes every
sentence exactly as the uninterrupted run did, so the stores compare exactly. With larger
batches a resume batches the remaining sentences differently and the activations agree to
float32 rounding only (``test_faults.py`` checks that case with a tolerance).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.pipeline.conftest import write_analysis

CLI = [sys.executable, "-m", "neuro_pipeline.cli"]

#: Columns that name where files are rather than what they hold: the corpus files and the report's
#: paths (under each analysis folder) and the Parquet files (a resumed extraction groups the
#: sentences into other files; the activations themselves are compared by content).
PLACE_COLUMNS = ("tokens.source", "reports.html_path", "reports.markdown_path", "activation_sentences.file",
                 "activation_files.file", "activation_files.n_rows")


#: The stages of the fault tests' analysis: the corpus, the extraction, two rankings, the report
#: and the drift. The other evaluation stages write their tables as the report does (one
#: transaction per stage); left out, every run of a fault test is about a third shorter.
FAULT_STAGES = ("stages: {method_agreement: false, neuron_redundancy: false, probe_selectivity: false, "
                "probe_ablation: false, class_neurons: false}\nranking:\n  methods: [linear_probe, probeless]\n")


def write_fault_analysis(folder: Path, model_dir: Path, *, extra: str = "") -> Path:
    """The tiny analysis of the fault tests in ``folder`` (its pipeline.yaml): the tests'
    usual one with one sentence per batch and the stages of :data:`FAULT_STAGES`."""
    return write_analysis(folder, model_dir, batch_size=1, extra=FAULT_STAGES + extra)


def run_cli(config: Path, *args: str, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """``neuro-pipeline run -c config`` (or another command) to its end, in its own process group."""
    return subprocess.run([*CLI, *(args or ("run",)), "-c", str(config)], cwd=config.parent, capture_output=True,
                          text=True, timeout=timeout, env=env, start_new_session=True)


def start_cli(config: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    """The command started in its own process group (as a shell starts a job), output to a file
    ``<folder>/cli-<n>.out`` that :func:`wait_for` reads."""
    n = len(list(config.parent.glob("cli-*.out")))
    out = open(config.parent / f"cli-{n}.out", "w", encoding="utf-8")
    proc = subprocess.Popen([*CLI, *(args or ("run",)), "-c", str(config)], cwd=config.parent, stdout=out,
                            stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True)
    proc.output_path = Path(out.name)  # type: ignore[attr-defined]
    out.close()
    return proc




def wait_for(predicate, what: str, timeout: float = 300, proc: subprocess.Popen | None = None) -> None:
    """Poll ``predicate()`` every 20 ms until it is true; fail naming ``what`` after ``timeout`` s
    or when ``proc`` ends first."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the command ended (exit {proc.returncode}) before {what}:\n"
                                 + Path(proc.output_path).read_text(encoding="utf-8")[-3000:])
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout:.0f} s")
        time.sleep(0.02)








def assert_equals_reference(store: Path, reference: Path) -> None:
    """The store-comparison script on the two stores: identical, except where files are."""
    proc = subprocess.run([sys.executable, "-m", "neuro_pipeline.store.compare", str(reference), str(store),
                           *[a for c in PLACE_COLUMNS for a in ("--skip", c)]],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def sigkill_leftovers(pgid: int) -> None:
    """Kill what is left of a process group (a test that failed half-way)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass

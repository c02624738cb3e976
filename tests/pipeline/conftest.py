"""Fixtures for pipeline tests: a tiny random BERT, a few sentences of CoNLL-U, a config."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.library.tiny_models import write_tiny_bert
from tests.pipeline.dagster_ui import free_port

LEXICON = {
    "DET": ["the", "a"], "NOUN": ["cat", "dog", "mat"], "ADJ": ["big", "small", "red", "blue"],
    "VERB": ["sat", "run", "walk"], "ADP": ["on"], "PRON": ["he", "she", "it"], "AUX": ["is", "was"],
    "CCONJ": ["and"], "PUNCT": ["."],
}
TEMPLATES = [
    ["DET", "ADJ", "NOUN", "VERB", "ADP", "DET", "NOUN", "PUNCT"],
    ["PRON", "AUX", "ADJ", "PUNCT"],
    ["DET", "NOUN", "CCONJ", "DET", "NOUN", "VERB", "PUNCT"],
    ["PRON", "VERB", "ADP", "DET", "ADJ", "NOUN", "PUNCT"],
]


def write_conllu(path: Path, n_sentences: int, seed: int) -> Path:
    """A small CoNLL-U file built from the tiny model's vocabulary, with UPOS labels."""
    rng = random.Random(seed)
    blocks = []
    for i in range(n_sentences):
        tags = TEMPLATES[i % len(TEMPLATES)]
        words = [rng.choice(LEXICON[t]) for t in tags]
        lines = [f"# sent_id = s{seed}-{i}", f"# text = {' '.join(words)}"]
        for j, (w, t) in enumerate(zip(words, tags), start=1):
            lines.append(f"{j}\t{w}\t{w}\t{t}\t_\t_\t{max(j - 1, 0)}\tdep\t_\t_")
        blocks.append("\n".join(lines) + "\n")
    path.write_text("\n".join(blocks) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return write_tiny_bert(tmp_path_factory.mktemp("tiny-bert") / "model", seed=0)


def write_analysis(folder: Path, model_dir: Path, *, batch_size: int = 4, extra: str = "") -> Path:
    """Train/test CoNLL-U files and a pipeline.yaml pointing at ``model_dir`` in ``folder``;
    the pipeline.yaml's path."""
    folder.mkdir(parents=True, exist_ok=True)
    write_conllu(folder / "train.conllu", 24, seed=1)
    write_conllu(folder / "test.conllu", 8, seed=2)
    config = folder / "pipeline.yaml"
    config.write_text(textwrap.dedent(f"""\
        name: tiny
        store: store/pipeline.duckdb
        reports: reports
        model:
          path: {model_dir}
          batch_size: {batch_size}
        corpus:
          format: conllu
          train: train.conllu
          test: test.conllu
          label_column: upos
        evaluation:
          fractions: [0.05, 0.25]
          n_random: 2
        """) + extra, encoding="utf-8")
    return config


@pytest.fixture
def analysis_dir(tmp_path: Path, tiny_model_dir: Path) -> Path:
    """A folder with train/test CoNLL-U files and a pipeline.yaml pointing at the tiny BERT."""
    write_analysis(tmp_path, tiny_model_dir)
    return tmp_path


@pytest.fixture(scope="session")
def fault_reference(tmp_path_factory, tiny_model_dir: Path) -> Path:
    """The store of one uninterrupted ``neuro-pipeline run`` of the fault tests' analysis
    (``tests/pipeline/faults.py``), shared by every fault test of the session."""
    from tests.pipeline.faults import run_cli, write_fault_analysis

    config = write_fault_analysis(tmp_path_factory.mktemp("reference"), tiny_model_dir)
    proc = run_cli(config)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return config.parent / "store" / "pipeline.duckdb"


@pytest.fixture
def ui_process():
    """Starts ``neuro-pipeline ui`` lazily (``start(argv, cwd) -> port``) and stops its process group."""
    procs: list[subprocess.Popen] = []

    def start(args: list[str], cwd: Path) -> int:
        port = free_port()
        procs.append(subprocess.Popen([sys.executable, "-m", "neuro_pipeline.cli", "ui", *args, "--port", str(port)], cwd=cwd, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, start_new_session=True))
        return port

    yield start
    for proc in procs:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail("neuro-pipeline ui did not stop on SIGTERM within 30 s")
        _empty_group(proc.pid)


def _empty_group(pgid: int, timeout: float = 30) -> None:
    """Wait until no process of the group is left. ``dagster dev`` can start a code server
    while it shuts down; that one missed the first SIGTERM, so each round sends another."""
    deadline = time.time() + timeout
    while True:
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            return
        if time.time() > deadline:
            os.killpg(pgid, signal.SIGKILL)
            pytest.fail(f"processes of the UI's group {pgid} were still running {timeout:.0f} s after SIGTERM")
        time.sleep(0.5)

"""End to end through the command line: `neuro-pipeline run` then `neuro-pipeline ui`,
with the real Dagster webserver answering GraphQL on 127.0.0.1."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.pipeline.conftest import write_analysis
from tests.pipeline.dagster_ui import free_port, graphql

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "neuro_pipeline.cli"]






def _listen_addresses(port: int) -> set[str]:
    """IPv4 addresses listening on ``port``, read from /proc/net/tcp."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        addr, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:
            found.add(socket.inet_ntoa(bytes.fromhex(addr)[::-1]))
    return found


@pytest.fixture(scope="module")
def ran(tmp_path_factory, tiny_model_dir):
    """`neuro-pipeline run` on the tiny analysis, with a project-local Dagster home: one run
    shared by the tests of this module (each reads it; a second run and an import add nothing
    the others check)."""
    analysis_dir = tmp_path_factory.mktemp("ran")
    write_analysis(analysis_dir, tiny_model_dir)
    home = analysis_dir / "home"
    proc = subprocess.run([*CLI, "run", "-c", str(analysis_dir / "pipeline.yaml"), "--home", str(home)],
                          cwd=analysis_dir, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return analysis_dir, home, proc.stdout


def test_run_prints_summary(ran):
    analysis_dir, home, out = ran
    assert "full-probe accuracy" in out
    assert "top neurons per class" in out
    assert str(analysis_dir / "store" / "pipeline.duckdb") in out
    assert (analysis_dir / "reports" / "tiny").is_dir()
    assert "neuro-pipeline ui" in out
    assert (home / "dagster_home" / "dagster.yaml").is_file()
    # Progress bars of the long steps (plain lines when stdout is not a terminal).
    assert re.search(r"extraction +\[#+\] 100\.0% (\d+)/\1 sentences", out), out
    assert re.search(r"evaluation +\[#+\] 100\.0% (\d+)/\1 probes", out), out


def test_a_second_run_with_nothing_changed_materializes_nothing(ran):
    analysis_dir, home, _ = ran
    proc = subprocess.run([*CLI, "run", "-c", str(analysis_dir / "pipeline.yaml"), "--home", str(home)],
                          cwd=analysis_dir, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "the analysis is up to date; nothing to materialize" in proc.stdout
    assert "0 run(s)" in proc.stdout and "STEP_SUCCESS" not in proc.stdout
    assert "full-probe accuracy" in proc.stdout              # the stored results are still summarised


def test_progress_bar_redraws_on_a_terminal_and_prints_quarters_otherwise():
    import io

    from neuro_pipeline.cli import ProgressBar

    class Tty(io.StringIO):
        def isatty(self):
            return True

    tty = Tty()
    bar = ProgressBar(tty)
    for done in range(5):
        bar.update("extraction", done, 4, "batches")
    bar.update("evaluation", 1, 2, "probes")
    bar.close()
    drawn = tty.getvalue()
    assert drawn.count("\n") == 2 and drawn.endswith("\n")             # one bar per step, redrawn with \r
    first, second = drawn.split("\n")[:2]
    assert first.count("\r") >= 2 and re.fullmatch(r"extraction +\[\S+\] 100\.0% 4/4 batches .*",
                                                    first.rsplit("\r", 1)[-1].strip())
    assert re.search(r"evaluation +\[.+\]  50\.0% 1/2 probes", second.rsplit("\r", 1)[-1])
    log = io.StringIO()
    bar = ProgressBar(log)
    for done in range(101):
        bar.update("evaluation", done, 100, "probes")
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue()
    assert [line.split("%")[0].split()[-1] for line in lines] == ["0.0", "25.0", "50.0", "75.0", "100.0"]
    assert re.match(r"  evaluation +\[#+\] 100\.0% 100/100 probes  ", lines[-1]) and len(lines[-1]) == 100


def test_ui_shows_lineage_checks_and_the_cli_runs(ran):
    analysis_dir, home, _ = ran
    port = free_port()
    env = dict(os.environ)
    ui = subprocess.Popen([*CLI, "ui", "-c", str(analysis_dir / "pipeline.yaml"), "--home", str(home),
                           "--port", str(port)], cwd=analysis_dir, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2)
                break
            except OSError:
                if time.time() > deadline or ui.poll() is not None:
                    pytest.fail("the Dagster UI did not come up within 120 s")
                time.sleep(1)
        nodes = graphql(port, "{ assetNodes { assetKey { path } description opVersion hasAssetChecks "
                               "dependencyKeys { path } } }")["assetNodes"]
        by_name = {n["assetKey"]["path"][-1]: n for n in nodes}
        for stage in ("annotated_corpus", "token_activations", "linear_probe", "probeless", "evaluation_report"):
            assert by_name[stage]["description"] and by_name[stage]["opVersion"] and by_name[stage]["hasAssetChecks"]
        assert by_name["probeless"]["assetKey"]["path"] == ["neuron_rankings", "probeless"]
        assert {"path": ["token_activations"]} in by_name["probeless"]["dependencyKeys"]
        assert {"path": ["neuron_rankings", "probeless"]} in by_name["evaluation_report"]["dependencyKeys"]
        runs = graphql(port, '{ runsOrError { ... on Runs { results { jobName status } } } }')["runsOrError"]["results"]
        assert {"jobName": "analysis_job", "status": "SUCCESS"} in runs
        # The webserver listens on the loopback address only.
        assert _listen_addresses(port) == {"127.0.0.1"}
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        try:
            ui.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(ui.pid, signal.SIGKILL)
            pytest.fail("neuro-pipeline ui did not stop on SIGTERM within 30 s")


def test_bad_corpus_fails_with_file_line_and_keeps_store(tmp_path):
    (tmp_path / "bad.conllu").write_text("1\tthe\tthe\tDET\t_\t_\t0\troot\t_\n\n", encoding="utf-8")
    (tmp_path / "p.yaml").write_text("name: bad\ncorpus: {format: conllu, train: bad.conllu}\n", encoding="utf-8")
    proc = subprocess.run([*CLI, "run", "-c", str(tmp_path / "p.yaml"), "--home", str(tmp_path / "home")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "bad.conllu:1: expected 10 tab-separated columns, got 9" in proc.stderr.splitlines()[-2]
    assert "The previous results in" in proc.stderr


def test_config_typo_is_reported_before_anything_runs(tmp_path):
    (tmp_path / "p.yaml").write_text("corpus: {fromat: conllu}\n", encoding="utf-8")
    proc = subprocess.run([*CLI, "run", "-c", str(tmp_path / "p.yaml"), "--home", str(tmp_path / "home")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "unknown setting 'corpus.fromat' (did you mean 'corpus.format'?)" in proc.stderr
    assert not (tmp_path / "home" / "dagster_home").exists()


def test_a_bad_ranking_method_fails_the_run_before_anything_runs(tmp_path):
    """The CLI checks the config without importing the methods; the Dagster process checks
    them before it touches the instance or the store, and the cause reaches the user."""
    (tmp_path / "p.yaml").write_text("ranking: {methods: [iou_probe]}\n", encoding="utf-8")
    proc = subprocess.run([*CLI, "run", "-c", str(tmp_path / "p.yaml"), "--home", str(tmp_path / "home")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "unknown ranking method 'iou_probe' (did you mean 'linear_probe'?)" in proc.stderr.splitlines()[-2]
    assert not (tmp_path / ".neuro").exists()
    assert not list((tmp_path / "home" / "dagster_home").glob("*.db")) and not (
        tmp_path / "home" / "dagster_home" / "storage").exists()


def test_a_worker_needs_the_celery_executor(tmp_path):
    (tmp_path / "p.yaml").write_text("name: x\n", encoding="utf-8")
    proc = subprocess.run([*CLI, "worker", "-c", str(tmp_path / "p.yaml"), "--home", str(tmp_path / "home")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "sets execution.executor: in_process; workers serve execution.executor: celery" in proc.stderr


def test_export_to_neurox_and_import_back(ran):
    import numpy as np

    from neuro_pipeline.config import load_config
    from neuro_pipeline.interop import read_neurox_activations
    from neuro_pipeline.stages import current_activation_set, load_split
    from neuro_pipeline.store import Store

    analysis_dir, home, _ = ran
    config = str(analysis_dir / "pipeline.yaml")
    out = analysis_dir / "test.hdf5"
    proc = subprocess.run([*CLI, "export-neurox", "-c", config, "--out", str(out), "--split", "test"],
                          cwd=analysis_dir, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    cfg = load_config(config)
    store = Store(cfg.store_path)
    test = load_split(cfg, store, current_activation_set(cfg, store), "test")
    read = read_neurox_activations(out)
    assert sum(len(s) for s in read.sentences) == test.X.shape[0]
    np.testing.assert_array_equal(read.to_matrix(), test.X)      # NeuroX's layout: layers side by side
    proc = subprocess.run([*CLI, "import-neurox", str(out), "-c", config], cwd=analysis_dir, capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 0 and "8 sentences written" in proc.stdout, proc.stdout + proc.stderr

"""The code location loads, and every stage has a description, a code version and a blocking check."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import dagster as dg

from assets.definitions import defs

ROOT = Path(__file__).resolve().parents[2]
STAGES = ["annotated_corpus", "token_activations", "neuron_rankings", "evaluation_report"]


def test_definitions_load():
    dg.Definitions.validate_loadable(defs)


def test_every_stage_has_description_code_version_and_blocking_check():
    graph = defs.resolve_asset_graph()
    for name in STAGES:
        node = graph.get(dg.AssetKey(name))
        assert node.description, name
        assert node.code_version, name
        checks = [c for c in graph.asset_check_keys if c.asset_key == dg.AssetKey(name)]
        assert checks, f"{name} has no asset check"
        for key in checks:
            assert graph.get_check_spec(key).blocking, key


def test_lineage_is_the_four_stages_after_the_inputs():
    graph = defs.resolve_asset_graph()
    parents = {name: {k.path[-1] for k in graph.get(dg.AssetKey(name)).parent_keys} for name in STAGES}
    assert "corpus_files" in parents["annotated_corpus"]
    assert {"annotated_corpus", "model_checkpoint"} <= parents["token_activations"]
    assert "token_activations" in parents["neuron_rankings"]
    assert "neuron_rankings" in parents["evaluation_report"]


def test_dagster_definitions_validate_cli():
    proc = subprocess.run([sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr

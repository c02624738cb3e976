"""The code location loads, and every stage has a description, a code version and a blocking check."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import dagster as dg

from assets.definitions import build_definitions, defs
from neuro_pipeline.config import DEFAULT_METHODS

ROOT = Path(__file__).resolve().parents[2]
RANKINGS = [dg.AssetKey(["neuron_rankings", m]) for m in DEFAULT_METHODS]
STAGES = [dg.AssetKey(n) for n in ("annotated_corpus", "token_activations", "neuron_redundancy",
                                   "method_agreement", "probe_selectivity", "probe_ablation", "class_neurons",
                                   "evaluation_report")] + RANKINGS


def test_definitions_load():
    dg.Definitions.validate_loadable(defs)


def test_every_stage_has_description_code_version_and_blocking_check():
    graph = defs.resolve_asset_graph()
    for key in STAGES:
        node = graph.get(key)
        assert node.description, key
        assert node.code_version, key
        checks = [c for c in graph.asset_check_keys if c.asset_key == key]
        assert checks, f"{key} has no asset check"
        for check in checks:
            assert graph.get_check_spec(check).blocking, check


def test_drift_comes_after_the_report_and_its_check_warns_by_default(tmp_path):
    graph = defs.resolve_asset_graph()
    drift = dg.AssetKey("model_drift")
    assert dg.AssetKey("evaluation_report") in graph.get(drift).parent_keys
    (check,) = [c for c in graph.asset_check_keys if c.asset_key == drift]
    assert not graph.get_check_spec(check).blocking            # severity warn: shown, never blocks
    (tmp_path / "p.yaml").write_text("monitoring: {alert_severity: error}\n", encoding="utf-8")
    strict = build_definitions(str(tmp_path / "p.yaml")).resolve_asset_graph()
    (check,) = [c for c in strict.asset_check_keys if c.asset_key == drift]
    assert strict.get_check_spec(check).blocking


def test_lineage_runs_from_the_inputs_through_every_ranking_to_the_report():
    graph = defs.resolve_asset_graph()
    parents = {key: set(graph.get(key).parent_keys) for key in STAGES}
    assert dg.AssetKey("corpus_files") in parents[dg.AssetKey("annotated_corpus")]
    assert {dg.AssetKey("annotated_corpus"), dg.AssetKey("model_checkpoint")} <= parents[dg.AssetKey("token_activations")]
    for key in RANKINGS:
        assert dg.AssetKey("token_activations") in parents[key]
        assert key in parents[dg.AssetKey("method_agreement")] and key in parents[dg.AssetKey("evaluation_report")]


def test_one_ranking_asset_per_configured_method(tmp_path):
    (tmp_path / "p.yaml").write_text(
        "ranking:\n  methods: [probeless, {method: linear_probe, name: lasso, params: {penalty: lasso}},\n"
        "            {method: iou, name: iou_diverse, diversify: true}]\n",
        encoding="utf-8")
    graph = build_definitions(str(tmp_path / "p.yaml")).resolve_asset_graph()
    rankings = {k.path[-1] for k in graph.get_all_asset_keys() if k.path[0] == "neuron_rankings"}
    assert rankings == {"probeless", "lasso", "iou_diverse"}
    # Only a diversified ranking reads the correlation clusters.
    redundancy = dg.AssetKey("neuron_redundancy")
    assert redundancy in graph.get(dg.AssetKey(["neuron_rankings", "iou_diverse"])).parent_keys
    assert redundancy not in graph.get(dg.AssetKey(["neuron_rankings", "probeless"])).parent_keys


def test_dagster_definitions_validate_cli():
    proc = subprocess.run([sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr

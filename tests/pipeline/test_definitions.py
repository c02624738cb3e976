"""The code location loads, and every stage has a description, a code version and a blocking check."""

from __future__ import annotations

import os
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


def test_the_execution_section_picks_the_executor_and_shards_extraction(tmp_path):
    """A file switches the deployment: the executor, and token_activations as a graph of
    shard steps with the same key, lineage, code version and blocking check."""
    (tmp_path / "p.yaml").write_text("execution: {executor: celery, shard_sentences: 100, "
                                     "broker: 'redis://127.0.0.1:1/0'}\n", encoding="utf-8")
    sharded = build_definitions(str(tmp_path / "p.yaml"))
    assert sharded.resolve_job_def("analysis_job").executor_def.name == "celery_executor"
    assert defs.resolve_job_def("analysis_job").executor_def.name == "in_process"
    key = dg.AssetKey("token_activations")
    before, after = defs.resolve_asset_graph().get(key), sharded.resolve_asset_graph().get(key)
    assert after.code_version == before.code_version and after.parent_keys == before.parent_keys
    assert after.child_keys == before.child_keys
    assert [c for c in sharded.resolve_asset_graph().asset_check_keys if c.asset_key == key]
    ops = {n.name for n in sharded.get_assets_def(key).node_def.nodes}
    assert ops == {"extraction_shards", "extract_shard", "merge_shards"}
    # Steps at once: the rankings leave the DuckDB writer pool (the other writers stay in it).
    ranking = dg.AssetKey(["neuron_rankings", "linear_probe"])
    assert sharded.get_assets_def(ranking).op.pool is None
    assert defs.get_assets_def(ranking).op.pool == "duckdb_writer"
    assert sharded.get_assets_def(dg.AssetKey("evaluation_report")).op.pool == "duckdb_writer"
    (tmp_path / "m.yaml").write_text("execution: {executor: multiprocess, max_concurrent: 2}\n", encoding="utf-8")
    assert build_definitions(str(tmp_path / "m.yaml")).resolve_job_def(
        "analysis_job").executor_def.name == "multiprocess_executor"


def test_loading_the_code_location_freezes_its_imports_and_leaves_the_collector_on(tmp_path):
    """The imports are made with the collector paused (neuro_pipeline.heap) and frozen after;
    a code location that fails to load (a bad configuration) leaves the collector on too."""
    probe = ("import gc, sys\n"
             "try:\n"
             "    import assets.definitions\n"
             "except Exception as exc:\n"
             "    print('error', type(exc).__name__)\n"
             "print('enabled', gc.isenabled(), 'frozen', gc.get_freeze_count())\n")
    good = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert good.returncode == 0, good.stderr
    words = good.stdout.split()
    assert words[:2] == ["enabled", "True"] and int(words[3]) > 100_000, good.stdout
    (tmp_path / "bad.yaml").write_text("ranking: {methods: [{method: no_such_method}]}\n", encoding="utf-8")
    bad = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "NEURO_PIPELINE_CONFIG": str(tmp_path / "bad.yaml")})
    assert bad.returncode == 0, bad.stderr
    assert bad.stdout.split() == ["error", "ConfigError", "enabled", "True", "frozen", "0"], bad.stdout

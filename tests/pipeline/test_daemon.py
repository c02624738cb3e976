"""The monitoring loop on a live Dagster daemon (``neuro-pipeline ui`` = webserver + daemon on
127.0.0.1): a new model version dropped into the registry is analysed and compared with its
predecessor without any other action, and a corpus edit re-extracts exactly the changed
sentence for every model version."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import duckdb
import pytest

from tests.library.tiny_models import write_tiny_bert
from tests.pipeline.conftest import write_conllu
from tests.pipeline.dagster_ui import graphql, wait_for_ui

CLI = [sys.executable, "-m", "neuro_pipeline.cli"]
TIMEOUT = 420


def _materializations(port: int, asset: list[str]) -> list[dict]:
    data = graphql(port, """query($key: AssetKeyInput!) { assetOrError(assetKey: $key) { ... on Asset {
        assetMaterializations(limit: 50) { partition runId timestamp metadataEntries { label
            ... on IntMetadataEntry { intValue } ... on TextMetadataEntry { text } } } } } }""".replace(
        "$key: AssetKeyInput!", "").replace("assetKey: $key", f"assetKey: {{path: {json.dumps(asset)}}}").replace(
        "query()", "query"))
    found = (data["assetOrError"] or {}).get("assetMaterializations") or []
    return [{**m, "metadata": {e["label"]: e.get("intValue", e.get("text")) for e in m["metadataEntries"]}}
            for m in found]


def _runs(port: int) -> list[dict]:
    data = graphql(port, "{ runsOrError(limit: 100) { ... on Runs { results { runId status "
                         "tags { key value } assetSelection { path } } } } }")
    return data["runsOrError"]["results"]


def _wait(what: str, condition, timeout: float = TIMEOUT, port: int | None = None):
    deadline = time.time() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.time() > deadline:
            runs = _runs(port) if port else []
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}; runs: "
                        f"{[(r['status'], {t['key']: t['value'] for t in r['tags']}.get('dagster/partition')) for r in runs]}")
        time.sleep(2)


def _idle(port: int) -> bool:
    return all(r["status"] in ("SUCCESS", "FAILURE", "CANCELED") for r in _runs(port))


@pytest.fixture
def registry_analysis(tmp_path: Path, tiny_model_dir: Path) -> Path:
    write_conllu(tmp_path / "train.conllu", 24, seed=1)
    write_conllu(tmp_path / "test.conllu", 8, seed=2)
    shutil.copytree(tiny_model_dir, tmp_path / "registry" / "v1")
    (tmp_path / "pipeline.yaml").write_text(
        "name: tiny\nstore: store/pipeline.duckdb\nreports: reports\nmodel: {batch_size: 4}\n"
        "corpus: {format: conllu, train: train.conllu, test: test.conllu}\n"
        "ranking: {methods: [linear_probe, probeless]}\n"
        "evaluation: {fractions: [0.05, 0.25], n_random: 2, ablation_modes: [keep_retrain]}\n"
        "monitoring: {registry: registry, watch_seconds: 2, settle_seconds: 1, drift_ks: [5, 20]}\n",
        encoding="utf-8")
    return tmp_path


def test_daemon_analyses_new_versions_and_reextracts_only_edited_sentences(registry_analysis, ui_process):
    root = registry_analysis
    port = ui_process(["-c", str(root / "pipeline.yaml"), "--home", str(root / "home")], root)
    wait_for_ui(port)
    # 1. The version already in the registry is found and analysed, nobody asking.
    _wait("the analysis of v1", lambda: any(m["partition"] == "v1"
                                           for m in _materializations(port, ["model_drift"])), port=port)
    # 2. A new version appears (written elsewhere, then moved in: an atomic rename).
    write_tiny_bert(root / "incoming", seed=1)
    os.rename(root / "incoming", root / "registry" / "v2")
    drift = _wait("the analysis and drift of v2", lambda: [m for m in _materializations(port, ["model_drift"])
                                                          if m["partition"] == "v2"], port=port)
    assert drift[0]["metadata"]["previous_label"] == "v1"
    _wait("the runs to finish", lambda: _idle(port), port=port)
    runs = _runs(port)
    assert all(r["status"] == "SUCCESS" for r in runs), [(r["status"], r["tags"]) for r in runs]
    per_version = {}
    for r in runs:
        tags = {t["key"]: t["value"] for t in r["tags"]}
        if any(a["path"] == ["token_activations"] for a in r["assetSelection"] or []):
            per_version.setdefault(tags.get("dagster/partition"), []).append(r["runId"])
    assert {k: len(v) for k, v in per_version.items()} == {"v1": 1, "v2": 1}, per_version  # each analysed once

    # 3. One sentence of the corpus changes: each version re-extracts exactly that sentence.
    before = {m["runId"] for m in _materializations(port, ["token_activations"])}
    path = root / "train.conllu"
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("\tcat\tcat\t", "\tdog\tdog\t", 1), encoding="utf-8")

    def reextracted():
        new = [m for m in _materializations(port, ["token_activations"]) if m["runId"] not in before]
        return new if {m["partition"] for m in new} == {"v1", "v2"} else None

    new = _wait("the re-extraction after the corpus edit", reextracted, port=port)
    assert {m["partition"]: m["metadata"]["n_extracted"] for m in new} == {"v1": 1, "v2": 1}
    assert all(m["metadata"]["n_reused"] >= 20 for m in new)
    _wait("the runs to finish", lambda: _idle(port), port=port)
    reports = [m for m in _materializations(port, ["model_drift"]) if m["partition"] == "v2"]
    assert len(reports) >= 2  # the drift of v2 was recomputed on the edited corpus
    with duckdb.connect(str(root / "store" / "pipeline.duckdb"), read_only=True) as con:
        drift_runs = con.sql("SELECT label, previous_label FROM drift_runs ORDER BY label").fetchall()
        edited = con.execute("SELECT count(*) FROM tokens WHERE token = 'dog' AND split = 'train'").fetchone()[0]
    assert drift_runs == [("v1", None), ("v2", "v1")]
    assert edited == text.count("\tdog\tdog\t") + 1

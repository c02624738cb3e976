"""Monitoring in-process: the registry sensor, partitions per model version, drift between
versions, the input watch sensor, and eager automation that reruns only what changed."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from assets.definitions import build_definitions
from assets.monitoring import MODEL_VERSIONS, registry_folders
from assets.resources import make_resources
from assets.stages import AUTOMATION
from neuro_pipeline.config import ConfigError, load_config
from neuro_pipeline.stages import check_drift
from neuro_pipeline.store import Store
from tests.library.tiny_models import write_tiny_bert
from tests.pipeline.conftest import write_conllu


def _registry_config(root: Path, **monitoring) -> str:
    write_conllu(root / "train.conllu", 24, seed=1)
    write_conllu(root / "test.conllu", 8, seed=2)
    (root / "registry").mkdir(exist_ok=True)
    extra = "".join(f"  {k}: {json.dumps(v)}\n" for k, v in monitoring.items())
    (root / "pipeline.yaml").write_text(textwrap.dedent("""\
        name: tiny
        store: store/pipeline.duckdb
        reports: reports
        model: {batch_size: 4}
        corpus: {format: conllu, train: train.conllu, test: test.conllu}
        ranking: {methods: [linear_probe, probeless]}
        evaluation: {fractions: [0.05, 0.25], n_random: 2, ablation_modes: [keep_retrain]}
        monitoring:
          registry: registry
          settle_seconds: 0
          drift_ks: [5, 20]
        """) + extra, encoding="utf-8")
    return str(root / "pipeline.yaml")


def _sensor_result(defs: dg.Definitions, name: str, instance, cursor: str | None = None) -> dg.SensorResult:
    sensor = defs.get_sensor_def(name)
    ctx = dg.build_sensor_context(instance=instance, cursor=cursor, resources=defs.resources,
                                  definitions=defs)
    return sensor(ctx)


def _tick(defs: dg.Definitions, sensor: str, instance, cursor: str | None = None) -> dg.SensorResult:
    """One sensor tick applied as the daemon applies it: new partitions added, observations
    recorded."""
    result = _sensor_result(defs, sensor, instance, cursor=cursor)
    for request in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions(MODEL_VERSIONS, list(request.partition_keys))
    for event in result.asset_events:
        instance.report_runless_asset_event(event)
    return result


def _requests(defs: dg.Definitions, evaluation) -> tuple[dict, dict]:
    """What one automation tick requested: partitions per asset and per check (``{None}``
    for an unpartitioned check)."""
    assets = {k.to_user_string(): evaluation.get_requested_partitions(k)
              for k in defs.resolve_asset_graph().get_all_asset_keys() if evaluation.get_num_requested(k)}
    checks = {r.key.to_user_string(): (r.true_subset.expensively_compute_partition_keys()
                                       if r.true_subset.is_partitioned else {None})
              for r in evaluation.results if isinstance(r.key, dg.AssetCheckKey) and not r.true_subset.is_empty}
    return assets, checks


def test_a_registry_needs_an_existing_folder_and_excludes_model_path(tmp_path, tiny_model_dir):
    (tmp_path / "p.yaml").write_text("monitoring: {registry: nowhere}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"monitoring.registry is not a directory: nowhere"):
        load_config(tmp_path / "p.yaml")
    (tmp_path / "reg").mkdir()
    (tmp_path / "p.yaml").write_text(f"model: {{path: {tiny_model_dir}}}\nmonitoring: {{registry: reg}}\n",
                                     encoding="utf-8")
    with pytest.raises(ConfigError, match="either model.path .* or monitoring.registry"):
        load_config(tmp_path / "p.yaml")
    (tmp_path / "p.yaml").write_text("monitoring: {registry: reg, alert_severity: loud}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"alert_severity must be one of \['warn', 'error'\]"):
        load_config(tmp_path / "p.yaml")


def test_registry_folders_wait_for_complete_and_settled_versions(tmp_path, tiny_model_dir):
    reg = tmp_path / "registry"
    shutil.copytree(tiny_model_dir, reg / "v10")
    shutil.copytree(tiny_model_dir, reg / "v9")
    (reg / "v11").mkdir()
    (reg / "v11" / "config.json").write_text("{}")          # no weights yet
    (reg / ".v12.tmp-abc").mkdir()                           # being written: ignored
    (reg / "bad name").mkdir()
    ready, waiting = registry_folders(reg, settle_seconds=0)
    assert ready == ["v9", "v10"]                            # natural order
    assert any(w.startswith("v11: no config.json or no weights") for w in waiting)
    assert any(w.startswith("bad name: not a valid version name") for w in waiting)
    ready, waiting = registry_folders(reg, settle_seconds=3600)
    assert ready == [] and any("waiting until it settles" in w for w in waiting)


def test_registry_sensor_adds_partitions_launches_runs_and_sees_in_place_rewrites(tmp_path, tiny_model_dir):
    config = _registry_config(tmp_path)
    shutil.copytree(tiny_model_dir, tmp_path / "registry" / "v1")
    defs = build_definitions(config)
    with dg.instance_for_test() as instance:
        result = _sensor_result(defs, "model_registry_sensor", instance)
        assert [r.partition_keys for r in result.dynamic_partitions_requests] == [["v1"]]
        # The corpus was never built: the sensor launches it; the automation analyses the version.
        assert [(r.partition_key, r.asset_selection) for r in result.run_requests] == [
            (None, [dg.AssetKey("annotated_corpus")])]
        assert [e.partition for e in result.asset_events] == ["v1"]
        instance.add_dynamic_partitions(MODEL_VERSIONS, ["v1"])
        again = _sensor_result(defs, "model_registry_sensor", instance, cursor=result.cursor)
        assert again.run_requests == [] and again.asset_events == []
        # The same version folder rewritten in place: a new data version, no new partition or run.
        weights = tmp_path / "registry" / "v1" / "model.safetensors"
        write_tiny_bert(tmp_path / "other", seed=5)
        shutil.copyfile(tmp_path / "other" / "model.safetensors", weights)
        changed = _sensor_result(defs, "model_registry_sensor", instance, cursor=again.cursor)
        assert changed.run_requests == [] and changed.dynamic_partitions_requests == []
        assert [e.partition for e in changed.asset_events] == ["v1"]
        old = json.loads(result.cursor)["v1"]
        assert changed.asset_events[0].tags["dagster/data_version"] != old


def test_two_versions_are_analysed_per_partition_and_drift_compares_them(tmp_path, tiny_model_dir):
    config = _registry_config(tmp_path, min_jaccard=0.99)
    shutil.copytree(tiny_model_dir, tmp_path / "registry" / "v1")
    write_tiny_bert(tmp_path / "registry" / "v2", seed=1)
    defs = build_definitions(config)
    job = defs.resolve_job_def("analysis_job")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(MODEL_VERSIONS, ["v1", "v2"])
        for key in ("v1", "v2"):
            result = job.execute_in_process(instance=instance, partition_key=key, raise_on_error=False)
            assert result.success, key
        drift_checks = {e.check_name: e for e in result.get_asset_check_evaluations()
                        if e.asset_key.path[-1] == "model_drift"}
        # v2 is a differently seeded random model: its neurons cannot keep 99% overlap.
        assert drift_checks["drift_within_thresholds"].passed is False
        assert drift_checks["drift_within_thresholds"].severity == dg.AssetCheckSeverity.WARN
    store = Store(load_config(config).store_path)
    versions = store.query("SELECT label, activation_set FROM model_versions ORDER BY registered_at")
    assert versions["label"].to_list() == ["v1", "v2"]
    runs = store.query("SELECT label, previous_label, previous_activation_set, n_alerts FROM drift_runs ORDER BY label")
    assert runs["previous_label"].to_list() == [None, "v1"]
    assert runs["previous_activation_set"][1] == versions["activation_set"][0]
    ranking = store.query("SELECT method, k, jaccard, overlap, n_entered, status FROM drift_rankings ORDER BY method, k")
    assert set(ranking["method"]) == {"linear_probe", "probeless", "neuron_vote"}
    assert ranking["k"].unique().sort().to_list() == [5, 20]
    assert ranking["jaccard"].is_between(0, 1).all() and (ranking["status"] == "both").all()
    # Jaccard agrees with the two stored rankings.
    a1, a2 = versions["activation_set"].to_list()
    top = [set(store.query("SELECT neuron FROM rankings WHERE activation_set = ? AND method = 'probeless' "
                           "ORDER BY rank LIMIT 20", [a])["neuron"]) for a in (a1, a2)]
    stored = ranking.filter((pl.col("method") == "probeless") & (pl.col("k") == 20)).row(0, named=True)
    assert stored["overlap"] == len(top[0] & top[1])
    assert stored["jaccard"] == pytest.approx(len(top[0] & top[1]) / len(top[0] | top[1]))
    metrics = store.query("SELECT label, accuracy_previous, accuracy_current, accuracy_delta, selectivity_delta "
                          "FROM drift_metrics")
    assert "(all)" in metrics["label"].to_list() and "NOUN" in metrics["label"].to_list()
    row = metrics.filter(pl.col("label") == "NOUN").row(0, named=True)
    assert row["accuracy_delta"] == pytest.approx(row["accuracy_current"] - row["accuracy_previous"])
    assert store.query("SELECT count(*) AS n FROM drift_alerts WHERE kind = 'neurons_moved'")["n"][0] > 0
    layers = store.query("SELECT layer, corr_median, n_words FROM drift_layers ORDER BY layer")
    assert layers["layer"].to_list() == [0, 1, 2] and layers["corr_median"].is_between(-1, 1).all()
    assert layers["n_words"][0] == store.query("SELECT count(*) AS n FROM tokens WHERE split = 'test'")["n"][0]
    html = Path(store.query("SELECT html_path FROM reports WHERE activation_set = ?", [a2])["html_path"][0]).read_text()
    assert 'id="drift"' in html and "v1" in html and "drift-pending" not in html
    first = Path(store.query("SELECT html_path FROM reports WHERE activation_set = ?", [a1])["html_path"][0]).read_text()
    assert 'id="drift"' in first and "no earlier version" in first.lower()
    # Thresholds are judged when the check runs: a lenient config passes on the same stored drift.
    lenient = _registry_config(tmp_path, min_jaccard=0.0, max_accuracy_drop=1.0, max_selectivity_drop=1.0)
    passed, alerts, info = check_drift(load_config(lenient).for_model_version("v2"), store)
    assert passed and alerts.is_empty() and info["previous_label"] == "v1"


def test_input_sensor_reports_only_changed_inputs(analysis_dir):
    config = str(analysis_dir / "pipeline.yaml")
    defs = build_definitions(config)
    with dg.instance_for_test() as instance:
        first = _sensor_result(defs, "input_watch_sensor", instance)
        assert {e.asset_key.path[-1] for e in first.asset_events} == {"corpus_files", "analysis_settings",
                                                                       "model_checkpoint"}
        same = _sensor_result(defs, "input_watch_sensor", instance, cursor=first.cursor)
        assert same.asset_events == [] and "no input changed" in same.skip_reason
        text = (analysis_dir / "train.conllu").read_text(encoding="utf-8")
        (analysis_dir / "train.conllu").write_text(text.replace("\tcat\tcat\t", "\tdog\tdog\t", 1), encoding="utf-8")
        changed = _sensor_result(defs, "input_watch_sensor", instance, cursor=same.cursor)
        assert [e.asset_key.path[-1] for e in changed.asset_events] == ["corpus_files"]


def _requested(defs: dg.Definitions, instance, cursor=None):
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
    return set(_requests(defs, result)[0]), result.cursor


def test_automation_reruns_only_what_a_corpus_edit_touches_and_extracts_one_sentence(analysis_dir):
    config = str(analysis_dir / "pipeline.yaml")
    defs = build_definitions(config)
    job = defs.resolve_job_def("analysis_job")
    with dg.instance_for_test() as instance:
        def observe():
            result = _tick(defs, "input_watch_sensor", instance, cursor=state.get("cursor"))
            state["cursor"] = result.cursor or state.get("cursor")

        state: dict = {}
        observe()
        assert job.execute_in_process(instance=instance).success
        requested, cursor = _requested(defs, instance)
        assert requested == set()                      # nothing changed: nothing runs
        observe()
        requested, cursor = _requested(defs, instance, cursor)
        assert requested == set()
        # One sentence of the training file changes.
        path = analysis_dir / "train.conllu"
        path.write_text(path.read_text(encoding="utf-8").replace("\tcat\tcat\t", "\tdog\tdog\t", 1), encoding="utf-8")
        observe()
        requested, cursor = _requested(defs, instance, cursor)
        # Everything below the corpus is requested in one run; inside that run the corpus's
        # blocking check gates the rest.
        assert "annotated_corpus" in requested and "token_activations" in requested and "model_drift" in requested
        assert not requested & {"corpus_files", "model_checkpoint", "analysis_settings"}
        run = job.execute_in_process(instance=instance, asset_selection=[dg.AssetKey(k.split("/"))
                                                                         for k in requested])
        assert run.success
        acts = [e for e in run.get_asset_materialization_events() if e.asset_key.path[-1] == "token_activations"]
        md = acts[0].materialization.metadata
        assert md["n_extracted"].value == 1 and md["n_reused"].value >= 20
        requested, cursor = _requested(defs, instance, cursor)
        assert requested == set()


def test_every_computed_asset_is_automated_and_the_schedule_and_sensors_run_by_default(tmp_path, tiny_model_dir):
    config = _registry_config(tmp_path)
    defs = build_definitions(config)
    graph = defs.resolve_asset_graph()
    for key in graph.materializable_asset_keys:
        assert graph.get(key).automation_condition == AUTOMATION, key
    assert graph.get(dg.AssetKey("token_activations")).partitions_def.name == MODEL_VERSIONS
    assert graph.get(dg.AssetKey("annotated_corpus")).partitions_def is None
    names = {s.name: s.default_status for s in defs.sensors}
    assert set(names) == {"model_registry_sensor", "input_watch_sensor", "neuro_automation", "dead_run_sensor"}
    assert all(status == dg.DefaultSensorStatus.RUNNING for status in names.values())
    schedule = defs.get_schedule_def("stale_safety_net")
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(MODEL_VERSIONS, ["a", "b"])
        requests = schedule(dg.build_schedule_context(instance=instance))
        assert [(r.partition_key, r.stale_assets_only) for r in requests] == [("a", True), ("b", True)]
    assert make_resources(config)["pipeline"].load().registry_dir == tmp_path / "registry"


def test_a_model_overwritten_in_place_at_a_fixed_path_is_a_new_data_version(analysis_dir, tiny_model_dir):
    model = analysis_dir / "model"
    shutil.copytree(tiny_model_dir, model)
    config = analysis_dir / "pipeline.yaml"
    config.write_text(config.read_text(encoding="utf-8").replace(f"path: {tiny_model_dir}", f"path: {model}"),
                      encoding="utf-8")
    defs = build_definitions(str(config))
    with dg.instance_for_test() as instance:
        first = _sensor_result(defs, "input_watch_sensor", instance)
        touched = _sensor_result(defs, "input_watch_sensor", instance, cursor=first.cursor)
        (model / "config.json").touch()                      # same bytes: not a change
        assert touched.asset_events == []
        assert _sensor_result(defs, "input_watch_sensor", instance, cursor=first.cursor).asset_events == []
        write_tiny_bert(tmp := analysis_dir / "retrained", seed=7)
        shutil.copyfile(tmp / "model.safetensors", model / "model.safetensors")
        changed = _sensor_result(defs, "input_watch_sensor", instance, cursor=first.cursor)
        assert [e.asset_key.path[-1] for e in changed.asset_events] == ["model_checkpoint"]


def test_a_new_registry_version_is_requested_by_the_automation(tmp_path, tiny_model_dir):
    """The sensor registers and observes the version; the automation requests its analysis
    (and only that) on its next tick."""
    config = _registry_config(tmp_path)
    defs = build_definitions(config)

    def tick(sensor: str, cursor: str | None = None) -> str | None:
        result = _tick(defs, sensor, instance, cursor=cursor)
        assert result.run_requests == []
        return result.cursor

    with dg.instance_for_test() as instance:
        tick("input_watch_sensor")
        corpus = defs.resolve_job_def("analysis_job").execute_in_process(
            instance=instance, asset_selection=[dg.AssetKey("annotated_corpus")])
        assert corpus.success
        before = dg.evaluate_automation_conditions(defs=defs, instance=instance)   # the daemon's earlier ticks
        assert before.total_requested == 0
        shutil.copytree(tiny_model_dir, tmp_path / "registry" / "v1")
        tick("model_registry_sensor")
        evaluation = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=before.cursor)
        requested, checks = _requests(defs, evaluation)
        # The whole analysis of v1 in one tick (one run): every check is partitioned and requested
        # with its asset, so a child need not wait for its parent's check to have run once.
        analysis = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()} - {
            "annotated_corpus", "corpus_files", "analysis_settings", "model_checkpoint"}
        assert requested == dict.fromkeys(analysis, {"v1"}), requested
        assert {c.split(":")[0]: keys for c, keys in checks.items()} == dict.fromkeys(analysis, {"v1"}), checks
        again = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=evaluation.cursor)
        assert again.get_num_requested(dg.AssetKey("token_activations")) == 0    # requested once


def test_a_materialization_without_its_check_gets_the_check_once_and_unblocks_its_children(tmp_path, tiny_model_dir):
    """A run that left the checks out (or results stored before the checks were partitioned)
    would leave the children of that version waiting for a check result nothing requests."""
    config = _registry_config(tmp_path)
    shutil.copytree(tiny_model_dir, tmp_path / "registry" / "v1")
    defs = build_definitions(config)
    everything = list(defs.assets) + list(defs.asset_checks or [])

    def materialize(selection, partition_key=None):
        result = dg.materialize(everything, instance=instance, resources=make_resources(config),
                                selection=selection, partition_key=partition_key)
        assert result.success

    with dg.instance_for_test() as instance:
        for sensor in ("input_watch_sensor", "model_registry_sensor"):
            _tick(defs, sensor, instance)
        materialize(dg.AssetSelection.assets("annotated_corpus").without_checks())
        first = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        assert _requests(defs, first) == ({}, {"annotated_corpus:annotated_corpus_quality": {None}})
        second = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
        assert _requests(defs, second) == ({}, {})                                      # once
        materialize(dg.AssetSelection.checks_for_assets("annotated_corpus"))
        materialize(dg.AssetSelection.assets("token_activations").without_checks(), partition_key="v1")
        third = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=second.cursor)
        assets, checks = _requests(defs, third)
        assert "token_activations" not in assets and assets["evaluation_report"] == {"v1"}, assets
        assert checks["token_activations:token_activations_quality"] == {"v1"}, checks
        assert {c.split(":")[0] for c in checks} == set(assets) | {"token_activations"}, checks
        fourth = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=third.cursor)
        assert _requests(defs, fourth) == ({}, {})

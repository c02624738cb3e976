"""The whole graph materialized in-process by Dagster on a tiny random BERT and a few sentences."""

from __future__ import annotations

import re

import dagster as dg
import polars as pl

from assets.definitions import build_definitions
from neuro_pipeline import stages as npl
from neuro_pipeline.config import DEFAULT_METHODS, load_config
from neuro_pipeline.store import Store

STAGES = {"annotated_corpus", "token_activations", "neuron_redundancy", "method_agreement", "probe_selectivity",
          "probe_ablation", "class_neurons", "evaluation_report", "model_drift"}


def _run_all(config: str, instance) -> dg.ExecuteInProcessResult:
    defs = build_definitions(config)
    defs.resolve_job_def("observe_inputs_job").execute_in_process(instance=instance)
    return defs.resolve_job_def("analysis_job").execute_in_process(instance=instance, raise_on_error=False)


def test_whole_graph_materializes_and_checks_pass(analysis_dir):
    config = str(analysis_dir / "pipeline.yaml")
    with dg.instance_for_test() as instance:
        result = _run_all(config, instance)
        assert result.success
        materialized = {"/".join(e.asset_key.path) for e in result.get_asset_materialization_events()}
        assert materialized == STAGES | {f"neuron_rankings/{m}" for m in DEFAULT_METHODS}
        checks = {(e.asset_key.path[-1], e.check_name): e.passed for e in result.get_asset_check_evaluations()}
        assert checks == {("annotated_corpus", "annotated_corpus_quality"): True,
                          ("token_activations", "token_activations_quality"): True,
                          ("evaluation_report", "evaluation_report_quality"): True,
                          ("model_drift", "drift_within_thresholds"): True,
                          **{(m, "ranking_quality"): True for m in DEFAULT_METHODS},
                          **{(a, f"{a}_quality"): True for a in ("neuron_redundancy", "method_agreement",
                                                                 "probe_selectivity", "probe_ablation",
                                                                 "class_neurons")}}
        report_md = [e for e in result.get_asset_materialization_events()
                     if e.asset_key.path[-1] == "evaluation_report"][0].materialization.metadata
        assert 0.0 <= report_md["accuracy"].value <= 1.0

    cfg = load_config(config)
    store = Store(cfg.store_path)
    n_words = sum(line.count("\t") > 0 for f in ("train.conllu", "test.conllu")
                  for line in (analysis_dir / f).read_text(encoding="utf-8").splitlines())
    tokens = store.query("SELECT split, count(*) AS n FROM tokens WHERE corpus_id = 'tiny' GROUP BY split")
    assert dict(tokens.iter_rows()) == {"train": tokens.filter(pl.col("split") == "train")["n"][0],
                                        "test": tokens.filter(pl.col("split") == "test")["n"][0]}
    assert tokens["n"].sum() == n_words
    # one activation row per word and layer (2 layers + embeddings), joined on keys; by
    # default in Parquet files catalogued in the store
    aset = npl.current_activation_set(cfg, store)
    assert aset.parquet_dir is not None and aset.parquet_layout == "bytes"
    relation, params = store.activation_relation(aset)
    n_rows = store.query(
        f"SELECT count(*) AS n FROM {relation} a JOIN (SELECT DISTINCT sentence_hash, position FROM tokens) t "
        "USING (sentence_hash, position)", params)["n"][0]
    assert n_rows == 3 * store.query("SELECT count(*) AS n FROM (SELECT DISTINCT sentence_hash, position FROM tokens)")["n"][0]
    for method in [*DEFAULT_METHODS, "neuron_vote"]:
        ranking = store.query("SELECT neuron, rank FROM rankings WHERE method = ? ORDER BY rank", [method])
        assert sorted(ranking["neuron"].to_list()) == list(range(3 * 32)), method
        assert ranking["rank"].to_list() == list(range(1, 3 * 32 + 1)), method
    runs = store.query("SELECT method, params FROM ranking_runs ORDER BY method")
    assert runs["method"].to_list() == sorted(DEFAULT_METHODS)
    assert all('"method"' in p for p in runs["params"])
    metrics = store.query("SELECT method, selection, value FROM metrics WHERE metric = 'accuracy'")
    assert set(metrics["method"]) == set(DEFAULT_METHODS)
    assert set(metrics["selection"]) >= {"all", "top", "random", "bottom", "majority_baseline"}
    # Corpus search: the global top neurons of every method have top words from the training words.
    words = store.query("SELECT method, source, neuron, word FROM top_words")
    train_words = set(store.query("SELECT token FROM tokens WHERE split = 'train'")["token"])
    assert set(words["method"]) == set(DEFAULT_METHODS) and set(words["word"]) <= train_words
    assert "global" in set(words["source"]) and "NOUN" in set(words["source"])
    # Agreement of every pair of methods at every n up to the number of neurons (96 here).
    agreement = store.query("SELECT kind, method_a, method_b, n, jaccard FROM agreement")
    pairs = agreement.filter(pl.col("kind") == "pair")
    assert pairs.height == 6 * 4 and set(pairs["n"]) == {10, 30, 50, 70}
    assert agreement["jaccard"].is_between(0, 1).all()
    layers = store.query("SELECT layer, n_neurons, n_clusters, n_independent FROM redundancy_layers ORDER BY layer")
    assert layers["layer"].to_list() == [0, 1, 2] and layers["n_neurons"].to_list() == [32, 32, 32]
    assert (layers["n_independent"] <= layers["n_neurons"]).all()
    report = store.query("SELECT html_path FROM reports")["html_path"][0]
    html = open(report, encoding="utf-8").read()
    assert "<svg" in html
    # self-contained: nothing is fetched (namespace URIs inside the SVG are not fetches)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//|url\(\s*["']?(https?:)?//|@import""", html)


def test_rerun_reuses_activations_and_keeps_results(analysis_dir):
    config = str(analysis_dir / "pipeline.yaml")
    with dg.instance_for_test() as instance:
        assert _run_all(config, instance).success
        second = _run_all(config, instance)
        assert second.success
        md = [e for e in second.get_asset_materialization_events()
              if e.asset_key.path[-1] == "token_activations"][0].materialization.metadata
        assert md["n_extracted"].value == 0
        assert md["n_reused"].value == md["n_sentences"].value > 0


def test_failed_stage_leaves_previous_results_readable(analysis_dir):
    config = analysis_dir / "pipeline.yaml"
    with dg.instance_for_test() as instance:
        assert _run_all(str(config), instance).success
        store = Store(load_config(config).store_path)
        before = store.query("SELECT * FROM tokens ORDER BY sentence_id, position")
        # Corrupt the training file: the corpus stage must fail and change nothing.
        (analysis_dir / "train.conllu").write_text("1\tthe\n\n", encoding="utf-8")
        result = _run_all(str(config), instance)
        assert not result.success
        after = store.query("SELECT * FROM tokens ORDER BY sentence_id, position")
        assert after.equals(before)
        assert store.query("SELECT count(*) AS n FROM reports")["n"][0] == 1


def test_blocking_check_stops_downstream(analysis_dir):
    """Labels containing whitespace violate the corpus suite: activations must not run."""
    train = analysis_dir / "train.conllu"
    text = train.read_text(encoding="utf-8").replace("\tDET\t", "\tDE T\t", 1)
    train.write_text(text, encoding="utf-8")
    with dg.instance_for_test() as instance:
        result = _run_all(str(analysis_dir / "pipeline.yaml"), instance)
        assert not result.success
        checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
        assert checks.get("annotated_corpus_quality") is False
        materialized = {e.asset_key.path[-1] for e in result.get_asset_materialization_events()}
        assert materialized == {"annotated_corpus"}


def test_duplicate_sentences_are_extracted_once_and_match_direct_extraction(analysis_dir, tiny_model_dir):
    """A sentence occurring twice shares one stored entry whose words are the sentence's own."""
    import numpy as np

    from neuro_pipeline.extraction import extract_activations, load_model
    from neuro_pipeline.stages import (
        check_activations,
        current_activation_set,
        load_split,
        materialize_activations,
        materialize_corpus,
    )

    train = analysis_dir / "train.conllu"
    blocks = train.read_text(encoding="utf-8").strip("\n").split("\n\n")
    train.write_text("\n\n".join(blocks + blocks[:3]) + "\n\n", encoding="utf-8")  # repeat 3 sentences
    cfg = load_config(analysis_dir / "pipeline.yaml")
    store = Store(cfg.store_path)
    materialize_corpus(cfg, store)
    summary = materialize_activations(cfg, store)
    assert summary.n_sentences == summary.n_extracted == len(
        store.read_tokens(cfg.name).unique(subset="sentence_hash"))
    assert check_activations(cfg, store).success
    split = load_split(cfg, store, current_activation_set(cfg, store), "train")
    tokens = store.read_tokens(cfg.name, splits=["train"])
    model = load_model(cfg.model_dir)
    words = [g["token"].to_list() for _, g in tokens.group_by("sentence_id", maintain_order=True)]
    direct = np.concatenate([a.reshape(a.shape[0], -1) for _, a in
                             sorted(extract_activations(model, words), key=lambda t: t[0])])
    np.testing.assert_allclose(split.X, direct, atol=1e-5)


def test_ranking_method_is_chosen_in_the_config(analysis_dir):
    config = analysis_dir / "pipeline.yaml"
    config.write_text(config.read_text(encoding="utf-8") + "ranking:\n  method: probeless\n", encoding="utf-8")
    with dg.instance_for_test() as instance:
        result = _run_all(str(config), instance)
        assert result.success
        materialized = {"/".join(e.asset_key.path) for e in result.get_asset_materialization_events()}
        assert materialized == STAGES | {"neuron_rankings/probeless"}
    store = Store(load_config(config).store_path)
    methods = store.query("SELECT DISTINCT method FROM rankings")["method"].to_list()
    assert methods == ["probeless"]  # one method: no agreement, no consensus ranking
    assert store.query("SELECT count(*) AS n FROM agreement")["n"][0] == 0
    assert store.query("SELECT count(DISTINCT label) AS n FROM class_rankings WHERE method = 'probeless'")["n"][0] > 1


def test_two_variants_of_one_method_and_the_gaussian_probe(analysis_dir):
    """Variants are told apart by name and keep their own hyperparameters; the Gaussian
    probe selects 4 neurons greedily and orders the rest by single-neuron MI."""
    config = analysis_dir / "pipeline.yaml"
    config.write_text(config.read_text(encoding="utf-8") + (
        "ranking:\n  methods:\n"
        "    - {method: linear_probe, name: lasso, params: {penalty: lasso, l1: 0.01}}\n"
        "    - {method: linear_probe, name: ridge, params: {penalty: ridge, l2: 0.01}}\n"
        "    - {method: gaussian, params: {max_neurons: 4}}\n"
        "    - {method: iou, name: iou_diverse, diversify: true}\n"), encoding="utf-8")
    with dg.instance_for_test() as instance:
        result = _run_all(str(config), instance)
        assert result.success
        checks = {(e.asset_key.path[-1], e.check_name): e.passed for e in result.get_asset_check_evaluations()}
        assert checks[("gaussian", "ranking_quality")] is True
    store = Store(load_config(config).store_path)
    fitted = dict(store.query("SELECT method, fitted FROM ranking_runs").iter_rows())
    assert '"l2": 0.0' in fitted["lasso"] and '"l1": 0.0' in fitted["ridge"]
    gaussian = store.query("SELECT rank, score FROM rankings WHERE method = 'gaussian'")
    assert gaussian["rank"].count() == gaussian["score"].count() == 96
    assert "max_neurons" in store.query("SELECT params FROM ranking_runs WHERE method = 'gaussian'")["params"][0]
    bottoms = store.query("SELECT DISTINCT method FROM metrics WHERE selection = 'bottom'")["method"].to_list()
    assert sorted(bottoms) == ["gaussian", "iou_diverse", "lasso", "ridge"]
    # Diversified: the best neuron of every correlation cluster before any second member.
    diverse = store.query(
        "SELECT r.rank, c.cluster FROM rankings r JOIN redundancy_neurons c USING (analysis, activation_set, neuron) "
        "WHERE r.method = 'iou_diverse' ORDER BY r.rank")
    n_clusters = diverse["cluster"].n_unique()
    assert diverse["cluster"].head(n_clusters).n_unique() == n_clusters < 96


def test_report_numbers_come_from_the_tables_and_match_a_direct_computation(analysis_dir):
    """One source of truth: the numbers on the page are the stored ones, and those equal a
    computation done here directly from the stored activations."""
    import numpy as np

    from neuro_pipeline.evaluation.control import control_labels
    from neuro_pipeline.evaluation.selection import DEFAULT_SELECTION_PROBE_PARAMS
    from neuro_pipeline.probe import LinearProbe
    from neuro_pipeline.stages import current_activation_set, load_split, read_ranking

    config = analysis_dir / "pipeline.yaml"
    with dg.instance_for_test() as instance:
        assert _run_all(str(config), instance).success
    cfg = load_config(config)
    store = Store(cfg.store_path)
    aset = current_activation_set(cfg, store)
    train, test = load_split(cfg, store, aset, "train"), load_split(cfg, store, aset, "test")
    # The full probe is the linear-probe ranking's own probe, stored by the ranking stage
    # and scored by the report: fitting the ranking again here gives it and its accuracy.
    from dataclasses import replace

    from neuro_pipeline.ranking import get_ranker

    spec = cfg.ranking.method("linear_probe")
    ranker = get_ranker(spec.method, **spec.params).fit(train.X, train.labels,
                                                         groups=train.keys["sentence_id"].to_numpy())
    fitted = read_ranking(cfg, store, aset, "linear_probe").fitted
    assert (ranker.l1_, ranker.l2_) == (fitted["l1"], fitted["l2"])
    accuracy = ranker.probe_.score(test.X, test.labels)
    stored = store.query("SELECT DISTINCT value FROM metrics WHERE selection = 'all' AND scope = 'overall'")
    assert stored["value"].to_list() == [accuracy]
    key = {"analysis": cfg.name, "activation_set": aset.activation_set, "task": cfg.task}
    kept = npl.ranking_probe(store, key, "linear_probe", {"l1": fitted["l1"], "l2": fitted["l2"]}, train)
    np.testing.assert_array_equal(kept.coef_, ranker.probe_.coef_)
    np.testing.assert_array_equal(kept.decision_function(test.X), ranker.probe_.decision_function(test.X))
    # Other training words (one fewer here): the stored probe is not used, the report fits one.
    fewer = replace(train, X=train.X[1:], labels=train.labels[1:])
    assert npl.ranking_probe(store, key, "linear_probe", {}, fewer) is None
    assert npl.ranking_probe(store, key, "probeless", {}, train) is None  # no probe behind that ranking
    # The confusion matrix and per-class supports agree with the tokens and the accuracy.
    confusion = store.query("SELECT true_label, predicted_label, count FROM confusion")
    assert confusion["count"].sum() == len(test.labels)
    correct = confusion.filter(pl.col("true_label") == pl.col("predicted_label"))["count"].sum()
    assert correct / len(test.labels) == accuracy
    supports = dict(store.query("SELECT label, support FROM class_metrics").iter_rows())
    labels, counts = np.unique(test.labels, return_counts=True)
    assert {lab: supports[lab] for lab in labels} == dict(zip(labels.tolist(), counts.tolist()))
    # Layer 1 alone, task and control, recomputed.
    cols = slice(aset.hidden_size, 2 * aset.hidden_size)
    layer = LinearProbe(**DEFAULT_SELECTION_PROBE_PARAMS).fit(np.ascontiguousarray(train.X[:, cols]), train.labels)
    layer_acc = layer.score(np.ascontiguousarray(test.X[:, cols]), test.labels)
    ctrl_train = control_labels(train.words, train.labels, train.words, seed=cfg.evaluation.control_seed)
    ctrl_test = control_labels(train.words, train.labels, test.words, seed=cfg.evaluation.control_seed)
    ctrl = LinearProbe(**DEFAULT_SELECTION_PROBE_PARAMS).fit(np.ascontiguousarray(train.X[:, cols]), ctrl_train)
    ctrl_acc = ctrl.score(np.ascontiguousarray(test.X[:, cols]), ctrl_test)
    row = store.query("SELECT accuracy, control_accuracy, selectivity FROM layer_probes WHERE layer = 1").row(0)
    np.testing.assert_allclose(row, (layer_acc, ctrl_acc, layer_acc - ctrl_acc), atol=1e-12)
    # The page shows those stored numbers.
    html = open(store.query("SELECT html_path FROM reports")["html_path"][0], encoding="utf-8").read()
    assert f"<b>{100 * accuracy:.1f}%</b>full-probe accuracy" in html
    assert f"<td>1</td><td>{100 * layer_acc:.1f}%</td><td>{100 * ctrl_acc:.1f}%</td>" in html
    # Heatmaps: a class's best neuron that fires lower on the class than elsewhere (on the
    # training words) is drawn sign-flipped, so the class's words read positive.
    from neuro_pipeline.stages import neuron_name

    best = store.query("SELECT label, neuron FROM class_rankings WHERE method = 'linear_probe' AND rank = 1")
    for label, neuron in best.iter_rows():
        column, is_class = train.X[:, neuron], train.labels.astype(str) == label
        name = neuron_name(neuron, aset.hidden_size)
        if column[is_class].mean() < column[~is_class].mean():
            assert f"−{name} ({label}, sign flipped)" in html, (label, name)
        else:
            assert f"{name} ({label})" in html and f"−{name} ({label}" not in html, (label, name)


def test_optional_stages_turned_off_leave_the_graph_and_the_report(analysis_dir):
    """NeuroX's own work only: the optional assets are not in the code location, the run
    materializes the rest, and the report has no section of a stage that is off, even when
    rows of an earlier run with the stage on are still stored."""
    config = analysis_dir / "pipeline.yaml"
    with dg.instance_for_test() as instance:
        assert _run_all(str(config), instance).success  # everything on: selectivity rows are stored
    off = ["method_agreement", "neuron_redundancy", "probe_selectivity", "probe_ablation", "class_neurons"]
    config.write_text(config.read_text(encoding="utf-8") + "stages: {" + ", ".join(f"{s}: false" for s in off)
                      + "}\nranking:\n  methods: [linear_probe]\n", encoding="utf-8")
    defs = build_definitions(str(config))
    keys = {"/".join(k.path) for k in defs.resolve_asset_graph().materializable_asset_keys}
    assert not keys & set(off)
    report_deps = {"/".join(k.path) for k in defs.resolve_assets_def("evaluation_report").asset_deps[
        dg.AssetKey("evaluation_report")]}
    assert report_deps == {"neuron_rankings/linear_probe", "analysis_settings"}
    with dg.instance_for_test() as instance:
        result = _run_all(str(config), instance)
        assert result.success
        materialized = {"/".join(e.asset_key.path) for e in result.get_asset_materialization_events()}
    assert materialized == (STAGES - set(off)) | {"neuron_rankings/linear_probe"}
    cfg = load_config(config)
    store = Store(cfg.store_path)
    assert store.query("SELECT count(*) AS n FROM selectivity")["n"][0] > 0  # kept from the first run
    report = store.query("SELECT markdown_path FROM reports")["markdown_path"][0]
    page = open(report, encoding="utf-8").read()
    assert "## Selectivity (control task)" not in page and "## Ablation at the probe" not in page
    assert "## Fewest neurons per class" not in page
    assert store.query("SELECT count(*) AS n FROM metrics WHERE selection = 'top'")["n"][0] > 0


def test_file_backed_matrices_give_the_same_results(analysis_dir):
    """With evaluation.matrix_memory_mb: 0 every split is read into a memory-mapped file;
    the ranking and the report equal the in-memory run's exactly."""
    import numpy as np

    from neuro_pipeline.stages import current_activation_set, load_split

    config = analysis_dir / "pipeline.yaml"
    text = config.read_text(encoding="utf-8")
    config.write_text(text + "ranking:\n  methods: [linear_probe]\n", encoding="utf-8")
    with dg.instance_for_test() as instance:
        assert _run_all(str(config), instance).success
    store = Store(load_config(config).store_path)
    before = {t: store.query(f"SELECT * FROM {t} ORDER BY ALL") for t in ("rankings", "metrics")}
    config.write_text(text.replace("evaluation:\n", "evaluation:\n  matrix_memory_mb: 0\n")
                      + "ranking:\n  methods: [linear_probe]\n", encoding="utf-8")
    cfg = load_config(config)
    aset = current_activation_set(cfg, store)
    train = load_split(cfg, store, aset, "train")
    assert isinstance(train.X, np.memmap)
    assert not list((cfg.store_path.parent / "matrix_cache").iterdir())  # unlinked once mapped
    with dg.instance_for_test() as instance:
        assert _run_all(str(config), instance).success
    for table, frame in before.items():
        assert store.query(f"SELECT * FROM {table} ORDER BY ALL").equals(frame), table

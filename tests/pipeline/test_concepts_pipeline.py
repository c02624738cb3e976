"""Rule-based concepts end to end: each concept is a task with its own rankings, metrics and
report page; a plain-text corpus needs no labels; balancing is recorded with the task."""

from __future__ import annotations

import dagster as dg
import polars as pl
import pytest

from assets.definitions import build_definitions
from neuro_pipeline.config import ConfigError, load_config
from neuro_pipeline.store import Store


def _run(config: str) -> dg.ExecuteInProcessResult:
    defs = build_definitions(config)
    with dg.instance_for_test() as instance:
        defs.resolve_job_def("observe_inputs_job").execute_in_process(instance=instance)
        return defs.resolve_job_def("analysis_job").execute_in_process(instance=instance, raise_on_error=False)


def test_two_concepts_next_to_the_treebank_labels(analysis_dir):
    config = analysis_dir / "pipeline.yaml"
    (analysis_dir / "animals.txt").write_text("# pets\ncat\ndog\n\n", encoding="utf-8")
    config.write_text(config.read_text(encoding="utf-8").replace("evaluation:", (
        "ranking: {methods: [linear_probe, probeless]}\n"
        "concepts:\n"
        "  - {name: animal, words_file: animals.txt}\n"
        "  - {name: short_word, regex: '[a-z]{1,2}'}\n"
        "balance: {target: minority, seed: 3}\n"
        "evaluation:")), encoding="utf-8")
    cfg = load_config(config)
    assert cfg.tasks == ["upos", "animal", "short_word"]
    result = _run(str(config))
    assert result.success
    checks = [e for e in result.get_asset_check_evaluations()]
    assert checks and all(e.passed for e in checks if e.check_name != "drift_within_thresholds")
    store = Store(cfg.store_path)
    labels = store.query("SELECT t.token, l.label FROM task_labels l JOIN tokens t USING (corpus_id, sentence_id, "
                         "position) WHERE l.task = 'animal'")
    assert set(labels.filter(pl.col("label") == "animal")["token"]) == {"cat", "dog"}
    assert set(labels.filter(pl.col("label") == "OTHER")["token"]).isdisjoint({"cat", "dog"})
    short = store.query("SELECT t.token, l.label FROM task_labels l JOIN tokens t USING (corpus_id, sentence_id, "
                        "position) WHERE l.task = 'short_word'")
    assert all((len(w) <= 2 and w.isalpha()) == (lab == "short_word") for w, lab in short.iter_rows())
    # Every task has its rankings, metrics and its own report page.
    for task in cfg.tasks:
        methods = set(store.query("SELECT DISTINCT method FROM rankings WHERE task = ?", [task])["method"])
        assert methods == {"linear_probe", "probeless", "neuron_vote"}, task
        assert store.query("SELECT count(*) AS n FROM metrics WHERE task = ?", [task])["n"][0] > 0
    pages = store.query("SELECT task, html_path FROM reports ORDER BY task")
    assert pages["task"].to_list() == ["animal", "short_word", "upos"] and pages["html_path"].n_unique() == 3
    assert "Neuron analysis: animal" in open(pages["html_path"][0], encoding="utf-8").read()
    # Balancing: recorded per task with its seed; the minority size for every class after.
    balance = store.query("SELECT task, label, n_before, n_after, seed FROM task_balance WHERE task = 'animal'")
    assert set(balance["seed"]) == {3} and balance["n_after"].n_unique() == 1
    assert balance["n_after"][0] == balance["n_before"].min()
    runs = store.query("SELECT n_train FROM ranking_runs WHERE task = 'animal' AND method = 'probeless'")
    assert runs["n_train"][0] == balance["n_after"].sum()


def test_a_plain_text_corpus_is_analysed_through_its_concepts(tmp_path, tiny_model_dir):
    import random

    rng = random.Random(0)
    words = ["".join(rng.choice("abcdefghijklmnop") for _ in range(3)) for _ in range(60)]
    lines = [" ".join(rng.choice(["red", "blue"]) if rng.random() < 0.3 else rng.choice(words)
                      for _ in range(6)) + " ." for _ in range(40)]
    (tmp_path / "corpus.txt").write_text("\n".join(lines) + "\n\n", encoding="utf-8")
    (tmp_path / "p.yaml").write_text(
        f"name: text\nstore: s.duckdb\nreports: r\nmodel: {{path: {tiny_model_dir}, batch_size: 4}}\n"
        "corpus: {format: text, train: corpus.txt, tokenizer: punct, test_fraction: 0.3}\n"
        "concepts: [{name: colour, words: [red, blue]}]\n"
        "ranking: {methods: [probeless]}\nevaluation: {fractions: [0.1, 0.3], n_random: 2}\n", encoding="utf-8")
    cfg = load_config(tmp_path / "p.yaml")
    assert cfg.tasks == ["colour"]
    assert _run(str(tmp_path / "p.yaml")).success
    store = Store(cfg.store_path)
    assert store.query("SELECT DISTINCT task FROM reports")["task"].to_list() == ["colour"]
    assert set(store.query("SELECT DISTINCT label FROM tokens")["label"]) == {"_"}


def test_concept_mistakes_are_config_errors(tmp_path):
    (tmp_path / "p.yaml").write_text("concepts: [{name: x, regex: '[a-'}]\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"concepts\[0\] \(x\)"):
        load_config(tmp_path / "p.yaml")
    (tmp_path / "p.yaml").write_text("concepts: [{name: upos, words: [a]}]\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="the task name 'upos' is used twice"):
        load_config(tmp_path / "p.yaml")
    (tmp_path / "p.yaml").write_text("concepts: [{name: x, wrods: [a]}]\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"unknown setting 'concepts\[0\].wrods' \(did you mean 'concepts\[0\].words'\?\)"):
        load_config(tmp_path / "p.yaml")


def test_the_random_weights_control_is_a_model_version_of_its_own(analysis_dir):
    """model.random_init_seed: the same architecture and tokenizer, fresh weights from the seed;
    its activations are stored apart and its probe is a baseline for the trained model's."""
    from neuro_pipeline.stages import current_activation_set, load_split

    config = analysis_dir / "pipeline.yaml"
    text = config.read_text(encoding="utf-8").replace("evaluation:", "ranking: {methods: [probeless]}\nevaluation:")
    config.write_text(text, encoding="utf-8")
    assert _run(str(config)).success
    control = analysis_dir / "control.yaml"
    control.write_text(text.replace("batch_size: 4", "batch_size: 4\n  random_init_seed: 11"), encoding="utf-8")
    assert _run(str(control)).success
    trained, random_cfg = load_config(config), load_config(control)
    store = Store(trained.store_path)
    a, b = current_activation_set(trained, store), current_activation_set(random_cfg, store)
    assert a.activation_set != b.activation_set and a.model_version != b.model_version
    xa = load_split(trained, store, a, "test").X
    xb = load_split(random_cfg, store, b, "test").X
    assert xa.shape == xb.shape and not (abs(xa - xb) < 1e-6).all()
    accuracy = store.query("SELECT activation_set, avg(value) AS acc FROM metrics WHERE selection = 'all' "
                           "AND metric = 'accuracy' AND scope = 'overall' GROUP BY activation_set")
    assert set(accuracy["activation_set"]) == {a.activation_set, b.activation_set}


def test_sentence_pairs_are_fed_as_context_for_the_first_segment(tmp_path, tiny_model_dir):
    """corpus.pairs: each line is ``sentence<TAB>second segment``; the model sees both and
    the analysis has one vector per word of the first segment only."""
    import random

    from neuro_pipeline.extraction import extract_activations, load_model
    from neuro_pipeline.stages import current_activation_set, load_split

    rng = random.Random(1)
    words = ["".join(rng.choice("abcdefghijklmnop") for _ in range(3)) for _ in range(60)]

    def segment(n: int) -> str:
        return " ".join(rng.choice(["red", "blue"]) if rng.random() < 0.3 else rng.choice(words) for _ in range(n))

    lines = [f"{segment(6)} .\t{segment(4)}" for _ in range(40)]
    (tmp_path / "pairs.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "p.yaml").write_text(
        f"name: pairs\nstore: s.duckdb\nreports: r\nmodel: {{path: {tiny_model_dir}, batch_size: 4}}\n"
        "corpus: {format: text, train: pairs.txt, pairs: true, test_fraction: 0.3}\n"
        "concepts: [{name: colour, words: [red, blue]}]\n"
        "ranking: {methods: [probeless]}\nevaluation: {fractions: [0.1, 0.3], n_random: 2}\n", encoding="utf-8")
    cfg = load_config(tmp_path / "p.yaml")
    assert _run(str(tmp_path / "p.yaml")).success
    store = Store(cfg.store_path)
    assert store.query("SELECT count(*) AS n FROM sentence_pairs")["n"][0] == 40
    aset = current_activation_set(cfg, store)
    split = load_split(cfg, store, aset, "train")
    n_words = store.query("SELECT count(*) AS n FROM tokens WHERE split = 'train'")["n"][0]
    assert split.X.shape[0] == n_words  # first-segment words only
    # The stored vectors are those of the sentence read with its pair, not alone.
    model = load_model(tiny_model_dir)
    first = lines[0].split("\t")
    with_pair = dict(extract_activations(model, [first[0].split()], pairs=[first[1].split()]))[0]
    alone = dict(extract_activations(model, [first[0].split()]))[0]
    keys = store.query("SELECT sentence_hash, position FROM tokens WHERE sentence_id = (SELECT min(sentence_id) "
                       "FROM (SELECT sentence_id, string_agg(token, ' ' ORDER BY position) AS s FROM tokens "
                       "GROUP BY sentence_id) WHERE s = ?) ORDER BY position", [first[0]])
    stored = store.read_activation_matrix(aset.activation_set, keys)
    assert abs(stored - with_pair.reshape(len(first[0].split()), -1)).max() < 1e-5
    assert abs(stored - alone.reshape(len(first[0].split()), -1)).max() > 1e-3
    # Mistakes in the setting are config errors.
    (tmp_path / "bad.yaml").write_text("corpus: {format: conllu, train: pairs.txt, pairs: true}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="corpus.pairs is for corpus.format='text'"):
        load_config(tmp_path / "bad.yaml")


def test_interventions_ablate_top_neurons_inside_the_model(analysis_dir):
    """interventions.enabled: a masked-LM head is trained on the tiny BERT (it has none) and
    kept next to the store; each method's top neurons of each class are ablated inside the
    model, against layer-matched random neurons; table, check and report section."""
    config = analysis_dir / "pipeline.yaml"
    config.write_text(config.read_text(encoding="utf-8").replace("evaluation:", (
        "ranking: {methods: [probeless, mean_select]}\n"
        "interventions: {enabled: true, classes: [NOUN, DET], k: 8, n_random: 3, eval_sentences: 8, "
        "head_sentences: 20, top_k: [1, 5]}\n"
        "evaluation:")), encoding="utf-8")
    cfg = load_config(config)
    result = _run(str(config))
    assert result.success
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks["model_interventions_quality"] is True
    store = Store(cfg.store_path)
    table = store.query('SELECT method, label, top_k, "group", metric, n_neurons, n_random, baseline, top, '
                        "random_mean, random_low, random_high, layer_counts FROM interventions")
    assert set(table["method"]) == {"probeless", "mean_select"} and set(table["label"]) == {"NOUN", "DET"}
    assert set(table["top_k"]) == {1, 5} and set(table["group"]) == {"concept", "outside"}
    assert set(table["n_neurons"]) == {8} and set(table["n_random"]) == {3}
    acc = table.filter(pl.col("metric") == "accuracy")
    assert ((acc["random_low"] <= acc["random_mean"]) & (acc["random_mean"] <= acc["random_high"])).all()
    assert all(sum(map(int, c.split(","))) == 8 for c in table["layer_counts"])
    heads = list((cfg.store_path.parent / "mlm_heads").glob("*/mlm_head.json"))
    assert len(heads) == 1 and (heads[0].parent / "mlm_head.safetensors").is_file()
    page = open(store.query("SELECT html_path FROM reports")["html_path"][0], encoding="utf-8").read()
    assert "Interventions in the model" in page and "trained here on the frozen encoder" in page

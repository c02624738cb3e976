"""pipeline.yaml parsing: defaults, overrides, and errors that name the key and the choices."""

from __future__ import annotations

import textwrap

import pytest

from neuro_pipeline.config import ConfigError, config_from_dict, load_config


def test_default_is_the_embedded_analysis():
    cfg = load_config(None)
    assert cfg.corpus.format == "demo"
    assert (cfg.model_dir / "config.json").is_file()
    assert cfg.extraction.aggregation == "last"
    assert cfg.task == "upos"


def test_yaml_overrides_and_relative_paths(tmp_path):
    (tmp_path / "train.conllu").write_text("1\ta\ta\tX\t_\t_\t0\troot\t_\t_\n\n", encoding="utf-8")
    (tmp_path / "p.yaml").write_text(textwrap.dedent("""\
        name: mine
        store: out/p.duckdb
        corpus: {format: conllu, train: train.conllu, label_column: feats:Number}
        extraction: {aggregation: mean}
        evaluation: {fractions: [0.1]}
        """), encoding="utf-8")
    cfg = load_config(tmp_path / "p.yaml")
    assert cfg.store_path == tmp_path / "out" / "p.duckdb"
    assert cfg.path(cfg.corpus.train) == tmp_path / "train.conllu"
    assert cfg.task == "feats:number"
    assert cfg.evaluation.fractions == (0.1,)


@pytest.mark.parametrize("raw, message", [
    ({"modle": {}}, r"unknown setting 'modle' \(did you mean 'model'\?\); valid settings: \['balance', 'concepts', 'corpus'"),
    ({"model": {"dtpye": "x"}}, r"unknown setting 'model.dtpye' \(did you mean 'model.dtype'\?\)"),
    ({"extraction": {"aggregation": "average"}}, r"extraction.aggregation must be one of \['first', 'last', 'mean'\], got 'average'"),
    ({"corpus": {"format": "conllu"}}, r"corpus.train is required"),
    ({"corpus": {"format": "conllu", "train": "nope.conllu"}}, r"corpus file not found: nope.conllu"),
    ({"model": {"path": "/no/such/model"}}, r"model.path is not a directory: /no/such/model"),
    ({"evaluation": {"fractions": [0, 0.5]}}, r"evaluation.fractions must be a non-empty list of numbers in \(0, 1\]"),
    ({"name": "a b"}, r"name must be letters, digits"),
    ({"ranking": {"methods": ["iou_probe"]}},
     r"ranking.methods\[0\]: unknown ranking method 'iou_probe' \(did you mean 'linear_probe'\?\); valid methods: \[(.*, )?'gaussian', 'iou'"),
    ({"ranking": {"methods": [{"method": "linear_probe", "params": {"penalti": "lasso"}}]}},
     r"ranking.methods\[0\].params: unknown parameter 'penalti' for linear_probe \(did you mean 'penalty'\?\); valid parameters: \["),
    ({"ranking": {"methods": [{"method": "linear_probe", "params": {"penalty": "l1"}}]}},
     r"ranking.methods\[0\].params: The 'penalty' parameter of LinearProbeRanker must be one of"),
    ({"ranking": {"methods": ["probeless", "probeless"]}}, r"two rankings are named 'probeless'"),
    ({"ranking": {"methods": [{"method": "iou", "name": "neuron_vote"}]}}, r"'neuron_vote' is reserved"),
    ({"ranking": {"method": "iou", "methods": ["iou"]}}, r"either ranking.methods \(a list\) or ranking.method"),
    ({"ranking": {"methods": []}}, r"ranking.methods must be a non-empty list"),
    ({"ranking": {"methods": [{"method": "iou", "diversify": "yes"}]}}, r"ranking.methods\[0\].diversify must be true or false"),
    ({"ranking": {"metods": ["iou"]}}, r"unknown setting 'ranking.metods' \(did you mean 'ranking.methods'\?\)"),
    ({"ranking": {"agreement_n": [0]}}, r"ranking.agreement_n must be a non-empty list of integers >= 1"),
    ({"ranking": {"redundancy_threshold": 2}}, r"ranking.redundancy_threshold must be a number in \[0, 1\]"),
    ({"model": {"allow_pickle": "yes"}}, r"model.allow_pickle must be true or false, got 'yes'"),
    ({"model": {"batch_tokens": "many"}}, r"model.batch_tokens must be an integer >= 1, 'auto' or null, got 'many'"),
    ({"model": {"batch_tokens": 0}}, r"model.batch_tokens must be an integer >= 1, 'auto' or null, got 0"),
    ({"name": "../elsewhere"}, r"name must be letters, digits"),
    ({"corpus": {"pairs": True}}, r"corpus.pairs is for corpus.format='text' \(TAB-separated sentence pairs\); "
                                  r"corpus.format='demo' has no sentence pairs"),
    ({"stages": {"probe_selectivty": False}},
     r"unknown setting 'stages.probe_selectivty' \(did you mean 'stages.probe_selectivity'\?\)"),
    ({"stages": {"probe_ablation": "no"}}, r"stages.probe_ablation must be true or false, got 'no'"),
    ({"stages": {"neuron_redundancy": False}, "ranking": {"methods": [{"method": "iou", "diversify": True}]}},
     r"stages.neuron_redundancy is false but ranking 'iou' has diversify: true"),
    ({"evaluation": {"selection_probe": {"solvr": "minibatch"}}},
     r"evaluation.selection_probe: unknown setting 'solvr' \(did you mean 'solver'\?\)"),
    ({"evaluation": {"selection_probe": {"solver": "adam"}}},
     r"evaluation.selection_probe: The 'solver' parameter of LinearProbe must be one of"),
    ({"evaluation": {"matrix_memory_mb": -1}}, r"evaluation.matrix_memory_mb must be a number of MB >= 0 or null"),
    ({"execution": {"executor": "dask"}}, r"execution.executor must be one of \['in_process', 'multiprocess', 'celery'\]"),
    ({"execution": {"shard_sentences": -1}}, r"execution.shard_sentences must be a whole number >= 0"),
    ({"execution": {"shard_sentences": 2.5}}, r"execution.shard_sentences must be a whole number >= 0"),
    ({"execution": {"max_concurrent": 0}}, r"execution.max_concurrent must be a whole number >= 1 or null"),
    ({"execution": {"broker": ""}}, r"execution.broker must be a non-empty string"),
    ({"execution": {"instance": "nope.yaml"}}, r"execution.instance is not a file: nope.yaml \(resolved to /tmp/nope.yaml\)"),
    ({"execution": {"shards": 4}}, r"unknown setting 'execution.shards'"),
    ({"corpus": {"format": "text", "train": "t.txt", "train_pairs": "p.txt"}},
     r"corpus.train_pairs is only for corpus.format='parallel'; with corpus.format='text' set corpus.pairs: true"),
])
def test_config_errors(raw, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(raw, source="p.yaml", base_dir="/tmp")


def test_batch_tokens_auto_caps_passes_on_the_cpu_only():
    from neuro_pipeline.config import AUTO_CPU_BATCH_TOKENS

    assert config_from_dict({}).model.pass_tokens() == AUTO_CPU_BATCH_TOKENS
    assert config_from_dict({"model": {"device": "cuda"}}, deep=False).model.pass_tokens() is None
    assert config_from_dict({"model": {"batch_tokens": None}}).model.pass_tokens() is None
    assert config_from_dict({"model": {"batch_tokens": 300}}).model.pass_tokens() == 300


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(bad)


def test_worked_example_config_is_valid():
    root = __import__("pathlib").Path(__file__).resolve().parents[2]
    if not (root.parent / "shared" / "data" / "ud-en-ewt").is_dir():
        pytest.skip("../shared/data is not present")
    cfg = load_config(root / "examples" / "ewt-upos.yaml")
    assert cfg.path(cfg.corpus.train).name == "en_ewt-ud-dev.conllu"
    assert cfg.store_path == root / ".neuro" / "pipeline.duckdb"


def test_ranking_methods_names_and_the_single_method_shorthand():
    cfg = config_from_dict({"ranking": {"methods": [
        "probeless", {"method": "linear_probe", "name": "lasso", "params": {"penalty": "lasso"}}]}})
    assert [(m.name, m.method, m.params) for m in cfg.ranking.methods] == [
        ("probeless", "probeless", {}), ("lasso", "linear_probe", {"penalty": "lasso"})]
    single = config_from_dict({"ranking": {"method": "iou", "params": {"threshold": 0.1}}})
    assert [(m.name, m.method, m.params) for m in single.ranking.methods] == [("iou", "iou", {"threshold": 0.1})]
    default = config_from_dict({})
    assert [m.name for m in default.ranking.methods] == ["linear_probe", "probeless", "iou", "mean_select"]


def test_settings_that_do_not_change_results_keep_the_settings_version():
    """matrix_memory_mb (memory only) never enters the settings hash; selection_probe enters it
    only once set, so adding these settings did not rerun existing analyses."""
    from neuro_pipeline.stages import settings_version

    base = settings_version(config_from_dict({}))
    assert settings_version(config_from_dict({"evaluation": {"matrix_memory_mb": 0}})) == base
    assert settings_version(config_from_dict({"evaluation": {"selection_probe": {}}})) == base
    assert settings_version(config_from_dict({"stages": {"probe_ablation": False}})) == base
    assert settings_version(config_from_dict({"execution": {"executor": "celery", "shard_sentences": 100}})) == base
    assert settings_version(config_from_dict({"evaluation": {"selection_probe": {"solver": "minibatch"}}})) != base


def test_shallow_loading_skips_only_the_method_checks():
    raw = {"ranking": {"methods": ["iou_probe"]}}
    assert config_from_dict(raw, deep=False).ranking.methods[0].method == "iou_probe"
    with pytest.raises(ConfigError, match="unknown ranking method 'iou_probe'"):
        config_from_dict(raw)
    with pytest.raises(ConfigError, match="unknown setting 'corpus.fromat'"):
        config_from_dict({"corpus": {"fromat": "conllu"}}, deep=False)

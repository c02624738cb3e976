"""The seams between library modules: no module reaches into another's private names,
every option set is defined once (in neuro_pipeline.options) and the modules that check an
option check it against that one object, and a fitted probe round-trips through its state."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from neuro_pipeline import config, options
from neuro_pipeline.config import ConfigError, config_from_dict
from neuro_pipeline.probe import LinearProbe

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("neuro_pipeline", "assets")


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _private_uses(source: str, where: str) -> list[str]:
    """``from X import _name`` of any module, and ``alias._name`` on a project module
    bound by ``import X [as alias]`` (single leading underscore; dunders are fine)."""
    tree = ast.parse(source, filename=where)
    found, aliases = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            found += [f"{where}:{node.lineno}: from {module} import {alias.name}"
                      for alias in node.names if _is_private(alias.name)]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in SCANNED:
                    aliases.add(alias.asname or alias.name.split(".")[0])
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _is_private(node.attr):
            base = node.value
            while isinstance(base, ast.Attribute):
                base = base.value
            if isinstance(base, ast.Name) and base.id in aliases:
                found.append(f"{where}:{node.lineno}: {ast.unparse(node)}")
    return found


def _sources() -> list[Path]:
    return sorted(p for root in SCANNED for p in (ROOT / root).rglob("*.py"))


def test_no_module_uses_another_modules_private_names():
    violations = [use for path in _sources()
                  for use in _private_uses(path.read_text(encoding="utf-8"), path.relative_to(ROOT).as_posix())]
    assert not violations, "give these names a public spelling in their module:\n" + "\n".join(violations)


def test_the_scan_sees_both_forms():
    source = ("from neuro_pipeline.probe import _hidden, __version__\nimport neuro_pipeline.probe as p\n"
              "import os\np._x()\np.__doc__\nos._exit\n")
    assert _private_uses(source, "example.py") == [
        "example.py:1: from neuro_pipeline.probe import _hidden",
        "example.py:4: p._x",
    ]


# ---------------------------------------------------------------------- options defined once
def test_options_imports_nothing_heavy():
    tree = ast.parse((ROOT / "neuro_pipeline" / "options.py").read_text(encoding="utf-8"))
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported <= {"__future__", "types"}
    code = ("import sys, neuro_pipeline.options; "
            "print(sorted(m for m in ('numpy', 'torch', 'polars') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("name", ["CORPUS_FORMATS", "TEXT_TOKENIZERS", "MODEL_COMPONENTS", "AGGREGATIONS",
                                  "LONG_SENTENCE_MODES", "EXECUTORS"])
def test_config_names_the_options_objects(name):
    assert getattr(config, name) is getattr(options, name)


#: (section, key, the option set config checks the key against).
CONFIG_CHOICES = [
    ("extraction", "aggregation", options.AGGREGATIONS),
    ("extraction", "long_sentences", options.LONG_SENTENCE_MODES),
    ("extraction", "storage_dtype", options.STORAGE_DTYPES),
    ("extraction", "storage", options.STORAGES),
    ("model", "dtype", options.COMPUTE_DTYPES),
    ("model", "component", options.MODEL_COMPONENTS),
    ("corpus", "tokenizer", options.TEXT_TOKENIZERS),
    ("execution", "executor", options.EXECUTORS),
    ("monitoring", "alert_severity", options.ALERT_SEVERITIES),
    ("interventions", "mode", options.ABLATION_INTERVENTION_MODES),
]


@pytest.mark.parametrize(("section", "key", "choices"), CONFIG_CHOICES, ids=[f"{s}.{k}" for s, k, _ in CONFIG_CHOICES])
def test_config_accepts_exactly_the_option_set(section, key, choices):
    for value in choices:
        assert getattr(getattr(config_from_dict({section: {key: value}}, deep=False), section), key) == value
    with pytest.raises(ConfigError, match=re.escape(f"{section}.{key} must be one of {list(choices)}, got 'bogus'")):
        config_from_dict({section: {key: "bogus"}}, deep=False)


def test_config_checks_corpus_format_and_ablation_modes_against_options():
    with pytest.raises(ConfigError) as err:
        config_from_dict({"corpus": {"format": "bogus"}}, deep=False)
    assert f"must be one of {list(options.CORPUS_FORMATS)}" in str(err.value)
    modes = config_from_dict({"evaluation": {"ablation_modes": list(options.ABLATION_MODES)}}, deep=False)
    assert modes.evaluation.ablation_modes == options.ABLATION_MODES
    with pytest.raises(ConfigError) as err:
        config_from_dict({"evaluation": {"ablation_modes": ["bogus"]}}, deep=False)
    assert f"non-empty list of {list(options.ABLATION_MODES)}" in str(err.value)


def test_extraction_accepts_the_aggregations_and_their_aliases():
    from neuro_pipeline.extraction import aggregate

    assert aggregate.AGGREGATIONS is options.AGGREGATIONS
    assert aggregate.ACCEPTED_AGGREGATIONS == (*options.AGGREGATIONS, *options.AGGREGATION_ALIASES)
    for name in options.AGGREGATIONS:
        assert aggregate.check_aggregation(name) == name
    for alias, canonical in options.AGGREGATION_ALIASES.items():
        assert canonical in options.AGGREGATIONS
        assert aggregate.check_aggregation(alias) == canonical
    with pytest.raises(ValueError, match="choose one of"):
        aggregate.check_aggregation("median")
    # pipeline.yaml takes the canonical names only.
    for alias in options.AGGREGATION_ALIASES:
        with pytest.raises(ConfigError):
            config_from_dict({"extraction": {"aggregation": alias}}, deep=False)


def test_computing_modules_check_against_the_options():
    from neuro_pipeline.corpus import text
    from neuro_pipeline.evaluation import ablation
    from neuro_pipeline.extraction import extract, model
    from neuro_pipeline.intervention import hooks

    assert extract.LONG_SENTENCE_MODES is options.LONG_SENTENCE_MODES
    assert model.COMPONENTS is options.MODEL_COMPONENTS
    assert tuple(model.DTYPES) == options.COMPUTE_DTYPES
    assert ablation.ABLATION_MODES is options.ABLATION_MODES
    assert hooks.INTERVENTION_MODES is options.INTERVENTION_MODES
    assert set(options.ABLATION_INTERVENTION_MODES) <= set(options.INTERVENTION_MODES)
    assert set(text.TOKENIZERS) == set(options.TEXT_TOKENIZERS)


def test_store_storage_dtypes_agree_with_the_options():
    from neuro_pipeline import store

    assert tuple(getattr(store, "STORAGE_DTYPES", options.STORAGE_DTYPES)) == options.STORAGE_DTYPES


def test_rankers_default_to_the_probes_settings():
    from neuro_pipeline.ranking import AttributionRanker, LinearProbeRanker

    probe = LinearProbe().get_params()
    for cls in (LinearProbeRanker, AttributionRanker):
        shared = {k: v for k, v in cls().get_params().items() if k in probe and v != "auto"}
        assert shared and shared == {k: probe[k] for k in shared}, cls.__name__


# ---------------------------------------------------------------------- probe state
@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(3)
    y = rng.choice(np.array(["DET", "NOUN", "VERB"]), size=400)
    X = rng.normal(loc=5.0, scale=2.0, size=(400, 12)).astype(np.float32)
    X[:, 2] += 3.0 * (y == "NOUN")
    X[:, 7] -= 2.0 * (y == "VERB")
    X[:, 9] = 1.5  # a constant column: scale 1, weight 0
    probe = LinearProbe(l1=1e-3, l2=1e-3).fit(X, y)
    X_new = rng.normal(loc=5.0, scale=2.0, size=(150, 12)).astype(np.float32)
    return probe, X_new


def test_state_holds_the_fitted_arrays(fitted):
    probe, _ = fitted
    state = probe.get_state()
    assert set(state) == {"classes", "coef", "intercept", "mean", "scale"}
    assert state["classes"].tolist() == ["DET", "NOUN", "VERB"]
    assert state["coef"].dtype == np.float32 and state["coef"].shape == (3, 12) and state["coef"].flags.c_contiguous
    assert state["intercept"].dtype == np.float32 and state["intercept"].shape == (3,)
    assert state["mean"].dtype == np.float64 and state["scale"].dtype == np.float64
    assert state["mean"].shape == state["scale"].shape == (12,)


def test_a_restored_probe_predicts_bit_for_bit(fitted):
    probe, X = fitted
    restored = LinearProbe.from_state(probe.get_state(), **probe.get_params())
    assert restored.get_params() == probe.get_params()
    assert restored.n_features_in_ == 12
    assert np.array_equal(restored.decision_function(X), probe.decision_function(X))
    assert np.array_equal(restored.predict_proba(X), probe.predict_proba(X))
    assert np.array_equal(restored.predict(X), probe.predict(X))


def test_a_state_stored_as_bytes_restores_the_same_probe(fitted):
    # As a store keeps it: little-endian bytes, coef flattened.
    probe, X = fitted
    state = probe.get_state()
    dtypes = {"coef": "<f4", "intercept": "<f4", "mean": "<f8", "scale": "<f8"}
    read_back = {key: np.frombuffer(np.ascontiguousarray(state[key], dtype=dt).tobytes(), dtype=dt)
                 for key, dt in dtypes.items()}
    restored = LinearProbe.from_state({"classes": np.unique(state["classes"]), **read_back})
    assert restored.coef_.shape == (3, 12)
    assert np.array_equal(restored.decision_function(X), probe.decision_function(X))


def test_a_restored_probe_owns_its_arrays(fitted):
    probe, X = fitted
    state = {key: value.copy() for key, value in probe.get_state().items()}
    restored = LinearProbe.from_state(state)
    state["coef"][:] = 0.0
    state["mean"][:] = 0.0
    assert np.array_equal(restored.decision_function(X), probe.decision_function(X))


def test_state_of_an_unfitted_probe_is_refused():
    with pytest.raises(ValueError, match="not fitted yet"):
        LinearProbe().get_state()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s.pop("scale"), "no \\['scale'\\]"),
        (lambda s: s.update(classes=s["classes"][:1]), "at least 2 labels"),
        (lambda s: s.update(coef=s["coef"][:, :-1].T), "coef has shape"),
        (lambda s: s.update(coef=s["coef"].ravel()[:-1]), "coef has shape"),
        (lambda s: s.update(intercept=s["intercept"][:2]), "intercept has shape"),
        (lambda s: s.update(mean=s["mean"][:-1]), "mean has shape"),
        (lambda s: s.update(scale=s["scale"][None]), "scale has shape"),
    ],
    ids=["missing key", "one class", "transposed coef", "ragged coef", "intercept", "mean", "scale"],
)
def test_a_state_that_does_not_fit_together_is_refused(fitted, change, message):
    state = dict(fitted[0].get_state())
    change(state)
    with pytest.raises(ValueError, match=message):
        LinearProbe.from_state(state)


# ---------------------------------------------------------------------- rankers
def test_set_scores_reorders_a_fitted_ranker():
    from neuro_pipeline.ranking import get_ranker, ranking_table

    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 4))
    ranker = get_ranker("iou").fit(X, np.arange(60) % 2)
    ranker.set_scores(np.array([1.0, -np.inf, 3.0, 2.0]))
    assert ranker.ranking_.tolist() == [2, 3, 0, 1]
    assert ranker.n_ranked_ == 3
    assert ranking_table(ranker)["rank"].to_list() == [1, 2, 3, None]


def test_ranking_table_takes_any_ranking_and_refuses_an_unfitted_ranker():
    from neuro_pipeline.ranking import get_ranker, ranking_table

    class Stored:
        ranking_ = np.array([1, 0])
        scores_ = np.array([1.0, 2.0])

    assert ranking_table(Stored())["neuron"].to_list() == [1, 0]
    with pytest.raises(ValueError, match="This IoURanker instance is not fitted yet"):
        ranking_table(get_ranker("iou"))

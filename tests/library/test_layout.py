"""The library's layout keeps its promises: SQL only in the store, modules of readable size,
one stage module per stage with the same parts, a light top-level import, and the old
``neuro_pipeline.pipeline`` still importable (with a deprecation warning)."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
import subprocess
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = ROOT / "neuro_pipeline"
_SQL = re.compile(r"\b(SELECT\s.+\sFROM|INSERT\s+INTO|DELETE\s+FROM|CREATE\s+(TEMP\s+)?TABLE|ALTER\s+TABLE)\b",
                  re.IGNORECASE | re.DOTALL)


def _strings(path: Path) -> list[tuple[int, str]]:
    """The string literals of a module that are not docstrings, with their lines."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            out.append((node.lineno, node.value))
        elif isinstance(node, ast.JoinedStr):
            text = "".join(v.value for v in node.values if isinstance(v, ast.Constant))
            out.append((node.lineno, text))
    return out


def test_sql_text_appears_only_under_the_store():
    offenders = [f"{path.relative_to(ROOT)}:{line}" for path in LIBRARY.rglob("*.py")
                 if LIBRARY / "store" not in path.parents
                 for line, text in _strings(path) if _SQL.search(text)]
    assert offenders == []


def test_the_sql_scan_finds_sql():
    """The scan above is not vacuous: it sees the store's own statements."""
    found = [line for path in (LIBRARY / "store").rglob("*.py") for line, text in _strings(path) if _SQL.search(text)]
    assert len(found) > 40


def test_no_library_module_is_longer_than_1000_lines():
    # The demo corpus's grammar and lexicon are data, not logic.
    data = {LIBRARY / "corpus" / "demo.py"}
    lengths = {str(p.relative_to(ROOT)): len(p.read_text(encoding="utf-8").splitlines())
               for p in LIBRARY.rglob("*.py") if p not in data}
    assert max(lengths.values()) <= 1000, sorted(lengths.items(), key=lambda kv: -kv[1])[:3]


def _stage_modules() -> list[str]:
    import neuro_pipeline.stages as stages

    return [m.name for m in pkgutil.iter_modules(stages.__path__) if m.name not in ("common", "versions", "metadata")]


def test_every_stage_module_has_its_materialize_check_and_metadata():
    for name in _stage_modules():
        module = importlib.import_module(f"neuro_pipeline.stages.{name}")
        public = [n for n in vars(module) if not n.startswith("_")]
        assert any(n.startswith("materialize_") for n in public), name
        assert any(n.startswith("check_") for n in public), name
        assert callable(getattr(module, "metadata", None)), name


def test_every_stage_is_in_the_assets_table_and_every_table_has_one_owner():
    from assets.stages import STAGES
    from neuro_pipeline.store import tables

    assert {spec.module.__name__.rsplit(".", 1)[-1] for spec in STAGES} == set(_stage_modules())
    owners: dict[str, str] = {}
    for info in pkgutil.iter_modules(tables.__path__):
        module = importlib.import_module(f"{tables.__name__}.{info.name}")
        for table in re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", module.SCHEMA):
            assert table not in owners, f"{table} is declared by {owners[table]} and {info.name}"
            owners[table] = info.name
        assert set(module.TABLES) <= set(re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", module.SCHEMA)), info.name
    assert tables.WRITABLE <= set(owners)


def test_importing_the_package_is_light_and_names_the_entry_points():
    code = ("import sys, neuro_pipeline as npl\n"
            "heavy = sorted(m for m in ('torch', 'transformers', 'polars', 'duckdb', 'dagster') if m in sys.modules)\n"
            "print(' '.join(heavy) or '-')\n"
            "print(len([getattr(npl, n) for n in npl.__all__]))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    heavy, count = out.stdout.split()
    assert heavy == "-"
    assert 15 <= int(count) <= 25


def test_the_old_pipeline_module_still_imports_with_a_deprecation_warning():
    sys.modules.pop("neuro_pipeline.pipeline", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        old = importlib.import_module("neuro_pipeline.pipeline")
    assert any(issubclass(w.category, DeprecationWarning) for w in caught)
    from neuro_pipeline import stages

    for name in ("run_analysis", "materialize_corpus", "materialize_activations", "materialize_rankings",
                 "materialize_ranking", "materialize_report", "materialize_drift"):
        assert getattr(old, name) is getattr(stages, name)

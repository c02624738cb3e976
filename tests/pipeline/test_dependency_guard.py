"""The library never imports dagster (nor duckdb / great_expectations until a stage needs them)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _loaded_after(code: str) -> set[str]:
    probe = code + "\nimport sys\nprint(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_library_never_imports_dagster():
    modules = ("neuro_pipeline, neuro_pipeline.stages, neuro_pipeline.pipeline, neuro_pipeline.cli, "
               "neuro_pipeline.config, neuro_pipeline.store, neuro_pipeline.quality, neuro_pipeline.corpus, neuro_pipeline.extraction, "
               "neuro_pipeline.ranking, neuro_pipeline.evaluation, neuro_pipeline.probe, neuro_pipeline.report")
    loaded = _loaded_after(f"import importlib\nfor m in '{modules}'.split(', '): importlib.import_module(m)")
    assert "dagster" not in loaded
    assert "great_expectations" not in loaded  # imported lazily inside the suites


def test_no_dagster_import_in_library_source():
    offenders = [str(p) for p in (ROOT / "neuro_pipeline").rglob("*.py")
                 if any(line.strip().startswith(("import dagster", "from dagster"))
                        for line in p.read_text(encoding="utf-8").splitlines())]
    assert offenders == []

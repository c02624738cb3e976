"""A stage's metadata (see :mod:`neuro_pipeline.stages.metadata`) as Dagster metadata: numbers
stay numbers (the UI plots them across runs), tables and text become Markdown, structured
values JSON, files paths."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dagster as dg

from neuro_pipeline.report import markdown_table
from neuro_pipeline.stages.metadata import FilePath, Json, Markdown, Table


def dagster_value(value: Any) -> Any:
    """One metadata value as Dagster shows it."""
    if isinstance(value, Table):
        return dg.MetadataValue.md(markdown_table(value.header, value.rows))
    if isinstance(value, Json):
        return dg.MetadataValue.json(value.value)
    if isinstance(value, FilePath):
        return dg.MetadataValue.path(value.path)
    if isinstance(value, Markdown):
        return dg.MetadataValue.md(value.text)
    return value


def dagster_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    return {key: dagster_value(value) for key, value in metadata.items()}


def per_task(summaries: list, metadata: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
    """Metadata of a per-task stage: the first task's in full; with concept tasks, each
    further task's numbers prefixed by ``<task>/`` (text entries are left out, the report
    page kept)."""
    md = dagster_metadata(metadata(summaries[0]))
    if len(summaries) > 1:
        md["tasks"] = ", ".join(s.task for s in summaries)
        for s in summaries[1:]:
            for key, value in metadata(s).items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    md[f"{s.task}/{key}"] = value
                elif isinstance(value, FilePath) and key in ("report_html",):
                    md[f"{s.task}/{key}"] = dagster_value(value)
    return md

"""What a stage's summary shows where its results are listed (the Dagster UI's metadata),
as plain values: numbers (which the UI plots across runs), text, and the few richer kinds
below. The code location turns them into Dagster's metadata values; the library never
imports Dagster."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Table:
    """A small table, shown as Markdown."""

    header: list[str]
    rows: list[list[Any]]


@dataclass(frozen=True)
class Json:
    """A structured value, shown as JSON."""

    value: Any


@dataclass(frozen=True)
class FilePath:
    """A file on the machine that ran the stage (e.g. the report page)."""

    path: str


@dataclass(frozen=True)
class Markdown:
    """Text shown as Markdown."""

    text: str


#: What a stage's ``metadata(summary)`` returns: names to plain numbers, text, or the kinds above.
Metadata = dict[str, Any]

"""The jinja2 environment of the report's HTML: the page and its sections are templates in
``templates/`` next to this module.

Every value a template prints is escaped (autoescape), except values marked safe with
:func:`trusted`: HTML and SVG that the pipeline generated itself (the plots, heatmaps, the drift
section). Escaping uses :func:`html.escape`, so quotes come out as ``&#x27;`` and ``&quot;``,
the same text as the Python-built page this replaced.

jinja2 is imported on the first render, not with this module: the Dagster code location imports
:mod:`neuro_pipeline.report` for its Markdown, and only the report stage renders HTML.
"""

from __future__ import annotations

import functools
import html
from pathlib import Path
from typing import TYPE_CHECKING, Any

from neuro_pipeline.report.format import is_numeric_cell, num, pct, thousands

if TYPE_CHECKING:
    import jinja2
    from markupsafe import Markup

#: The folder of the page template, its sections (``sections/``), macros and style sheet.
TEMPLATES = Path(__file__).with_name("templates")


def trusted(text: str) -> Markup:
    """``text`` marked as safe HTML: templates insert it as it is. Only for HTML and SVG the
    pipeline generated itself, never for text from a corpus, a config or a model.

    >>> str(trusted("<svg></svg>"))
    '<svg></svg>'
    """
    from markupsafe import Markup

    return Markup(text)


def _escaped(value: Any) -> Any:
    """jinja2's ``finalize`` hook: a printed value escaped with :func:`html.escape`; values
    marked safe (:func:`trusted`, macro output) pass through."""
    from markupsafe import Markup

    if hasattr(value, "__html__"):
        return value
    return Markup(html.escape(str(value)))


@functools.cache
def environment() -> jinja2.Environment:
    """The one environment of the report templates (built on first use, then reused).

    Undefined names raise instead of printing nothing, so a misspelt variable in a template
    fails the render. Block tags on a line of their own leave no blank line (``trim_blocks``,
    ``lstrip_blocks``). Filters ``pct``, ``num`` and ``thousands`` and the test
    ``numeric_cell`` are those of :mod:`neuro_pipeline.report.format`.
    """
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, finalize=_escaped,
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters.update(pct=pct, num=num, thousands=thousands)
    env.tests["numeric_cell"] = is_numeric_cell
    return env


def render(name: str, **context: Any) -> str:
    """Render the template ``name`` (a path under ``templates/``) with ``context``, as plain text.

    >>> render("macros.html.j2")
    ''
    """
    return str(environment().get_template(name).render(**context))

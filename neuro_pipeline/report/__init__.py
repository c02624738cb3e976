"""The evaluation report: one Markdown file and one self-contained HTML page per analysis
and model version (styles and the plot inline, no network fetches). The page is rendered from
the jinja2 templates in ``templates/``: ``report.html.j2`` and one partial per section."""

from neuro_pipeline.report.format import markdown_table
from neuro_pipeline.report.render import render_report, report_markdown

__all__ = ["markdown_table", "render_report", "report_markdown"]

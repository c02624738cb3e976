"""The evaluation report: one Markdown file and one self-contained HTML page per analysis
and model version (styles and the plot inline, no network fetches)."""

from neuro_pipeline.report.render import markdown_table, render_report, report_markdown

__all__ = ["markdown_table", "render_report", "report_markdown"]

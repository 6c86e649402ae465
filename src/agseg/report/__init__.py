"""agseg.report: rendering a model comparison (Markdown and CSV tables, box plots); no statistics, no file writes.

:mod:`~agseg.report.tables` (``to_markdown``, ``format_p``, the row builders, ``csv_text``) and
:mod:`~agseg.report.figures` (``boxplot_png``) take a :class:`~agseg.experiments.compare.Comparison` or its plain
parts; :func:`agseg.experiments.compare.write_comparison` writes what they return.
"""

from __future__ import annotations

from agseg.report.figures import boxplot_filename, boxplot_png, comparison_boxplot_png
from agseg.report.tables import csv_text, format_p, to_markdown

__all__ = ["boxplot_filename", "boxplot_png", "comparison_boxplot_png", "csv_text", "format_p", "to_markdown"]

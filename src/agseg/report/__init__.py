"""agseg.report: rendering results (Markdown and CSV tables, figures, the HTML report); no statistics.

:mod:`~agseg.report.tables` (``to_markdown``, ``format_p``, the row builders, ``csv_text``) and
:mod:`~agseg.report.figures` (``boxplot_png`` and the report's figures) take a
:class:`~agseg.experiments.compare.Comparison` or its plain parts and return text or bytes;
:func:`agseg.experiments.compare.write_comparison` writes what they return. :mod:`~agseg.report.sources` reads runs,
CVs, compare folders and CSVs, and :mod:`~agseg.report.html` (``build_report``, ``write_report``; the command
``agseg report``) lays them out as one self-contained HTML page. Those two import :mod:`agseg.experiments.compare`,
so they are not imported here (which ``compare`` itself imports).
"""

from __future__ import annotations

from agseg.report.figures import boxplot_filename, boxplot_png, comparison_boxplot_png
from agseg.report.tables import csv_text, format_p, to_markdown

__all__ = ["boxplot_filename", "boxplot_png", "comparison_boxplot_png", "csv_text", "format_p", "to_markdown"]

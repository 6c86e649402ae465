"""``agseg data ...``: inspect datasets (filled in by the data issue)."""

from __future__ import annotations

import typer

app = typer.Typer(help="Inspect datasets.", no_args_is_help=True)


@app.callback()
def _data() -> None:
    """Inspect datasets: layouts, shapes, spacings, labels, problems."""

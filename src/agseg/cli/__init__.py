"""The ``agseg`` command. Each verb parses its arguments and calls one library function.

Verbs live in their own modules (``agseg.cli.models``, ``agseg.cli.data``, ...) and are added to the app here.
"""

from __future__ import annotations

import logging

import typer

from agseg import __version__
from agseg.cli import compare as compare_cli
from agseg.cli import data as data_cli
from agseg.cli import demo as demo_cli
from agseg.cli import evaluate as evaluate_cli
from agseg.cli import experiments as experiments_cli
from agseg.cli import models as models_cli

app = typer.Typer(
    name="agseg",
    help="Attention-gated networks for medical image segmentation: models, data, training, evaluation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"agseg {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug messages."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")


app.command("demo")(demo_cli.demo)
app.command("models")(models_cli.models)
app.command("train")(experiments_cli.train)
app.command("cv")(experiments_cli.cv)
app.command("predict")(experiments_cli.predict)
app.add_typer(data_cli.app, name="data")
app.command("evaluate")(evaluate_cli.evaluate)
app.command("compare")(compare_cli.compare)


def main() -> None:
    """Console entry point."""
    app()

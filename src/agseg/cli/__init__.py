"""The ``agseg`` command. Each verb parses its arguments and calls one library function.

Verbs live in their own modules (``agseg.cli.models``, ``agseg.cli.data``, ...) and are added to the app here.
"""

from __future__ import annotations

import logging
import os
import sys

import click
import typer
from typer.core import TyperGroup

from agseg import __version__
from agseg.cli import compare as compare_cli
from agseg.cli import data as data_cli
from agseg.cli import demo as demo_cli
from agseg.cli import evaluate as evaluate_cli
from agseg.cli import experiments as experiments_cli
from agseg.cli import export as export_cli
from agseg.cli import models as models_cli
from agseg.cli import report as report_cli

#: exit codes, documented in docs/experiments.md
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INCOMPLETE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def _debug() -> bool:
    return os.environ.get("AGSEG_DEBUG", "") not in ("", "0") or "--debug" in sys.argv


def _click_exceptions() -> tuple[type[BaseException], ...]:
    """Typer's and click's own exits and usage errors (typer >= 0.2x vendors click as ``typer._click``, whose
    ``NoSuchOption`` is not a ``click.ClickException``): they print their usage message and exit 2 themselves."""
    found: list[type[BaseException]] = [click.ClickException, click.exceptions.Exit, click.exceptions.Abort]
    try:
        from typer._click import exceptions as vendored  # type: ignore[import-not-found]
    except ImportError:
        return tuple(found)
    found += [c for n in ("ClickException", "Exit", "Abort") if isinstance(c := getattr(vendored, n, None), type)]
    return tuple(found)


_PASS_THROUGH = (typer.Exit, typer.Abort, SystemExit, *_click_exceptions())


class _Group(TyperGroup):
    """Every command runs inside one handler: a library error becomes one line ``error: ...`` naming the file or key
    (exit 1; 2 for a usage or config error), an interruption exits 130, and only ``--debug`` (or ``AGSEG_DEBUG=1``)
    shows a traceback."""

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except _PASS_THROUGH:
            raise
        except KeyboardInterrupt:
            typer.secho("interrupted: finished work is kept (a run resumes with --resume)", fg="yellow", err=True)
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except Exception as err:
            if _debug() or ctx.meta.get("agseg_debug"):
                raise
            typer.secho(f"error: {describe_error(err)}", fg="red", err=True)
            raise typer.Exit(EXIT_USAGE if _is_config_error(err) else EXIT_ERROR) from None


def _is_config_error(err: Exception) -> bool:
    from agseg.config import ConfigError

    return isinstance(err, ConfigError)


def describe_error(err: Exception) -> str:
    """One line for ``err``: the message of agseg's own errors (which name the file or key), the type and message of
    anything else with a pointer to ``--debug``."""
    from agseg.config import ConfigError
    from agseg.data.errors import DataError
    from agseg.runtime import DeviceError

    msg = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
    msg = " ".join(str(msg).split()) or type(err).__name__
    if isinstance(err, DataError | ConfigError | DeviceError | FileNotFoundError | KeyError | ValueError):
        return msg
    if isinstance(err, FloatingPointError):
        return msg
    return f"{msg} ({type(err).__name__}; run with --debug for the traceback)"


app = typer.Typer(
    cls=_Group,
    name="agseg",
    help="Attention-gated networks for medical image segmentation: models, data, training, evaluation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # plain help: typer's rich help shows every flag as taking a value ('--fast <bool>', '--help <bool>')
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"agseg {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug messages."),
    debug: bool = typer.Option(False, "--debug", help="Show the traceback of an error instead of one line."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    ctx.meta["agseg_debug"] = debug
    # agseg's own progress at INFO; other libraries' INFO chatter (exporters, optimisers) only with --verbose
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("agseg").setLevel(logging.DEBUG if verbose else logging.INFO)


app.command("demo")(demo_cli.demo)
app.command("models")(models_cli.models)
app.command("train")(experiments_cli.train)
app.command("cv")(experiments_cli.cv)
app.command("predict")(experiments_cli.predict)
app.command("postprocess")(experiments_cli.postprocess)
app.add_typer(data_cli.app, name="data")
app.command("evaluate")(evaluate_cli.evaluate)
app.command("compare")(compare_cli.compare)
app.command("report")(report_cli.report)
app.command("export")(export_cli.export)


def _tolerate_narrow_terminals() -> None:
    """Under an ASCII locale (``LANG=C`` on many cluster nodes) print ``±`` as ``?`` rather than crash on it."""
    for stream in (sys.stdout, sys.stderr):
        enc = (getattr(stream, "encoding", None) or "").lower().replace("-", "")
        if enc and enc not in ("utf8", "utf16", "utf32") and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="replace")


def main() -> None:
    """Console entry point."""
    _tolerate_narrow_terminals()
    app()

"""Helpers shared by the CLI verbs: ``--set`` overrides and error reporting."""

from __future__ import annotations

from typing import Any, NoReturn

import typer
import yaml


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["channels=16,32,64", "gating=single"]`` -> ``{"channels": [16, 32, 64], "gating": "single"}``."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"--set expects KEY=VALUE, got {item!r}")
        if "," in raw and not raw.strip().startswith(("[", "{")):
            value: Any = [yaml.safe_load(v) for v in raw.split(",")]
        else:
            value = yaml.safe_load(raw)
        out[key.strip()] = value
    return out


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``error: message`` in red on stderr and exit with ``code``."""
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(code)


def parse_axes(text: str | None) -> tuple[int, ...] | None:
    """``"0,1"`` -> ``(0, 1)``; ``"none"`` or ``""`` -> ``()``; None -> None (the default)."""
    if text is None:
        return None
    if text.strip().lower() in ("", "none", "off"):
        return ()
    try:
        return tuple(int(a) for a in text.split(","))
    except ValueError:
        raise typer.BadParameter(f"axes are integers like 0,1 (or none), got {text!r}") from None

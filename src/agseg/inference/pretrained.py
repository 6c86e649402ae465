"""Models shipped inside the package (``agseg predict --model NAME``): found on disk, never downloaded.

Each lives in ``agseg/assets/models/<name>/`` as ``model.json`` + ``model.safetensors``; ``AGSEG_MODELS`` may
name extra folders (``os.pathsep``-separated) holding more such model folders.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

__all__ = ["list_pretrained", "pretrained_info", "pretrained_path", "ship_model"]

_ASSETS = Path(__file__).resolve().parents[1] / "assets" / "models"


def _roots() -> list[Path]:
    extra = [Path(p) for p in os.environ.get("AGSEG_MODELS", "").split(os.pathsep) if p]
    return [*extra, _ASSETS]


def list_pretrained() -> list[str]:
    """Names of the models available offline."""
    names = set()
    for root in _roots():
        if root.is_dir():
            names |= {d.name for d in root.iterdir() if (d / "model.json").is_file()}
    return sorted(names)


def pretrained_path(name: str) -> Path:
    """The folder of shipped model ``name``.

    Raises:
        KeyError: unknown name (the message lists the available ones).
    """
    for root in _roots():
        if (root / name / "model.json").is_file():
            return root / name
    have = ", ".join(list_pretrained()) or "none yet"
    raise KeyError(f"unknown shipped model {name!r}; available: {have}")


def pretrained_info(name: str) -> dict[str, Any]:
    """The ``info`` block of a shipped model (training data, CV performance, licence notes)."""
    return json.loads((pretrained_path(name) / "model.json").read_text(encoding="utf-8")).get("info", {})


def _without_machine_paths(info: dict[str, Any]) -> dict[str, Any]:
    """A shipped model names its dataset folder (``dsb2018_nuclei``), not where it lay on the machine that trained
    it (``/work/shared/data/dsb2018_nuclei``)."""
    out = dict(info)
    for key in ("data", "labels_source"):
        if isinstance(out.get(key), str):
            out[key] = re.sub(r"(?:[A-Za-z]:)?[\\/][^\s'\"]*[\\/]([^\\/\s'\"]+)", r"\1", out[key])
    return out


def ship_model(
    run_dir: str | Path,
    name: str,
    info: dict[str, Any],
    dest: str | Path | None = None,
    mirror_axes: list[int] | None = None,
    postprocess: dict[str, Any] | None = None,
) -> Path:
    """Copy a run's model bundle to ``dest/name`` (default: the package's assets) with ``info`` merged in.

    Args:
        run_dir: a training run (its ``model/`` folder) or a bundle folder.
        name: the name users give to ``agseg predict --model``.
        info: provenance to record: training data, performance, licence caveats.
        dest: parent folder; default ``agseg/assets/models``.
        mirror_axes: test-time mirroring the shipped model applies by default (chosen on a CV); None: the run's.
        postprocess: post-processing it applies (``{"keep_largest": {value: k}}``, a CV's decision); None: the run's.
    """
    src = Path(run_dir)
    src = src / "model" if (src / "model" / "model.json").is_file() else src
    if not (src / "model.json").is_file():
        raise FileNotFoundError(f"no model bundle in {run_dir}")
    out = Path(dest or _ASSETS) / name
    out.mkdir(parents=True, exist_ok=True)
    meta = json.loads((src / "model.json").read_text(encoding="utf-8"))
    meta["info"] = _without_machine_paths({**meta.get("info", {}), **info, "name": name})
    from agseg.inference.bundle import load_bundle
    from agseg.nets.compat import resolved_kwargs

    # a run saved under earlier defaults (no up_mode in its description) ships naming them, as load_bundle
    # rebuilt it from its weights: the shipped file then loads strictly under any later default
    model, bundle = load_bundle(src)
    meta["model_kwargs"] = resolved_kwargs(model, bundle.model_kwargs)
    if mirror_axes is not None:
        meta["mirror_axes"] = [int(a) for a in mirror_axes]
    if postprocess is not None:
        meta["postprocess"] = postprocess
    from agseg.fileio import atomic_write_text
    from agseg.weights import save_weights

    # the weights as loaded: under the current parameter names, even from a run saved before a rename
    save_weights(model, out / "model.safetensors", metadata={"agseg_model": bundle.model_name})

    atomic_write_text(out / "model.json", json.dumps(meta, indent=2) + "\n")
    return out

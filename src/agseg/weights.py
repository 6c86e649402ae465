"""Weight files, read safely and written atomically: used by training (checkpoints) and inference (bundles) alike.

A weight file is untrusted input: ``.pt`` checkpoints are read with ``torch.load(..., weights_only=True)`` (no
arbitrary pickled objects) and ``.safetensors`` files hold tensors only. Writes go to a temporary file in the same
folder and are moved into place with ``os.replace``, so a run killed while saving never leaves a half-written file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from agseg.fileio import atomic_path

__all__ = ["load_checkpoint", "load_state_dict_file", "save_checkpoint", "save_weights", "state_dict_of"]


def state_dict_of(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict of the net itself: unwrapped from DDP / DataParallel / ``torch.compile`` first, so the keys
    never carry ``module.`` or ``_orig_mod.`` prefixes."""
    from agseg.nets.base import unwrap

    return unwrap(model).state_dict()


def save_checkpoint(state: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Save a training state (tensors, numbers, strings, lists and dicts only) atomically."""
    with atomic_path(path) as tmp:
        torch.save(dict(state), tmp)
    return Path(path)


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` with ``weights_only=True``.

    Raises:
        FileNotFoundError: the file does not exist (named in the message).
        ValueError: the file is not a readable checkpoint (named in the message).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated file, foreign pickle, ...
        raise ValueError(f"{path}: not a readable agseg checkpoint ({type(err).__name__}: {err})") from None


def save_weights(model: nn.Module, path: str | os.PathLike[str], metadata: Mapping[str, str] | None = None) -> Path:
    """Save only the model weights as safetensors (the format shipped models use), atomically."""
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in state_dict_of(model).items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=dict(metadata or {}))
    return Path(path)


def load_state_dict_file(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Model weights from a ``.safetensors`` file, or from a checkpoint's ``"model"`` entry (or a bare state dict)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        if not path.is_file():
            raise FileNotFoundError(f"weights not found: {path}")
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as err:
            raise ValueError(f"{path}: not a readable safetensors file ({err})") from None
    ckpt = load_checkpoint(path)
    state = ckpt.get("model", ckpt)
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: holds no model state dict")
    return dict(state)

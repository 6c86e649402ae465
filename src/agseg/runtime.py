"""The runtime both training and inference use: device, precision, denormals, seeding, threads, processes.

Nothing here knows about training or inference; ``agseg.training`` and ``agseg.inference`` both import from it,
and never from each other.
"""

from __future__ import annotations

import logging
import os
import random
import re
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from functools import cache
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "AMP_MODES",
    "DeviceError",
    "amp_dtype",
    "autocast",
    "barrier",
    "cpu_has_fast_bf16",
    "cpu_model",
    "device_choices",
    "flush_denormal",
    "init_distributed",
    "is_main_process",
    "memory_format_for",
    "resolve_device",
    "seed_everything",
    "set_threads",
    "world",
]

log = logging.getLogger(__name__)

AMP_MODES = ("auto", "bf16", "fp16", "off")
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


class DeviceError(ValueError):
    """A device or precision setting that cannot be used here; the message says why and what is valid."""


def device_choices() -> str:
    """The device names :func:`resolve_device` accepts, for error messages."""
    return "auto, cpu, cuda, cuda:N"


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """The device for ``name``.

    Args:
        name: ``"auto"`` (CUDA when available: the local rank's device under ``torchrun``, else CPU), ``"cpu"``,
            ``"cuda"`` (the local rank's device, or device 0) or ``"cuda:N"``.

    Raises:
        DeviceError: an unknown name, CUDA asked for without a CUDA device, or a device index that does not exist.
    """
    if isinstance(name, torch.device):
        return name
    text = str(name).strip().lower()
    if not _DEVICE.match(text):
        raise DeviceError(f"unknown device {name!r}; valid: {device_choices()}")
    if text == "cpu" or (text == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise DeviceError(f"device {name!r} asked for, but no CUDA device is available here; use cpu or auto")
    if text in ("auto", "cuda"):
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
    index = int(text.split(":")[1])
    if index >= torch.cuda.device_count():
        raise DeviceError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    return torch.device("cuda", index)


@cache
def _cpuinfo() -> str:
    """/proc/cpuinfo (Linux), or "" where there is none."""
    try:
        return Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def cpu_has_fast_bf16() -> bool:
    """True when the CPU has AMX or AVX-512 bf16 instructions (bf16 autocast is then ~2x faster than fp32)."""
    flags = _cpuinfo()
    return "amx_bf16" in flags or "avx512_bf16" in flags


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what :func:`platform.processor` says."""
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    import platform

    return platform.processor()


def amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``mode`` (``"auto"``, ``"bf16"``, ``"fp16"``, ``"off"``) on ``device``; None: full
    precision.

    ``"auto"`` picks bf16 on CUDA devices that support it and on CPUs with AMX / AVX-512 bf16, fp16 on CUDA devices
    without bf16 (training then scales the loss: ``torch.amp.GradScaler``), else fp32 (fp16 on a CPU is slow).

    Raises:
        DeviceError: an unknown mode.
    """
    if mode == "off":
        return None
    if mode == "bf16":
        return torch.bfloat16
    if mode == "fp16":
        return torch.float16
    if mode != "auto":
        raise DeviceError(f"unknown amp mode {mode!r}; valid: {', '.join(AMP_MODES)}")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_fast_bf16() else None


def autocast(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager:
    """Autocast to ``dtype`` on ``device``'s type; a no-op context for ``None``."""
    if dtype is None:
        return nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def memory_format_for(spatial_dims: int | None) -> torch.memory_format | None:
    """``channels_last`` (2D) or ``channels_last_3d`` (3D); None for other inputs."""
    return {2: torch.channels_last, 3: torch.channels_last_3d}.get(spatial_dims or 0)


@contextmanager
def flush_denormal() -> Iterator[None]:
    """Flush denormal floats to zero inside the block only.

    Denormals made a bf16 training step on AMX CPUs ~14x slower (benchmarks/bench_loader.py), but leaving the
    CPU's flush-to-zero mode on for the whole process crashes SciPy's cKDTree (used by the distance metrics), so
    training and forward passes turn it on and restore it afterwards.
    """
    enabled = torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if enabled:
            torch.set_flush_denormal(False)


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_threads(threads: int | None) -> int:
    """Set torch's intra-op threads (``None`` or 0 leaves them); returns the number in use.

    Called once by the experiment layer (``agseg train``/``cv``), never by a trainer's constructor, so that a
    library user's setting is not changed behind their back.
    """
    if threads:
        if threads < 1:
            raise DeviceError(f"threads must be >= 1, got {threads}")
        torch.set_num_threads(int(threads))
    return torch.get_num_threads()


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of this process: ``(0, 1)`` outside ``torch.distributed``."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    """True on rank 0 (and always outside ``torch.distributed``): the only process that writes files."""
    return world()[0] == 0


def init_distributed(device: str = "auto", timeout_hours: float = 6.0) -> bool:
    """Join the process group ``torchrun`` describes (``WORLD_SIZE`` > 1 in the environment): NCCL when ``device``
    resolves to CUDA, gloo on CPU. The timeout is long (``timeout_hours``) because rank 0 alone tests a CV fold while
    the others wait. True when this process is one of several; a no-op (False) outside ``torchrun``."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not torch.distributed.is_available():
        return False
    if not torch.distributed.is_initialized():
        import datetime

        backend = "nccl" if resolve_device(device).type == "cuda" else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
        torch.distributed.init_process_group(backend=backend, timeout=datetime.timedelta(hours=timeout_hours))
    return True


def barrier() -> None:
    """Wait for every process of the group (a no-op outside ``torch.distributed``)."""
    if world()[1] > 1:
        torch.distributed.barrier()

"""Callbacks around the training loop: logging, checkpoints, attention snapshots, early stopping, progress.

The :class:`~agseg.training.trainer.Trainer` runs the loop and owns the training state; everything else a run does
(files, bars, TensorBoard, stopping early) is a :class:`Callback`, as MONAI's handlers are. Callbacks that write
(``main_process_only = True``) run on the main process only, so a ``torchrun`` job writes each file once.

Hooks, in the order the trainer calls them::

    on_fit_start(trainer)
      on_epoch_start(trainer, epoch)                     # epoch counts from 1
        on_batch_end(trainer, epoch, batch, logs)        # every micro-batch; logs: running loss / quick metric
        on_step_end(trainer, epoch, step)                # every optimiser step
      on_epoch_end(trainer, epoch, row)                  # row: the epoch's log row (train_*, val_*, lr, seconds)
    on_fit_end(trainer, result)
    close(trainer)                                       # always, also after an error or interruption

Callbacks with state that must survive a resume (early stopping's counter) give it through ``state_dict`` /
``load_state_dict``; the trainer stores it in ``last.pt``.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import io
import json
import logging
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from agseg.fileio import atomic_write, atomic_write_text
from agseg.nets.base import has_attention
from agseg.runtime import world
from agseg.weights import save_checkpoint

if TYPE_CHECKING:
    from agseg.training.trainer import Trainer, TrainResult

__all__ = [
    "AttentionSnapshots",
    "CSVLogger",
    "Callback",
    "Checkpointer",
    "EarlyStopping",
    "ProgressPrinter",
    "TensorBoardLogger",
    "TimeBudget",
    "default_callbacks",
]

log = logging.getLogger(__name__)


class Callback:
    """Base class: every hook is a no-op; override the ones you need (see the module docstring)."""

    #: run only on the main process (rank 0): every callback that writes files or prints
    main_process_only: bool = True
    #: key of this callback's state in a checkpoint (``None``: no state to keep)
    state_key: str | None = None

    def on_fit_start(self, trainer: Trainer) -> None: ...
    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None: ...
    def on_batch_end(self, trainer: Trainer, epoch: int, batch: int, logs: dict[str, float]) -> None: ...
    def on_step_end(self, trainer: Trainer, epoch: int, step: int) -> None: ...
    def on_epoch_end(self, trainer: Trainer, epoch: int, row: dict[str, float]) -> None: ...
    def on_fit_end(self, trainer: Trainer, result: TrainResult) -> None: ...
    def close(self, trainer: Trainer) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None


class CSVLogger(Callback):
    """``log.csv``: one row per epoch (rewritten atomically after every epoch, so it survives a kill)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def on_epoch_end(self, trainer: Trainer, epoch: int, row: dict[str, float]) -> None:
        keys: list[str] = []
        for r in trainer.history:
            keys += [k for k in r if k not in keys]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=keys)
        w.writeheader()
        w.writerows(trainer.history)
        atomic_write_text(self.path, buf.getvalue())


class TensorBoardLogger(Callback):
    """TensorBoard scalars per epoch in ``folder`` (skipped, with a debug message, when tensorboard is absent)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.writer: Any = None

    def on_fit_start(self, trainer: Trainer) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except Exception:  # tensorboard not installed
            log.debug("tensorboard not installed: no TensorBoard logs")
            return
        self.writer = SummaryWriter(str(self.folder))

    def on_epoch_end(self, trainer: Trainer, epoch: int, row: dict[str, float]) -> None:
        if self.writer is not None:
            for k, v in row.items():
                if k != "epoch":
                    self.writer.add_scalar(k, v, epoch)

    def close(self, trainer: Trainer) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class Checkpointer(Callback):
    """``checkpoints/last.pt`` every epoch (the full training state, for resume) and ``checkpoints/best.pt`` (the
    weights of the epoch with the lowest validation loss). The trainer runs checkpointers after every other
    callback, so that the state they save includes this epoch's updates."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    @property
    def last_path(self) -> Path:
        return self.folder / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.folder / "best.pt"

    def on_epoch_end(self, trainer: Trainer, epoch: int, row: dict[str, float]) -> None:
        if trainer.improved:
            save_checkpoint(
                {"format": "agseg-weights-1", "epoch": epoch, "model": trainer.model_state(),
                 "config": trainer.config_dict},
                self.best_path,
            )  # fmt: skip
        save_checkpoint(trainer.state_dict(epoch), self.last_path)


class EarlyStopping(Callback):
    """Stop when the validation loss has not improved by ``min_delta`` for ``patience`` validated epochs."""

    main_process_only = False  # every process must stop at the same epoch
    state_key = "early_stopping"

    def __init__(self, patience: int, min_delta: float = 0.0) -> None:
        if patience < 1:
            raise ValueError(f"early stopping patience must be >= 1, got {patience}")
        self.patience, self.min_delta = int(patience), float(min_delta)
        self.best = math.inf
        self.bad_epochs = 0

    def on_epoch_end(self, trainer: Trainer, epoch: int, row: dict[str, float]) -> None:
        if "val_loss" not in row:
            return
        if row["val_loss"] < self.best - self.min_delta:
            self.best, self.bad_epochs = row["val_loss"], 0
            return
        self.bad_epochs += 1
        if self.bad_epochs >= self.patience:
            log.info("early stop at epoch %d: no val_loss improvement for %d epochs", epoch, self.bad_epochs)
            trainer.stop_training = True

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.bad_epochs = float(state["best"]), int(state["bad_epochs"])


class TimeBudget(Callback):
    """Stop training once ``seconds`` of wall-clock time have passed since the fit started (checked after every
    optimiser step, the epoch in progress ending there, and after every epoch, so that a budget spent during
    validation starts no new epoch). For same-budget comparisons between models.

    ``anneal="poly"`` or ``"cosine"``: the learning rate also decays with the share of the budget spent (on top of
    the epoch schedule; use ``schedule: constant`` there), as a schedule over epochs would if the number of epochs
    that fit were known in advance: a budget-bound run still ends at a small learning rate.

    The time spent is kept in the checkpoint, so a resumed run continues the budget (and the decay) where the last
    checkpoint left it; under torchrun every process uses rank 0's clock, so all set the same rate."""

    main_process_only = False
    state_key = "time_budget"

    def __init__(self, seconds: float, anneal: str | None = None) -> None:
        if anneal not in (None, "poly", "cosine"):
            raise ValueError(f"anneal must be None, 'poly' or 'cosine', not {anneal!r}")
        self.seconds, self.anneal = float(seconds), anneal
        self.t0, self.before = 0.0, 0.0  # before: seconds spent by the run this one resumes

    def _spent_here(self) -> float:
        return self.before + time.perf_counter() - self.t0

    def spent(self) -> float:
        """Seconds of the budget spent: this process's clock, rank 0's under torchrun."""
        from agseg.training.trainer import _agreed_values

        return _agreed_values({"spent": self._spent_here()})["spent"]

    def on_fit_start(self, trainer: Trainer) -> None:
        self.t0 = time.perf_counter()

    def _set_lr(self, trainer: Trainer, spent: float) -> None:
        from agseg.training.trainer import decay_factor

        f = decay_factor(self.anneal, spent / self.seconds) if self.seconds > 0 else 0.0
        for group, lr in zip(trainer.optimizer.param_groups, trainer.scheduler.get_last_lr(), strict=True):
            group["lr"] = lr * f

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        if self.anneal:  # the epoch scheduler has just reset the rate: decay it from the start of the epoch
            self._set_lr(trainer, self.spent())

    def on_step_end(self, trainer: Trainer, epoch: int, step: int) -> None:
        spent = self.spent()
        if spent >= self.seconds:
            trainer.stop_training = True
        elif self.anneal:
            self._set_lr(trainer, spent)

    def on_epoch_end(self, trainer: Trainer, epoch: int, row: dict[str, float]) -> None:
        if self.spent() >= self.seconds:
            trainer.stop_training = True

    def state_dict(self) -> dict[str, Any]:
        return {"spent": self._spent_here()}  # on rank 0 only (the checkpointer's): no collective here

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.before = float(state.get("spent", 0.0))


class AttentionSnapshots(Callback):
    """Every ``every`` epochs (and at the last), the gates' maps on the first validation case (no augmentation)
    as float16 ``folder/epoch_NNN.npz`` (``_image`` holds the image); seed 001 Fig. 3 is drawn from them by
    :func:`agseg.viz.attention.plot_saved_attention`."""

    def __init__(self, folder: str | Path, every: int) -> None:
        self.folder, self.every = Path(folder), int(every)

    def on_epoch_end(self, trainer: Trainer, epoch: int, row: dict[str, float]) -> None:
        last = epoch == trainer.cfg.epochs
        if not self.every or not (epoch % self.every == 0 or last):
            return
        data = trainer.val_data
        if not data or not has_attention(trainer.model):
            return
        from agseg.nets.forward import forward_with_attention_padded

        item = data[0]
        was_training = trainer.model.training
        trainer.model.eval()
        with torch.no_grad():
            x = item["image"][None]
            if trainer.memory_format is not None:
                x = x.contiguous(memory_format=trainer.memory_format)
            _, maps = forward_with_attention_padded(trainer.model, x, trainer.dtype)
        trainer.model.train(was_training)
        arrays = {k: v[0].cpu().numpy().astype(np.float16) for k, v in maps.items()}
        if not arrays:
            return
        arrays["_image"] = item["image"].numpy().astype(np.float16)
        atomic_write(self.folder / f"epoch_{epoch:03d}.npz", lambda fh: np.savez_compressed(fh, **arrays))


def _in_notebook() -> bool:
    return "ipykernel" in sys.modules


class ProgressPrinter(Callback):
    """A progress bar per epoch (in a terminal and in a notebook) and one printed line per finished epoch.

    The epoch lines are printed (``tqdm.write``), not only logged, so a notebook user sees them without configuring
    ``logging``; set ``lines=False`` to keep the bars only.
    """

    def __init__(self, lines: bool = True, bars: bool | None = None) -> None:
        self.lines = lines
        self.bars = bars
        self.bar: Any = None

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        from tqdm.auto import tqdm

        disable = (not self.bars) if self.bars is not None else (False if _in_notebook() else None)
        self.bar = tqdm(total=trainer.batches_in_epoch, desc=f"epoch {epoch}/{trainer.cfg.epochs}", leave=False,
                        dynamic_ncols=True, disable=disable, unit="batch")  # fmt: skip

    def on_batch_end(self, trainer: Trainer, epoch: int, batch: int, logs: dict[str, float]) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in logs.items()}, refresh=False)

    def on_epoch_end(self, trainer: Trainer, epoch: int, row: dict[str, float]) -> None:
        self.close(trainer)
        if self.lines:
            from tqdm.auto import tqdm

            text = "  ".join(f"{k} {v:.4g}" for k, v in row.items() if k != "epoch")
            tqdm.write(f"epoch {epoch}/{trainer.cfg.epochs}  {text}{'  *' if trainer.improved else ''}")

    def close(self, trainer: Trainer) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def default_callbacks(run_dir: str | Path | None, cfg: Any, progress: bool = True) -> list[Callback]:
    """The callbacks ``agseg train`` uses: progress, ``log.csv``, TensorBoard, attention snapshots
    (``cfg.attention_every``), early stopping (``cfg.early_stop_patience``) and checkpoints (last, so it stores
    the others' state). Without ``run_dir`` only progress (and early stopping) -- nothing is written."""
    cbs: list[Callback] = [ProgressPrinter()] if progress else []
    if run_dir is not None:
        run = Path(run_dir)
        cbs += [CSVLogger(run / "log.csv"), TensorBoardLogger(run / "tb")]
        if getattr(cfg, "attention_every", 0):
            cbs.append(AttentionSnapshots(run / "attention", cfg.attention_every))
    if getattr(cfg, "early_stop_patience", 0):
        cbs.append(EarlyStopping(cfg.early_stop_patience, getattr(cfg, "early_stop_min_delta", 0.0)))
    if run_dir is not None:
        cbs.append(Checkpointer(Path(run_dir) / "checkpoints"))
    return cbs


def find(callbacks: Sequence[Callback], kind: type) -> Any:
    """The first callback of type ``kind``, or None."""
    return next((c for c in callbacks if isinstance(c, kind)), None)


def clone_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A detached CPU copy of a state dict (the best epoch's weights kept in memory)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in copy.copy(state).items()}


class ShardRecorder(Callback):
    """Under ``torchrun``: which training cases this process saw in each epoch, and at the end a digest of its
    weights, in ``run_dir/ddp/rank{r}.json`` (one file per process; every process writes its own). A quick audit
    that the data was sharded and that the processes ended with the same net."""

    main_process_only = False

    def __init__(self, run_dir: str | Path, sampler: Any, case_ids: list[str]) -> None:
        self.run_dir, self.sampler, self.case_ids = Path(run_dir), sampler, list(case_ids)
        self.epochs: dict[str, list[str]] = {}

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        # the loader has set the sampler's epoch already; iterating a DistributedSampler changes nothing
        self.epochs[str(epoch)] = [self.case_ids[i] for i in self.sampler]
        self._write({"epochs": self.epochs})

    def _write(self, extra: dict[str, Any]) -> None:
        rank, size = world()
        path = self.run_dir / "ddp" / f"rank{rank}.json"
        old = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        atomic_write_text(path, json.dumps({**old, "rank": rank, "world_size": size, **extra}, indent=1) + "\n")

    @staticmethod
    def write_digest(run_dir: str | Path, net: torch.nn.Module) -> None:
        """Add the SHA-256 of this process's final state dict to its ``ddp/rank{r}.json``."""
        h = hashlib.sha256()
        for k, v in sorted(net.state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
        ShardRecorder(run_dir, None, [])._write({"weights_sha256": h.hexdigest()})

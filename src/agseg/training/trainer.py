"""Training one model on one split: optimiser, schedule, bf16 autocast, gradient accumulation, exact resume.

The trainer runs the loop and owns the training state (model, optimiser, schedule, history, best epoch); what a
run writes or shows is done by callbacks (:mod:`agseg.training.callbacks`: ``log.csv``, TensorBoard, checkpoints,
attention snapshots, early stopping, progress), and batches come from an injectable loader factory (a
``DistributedSampler`` or any iterable of batches). It is data- and task-agnostic: items are dicts with
``"image"`` (float ``(C, *spatial)``) and ``"label"`` (segmentation: integer ``(*spatial)`` or ``(1, *spatial)``;
classification: a class index), and a :class:`~agseg.tasks.Task` says what the target is.

Reproducibility: every epoch starts by seeding torch, NumPy and ``random`` from ``(seed, epoch)`` and draws its
batch order from a generator seeded the same way, so a run resumed from the checkpoint written at the end of
epoch ``e`` replays epoch ``e + 1`` exactly as an uninterrupted run would (bit for bit in deterministic mode).
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from agseg.config import OPTIMIZERS, SCHEDULES, TrainConfig
from agseg.nets.base import main_output, spatial_dims_of, task_of, unwrap
from agseg.runtime import (
    amp_dtype,
    autocast,
    flush_denormal,
    is_main_process,
    memory_format_for,
    resolve_device,
    seed_everything,
    world,
)
from agseg.tasks import Task, get_task, quick_dice
from agseg.training.callbacks import Callback, Checkpointer, clone_state, default_callbacks, find
from agseg.weights import load_checkpoint

__all__ = [
    "LoaderFactory",
    "TrainResult",
    "Trainer",
    "build_optimizer",
    "build_scheduler",
    "decay_factor",
    "default_loader",
    "quick_dice",
]

log = logging.getLogger(__name__)


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam / AdamW / SGD (momentum, Nesterov) from the config."""
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay
        )
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; valid: {', '.join(OPTIMIZERS)}")


def decay_factor(schedule: str, t: float) -> float:
    """The learning-rate factor of a ``cosine`` or ``poly`` (exponent 0.9, nnU-Net's) decay at progress ``t`` in
    [0, 1] (clipped); 1 for anything else (``constant``)."""
    t = min(1.0, max(0.0, t))
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * t))
    if schedule == "poly":
        return (1 - t) ** 0.9
    return 1.0


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-epoch learning-rate factor: a linear or constant warm-up, then constant, cosine, step or poly decay."""
    if cfg.schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {cfg.schedule!r}; valid: {', '.join(SCHEDULES)}")
    warm, total = cfg.warmup_epochs, max(1, cfg.epochs)

    def factor(epoch: int) -> float:
        if epoch < warm:
            return cfg.warmup_factor if cfg.warmup_mode == "constant" else (epoch + 1) / (warm + 1)
        if cfg.schedule == "step":
            return cfg.gamma ** ((epoch - warm) // max(1, cfg.step_size))
        return decay_factor(cfg.schedule, (epoch - warm) / max(1, total - warm))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class LoaderFactory(Protocol):
    """Makes the batches of one pass over ``data``; the trainer calls it once per epoch (and for validation)."""

    def __call__(
        self, data: Dataset, *, shuffle: bool, batch_size: int, epoch: int, seed: int, num_workers: int
    ) -> Iterable[dict[str, Any]]: ...


def _ids(batch: dict[str, Any]) -> str:
    ids = batch.get("case_id") if isinstance(batch, dict) else None
    return ", ".join(map(str, ids)) if isinstance(ids, list | tuple) else str(ids or "?")


def _worker_init(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def _collective_device() -> torch.device:
    """Where a collective's tensors live: the current GPU under NCCL, the CPU otherwise."""
    if torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _agreed_values(values: dict[str, float]) -> dict[str, float]:
    """Under ``torch.distributed``: rank 0's ``values`` on every process (unchanged outside)."""
    if world()[1] <= 1:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=_collective_device())
    torch.distributed.broadcast(t, 0)
    return {k: float(v) for k, v in zip(keys, t.tolist(), strict=True)}


def _agreed(flag: bool) -> bool:
    """Under ``torch.distributed``: rank 0's ``flag`` on every process (unchanged outside)."""
    if world()[1] <= 1:
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int64, device=_collective_device())
    torch.distributed.broadcast(t, 0)
    return bool(t.item())


def default_loader(sampler: Any = None) -> LoaderFactory:
    """A ``DataLoader`` factory: a batch order seeded by ``(seed, epoch)``, or ``sampler`` (e.g. a
    ``DistributedSampler``; its ``set_epoch`` is called every epoch) for shuffled passes."""

    def make(
        data: Dataset, *, shuffle: bool, batch_size: int, epoch: int, seed: int, num_workers: int
    ) -> Iterable[dict[str, Any]]:
        g = torch.Generator().manual_seed(seed * 100_003 + epoch)
        if shuffle:
            # Skip one draw: agseg 0.1 wrapped the loader in a progress bar whose construction created (and dropped)
            # one iterator, which took one draw from this generator before the loop. Skipping it keeps the batch
            # order, so runs made before the callbacks existed reproduce bit for bit and resume on the same path.
            torch.empty((), dtype=torch.int64).random_(generator=g)
        use_sampler = sampler is not None and shuffle
        if use_sampler and hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        return DataLoader(
            data,
            batch_size=batch_size,
            shuffle=shuffle and not use_sampler,
            sampler=sampler if use_sampler else None,
            generator=g,
            num_workers=num_workers if shuffle else 0,
            worker_init_fn=_worker_init,
            # a process's shard under a sampler: drop the last partial batch only when a full one is left
            drop_last=shuffle and (len(sampler) if use_sampler else len(data)) > batch_size,  # type: ignore[arg-type]
        )

    return make


@dataclass
class TrainResult:
    """Outcome of :meth:`Trainer.fit`.

    Attributes:
        epochs_run: epochs in the history (also those run before a resume).
        best_epoch: epoch with the lowest validation loss (-1 without validation).
        best_val_loss: that loss (inf without validation).
        checkpoint: the checkpoint file of the selected weights (None when nothing was written).
        history: one row per epoch.
        seconds: wall time of this call.
        selected_epoch: the epoch whose weights the model holds (best, or last without validation).
        stopped_early: an early-stopping callback ended the run before ``cfg.epochs``.
    """

    epochs_run: int
    best_epoch: int
    best_val_loss: float
    checkpoint: Path | None
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    selected_epoch: int = 0
    stopped_early: bool = False


class Trainer:
    """Train ``model`` with ``loss_fn`` on ``train_data``, validating on ``val_data``.

    Args:
        model: the net (logits out; a list with deep supervision in training mode). A ``DistributedDataParallel``
            or compiled module works too: state dicts are always taken from the net inside.
        loss_fn: ``loss_fn(output, target)``, accepting the net's output as is.
        train_data: training dataset (items as in the module docstring).
        val_data: validation dataset (None or empty: the last epoch is kept).
        cfg: :class:`~agseg.config.TrainConfig`.
        run_dir: where the default callbacks write (``log.csv``, ``tb/``, ``checkpoints/``, ``attention/``);
            None writes nothing.
        seed: base seed.
        config_dict: stored in checkpoints so that a checkpoint alone can rebuild its net.
        callbacks: the callbacks; None: :func:`~agseg.training.callbacks.default_callbacks` for ``run_dir``.
        loader: a :class:`LoaderFactory`; None: :func:`default_loader` (with ``sampler``).
        sampler: a sampler for training batches (e.g. ``DistributedSampler``), used by the default loader.
        num_workers: DataLoader workers for training batches.
        task: a :class:`~agseg.tasks.Task` or its name (default: the net's ``task``).

    The trainer sets no process-wide state in its constructor (threads are the caller's business:
    :func:`agseg.runtime.set_threads`); denormal flushing is scoped to :meth:`fit`.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable[[Any, torch.Tensor], torch.Tensor],
        train_data: Dataset,
        val_data: Dataset | None,
        cfg: TrainConfig,
        run_dir: str | Path | None = None,
        *,
        seed: int = 0,
        config_dict: dict[str, Any] | None = None,
        callbacks: Sequence[Callback] | None = None,
        loader: LoaderFactory | None = None,
        sampler: Any = None,
        num_workers: int = 0,
        task: Task | str | None = None,
    ) -> None:
        if cfg.grad_accum < 1 or cfg.batch_size < 1 or cfg.epochs < 0:
            raise ValueError("train.batch_size and train.grad_accum must be >= 1 and train.epochs >= 0")
        if cfg.select not in ("best", "last"):
            raise ValueError(f"unknown train.select {cfg.select!r}; valid: best, last")
        self.cfg, self.seed = cfg, seed
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.device = resolve_device(cfg.device)
        self.dtype = amp_dtype(cfg.amp, self.device)
        #: loss scaling for fp16 autocast (bf16 and fp32 need none: the scaler is then a no-op)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)
        self.model = model.to(self.device)
        self.memory_format = memory_format_for(spatial_dims_of(model)) if cfg.channels_last else None
        if self.memory_format is not None:
            self.model = self.model.to(memory_format=self.memory_format)
        self.task = task if isinstance(task, Task) else get_task(task or task_of(model))
        self.loss_fn = loss_fn
        self.train_data, self.val_data = train_data, val_data
        self.optimizer = build_optimizer(self.model, cfg)
        self.scheduler = build_scheduler(self.optimizer, cfg)
        self.config_dict = config_dict or {}
        self.callbacks: list[Callback] = list(callbacks) if callbacks is not None else default_callbacks(run_dir, cfg)
        self.loader = loader or default_loader(sampler)
        self.num_workers = num_workers
        self.history: list[dict[str, float]] = []
        self.best_val_loss = math.inf
        self.best_epoch = -1
        self.best_state: dict[str, torch.Tensor] | None = None
        self.start_epoch = 0
        self.improved = False
        self.stop_training = False
        self.batches_in_epoch = 0

    # ------------------------------------------------------------------ callbacks
    def _emit(self, hook: str, *args: Any) -> None:
        main = is_main_process()
        # checkpointers last, so that they save every other callback's state of this epoch
        ordered = [c for c in self.callbacks if not isinstance(c, Checkpointer)]
        ordered += [c for c in self.callbacks if isinstance(c, Checkpointer)]
        for cb in ordered:
            if main or not cb.main_process_only:
                getattr(cb, hook)(self, *args)

    @property
    def checkpointer(self) -> Checkpointer | None:
        return find(self.callbacks, Checkpointer)

    # ------------------------------------------------------------------ state
    def model_state(self) -> dict[str, torch.Tensor]:
        """The net's state dict (unwrapped from DDP / ``torch.compile``: no ``module.`` prefixes)."""
        return unwrap(self.model).state_dict()

    def state_dict(self, epoch: int) -> dict[str, Any]:
        """The full training state at the end of ``epoch`` (what ``last.pt`` holds)."""
        return {
            "format": "agseg-checkpoint-1",
            "epoch": epoch,
            "model": self.model_state(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            **({"scaler": self.scaler.state_dict()} if self.scaler.is_enabled() else {}),
            "best_val_loss": self.best_val_loss,
            "best_epoch": self.best_epoch,
            "history": self.history,
            "stopped": self.stop_training,
            "callbacks": {cb.state_key: cb.state_dict() for cb in self.callbacks if cb.state_key},
            "config": self.config_dict,
        }

    def resume(self, path: str | Path | None = None) -> bool:
        """Restore the state in ``path`` (default: the checkpointer's ``last.pt``); False when there is none.

        The best epoch's weights come back from ``best.pt`` beside it, so ``select: best`` still picks them.
        """
        if path is None:
            ck = self.checkpointer
            if ck is None:
                raise ValueError("resume needs a checkpoint path or a Checkpointer callback")
            path = ck.last_path
        path = Path(path)
        if not path.is_file():
            log.info("nothing to resume in %s: starting from scratch", path)
            return False
        state = load_checkpoint(path)
        unwrap(self.model).load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler.is_enabled() and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.best_val_loss = float(state["best_val_loss"])
        self.best_epoch = int(state["best_epoch"])
        self.history = list(state["history"])
        self.start_epoch = int(state["epoch"])
        self.stop_training = bool(state.get("stopped", False))  # a run that stopped early stays stopped
        saved = state.get("callbacks") or {}
        for cb in self.callbacks:
            if cb.state_key and cb.state_key in saved:
                cb.load_state_dict(saved[cb.state_key])
        best = path.with_name("best.pt")
        if self.best_epoch > 0 and best.is_file():
            self.best_state = clone_state(load_checkpoint(best)["model"])
        log.info("resumed %s at epoch %d", path, self.start_epoch)
        return True

    # ------------------------------------------------------------------ loop
    def _to_device(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        x = batch["image"].to(self.device, non_blocking=True).float()
        if self.memory_format is not None:
            x = x.contiguous(memory_format=self.memory_format)
        return x, self.task.target(batch).to(self.device, non_blocking=True).long()

    def _batches(self, data: Dataset, shuffle: bool, epoch: int, batch_size: int) -> Iterable[dict[str, Any]]:
        return self.loader(data, shuffle=shuffle, batch_size=batch_size, epoch=epoch, seed=self.seed,
                           num_workers=self.num_workers if shuffle else 0)  # fmt: skip

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over the training data (``epoch`` counts from 0); returns its learning rate (as it
        started) and its mean loss and metric."""
        cfg, metric = self.cfg, self.task.quick_metric
        seed_everything(self.seed * 100_003 + epoch)
        if hasattr(self.train_data, "set_epoch"):
            self.train_data.set_epoch(epoch)  # per-(seed, epoch, index) augmentation seeds
        self.model.train()
        batches = self._batches(self.train_data, True, epoch, cfg.batch_size)
        n = len(batches) if hasattr(batches, "__len__") else None  # type: ignore[arg-type]
        limit = cfg.max_steps_per_epoch
        self.batches_in_epoch = min(x for x in (n, limit) if x is not None) if (n or limit) else 0
        self._emit("on_epoch_start", epoch + 1)
        lr = self.optimizer.param_groups[0]["lr"]  # as the epoch starts (a callback may have set it)
        total, score, count, steps, pending = 0.0, 0.0, 0, 0, 0
        self.optimizer.zero_grad(set_to_none=True)
        for i, batch in enumerate(batches):
            if limit is not None and i >= limit:
                break
            x, y = self._to_device(batch)
            with autocast(self.device, self.dtype):
                out = self.model(x)
                loss = self._loss(out, y, batch)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"non-finite training loss ({loss.item()}) at epoch {epoch + 1}, batch {i + 1} (cases "
                    f"{_ids(batch)}): lower train.lr or check those cases; the last checkpoint holds epoch {epoch}"
                )
            self.scaler.scale(loss / cfg.grad_accum).backward()
            pending += 1
            if pending == cfg.grad_accum or i + 1 == self.batches_in_epoch:
                steps, pending = self._step(epoch, steps), 0
                if self.stop_training:  # a callback (a time budget) ends training mid-epoch
                    break
            total += loss.item() * x.shape[0]
            score += self.task.quick_score(main_output(out).float(), y) * x.shape[0]
            count += x.shape[0]
            self._emit("on_batch_end", epoch + 1, i + 1, {"loss": total / count, metric: score / count})
        if pending:  # batches without a known count: the last micro-batches still make a step
            self._step(epoch, steps)
        self.scheduler.step()
        return {"lr": lr, "train_loss": total / max(1, count), f"train_{metric}": score / max(1, count)}

    def _loss(self, out: Any, y: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        try:
            return self.loss_fn(out, y)
        except ValueError as err:  # a target the loss cannot take: say which cases
            raise ValueError(f"{err} (cases {_ids(batch)})") from None

    def _step(self, epoch: int, steps: int) -> int:
        self.scaler.step(self.optimizer)  # fp16: skipped when the scaled gradients overflowed
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self._emit("on_step_end", epoch + 1, steps + 1)
        self.stop_training = _agreed(self.stop_training)  # torchrun: rank 0's stop (a time budget) for all
        return steps + 1

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Mean loss and quick metric over the validation set (eval mode, batch size 1: sizes may differ)."""
        if self.val_data is None or len(self.val_data) == 0:  # type: ignore[arg-type]
            return {}
        metric = self.task.quick_metric
        self.model.eval()
        total, score, count = 0.0, 0.0, 0
        for batch in self._batches(self.val_data, False, 0, 1):
            x, y = self._to_device(batch)
            with autocast(self.device, self.dtype):
                out = self.model(x)
                loss = self._loss(out, y, batch)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"non-finite validation loss ({loss.item()}) on case(s) {_ids(batch)}: the model diverged "
                    "(lower train.lr) or the case holds bad values"
                )
            total += loss.item()
            score += self.task.quick_score(main_output(out).float(), y)
            count += 1
        return {"val_loss": total / count, f"val_{metric}": score / count}

    def fit(self, resume: bool | str | Path = False) -> TrainResult:
        """Train for ``cfg.epochs`` epochs.

        Args:
            resume: True: continue from the checkpointer's ``last.pt`` when it exists; a path: from that file.
        """
        try:
            with flush_denormal():
                return self._fit(resume)
        finally:
            self._emit("close")

    def _fit(self, resume: bool | str | Path) -> TrainResult:
        cfg = self.cfg
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        if resume:
            self.resume(None if resume is True else resume)
        t0 = time.perf_counter()
        self._emit("on_fit_start")
        for epoch in range(self.start_epoch, cfg.epochs):
            if self.stop_training:
                break
            te = time.perf_counter()
            row: dict[str, float] = {"epoch": epoch + 1, **self.train_epoch(epoch)}
            if (epoch + 1) % cfg.val_every == 0 or epoch + 1 == cfg.epochs:
                # torchrun: rank 0's figures for every process, so that all choose the same best epoch and stop
                row.update(_agreed_values(self.validate()))
            row["seconds"] = time.perf_counter() - te
            self.history.append(row)
            self.improved = "val_loss" in row and row["val_loss"] < self.best_val_loss
            if self.improved:
                self.best_val_loss, self.best_epoch = row["val_loss"], epoch + 1
                if cfg.select == "best":
                    self.best_state = clone_state(self.model_state())
            log.debug("epoch %d/%d %s", epoch + 1, cfg.epochs, row)
            self._emit("on_epoch_end", epoch + 1, row)
            self.stop_training = _agreed(self.stop_training)
        stopped = self.stop_training and bool(self.history) and int(self.history[-1]["epoch"]) < cfg.epochs
        ck = self.checkpointer
        use_best = cfg.select == "best" and self.best_state is not None
        if use_best:
            unwrap(self.model).load_state_dict(self.best_state)
        last_epoch = int(self.history[-1]["epoch"]) if self.history else 0
        checkpoint = None
        if ck is not None:
            checkpoint = ck.best_path if use_best else ck.last_path
        result = TrainResult(
            epochs_run=len(self.history),
            best_epoch=self.best_epoch,
            best_val_loss=self.best_val_loss,
            checkpoint=checkpoint,
            history=self.history,
            seconds=time.perf_counter() - t0,
            selected_epoch=self.best_epoch if use_best else last_epoch,
            stopped_early=stopped,
        )
        self._emit("on_fit_end", result)
        return result

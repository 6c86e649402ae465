"""Training one model on one split: optimiser, schedule, bf16 autocast, gradient accumulation, checkpoints, resume.

The trainer is data-agnostic: it takes ``torch.utils.data.Dataset`` objects whose items are dicts with
``"image"`` (float ``(C, *spatial)``) and ``"label"`` (integer ``(*spatial)`` or ``(1, *spatial)``).

Reproducibility: every epoch starts by seeding torch, NumPy and ``random`` from ``(seed, epoch)`` and draws its
batch order from a generator seeded the same way, so a run resumed from the checkpoint written at the end of
epoch ``e`` replays epoch ``e + 1`` exactly as an uninterrupted run would (bit for bit in deterministic mode).
"""

from __future__ import annotations

import csv
import io
import logging
import math
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from agseg.config import TrainConfig
from agseg.fileio import atomic_write_text
from agseg.training.checkpoint import load_checkpoint, save_checkpoint

__all__ = [
    "TrainResult",
    "Trainer",
    "amp_dtype",
    "build_optimizer",
    "build_scheduler",
    "flush_denormal",
    "quick_dice",
    "resolve_device",
    "seed_everything",
]

log = logging.getLogger(__name__)

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "step", "poly")


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
    """Seed Python's ``random``, NumPy and torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"``: CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but no CUDA device is available")
    return torch.device(name)


@cache
def cpu_has_fast_bf16() -> bool:
    """True when the CPU has AMX or AVX-512 bf16 instructions (bf16 autocast is then ~2x faster than fp32)."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``train.amp`` (``"auto"``, ``"bf16"``, ``"off"``), or None for full precision."""
    if mode == "off":
        return None
    if mode == "bf16":
        return torch.bfloat16
    if mode != "auto":
        raise ValueError(f"unknown amp mode {mode!r}; valid: auto, bf16, off")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return torch.bfloat16 if cpu_has_fast_bf16() else None


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


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-epoch learning-rate factor: linear warm-up, then constant, cosine, step or poly decay."""
    if cfg.schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {cfg.schedule!r}; valid: {', '.join(SCHEDULES)}")
    warm, total = cfg.warmup_epochs, max(1, cfg.epochs)

    def factor(epoch: int) -> float:
        if epoch < warm:
            return (epoch + 1) / (warm + 1)
        t = (epoch - warm) / max(1, total - warm)
        if cfg.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
        if cfg.schedule == "poly":
            return max(0.0, 1 - t) ** 0.9
        if cfg.schedule == "step":
            return cfg.gamma ** ((epoch - warm) // max(1, cfg.step_size))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _main_output(out: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
    return out[0] if isinstance(out, list | tuple) else out


def _label(batch: dict[str, Any]) -> torch.Tensor:
    y = batch["label"]
    return y[:, 0] if y.ndim == batch["image"].ndim else y


@torch.no_grad()
def quick_dice(logits: torch.Tensor, label: torch.Tensor) -> float:
    """Mean foreground Dice of a batch, for progress bars and logs (not the evaluation metric).

    One output channel: sigmoid > 0.5; several: argmax, averaged over the foreground classes present in the
    reference or the prediction. Both empty counts as 1.
    """
    n = logits.shape[1]
    pred = (logits[:, 0] > 0).long() if n == 1 else logits.argmax(1)
    scores = []
    for c in range(1, max(2, n)):
        p, t = pred == c, label == c
        denom = p.sum() + t.sum()
        if denom > 0:
            scores.append(float(2 * (p & t).sum() / denom))
    return float(np.mean(scores)) if scores else 1.0


@dataclass
class TrainResult:
    """Outcome of :meth:`Trainer.fit`."""

    epochs_run: int
    best_epoch: int
    best_val_loss: float
    checkpoint: Path
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    selected_epoch: int = 0  # the epoch whose weights the model holds (best, or last without validation)


class Trainer:
    """Train ``model`` with ``loss_fn`` on ``train_data``, validating on ``val_data``; everything lands in ``run_dir``.

    Files: ``checkpoints/last.pt`` (full state, every epoch, for ``resume``), ``checkpoints/best.pt`` (model weights
    of the epoch with the lowest validation loss), ``log.csv`` (one row per epoch), ``tb/`` (TensorBoard, when
    installed).

    Args:
        model: the net (logits out; a list with deep supervision in training mode).
        loss_fn: ``loss_fn(output, label)``, accepting the net's output as is.
        train_data: training dataset.
        val_data: validation dataset (may be None or empty: then the last epoch is kept).
        cfg: :class:`~agseg.config.TrainConfig`.
        run_dir: output folder.
        seed: base seed.
        config_dict: stored in checkpoints so a checkpoint alone can rebuild its net.
        step_callback: called as ``step_callback(epoch, step)`` after every optimiser step (tests use it to
            simulate a crash).
        num_workers: DataLoader workers for training batches.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable[[Any, torch.Tensor], torch.Tensor],
        train_data: Dataset,
        val_data: Dataset | None,
        cfg: TrainConfig,
        run_dir: str | Path,
        seed: int = 0,
        config_dict: dict[str, Any] | None = None,
        step_callback: Callable[[int, int], None] | None = None,
        num_workers: int = 0,
    ) -> None:
        if cfg.grad_accum < 1 or cfg.batch_size < 1 or cfg.epochs < 0:
            raise ValueError("train.batch_size and train.grad_accum must be >= 1 and train.epochs >= 0")
        if cfg.select not in ("best", "last"):
            raise ValueError(f"unknown train.select {cfg.select!r}; valid: best, last")
        self.cfg, self.seed = cfg, seed
        self.run_dir = Path(run_dir)
        self.device = resolve_device(cfg.device)
        self.dtype = amp_dtype(cfg.amp, self.device)
        self.model = model.to(self.device)
        self.memory_format = None
        spatial_dims = getattr(model, "spatial_dims", None)
        if cfg.channels_last and spatial_dims in (2, 3):
            self.memory_format = torch.channels_last if spatial_dims == 2 else torch.channels_last_3d
            self.model = self.model.to(memory_format=self.memory_format)
        self.loss_fn = loss_fn
        self.train_data, self.val_data = train_data, val_data
        self.optimizer = build_optimizer(self.model, cfg)
        self.scheduler = build_scheduler(self.optimizer, cfg)
        self.config_dict = config_dict or {}
        self.step_callback = step_callback
        self.num_workers = num_workers
        self.history: list[dict[str, float]] = []
        self.best_val_loss = math.inf
        self.best_epoch = -1
        self.start_epoch = 0
        if cfg.threads:
            torch.set_num_threads(cfg.threads)

    # ------------------------------------------------------------------ paths
    @property
    def ckpt_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    @property
    def last_path(self) -> Path:
        return self.ckpt_dir / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.ckpt_dir / "best.pt"

    # ------------------------------------------------------------------ state
    def _state(self, epoch: int) -> dict[str, Any]:
        return {
            "format": "agseg-checkpoint-1",
            "epoch": epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "best_val_loss": self.best_val_loss,
            "best_epoch": self.best_epoch,
            "history": self.history,
            "config": self.config_dict,
        }

    def resume(self, path: str | Path | None = None) -> bool:
        """Restore the state of ``path`` (default ``checkpoints/last.pt``); False when there is none."""
        path = Path(path) if path else self.last_path
        if not path.is_file():
            log.info("nothing to resume in %s: starting from scratch", path)
            return False
        state = load_checkpoint(path)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.best_val_loss = float(state["best_val_loss"])
        self.best_epoch = int(state["best_epoch"])
        self.history = list(state["history"])
        self.start_epoch = int(state["epoch"])
        log.info("resumed %s at epoch %d", path, self.start_epoch)
        return True

    # ------------------------------------------------------------------ loop
    def _to_device(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        x = batch["image"].to(self.device, non_blocking=True).float()
        if self.memory_format is not None:
            x = x.contiguous(memory_format=self.memory_format)
        return x, _label(batch).to(self.device, non_blocking=True).long()

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None)

    def _loader(self, data: Dataset, shuffle: bool, epoch: int, batch_size: int) -> DataLoader:
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        return DataLoader(
            data,
            batch_size=batch_size,
            shuffle=shuffle,
            generator=g,
            num_workers=self.num_workers if shuffle else 0,
            worker_init_fn=_worker_init,
            drop_last=shuffle and len(data) > batch_size,  # type: ignore[arg-type]
        )

    def train_epoch(self, epoch: int) -> dict[str, float]:
        cfg = self.cfg
        seed_everything(self.seed * 100_003 + epoch)
        if hasattr(self.train_data, "set_epoch"):
            self.train_data.set_epoch(epoch)  # per-(seed, epoch, index) augmentation seeds
        self.model.train()
        loader = self._loader(self.train_data, True, epoch, cfg.batch_size)
        n_batches = len(loader) if cfg.max_steps_per_epoch is None else min(len(loader), cfg.max_steps_per_epoch)
        total, dice_sum, count = 0.0, 0.0, 0
        self.optimizer.zero_grad(set_to_none=True)
        bar = tqdm(
            loader,
            total=n_batches,
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            leave=False,
            dynamic_ncols=True,
            disable=None,
        )
        for i, batch in enumerate(bar):
            if i >= n_batches:
                break
            x, y = self._to_device(batch)
            with self._autocast():
                out = self.model(x)
                loss = self.loss_fn(out, y)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite training loss {loss.item()} at epoch {epoch + 1}, step {i + 1}")
            (loss / cfg.grad_accum).backward()
            if (i + 1) % cfg.grad_accum == 0 or i + 1 == n_batches:
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                if self.step_callback is not None:
                    self.step_callback(epoch, i)
            total += loss.item() * x.shape[0]
            dice_sum += quick_dice(_main_output(out).float(), y) * x.shape[0]
            count += x.shape[0]
            bar.set_postfix(loss=f"{total / count:.4f}", dice=f"{dice_sum / count:.3f}")
        bar.close()
        self.scheduler.step()
        return {"train_loss": total / max(1, count), "train_dice": dice_sum / max(1, count)}

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Mean loss and quick Dice over the validation set (eval mode, batch size 1: sizes may differ)."""
        if self.val_data is None or len(self.val_data) == 0:  # type: ignore[arg-type]
            return {}
        self.model.eval()
        total, dice_sum, count = 0.0, 0.0, 0
        for batch in self._loader(self.val_data, False, 0, 1):
            x, y = self._to_device(batch)
            with self._autocast():
                out = self.model(x)
                loss = self.loss_fn(out, y)
            total += loss.item()
            dice_sum += quick_dice(_main_output(out).float(), y)
            count += 1
        return {"val_loss": total / count, "val_dice": dice_sum / count}

    def fit(self, resume: bool = False) -> TrainResult:
        """Train for ``cfg.epochs`` epochs (continuing from ``checkpoints/last.pt`` when ``resume``)."""
        with flush_denormal():
            return self._fit(resume)

    def _fit(self, resume: bool) -> TrainResult:
        cfg = self.cfg
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        if resume:
            self.resume()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        writer = _tensorboard(self.run_dir / "tb")
        t0 = time.perf_counter()
        for epoch in range(self.start_epoch, cfg.epochs):
            te = time.perf_counter()
            row: dict[str, float] = {"epoch": epoch + 1, "lr": self.optimizer.param_groups[0]["lr"]}
            row.update(self.train_epoch(epoch))
            if (epoch + 1) % cfg.val_every == 0 or epoch + 1 == cfg.epochs:
                row.update(self.validate())
            row["seconds"] = time.perf_counter() - te
            self.history.append(row)
            if cfg.attention_every and ((epoch + 1) % cfg.attention_every == 0 or epoch + 1 == cfg.epochs):
                self._save_attention(epoch + 1)
            improved = "val_loss" in row and row["val_loss"] < self.best_val_loss
            if improved:
                self.best_val_loss, self.best_epoch = row["val_loss"], epoch + 1
                save_checkpoint(
                    {"format": "agseg-weights-1", "epoch": epoch + 1, "model": self.model.state_dict(),
                     "config": self.config_dict},
                    self.best_path,
                )  # fmt: skip
            save_checkpoint(self._state(epoch + 1), self.last_path)
            self._write_log()
            if writer is not None:
                for k, v in row.items():
                    if k != "epoch":
                        writer.add_scalar(k, v, epoch + 1)
            log.info(
                "epoch %d/%d  %s%s",
                epoch + 1,
                cfg.epochs,
                "  ".join(f"{k} {v:.4g}" for k, v in row.items() if k not in ("epoch",)),
                "  *" if improved else "",
            )
        if writer is not None:
            writer.close()
        if cfg.attention_every:
            self._plot_attention_evolution()
        chosen = self.best_path if cfg.select == "best" and self.best_path.is_file() else self.last_path
        if chosen == self.best_path:
            self.model.load_state_dict(load_checkpoint(chosen)["model"])
        last_epoch = int(self.history[-1]["epoch"]) if self.history else 0
        return TrainResult(
            epochs_run=len(self.history),
            best_epoch=self.best_epoch,
            best_val_loss=self.best_val_loss,
            checkpoint=chosen,
            history=self.history,
            seconds=time.perf_counter() - t0,
            selected_epoch=self.best_epoch if chosen == self.best_path else last_epoch,
        )

    @torch.no_grad()
    def _save_attention(self, epoch: int) -> None:
        """Attention maps of the first validation case (no augmentation) at this epoch, as float16 .npz."""
        if not self.val_data or not hasattr(self.model, "forward_with_attention"):
            return
        from agseg.fileio import atomic_write
        from agseg.inference.sliding import predict_with_attention

        item = self.val_data[0]
        _, maps = predict_with_attention(self.model, item["image"], self.dtype)
        self.model.train()
        arrays = {k: v[0].cpu().numpy().astype(np.float16) for k, v in maps.items()}
        arrays["_image"] = item["image"].numpy().astype(np.float16)
        atomic_write(
            self.run_dir / "attention" / f"epoch_{epoch:03d}.npz", lambda fh: np.savez_compressed(fh, **arrays)
        )

    def _plot_attention_evolution(self) -> None:
        """One figure per gate from the saved epochs (also those saved before a resume)."""
        files = sorted((self.run_dir / "attention").glob("epoch_*.npz"))
        if not files:
            return
        from agseg.viz.attention import plot_attention_evolution

        loaded = []
        for f in files:
            with np.load(f) as z:
                loaded.append((int(f.stem.split("_")[1]), {k: z[k].astype(np.float32) for k in z.files}))
        image = loaded[-1][1].pop("_image")
        series = [(e, {k: v for k, v in m.items() if k != "_image"}) for e, m in loaded]
        for gate in sorted(series[-1][1]):
            plot_attention_evolution(image, series, self.run_dir / "attention" / f"evolution_{gate}.png", gate=gate)

    def _write_log(self) -> None:
        keys: list[str] = []
        for row in self.history:
            keys += [k for k in row if k not in keys]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=keys)
        w.writeheader()
        w.writerows(self.history)
        atomic_write_text(self.run_dir / "log.csv", buf.getvalue())


def _worker_init(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def _tensorboard(path: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # tensorboard not installed
        log.debug("tensorboard not installed: no TensorBoard logs")
        return None
    return SummaryWriter(str(path))

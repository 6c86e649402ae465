"""Training: the trainer and its callbacks, checkpoints, weight transfer."""

from agseg.training.callbacks import (
    AttentionSnapshots,
    Callback,
    Checkpointer,
    CSVLogger,
    EarlyStopping,
    ProgressPrinter,
    TensorBoardLogger,
    default_callbacks,
)
from agseg.training.trainer import Trainer, TrainResult, default_loader

__all__ = [
    "AttentionSnapshots",
    "CSVLogger",
    "Callback",
    "Checkpointer",
    "EarlyStopping",
    "ProgressPrinter",
    "TensorBoardLogger",
    "TrainResult",
    "Trainer",
    "default_callbacks",
    "default_loader",
]

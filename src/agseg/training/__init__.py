"""Training: the trainer, checkpoints, weight transfer."""

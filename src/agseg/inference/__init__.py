"""Inference: sliding-window prediction and the file-level predictor."""

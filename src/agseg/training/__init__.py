"""agseg.training."""

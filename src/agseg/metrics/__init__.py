"""agseg.metrics."""

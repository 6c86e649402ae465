"""agseg.experiments."""

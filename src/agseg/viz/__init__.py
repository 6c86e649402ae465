"""agseg.viz."""

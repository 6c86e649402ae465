"""agseg.data."""

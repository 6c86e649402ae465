"""agseg.inference."""

"""agseg.losses."""

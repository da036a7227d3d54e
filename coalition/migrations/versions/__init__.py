"""Migration scripts, applied in order by ``coalition migrate``."""

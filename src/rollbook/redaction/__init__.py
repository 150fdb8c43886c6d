"""Keeping secrets out of everything rollbook writes: connection strings read, secrets scrubbed."""

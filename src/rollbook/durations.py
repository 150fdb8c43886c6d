"""A duration in the words an estimate or a measurement should use: rounded, with its unit."""

from __future__ import annotations


def duration_text(seconds: float) -> str:
    """'12 ms', '40 s', '3.5 min', '1.2 h': rounded as an estimate should be."""
    if seconds < 1:
        return f"{max(1, round(seconds * 1000))} ms"
    if seconds < 100:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def lock_wait_text(seconds: float) -> str:
    """A sampled lock wait: 'none seen' for zero (a wait shorter than the sampling interval can be missed)."""
    return "none seen" if seconds <= 0 else duration_text(seconds)

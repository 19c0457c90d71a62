"""Lightning callbacks."""

from nemo_salad.callbacks.gap_report import GapReport

__all__ = ["GapReport"]

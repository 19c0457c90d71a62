"""Lightning callbacks: held-out gap reporting, the pre-decay checkpoint and Stage II active selection."""

from nemo_salad.callbacks.active_selection import ActiveSelectionCallback
from nemo_salad.callbacks.gap_report import GapReport
from nemo_salad.callbacks.pre_decay import PreDecayCheckpoint

__all__ = ["ActiveSelectionCallback", "GapReport", "PreDecayCheckpoint"]

"""Lightning callbacks: held-out gap reporting, the pre-decay checkpoint, Stage II active selection and exact resume."""

from nemo_salad.callbacks.active_selection import ActiveSelectionCallback
from nemo_salad.callbacks.exact_resume import ExactResume
from nemo_salad.callbacks.gap_report import GapReport
from nemo_salad.callbacks.pre_decay import PreDecayCheckpoint

__all__ = ["ActiveSelectionCallback", "ExactResume", "GapReport", "PreDecayCheckpoint"]

"""Lightning callbacks: held-out gap reporting, the start/end spoken-benchmark report, the pre-decay checkpoint,
Stage II active selection, another run's optimizer state (Stage II) and exact resume."""

from nemo_salad.callbacks.active_selection import ActiveSelectionCallback
from nemo_salad.callbacks.exact_resume import ExactResume
from nemo_salad.callbacks.gap_report import GapReport
from nemo_salad.callbacks.init_optimizer import InitOptimizerState
from nemo_salad.callbacks.pre_decay import PreDecayCheckpoint
from nemo_salad.callbacks.run_report import RunReport

__all__ = ["ActiveSelectionCallback", "ExactResume", "GapReport", "InitOptimizerState", "PreDecayCheckpoint",
           "RunReport"]

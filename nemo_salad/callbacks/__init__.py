"""Lightning callbacks: held-out gap reporting and Stage II active-selection rounds."""

from nemo_salad.callbacks.active_selection import ActiveSelectionCallback
from nemo_salad.callbacks.gap_report import GapReport

__all__ = ["ActiveSelectionCallback", "GapReport"]

"""Lightning callbacks."""

from nemo_salad.callbacks.active_selection import ActiveSelectionCallback

__all__ = ["ActiveSelectionCallback"]

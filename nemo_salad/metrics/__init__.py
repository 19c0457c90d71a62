"""Gap factors (forgetting F, misalignment M) measured on paired speech/text."""

from nemo_salad.metrics.gap import GapStats, gap_stats, next_token_positions
from nemo_salad.metrics.measure import measure_gap, misalignment_fn

__all__ = ["GapStats", "gap_stats", "measure_gap", "misalignment_fn", "next_token_positions"]

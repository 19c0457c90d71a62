"""Gap factors (forgetting F, misalignment M) measured on paired speech/text."""

from nemo_salad.metrics.gap import GapStats, gap_stats, next_token_positions

__all__ = ["GapStats", "gap_stats", "next_token_positions"]

"""Percentile bootstrap: seeded index draws and the interval of a statistic's resamples (numpy only).

Shared by the findings study (:mod:`nemo_salad.study.stats`) and the evaluation's error bars
(:mod:`nemo_salad.evaluation.intervals`).
"""

from __future__ import annotations

import numpy as np

__all__ = ["Interval", "draws", "interval"]


class Interval(tuple):
    """``(point, low, high)`` of a statistic.

    >>> Interval((1.0, 0.5, 1.5)).contains(0.0)
    False
    """

    @property
    def point(self) -> float:
        return float(self[0])

    @property
    def low(self) -> float:
        return float(self[1])

    @property
    def high(self) -> float:
        return float(self[2])

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


def draws(n: int, reps: int, seed: int) -> np.ndarray:
    """Bootstrap index draws: (reps, n) integers in [0, n), seeded.

    >>> draws(3, 2, 0).shape
    (2, 3)
    """
    return np.random.default_rng(seed).integers(0, n, size=(reps, n))


def interval(point: float, samples: np.ndarray, level: float = 0.95) -> Interval:
    """The percentile interval of bootstrap ``samples`` around ``point`` (NaN samples dropped).

    >>> interval(0.5, np.linspace(0, 1, 101)).high
    0.975
    """
    samples = np.asarray(samples, np.float64)
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return Interval((point, float("nan"), float("nan")))
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail])
    return Interval((float(point), float(low), float(high)))

"""Interval estimates and the leave-one-out regression of the findings (numpy only).

Accuracies are resampled over items and F, M over held-out utterances (a nonparametric bootstrap); runs scored on
the same items or utterances are resampled with the same draws, so differences between them are paired.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from nemo_salad.parts.bootstrap import Interval, draws, interval

__all__ = ["Interval", "draws", "interval", "loo_r2", "ols", "ratio_draws"]


def ratio_draws(sums: np.ndarray, counts: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Token-weighted means ``Σ sums / Σ counts`` over each row of resampled unit indices ``idx`` (reps, n).

    >>> ratio_draws(np.array([1.0, 3.0]), np.array([1, 1]), np.array([[0, 1], [1, 1]])).tolist()
    [2.0, 3.0]
    """
    total = counts[idx].sum(axis=1).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, sums[idx].sum(axis=1) / total, np.nan)


def ols(x: Sequence[float], y: Sequence[float]) -> tuple[float, float, float]:
    """Least-squares line ``y = a + b x``: ``(a, b, in-sample R²)``.

    >>> [round(v, 6) for v in ols([0, 1, 2], [1, 3, 5])]
    [1.0, 2.0, 1.0]
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    b, a = np.polyfit(x, y, 1)
    resid = y - (a + b * x)
    sst = float(((y - y.mean()) ** 2).sum())
    return float(a), float(b), 1.0 - float((resid ** 2).sum()) / sst if sst > 0 else float("nan")


def loo_r2(x: Sequence[float], y: Sequence[float]) -> float:
    """Leave-one-out cross-validated R² of a line: each point predicted by the line fitted to the others,
    ``1 − Σ (y_i − ŷ_(−i))² / Σ (y_i − ȳ)²`` (ȳ over all points). NaN with fewer than 3 points or constant y.

    Negative when the held-out predictions are worse than the mean.

    >>> round(loo_r2([0, 1, 2, 3], [0, 1, 2, 3]), 6)
    1.0
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    n = x.size
    sst = float(((y - y.mean()) ** 2).sum())
    if n < 3 or sst == 0 or np.ptp(x) == 0:
        return float("nan")
    press = 0.0
    for i in range(n):
        keep = np.arange(n) != i
        if np.ptp(x[keep]) == 0:
            return float("nan")
        b, a = np.polyfit(x[keep], y[keep], 1)
        press += float((y[i] - (a + b * x[i])) ** 2)
    return 1.0 - press / sst

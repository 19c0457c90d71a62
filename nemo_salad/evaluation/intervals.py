"""Error bars of a run: bootstrap intervals over items and the spread over few-shot seeds.

**Bootstrap** (:func:`bootstrap_mean`): the nonparametric percentile bootstrap, with the same draws and percentiles as
the findings study (:mod:`nemo_salad.parts.bootstrap`: :func:`draws`, :func:`interval`). A statistic is the mean over
benchmarks of the mean of per-item values within each benchmark — an accuracy (values are 0/1 correctness, or a
StoryCloze pair's 1 / 0.5 / 0), the average accuracy over benchmarks, or a gap (values are the per-item
differences ``topline − system`` on the items both scored, so the gap is *paired*). Each resample draws, within
every benchmark independently, as many items as it has, with replacement; the interval is the
``(1 − level) / 2`` and ``(1 + level) / 2`` percentiles of the resampled statistic.

The draws of a benchmark are seeded by ``(seed, benchmark name)`` (:func:`draw_seed`) and depend only on its item
count, so two systems scored on the same items are resampled with the same draws (their intervals are paired) and
adding a benchmark does not change the draws of the others.

**Seeds** (:func:`seed_stats`): a cell scored under several few-shot draws is reported as the mean over seeds and
the sample standard deviation (``n − 1``; None for one seed). The bootstrap then resamples items of the
per-item correctness averaged over the seeds, so the interval reflects the items, not the seed draws.

Legend: ``R`` resamples, ``N`` items of a benchmark.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence

import numpy as np

from nemo_salad.parts.bootstrap import Interval, draws, interval

__all__ = ["Interval", "bootstrap_mean", "draw_seed", "draws", "interval", "seed_stats"]


def draw_seed(seed: int, key: str) -> int:
    """The seed of the bootstrap draws of benchmark ``key``: stable across processes and benchmark lists.

    >>> draw_seed(0, "copa") == draw_seed(0, "copa") != draw_seed(1, "copa")
    True
    """
    return zlib.crc32(f"{seed}/{key}".encode())


def bootstrap_mean(values: Mapping[str, Sequence[float] | np.ndarray], reps: int, level: float = 0.95,
                   seed: int = 0) -> Interval:
    """The bootstrap interval of the mean over benchmarks of each benchmark's mean item value.

    Args:
        values (Mapping[str, array-like]): benchmark name -> ``(N,)`` per-item values (N >= 1).
        reps (int): resamples ``R``; 0 gives no interval (low and high NaN).
        level (float): coverage of the percentile interval, in (0, 1). Default: 0.95.
        seed (int): draws of benchmark ``b`` use ``draw_seed(seed, b)``. Default: 0.

    Returns:
        Interval: ``(point, low, high)``; ``point`` is the statistic on the items as scored.

    Raises:
        ValueError: for no benchmark, a benchmark with no item, ``reps < 0`` or ``level`` outside (0, 1).

    >>> iv = bootstrap_mean({"copa": [1, 0, 1, 1]}, reps=200, seed=0)
    >>> iv.point, iv.low <= iv.point <= iv.high
    (0.75, True)
    """
    if not values:
        raise ValueError("bootstrap_mean needs values of at least one benchmark")
    if reps < 0 or not 0 < level < 1:
        raise ValueError(f"need reps >= 0 and 0 < level < 1, got reps={reps}, level={level}")
    arrays = {k: np.asarray(v, np.float64) for k, v in values.items()}
    empty = sorted(k for k, a in arrays.items() if a.ndim != 1 or a.size == 0)
    if empty:
        raise ValueError(f"benchmarks {empty} have no per-item values (expected non-empty 1-d arrays)")
    point = float(np.mean([a.mean() for a in arrays.values()]))
    if reps == 0:
        return Interval((point, float("nan"), float("nan")))
    resampled = np.zeros(reps)  # (R,)
    for key, a in arrays.items():
        idx = draws(a.size, reps, draw_seed(seed, key))  # (R, N)
        resampled += a[idx].mean(axis=1)
    return interval(point, resampled / len(arrays), level)


def seed_stats(per_seed: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (``n − 1``) of a statistic over seeds; the std is None for one seed.

    >>> seed_stats([0.25, 0.75]), seed_stats([0.6])
    ((0.5, 0.3535533905932738), (0.6, None))
    """
    if not per_seed:
        raise ValueError("seed_stats needs at least one value")
    x = np.asarray(per_seed, np.float64)
    return float(x.mean()), (float(x.std(ddof=1)) if x.size > 1 else None)

"""Per-cell statistics of a run from its per-item scores: mean ± std over seeds, bootstrap intervals, paired gaps
and the spread over speaking conditions.

Input (:data:`ItemTable`): for every ``(condition, system, benchmark)`` scored, per seed, the value of every item
scored — 1.0 / 0.0 correctness of the primary metric (log-likelihood or generate protocol), or a StoryCloze pair's
1 / 0.5 / 0. Output (:class:`Summary`):

* ``cells`` — per ``(condition, system, benchmark)`` and per ``(condition, system, "average")`` (the mean over
  benchmarks, only for systems scored on every benchmark): the accuracy under each seed, their mean and std
  (``n − 1``), and the bootstrap interval of the accuracy averaged over seeds (:mod:`~nemo_salad.evaluation.intervals`);
* ``gaps`` — ``topline − system`` (the topline of the main condition), per benchmark and on average, computed item by
  item on the items both scored under the same seed (paired), with the same statistics;
* ``spread`` — per system scored in several conditions, per benchmark and on average: the condition means,
  their range (max − min) and std (``n − 1``).

A statistic's items are those scored in every term (system, topline) under a seed; its interval uses the items
scored under every seed (``n``). In a run where the skips do not depend on the seed or the condition — the usual
case — these are all the same items and the interval's point is the mean over seeds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from nemo_salad.evaluation.intervals import bootstrap_mean, seed_stats

__all__ = ["AVERAGE", "ItemTable", "Spread", "Stat", "Summary", "summarise"]

#: the benchmark name of a mean over benchmarks
AVERAGE = "average"

SeedMap = dict[int, dict[str, float]]
#: ``(condition, system, benchmark) -> seed -> item id -> value``
ItemTable = dict[tuple[str, str, str], SeedMap]


@dataclass
class Stat:
    """One statistic (an accuracy or a gap) of one condition, system and benchmark (or :data:`AVERAGE`).

    Attributes:
        per_seed (dict[int, float]): the statistic under each seed. mean, std (float, float | None): over seeds.
        n (int): items in the interval (summed over benchmarks for the average).
        low, high (float | None): bootstrap interval; None without resamples.
    """

    condition: str
    system: str
    benchmark: str
    n: int
    per_seed: dict[int, float]
    mean: float
    std: float | None
    low: float | None
    high: float | None


@dataclass
class Spread:
    """Accuracy of one system over the speaking conditions, for one benchmark (or :data:`AVERAGE`)."""

    system: str
    benchmark: str
    by_condition: dict[str, float]
    range: float
    std: float | None


@dataclass
class Summary:
    """All statistics of one protocol; ``cell`` / ``gap`` look one up (None when not scored)."""

    cells: list[Stat] = field(default_factory=list)
    gaps: list[Stat] = field(default_factory=list)
    spread: list[Spread] = field(default_factory=list)

    def cell(self, condition: str, system: str, benchmark: str) -> Stat | None:
        return next((c for c in self.cells if (c.condition, c.system, c.benchmark) == (condition, system, benchmark)),
                    None)

    def gap(self, condition: str, system: str, benchmark: str) -> Stat | None:
        return next((c for c in self.gaps if (c.condition, c.system, c.benchmark) == (condition, system, benchmark)),
                    None)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _terms(terms: Sequence[tuple[float, SeedMap]]) -> tuple[dict[int, float], np.ndarray]:
    """Per seed, the mean over shared items of ``Σ w · value``; and per item shared by every seed, that sum
    averaged over the seeds (the bootstrap's values)."""
    first = terms[0][1]
    seeds = [k for k in first if all(k in m for _, m in terms)]
    per_seed: dict[int, float] = {}
    for k in seeds:
        ids = [i for i in first[k] if all(i in m[k] for _, m in terms)]
        if ids:
            per_seed[k] = float(np.mean([sum(w * m[k][i] for w, m in terms) for i in ids]))
    seeds = list(per_seed)
    if not seeds:
        return {}, np.zeros(0)
    common = [i for i in first[seeds[0]] if all(i in m[k] for _, m in terms for k in seeds)]
    values = np.array([np.mean([sum(w * m[k][i] for w, m in terms) for k in seeds]) for i in common])
    return per_seed, values


def _stat(key: tuple[str, str, str], parts: dict[str, tuple[dict[int, float], np.ndarray]], reps: int, level: float,
          seed: int) -> Stat | None:
    """The statistic over the benchmarks of ``parts`` (one for a cell, all for the average)."""
    if not parts or any(v.size == 0 for _, v in parts.values()):
        return None
    seeds = [k for k in next(iter(parts.values()))[0] if all(k in p for p, _ in parts.values())]
    if not seeds:
        return None
    per_seed = {k: float(np.mean([p[k] for p, _ in parts.values()])) for k in seeds}
    mean, std = seed_stats(list(per_seed.values()))
    iv = bootstrap_mean({b: v for b, (_, v) in parts.items()}, reps, level, seed)
    low, high = (None, None) if reps == 0 else (iv.low, iv.high)
    return Stat(*key, sum(v.size for _, v in parts.values()), per_seed, mean, std, low, high)


def _stats(cond: str, name: str, parts: dict[str, tuple[dict[int, float], np.ndarray]], average: bool, reps: int,
           level: float, seed: int) -> list[Stat]:
    """The statistic of each benchmark of ``parts``, and of their average when ``average``."""
    out = [_stat((cond, name, b), {b: part}, reps, level, seed) for b, part in parts.items()]
    if average:
        out.append(_stat((cond, name, AVERAGE), parts, reps, level, seed))
    return [s for s in out if s is not None]


def summarise(table: ItemTable, benchmarks: Sequence[str], systems: Sequence[str], topline: str | None,
              main: str, reps: int = 1000, level: float = 0.95, seed: int = 0, average: bool = True) -> Summary:
    """Accuracies, gaps and spread of every cell of ``table`` (see the module docstring).

    Args:
        table (ItemTable): per-item values.
        benchmarks (Sequence[str]): the benchmarks, in table order (the average is over all of them).
        systems (Sequence[str]): system names, in table order.
        topline (str | None): the system gaps are measured from (scored in condition ``main``); None: no gaps.
        main (str): the main condition.
        reps (int): bootstrap resamples (0: no intervals). Default: 1000.
        level (float): interval coverage. Default: 0.95.
        seed (int): bootstrap seed. Default: 0.
        average (bool): add the mean over benchmarks (systems scored on all of them, more than one). Default: True.

    Returns:
        Summary

    >>> table = {("default", "text_llm", "copa"): {0: {"a": 1.0, "b": 0.0}, 1: {"a": 1.0, "b": 1.0}}}
    >>> cell = summarise(table, ["copa"], ["text_llm"], "text_llm", "default", reps=0).cell(
    ...     "default", "text_llm", "copa")
    >>> cell.per_seed, cell.mean, round(cell.std, 4)
    ({0: 0.5, 1: 1.0}, 0.75, 0.3536)
    """
    out = Summary()
    conditions = list(dict.fromkeys(c for c, _, _ in table))
    for cond in conditions:
        for name in systems:
            parts = {b: _terms([(1.0, table[(cond, name, b)])]) for b in benchmarks if (cond, name, b) in table}
            out.cells += _stats(cond, name, parts, average and len(parts) == len(benchmarks) > 1, reps, level, seed)
            if topline is None or name == topline:
                continue
            gaps = {b: _terms([(1.0, table[(main, topline, b)]), (-1.0, table[(cond, name, b)])])
                    for b in benchmarks if (cond, name, b) in table and (main, topline, b) in table}
            out.gaps += _stats(cond, name, gaps, average and len(gaps) == len(benchmarks) > 1, reps, level, seed)
    for name in systems:
        for b in [*benchmarks, AVERAGE] if average else benchmarks:
            by = {c.condition: c.mean for c in out.cells if c.system == name and c.benchmark == b}
            if len(by) > 1:
                _, std = seed_stats(list(by.values()))
                out.spread.append(Spread(name, b, by, max(by.values()) - min(by.values()), std))
    return out

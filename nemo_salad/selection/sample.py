"""Step 5 of Stage II selection: draw texts from ``P_target`` until a budget is spent.

A draw picks a cluster from ``P_target`` and then a text uniformly, without replacement, inside it (each cluster's
texts are shuffled once). A cluster that runs out of texts is removed and ``P_target`` renormalised over the rest.
The whole sequence is a deterministic function of the seed, so a rerun (after a kill, or with more budget) sees
the same order, and a budget selects the longest prefix of that order that fits.

Budget rule: items are taken in draw order while the running cost stays within the budget; the first item that
does not fit ends the selection. Hence ``budget - cost(that item) < total <= budget``: the budget is respected and
undershot by less than one item (unless the corpus runs out first).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

__all__ = ["BudgetPrefix", "DrawSequence", "budget_prefix"]


class DrawSequence:
    """The deterministic draw order over corpus indices, materialised lazily as far as it is read.

    Args:
        assignments (np.ndarray): (N,) cluster of each corpus item.
        p_target (np.ndarray): (K,) cluster probabilities (clusters with 0 are never drawn).
        seed (int): seed of the whole sequence.
        eligible (np.ndarray | None): (N,) bool; False items are never drawn (e.g. probe texts). Default: all.
        batch (int): cluster draws generated per random call. Default: 4096.

    >>> seq = DrawSequence(np.array([0, 0, 1, 1]), np.array([1.0, 0.0]), seed=0)
    >>> sorted(seq[i] for i in range(2)), len(list(seq))
    ([0, 1], 2)
    """

    def __init__(self, assignments: np.ndarray, p_target: np.ndarray, seed: int,
                 eligible: np.ndarray | None = None, batch: int = 4096) -> None:
        assignments = np.asarray(assignments)
        p = np.asarray(p_target, np.float64).copy()
        if p.ndim != 1 or (p < 0).any() or not np.isfinite(p).all() or p.sum() <= 0:
            raise ValueError(f"p_target must be a non-negative (K,) vector with positive sum, got {p}")
        if assignments.size and (assignments.min() < 0 or assignments.max() >= p.size):
            raise ValueError(f"assignments must be cluster ids in [0, {p.size})")
        keep = np.ones(assignments.size, bool) if eligible is None else np.asarray(eligible, bool)
        rng = np.random.default_rng(seed)
        self._pools = [rng.permutation(np.flatnonzero((assignments == c) & keep)) for c in range(p.size)]
        self._next = np.zeros(p.size, np.int64)
        p[[len(pool) == 0 for pool in self._pools]] = 0.0
        self._p = p
        self._rng = rng
        self._batch = int(batch)
        self._items: list[int] = []
        self._source = self._generate()

    def _generate(self) -> Iterator[int]:
        while self._p.sum() > 0:
            draws = self._rng.choice(self._p.size, size=self._batch, p=self._p / self._p.sum())
            for c in draws:
                yield int(self._pools[c][self._next[c]])
                self._next[c] += 1
                if self._next[c] == len(self._pools[c]):  # exhausted: renormalise and redraw the rest
                    self._p[c] = 0.0
                    break

    def __getitem__(self, i: int) -> int:
        """The ``i``-th drawn corpus index; IndexError past the end of the corpus."""
        while len(self._items) <= i:
            item = next(self._source, None)
            if item is None:
                raise IndexError(f"draw {i} is past the end: only {len(self._items)} eligible items")
            self._items.append(item)
        return self._items[i]

    def __iter__(self) -> Iterator[int]:
        i = 0
        while True:
            try:
                yield self[i]
            except IndexError:
                return
            i += 1


@dataclass
class BudgetPrefix:
    """The items selected by :func:`budget_prefix`.

    Attributes:
        indices (list[int]): selected corpus indices, in draw order.
        total (float): their summed cost (<= budget).
        stop (int | None): draw position of the first item that did not fit (None if the corpus ran out).
        stop_cost (float | None): its cost.
        scanned (int): draw positions read (selected, skipped and the stop item).

    >>> BudgetPrefix([4, 2], 9.0, None, None, 2).exhausted
    True
    """

    indices: list[int]
    total: float
    stop: int | None
    stop_cost: float | None
    scanned: int

    @property
    def exhausted(self) -> bool:
        """True when the corpus ran out before the budget was spent."""
        return self.stop is None


def budget_prefix(order: DrawSequence, cost: Callable[[int], float | None], budget: float) -> BudgetPrefix:
    """Walk ``order`` taking items while the summed cost stays within ``budget`` (see the module docstring).

    Args:
        order (DrawSequence): the draw order.
        cost (Callable[[int], float | None]): cost of a corpus index (seconds or tokens); None means the item
            is unusable (e.g. dropped by the synthesis filter) and is skipped.
        budget (float): the budget (> 0).

    Returns:
        BudgetPrefix: the selection, its total, and where it stopped.

    >>> seq = DrawSequence(np.zeros(10, int), np.array([1.0]), seed=1)
    >>> sel = budget_prefix(seq, lambda i: 1.5, budget=5.0)
    >>> len(sel.indices), sel.total, sel.stop_cost
    (3, 4.5, 1.5)
    """
    if not budget > 0:
        raise ValueError(f"budget must be > 0, got {budget}")
    chosen: list[int] = []
    total = 0.0
    for position, index in enumerate(order):
        c = cost(index)
        if c is None:
            continue
        if c < 0:
            raise ValueError(f"cost of item {index} is negative ({c})")
        if total + c > budget:
            return BudgetPrefix(chosen, total, position, float(c), position + 1)
        chosen.append(index)
        total += c
    return BudgetPrefix(chosen, total, None, None, len(order._items))

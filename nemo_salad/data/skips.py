"""Count the items each data source loses to skips, and stop a run whose data is unusable.

The dataset skips an unusable cut (missing or unreadable audio, empty transcript, too long, ...) instead of
stopping, and names the source of each batch in ``batch.source``. :class:`SkipMonitor` sees every batch in the
training process and raises :class:`UnusableDataError` when a source has yielded no usable item at all, or when
the skipped fraction of its last ``window`` items exceeds ``max_fraction``. Nothing is judged before a source has
delivered ``window`` items, so one bad item early does not end a run. Config (``data`` section)::

    max_skip_fraction: 0.5   # largest tolerated fraction of skipped items per source (1.0: only all-skipped fails)
    skip_check_items: 100    # items per source the fraction is measured over (a sliding window)

:class:`HeldOutCount` counts one complete pass over held-out data (validation) and refuses one whose every
item was skipped, whose loss, F and M would otherwise read 0.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["HeldOutCount", "SkipMonitor", "UnusableDataError"]


class UnusableDataError(ValueError):
    """A data source yields no usable item, or too large a fraction of its items is skipped."""


def _examples(skipped: Sequence[tuple[str, str]]) -> str:
    return "; ".join(f"cut {cut_id}: {reason}" for cut_id, reason in skipped[:3]) or "none recorded"


@dataclass
class _SourceCounts:
    window: int
    used: int = 0
    skipped: int = 0
    recent: deque = field(default_factory=deque)  # True for each skipped item of the last `window`
    examples: list[tuple[str, str]] = field(default_factory=list)

    def add(self, used: int, skipped: Sequence[tuple[str, str]]) -> None:
        self.used += used
        self.skipped += len(skipped)
        self.recent.extend([False] * used + [True] * len(skipped))
        while len(self.recent) > self.window:
            self.recent.popleft()
        if len(self.examples) < 3:
            self.examples.extend(list(skipped)[: 3 - len(self.examples)])


class SkipMonitor:
    """Per-source counts of used and skipped items with a run-stopping threshold.

    Args:
        max_fraction (float): largest tolerated fraction of skipped items in a source's last ``window`` items,
            in [0, 1]. Default: 0.5.
        window (int): items per source the fraction is measured over; nothing is judged before a source has
            delivered this many. Default: 100.

    Raises:
        ValueError: for ``max_fraction`` outside [0, 1] or ``window`` < 1.

    >>> monitor = SkipMonitor(max_fraction=0.5, window=4)
    >>> monitor.update("speech", used=3, skipped=[("a", "cannot read audio a.wav")])
    >>> monitor.totals()
    {'speech': {'used': 3, 'skipped': 1}}
    >>> monitor.update("speech", used=1, skipped=[("b", "empty transcript"), ("c", "empty transcript")])
    Traceback (most recent call last):
    ...
    nemo_salad.data.skips.UnusableDataError: data source 'speech': 3 of its last 4 items were skipped (75%), more \
than data.max_skip_fraction=0.5 (3 skipped of 7 in all); e.g. cut a: cannot read audio a.wav; cut b: empty \
transcript; cut c: empty transcript. Fix or remove the bad items, or raise data.max_skip_fraction.
    """

    def __init__(self, max_fraction: float = 0.5, window: int = 100) -> None:
        if not 0.0 <= float(max_fraction) <= 1.0:
            raise ValueError(f"data.max_skip_fraction={max_fraction!r}: expected a number in [0, 1]")
        if int(window) < 1:
            raise ValueError(f"data.skip_check_items={window!r}: expected an integer >= 1")
        self.max_fraction, self.window = float(max_fraction), int(window)
        self._counts: dict[str, _SourceCounts] = {}

    def update(self, source: str | None, used: int, skipped: Sequence[tuple[str, str]]) -> None:
        """Count one batch of ``source``: ``used`` items kept and the ``(cut id, reason)`` of each one skipped.

        Raises:
            UnusableDataError: when the source has yielded no usable item in ``window`` items or more, or when
                more than ``max_fraction`` of its last ``window`` items were skipped (naming the source, the counts
                and example items).
        """
        name = source or "<unnamed source>"
        counts = self._counts.setdefault(name, _SourceCounts(self.window))
        counts.add(used, skipped)
        if len(counts.recent) < self.window:
            return
        if counts.used == 0:
            raise UnusableDataError(
                f"data source {name!r} yields no usable item: all {counts.skipped} items read so far were skipped; "
                f"e.g. {_examples(counts.examples)}. Check the source's paths and audio files.")
        bad = sum(counts.recent)
        if bad > self.max_fraction * len(counts.recent):
            raise UnusableDataError(
                f"data source {name!r}: {bad} of its last {len(counts.recent)} items were skipped "
                f"({100 * bad / len(counts.recent):.0f}%), more than data.max_skip_fraction={self.max_fraction:g} "
                f"({counts.skipped} skipped of {counts.used + counts.skipped} in all); e.g. "
                f"{_examples(counts.examples)}. Fix or remove the bad items, or raise data.max_skip_fraction.")

    def totals(self) -> dict[str, dict[str, int]]:
        """``{source: {"used": n, "skipped": n}}`` since this monitor was created."""
        return {name: {"used": c.used, "skipped": c.skipped} for name, c in self._counts.items()}


@dataclass
class HeldOutCount:
    """Items measured and skipped in one complete pass over held-out data (validation, the gap report).

    Args:
        source (str): what is read, for messages; a batch's ``source`` replaces it. Default: "held-out data".

    >>> from types import SimpleNamespace
    >>> count = HeldOutCount()
    >>> count.add(SimpleNamespace(num_samples=0, skipped=[("a", "cannot read audio a.wav")], source="data.validation"))
    >>> count.finish()
    Traceback (most recent call last):
    ...
    nemo_salad.data.skips.UnusableDataError: data.validation: every one of its 1 items was skipped, so no loss, F \
or M can be measured; e.g. cut a: cannot read audio a.wav. Check its paths and audio files.
    """

    source: str = "held-out data"
    used: int = 0
    skipped: int = 0
    examples: list[tuple[str, str]] = field(default_factory=list)

    def add(self, batch: Any) -> None:
        """Count one collated batch (a :class:`~nemo_salad.data.batch.SaladBatch`: ``num_samples``, ``skipped``,
        ``source``)."""
        skipped = list(batch.skipped)
        self.used += batch.num_samples
        self.skipped += len(skipped)
        self.examples.extend(skipped[: max(0, 3 - len(self.examples))])
        self.source = batch.source or self.source

    def finish(self, group: Any = None, refuse_unusable: bool = True) -> int:
        """End the pass: the counts summed over the ranks of ``group``; returns the number of skipped items.

        Args:
            group: the process group whose ranks each read a share of the data. Default: None (all ranks).
            refuse_unusable (bool): raise when every item was skipped (False for a partial pass, e.g. Lightning's
                sanity check of the first batches). Default: True.

        Raises:
            UnusableDataError: with ``refuse_unusable``, if items were read and every one was skipped (its metrics
                would read 0), naming the source, the count and example items.
        """
        from nemo_salad.parts.distributed import sum_over_ranks

        used, skipped = (int(v) for v in sum_over_ranks([float(self.used), float(self.skipped)], group))
        if refuse_unusable and used == 0 and skipped > 0:
            raise UnusableDataError(f"{self.source}: every one of its {skipped} items was skipped, so no loss, F or M "
                                    f"can be measured; e.g. {_examples(self.examples)}. Check its paths and audio "
                                    "files.")
        return skipped

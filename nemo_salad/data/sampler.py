"""Batch-level mixing of data sources, extendable while training runs, resumable by replay.

Each source (natural speech, text replay, actively selected synthetic speech, ...) has its own lhotse
sampler (duration-bucketed for speech) and a weight. Every batch comes from one source, drawn with
probability ∝ weight (paper: 2/3 speech, 1/3 text replay in Stage I). A source that runs out starts its next
epoch, so the stream is endless and training is bounded by ``max_steps``.

``add_source`` takes effect at the next draw, without rebuilding the DataLoader (Stage II selection rounds
append their synthesized data this way). The draw sequence depends only on the seed and on when sources were
added, both recorded in :meth:`MixtureSampler.state_dict`; :meth:`MixtureSampler.resume` replays that many
draws (reading manifests only, no audio) so a restarted run continues with the next unseen batch.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from lhotse import CutSet

__all__ = ["SOURCE_ATTR", "MixtureSampler", "SourceSpec"]

#: attribute of each yielded batch (a CutSet) naming its source; the dataset reports it as ``batch.source``
SOURCE_ATTR = "salad_source"

SamplerFactory = Callable[[CutSet, int], Any]  # (cuts, seed) -> lhotse CutSampler


@dataclass
class SourceSpec:
    """A named source: its cuts, weight, the draw count at which it joined, and how to rebuild it."""

    name: str
    cuts: CutSet
    weight: float
    added_at: int = 0
    origin: Any = None  # serialisable description (e.g. a Shar directory) kept in the sampler state


class MixtureSampler:
    """Endless stream of CutSet batches drawn from weighted sources; each batch names its source in the
    attribute :data:`SOURCE_ATTR`.

    Args:
        sampler_factory (Callable): ``(cuts, seed) -> lhotse sampler`` for one source.
        seed (int): seed of the source draws and of each source's shuffling. Default: 0.

    >>> from lhotse.testing.dummies import DummyManifest
    >>> from lhotse.dataset import SimpleCutSampler
    >>> from lhotse import CutSet
    >>> cuts = DummyManifest(CutSet, begin_id=0, end_id=4)
    >>> s = MixtureSampler(lambda c, seed: SimpleCutSampler(c, max_cuts=2, shuffle=True, seed=seed))
    >>> s.add_source("a", cuts, 1.0)
    >>> [len(b) for b, _ in zip(s, range(3))]
    [2, 2, 2]
    """

    def __init__(self, sampler_factory: SamplerFactory, seed: int = 0) -> None:
        self.factory, self.seed = sampler_factory, seed
        self.sources: list[SourceSpec] = []
        self.draws = 0  # batches handed out since the start of training (including replayed ones)
        self._skip = 0
        self._iters: dict[str, Iterator[CutSet]] = {}
        self._epochs: dict[str, int] = {}
        self._rng = random.Random(seed)

    # ------------------------------------------------------------------ sources
    def add_source(self, name: str, cuts: CutSet, weight: float, origin: Any = None) -> None:
        """Add (or re-weight, when ``name`` exists) a source; it is drawn from starting with the next batch.

        Raises:
            ValueError: for a weight ≤ 0.
        """
        if weight <= 0:
            raise ValueError(f"source {name!r}: weight={weight} must be > 0")
        for spec in self.sources:
            if spec.name == name:
                spec.cuts, spec.weight, spec.origin = cuts, weight, origin
                self._iters.pop(name, None)
                return
        self.sources.append(SourceSpec(name, cuts, weight, self.draws, origin))

    def weights(self) -> dict[str, float]:
        """Current mixing probabilities per source."""
        total = sum(s.weight for s in self.sources)
        return {s.name: s.weight / total for s in self.sources}

    # ------------------------------------------------------------------ iteration
    def _next_from(self, spec: SourceSpec) -> CutSet:
        for _ in range(2):
            it = self._iters.get(spec.name)
            if it is None:
                epoch = self._epochs.get(spec.name, 0)
                sampler = self.factory(spec.cuts, self.seed + 1000 * (1 + self.sources.index(spec)))
                if hasattr(sampler, "set_epoch"):
                    sampler.set_epoch(epoch)
                it = self._iters[spec.name] = iter(sampler)
            try:
                return next(it)
            except StopIteration:
                self._iters.pop(spec.name)
                self._epochs[spec.name] = self._epochs.get(spec.name, 0) + 1
        raise ValueError(f"data source {spec.name!r} yields no batch (is it empty, or are all its cuts longer "
                         "than the sampler's max_duration?)")

    def __iter__(self) -> Iterator[CutSet]:
        if not self.sources:
            raise ValueError("MixtureSampler has no sources: add one with add_source()")
        while True:
            active = [s for s in self.sources if s.added_at <= self.draws]
            spec = self._rng.choices(active, weights=[s.weight for s in active])[0]
            batch = self._next_from(spec)
            setattr(batch, SOURCE_ATTR, spec.name)  # travels with the batch into DataLoader workers
            self.draws += 1
            if self._skip:
                self._skip -= 1
                continue
            yield batch

    # ------------------------------------------------------------------ resume
    def state_dict(self, consumed: int) -> dict[str, Any]:
        """What a restart needs: the seed, the consumed batch count, and each source's origin and timing.

        Args:
            consumed (int): batches the training loop has *used* (the sampler may have handed out more to
                DataLoader prefetching).
        """
        return {"seed": self.seed, "consumed": consumed,
                "sources": [{"name": s.name, "weight": s.weight, "added_at": s.added_at, "origin": s.origin}
                            for s in self.sources]}

    def resume(self, state: dict[str, Any]) -> None:
        """Skip the first ``state["consumed"]`` batches of the next iteration (call before iterating).

        Sources must already be registered (with the same names) in the same order; sources added during the
        interrupted run carry their ``added_at`` so the replayed draws match.

        Raises:
            ValueError: if the registered sources differ from those in ``state``.
        """
        have = [s.name for s in self.sources]
        want = [s["name"] for s in state["sources"]]
        if have != want:
            raise ValueError(f"cannot resume data: sources {have} differ from the checkpoint's {want}")
        for spec, saved in zip(self.sources, state["sources"]):
            spec.added_at, spec.weight = int(saved["added_at"]), float(saved["weight"])
        self.seed = int(state["seed"])
        self._rng, self.draws, self._iters, self._epochs = random.Random(self.seed), 0, {}, {}
        self._skip = int(state["consumed"])

"""Run work on global rank 0 whose model measurements need every rank.

A selection round (embedding, clustering, speech synthesis, files) runs on global rank 0 only, but measuring the
model's misalignment is a forward pass, and a model split over tensor-parallel ranks (or wrapped by megatron's DDP,
whose forward hooks gather parameters over data-parallel ranks) computes only when all of its ranks run the same
forward together. :func:`lead_or_follow` gives rank 0 a measure function that first sends its input (the probe cuts)
to every other rank; those ranks meanwhile wait for such requests and run the same measurement, until rank 0 is done
or fails (then they fail too, with rank 0's error). The messages travel on a gloo group with its own timeout, so that
ranks can wait through a long synthesis without tripping NCCL's collective timeout.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

import torch.distributed as dist
from lhotse import CutSet

__all__ = ["coordination_group", "lead_or_follow"]

log = logging.getLogger(__name__)

T = TypeVar("T")
Measure = Callable[[CutSet], float]


def coordination_group(timeout_s: float) -> Any:
    """A gloo group of all ranks whose operations wait up to ``timeout_s``; every rank must call this together.

    Returns None outside ``torch.distributed`` (one process).
    """
    if not dist.is_available() or not dist.is_initialized() or dist.get_world_size() == 1:
        return None
    return dist.new_group(backend="gloo", timeout=timedelta(seconds=float(timeout_s)))


def _broadcast(message: tuple[str, Any] | None, group: Any) -> tuple[str, Any]:
    box = [message]
    dist.broadcast_object_list(box, src=0, group=group)
    return box[0]  # type: ignore[return-value]


def lead_or_follow(work: Callable[[Measure], T], measure: Measure, group: Any) -> T | None:
    """Global rank 0 runs ``work(shared_measure)``; every ``shared_measure(cuts)`` also runs ``measure(cuts)`` on
    each other rank. Call on every rank with that rank's ``measure`` (of its own shard of the model).

    Args:
        work (Callable[[Measure], T]): what rank 0 does, given the measure to use.
        measure (Callable[[CutSet], float]): this rank's measurement of the model.
        group: from :func:`coordination_group` (None: one process, ``work(measure)`` runs here).

    Returns:
        ``work``'s result on rank 0; None on the other ranks.

    Raises:
        RuntimeError: on the other ranks, when ``work`` failed on rank 0 (its error is re-raised there).

    >>> lead_or_follow(lambda m: m(CutSet()), lambda cuts: float(len(cuts)), None)
    0.0
    """
    if group is None:
        return work(measure)
    if dist.get_rank() == 0:
        def shared(cuts: CutSet) -> float:
            _broadcast(("measure", [c.to_dict() for c in cuts]), group)
            return measure(cuts)

        shared.definition = getattr(measure, "definition", None)  # type: ignore[attr-defined]  # (stored M reuse)

        try:
            result = work(shared)
        except BaseException as err:
            _broadcast(("failed", f"{type(err).__name__}: {err}"), group)
            raise
        _broadcast(("done", None), group)
        return result
    served = 0
    while True:
        kind, payload = _broadcast(None, group)
        if kind == "done":
            log.debug("rank %d ran %d measurements for rank 0", dist.get_rank(), served)
            return None
        if kind == "failed":
            raise RuntimeError(f"global rank 0 failed while this rank waited for its measurements: {payload}")
        measure(CutSet.from_dicts(payload))
        served += 1

"""Measure forgetting and misalignment of a model on a set of paired speech/text cuts.

:func:`measure_gap` is what ``examples/salad_measure.py`` runs; :func:`misalignment_fn` adapts it to the
``Callable[[CutSet], float]`` that Stage II active selection calls on each cluster's probe set.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from lhotse import CutSet
from lhotse.dataset import SimpleCutSampler

from nemo_salad.data.dataset import SaladDataset
from nemo_salad.data.layout import LayoutConfig
from nemo_salad.metrics.gap import GapStats, gap_stats

__all__ = ["MISALIGNMENT_DEFINITION", "measure_gap", "misalignment_fn"]

#: what :func:`misalignment_fn`'s measure computes; stored probe values (Stage II selection) are reused only under the
#: same definition, so values measured before a change of definition are measured again
MISALIGNMENT_DEFINITION = "mean KL(student on text || student on speech), positions with speech in context"


@torch.no_grad()
def measure_gap(model: Any, cuts: CutSet, layout: LayoutConfig | None = None, batch_duration: float = 60.0,
                seed: int = 0) -> dict[str, Any]:
    """Per-token forgetting F and misalignment M of ``model`` over ``cuts``.

    Args:
        model (SaladModel): the model (put in eval mode here).
        cuts (CutSet): speech cuts with transcripts (text-only cuts contribute to F only).
        layout (LayoutConfig | None): how utterances are split into speech/text. Default: interleaved.
        batch_duration (float): seconds of audio per batch. Default: 60.
        seed (int): layout seed. Default: 0.

    Returns:
        dict: ``forgetting``, ``misalignment``, token counts, ``utterances`` and ``skipped`` (id → reason).
    """
    model.eval()
    dataset = SaladDataset(model.tokenizer, layout or LayoutConfig(), frames=model.frame_counter(), pad_id=model.pad_id,
                           max_len=model.context_length, seed=seed)
    stats, used, skipped = GapStats(), 0, {}
    # every cut, in this process: lhotse's samplers would otherwise keep only this rank's share under torch.distributed
    sampler = SimpleCutSampler(cuts, max_duration=batch_duration, shuffle=False, world_size=1, rank=0)
    for cut_batch in sampler:
        batch = dataset[cut_batch]
        skipped.update(dict(batch.skipped))
        if not batch.num_samples:
            continue
        stats += gap_stats(model, batch.to(model.device))
        used += batch.num_samples
    return {**stats.as_dict(), "utterances": used, "skipped": skipped}


def misalignment_fn(model: Any, layout: LayoutConfig | None = None, batch_duration: float = 60.0
                    ) -> Callable[[CutSet], float]:
    """``probe cuts -> M`` for active selection (mean per-token KL(student on text ‖ student on speech) where the
    student's context holds speech); its ``definition`` attribute is :data:`MISALIGNMENT_DEFINITION`.

    Raises (when called):
        ValueError: if no probe utterance could be measured.
    """
    def measure(cuts: CutSet) -> float:
        result = measure_gap(model, cuts, layout, batch_duration)
        if not result["misalignment_tokens"]:
            raise ValueError(f"no probe utterance could be measured ({len(result['skipped'])} skipped: "
                             f"{list(result['skipped'].items())[:3]})")
        return float(result["misalignment"])

    measure.definition = MISALIGNMENT_DEFINITION  # type: ignore[attr-defined]
    return measure

"""The two factors of the text–speech gap, per token (paper Eqs. 2–3).

* Forgetting ``F = KL(teacher on text ‖ student on text)`` — how far the adapted LLM has drifted from the
  original on pure text, at every next-token position of the all-text sequence (both models read text).
* Misalignment ``M = KL(student on text ‖ student on speech)`` — how differently the student predicts the
  same next text token from the speech context and from the equivalent text context. It counts the positions
  where the student on speech predicts a text token *and* its context holds speech: those at or after the
  document's first speech slot whose next token is text — the last frame of a speech span followed by text, and
  each text token followed by text (:meth:`SaladBatch.speech_context
  <nemo_salad.data.batch.SaladBatch.speech_context>`). Text before the first speech span is left out: there both
  contexts are the same text and the KL is zero, so counting it would make M depend on how much text precedes
  the speech (on passage length and layout) instead of on the speech.

Both are averaged over the counted tokens (the paper writes sums; averages compare across data sizes). The
reference distribution is the first argument of each KL. Legend: ``B`` samples, ``T`` positions, ``H`` width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from nemo_salad.losses.fused import chunked_divergence
from nemo_salad.parts.distributed import sum_over_ranks

__all__ = ["GapStats", "gap_stats", "next_token_positions", "sum_over_ranks"]


@dataclass
class GapStats:
    """Running sums of per-token forgetting and misalignment."""

    forgetting_sum: float = 0.0
    forgetting_tokens: int = 0
    misalignment_sum: float = 0.0
    misalignment_tokens: int = 0

    def __iadd__(self, other: GapStats) -> GapStats:
        self.forgetting_sum += other.forgetting_sum
        self.forgetting_tokens += other.forgetting_tokens
        self.misalignment_sum += other.misalignment_sum
        self.misalignment_tokens += other.misalignment_tokens
        return self

    @property
    def forgetting(self) -> float:
        return self.forgetting_sum / max(self.forgetting_tokens, 1)

    @property
    def misalignment(self) -> float:
        """NaN when no position had speech in its context (nothing measured), not a misleading 0."""
        if not self.misalignment_tokens:
            return math.nan
        return self.misalignment_sum / self.misalignment_tokens

    def all_reduce(self, group: Any = None) -> GapStats:
        """The sums over the ranks of ``group`` (data-parallel ranks each see their own share of the data)."""
        f, ft, m, mt = sum_over_ranks([self.forgetting_sum, self.forgetting_tokens, self.misalignment_sum,
                                       self.misalignment_tokens], group)
        return GapStats(f, int(ft), m, int(mt))

    def as_dict(self) -> dict[str, float | int]:
        """``{"forgetting", "misalignment", "forgetting_tokens", "misalignment_tokens"}``.

        >>> GapStats(1.0, 4, 3.0, 2).as_dict()["misalignment"]
        1.5
        """
        return {"forgetting": self.forgetting, "misalignment": self.misalignment,
                "forgetting_tokens": self.forgetting_tokens, "misalignment_tokens": self.misalignment_tokens}


def next_token_positions(mask: Tensor) -> Tensor:
    """Flat indices into ``mask.flatten()`` of positions whose next position is also real: ``(B, T) → (K,)``.

    >>> next_token_positions(torch.tensor([[False, True, True, True], [True, True, False, False]])).tolist()
    [1, 2, 4]
    """
    both = mask[:, :-1] & mask[:, 1:]  # (B, T-1)
    b, t = both.nonzero(as_tuple=True)
    return b * mask.shape[1] + t


@torch.no_grad()
def gap_stats(model: Any, batch: Any, chunk_size: int = 1024, speech: tuple[Tensor, Tensor] | None = None,
              outputs: Any = None) -> GapStats:
    """Forgetting and misalignment sums of one batch of paired speech/text.

    Args:
        model (SaladModel): needs a teacher (``teacher.mode`` copy or shared) for forgetting.
        batch (SaladBatch): a model batch (see :mod:`nemo_salad.data.batch`).
        chunk_size (int): positions per chunk of the vocabulary projection. Default: 1024.
        speech (tuple | None): precomputed ``(frames, lens)`` instead of the model's encoder + adapter.
        outputs (SaladOutput | None): ``model.forward(batch)`` when already run (its student and teacher hidden
            states are then reused).

    Returns:
        GapStats: forgetting over every next-token position of the all-text sequences, misalignment over the
        student's text predictions whose context holds speech (see the module docstring).
    """
    if not batch.num_samples:
        return GapStats()
    w = model.llm.output_weight  # (V, H), or this rank's (V/TP, H) vocabulary shard
    tp_group = model.llm.tp_group
    text_hidden = model.student_text_hidden(batch).flatten(0, 1)  # (Rt*Tt, H) student on text
    stats = GapStats()
    heard = batch.speech_context()  # (P,) pairs whose student context holds speech
    if bool(heard.any()):
        student = outputs.student_hidden if outputs is not None else model.student_hidden(batch, speech)
        speech_hidden = student.flatten(0, 1)[batch.student_pos[heard]]  # (M, H) student on speech
        m = chunked_divergence(speech_hidden, w, text_hidden[batch.teacher_pos[heard]], w, chunk_size=chunk_size,
                               tp_group=tp_group)
        stats.misalignment_sum, stats.misalignment_tokens = float(m.double().sum()), int(m.numel())
    if model.teacher_mode != "none":
        pos = batch.teacher_next_positions()
        teacher = outputs.teacher_hidden if outputs is not None and outputs.teacher_hidden is not None \
            else model.teacher_hidden(batch)
        f = chunked_divergence(text_hidden[pos], w, teacher.flatten(0, 1)[pos], model.teacher_output_weight,
                               chunk_size=chunk_size, tp_group=tp_group)
        stats.forgetting_sum, stats.forgetting_tokens = float(f.double().sum()), int(f.numel())
    return stats

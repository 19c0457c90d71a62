"""Batches bounded by LLM positions (``data.batch_tokens``) instead of seconds of audio.

The paper states its batch and its training budget in tokens (≈1M per step, 24B in Stage I, 1.9B in Stage II), the
positions an LLM reads at a context of 2048. :class:`PositionConstraint` is a lhotse sampling constraint that fills a
batch up to ``max_positions`` student positions, whatever the source: a text cut counts its tokens; a speech cut, laid
out later as speech and text spans, counts the adapter frames of its audio for the expected spoken share of its words
(:meth:`LayoutConfig.speech_share <nemo_salad.data.layout.LayoutConfig.speech_share>`) and its transcript's tokens for
the rest. As with lhotse's duration bound, a batch is closed once one more cut as long as its longest would pass the
bound, so batches fill to the bound less part of a cut (at 8,192: 99 % with 10–40 s utterances, 96 % with replay
documents of up to ~1,800 tokens; ``tests/data/test_positions.py``), apart from the small batches each bucket hands out
at the end of an epoch. The layout is drawn per sample in the dataset, so the laid-out positions differ a little from
the estimate (within 3 % on tone speech); the model logs the true count (``train/positions``) every step.
"""

from __future__ import annotations

import copy
from typing import Any

from lhotse.dataset.sampling.base import SamplingConstraint

from nemo_salad.data.batch import FrameCounter

__all__ = ["PositionConstraint", "estimated_positions"]


def estimated_positions(cut: Any, tokenizer: Any, frames: FrameCounter, speech_share: float,
                        sample_rate: int = 16000) -> int:
    """Student positions ``cut`` is expected to take: its tokens, or for speech a mix of frames and tokens.

    Args:
        cut: a lhotse cut; one without a recording is text.
        tokenizer: the model's ``transformers`` tokenizer.
        frames (FrameCounter): adapter frames per clip length.
        speech_share (float): the expected fraction of a speech cut's words that are spoken.
        sample_rate (int): the encoder's input rate. Default: 16000.
    """
    text = " ".join(s.text or "" for s in cut.supervisions)
    tokens = len(tokenizer(text, add_special_tokens=False).input_ids)
    if not cut.has_recording:
        return max(tokens, 1)
    samples = min(int(round(cut.duration * sample_rate)), frames.max_samples)
    return max(1, int(round(speech_share * frames(samples) + (1.0 - speech_share) * tokens)))


class PositionConstraint(SamplingConstraint):
    """Batches of about ``max_positions`` estimated student positions (:func:`estimated_positions`): closed once one
    more cut as long as the batch's longest would pass the bound.

    Args:
        max_positions (int): the bound (``data.batch_tokens``).
        tokenizer, frames, speech_share, sample_rate: as for :func:`estimated_positions`.
    """

    def __init__(self, max_positions: int, tokenizer: Any, frames: FrameCounter, speech_share: float,
                 sample_rate: int = 16000) -> None:
        if int(max_positions) < 1:
            raise ValueError(f"data.batch_tokens={max_positions}; expected an integer >= 1")
        self.max_positions, self.tokenizer, self.frames = int(max_positions), tokenizer, frames
        self.speech_share, self.sample_rate = float(speech_share), int(sample_rate)
        self.reset()

    def measure_length(self, example: Any) -> float:
        return estimated_positions(example, self.tokenizer, self.frames, self.speech_share, self.sample_rate)

    def add(self, example: Any) -> None:
        n = self.measure_length(example)
        self.current += n
        self.longest = max(self.longest, n)

    def exceeded(self) -> bool:
        return self.current > self.max_positions

    def close_to_exceeding(self) -> bool:
        return self.current + self.longest > self.max_positions

    def reset(self) -> None:
        self.current, self.longest = 0, 0

    def copy(self) -> PositionConstraint:
        return copy.copy(self)

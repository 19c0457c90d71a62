"""The TTS backend interface: a batch of texts in, one float32 mono waveform per text out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["TTSBackend", "check_single_voice"]


@runtime_checkable
class TTSBackend(Protocol):
    """What the synthesis writer needs from a TTS engine.

    Attributes:
        name (str): short engine name stored with every cut (``"piper"``, ``"nemo"``, ``"espeak"``, ``"sine"``).
        sample_rate (int): native output rate of :meth:`synthesize` in Hz.

    >>> from nemo_salad.synthesis import SineBackend
    >>> isinstance(SineBackend(), TTSBackend)
    True
    """

    name: str
    sample_rate: int

    def synthesize(self, texts: Sequence[str], voice: str | None = None) -> list[np.ndarray]:
        """Batched: float32 mono waveforms ``(T_i,)`` at :attr:`sample_rate`, one per text, same order."""
        ...

    def provenance(self) -> dict[str, str]:
        """``{"backend", "voice", "checkpoint"}`` - stored in every synthesized cut's custom fields."""
        ...


def check_single_voice(backend: str, voice: str | None, available: str) -> None:
    """Refuse a ``voice`` argument that a single-voice engine cannot honour (instead of silently ignoring it).

    >>> check_single_voice("piper", "joe", "joe")
    >>> check_single_voice("piper", "amy", "joe")
    Traceback (most recent call last):
    ...
    ValueError: piper backend has one voice ('joe'), got voice='amy'; pass voice=None or 'joe'
    """
    if voice is not None and voice != available:
        raise ValueError(f"{backend} backend has one voice ({available!r}), got voice={voice!r}; "
                         f"pass voice=None or {available!r}")

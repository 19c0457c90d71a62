"""Checks that an audio sample can go through the speech encoder, with messages that name the sample.

Used wherever audio enters the model (the training dataset, ``SaladModel.encode_cuts``, ``generate``):
empty audio, audio shorter than one encoder frame, a sample rate other than the encoder's, more than one
channel, and non-finite values are each reported with the sample's id, what was found and what was expected;
:func:`load_cut_audio` names the cut and its file when the audio cannot be read at all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["BadSampleError", "audio_problem", "load_cut_audio", "to_mono_tensor"]


class BadSampleError(ValueError):
    """One input sample cannot be used; ``sample_id`` and ``reason`` say which and why."""

    def __init__(self, sample_id: str, reason: str) -> None:
        super().__init__(f"sample {sample_id!r}: {reason}")
        self.sample_id = sample_id
        self.reason = reason


def audio_problem(audio: Any, sample_rate: int, expected_rate: int, min_samples: int) -> str | None:
    """Why ``audio`` cannot be encoded, or None if it can.

    Args:
        audio: waveform as ``(N,)`` (mono) or ``(C, N)`` array/tensor.
        sample_rate (int): the rate the audio is at.
        expected_rate (int): the encoder's rate.
        min_samples (int): the fewest samples that give one encoder frame.

    Returns:
        str | None: a reason naming what was found and what was expected.

    >>> audio_problem(np.zeros((2, 16000)), 16000, 16000, 1200)
    'audio has 2 channels, expected mono (1 channel)'
    >>> audio_problem(np.zeros(800), 16000, 16000, 1200)
    'audio of 800 samples (50 ms) is shorter than one encoder frame (needs >= 1200 samples, 75 ms)'
    >>> audio_problem(np.zeros(16000), 16000, 16000, 1200) is None
    True
    """
    shape = tuple(audio.shape)
    if len(shape) == 2 and 1 not in shape:
        return f"audio has {min(shape)} channels, expected mono (1 channel)"
    if len(shape) > 2 or len(shape) == 0:
        return f"audio has shape {shape}, expected (num_samples,) mono"
    if sample_rate != expected_rate:
        return f"sample rate is {sample_rate} Hz, expected {expected_rate} Hz (resample first)"
    n = int(np.prod(shape))
    if n == 0:
        return "audio is empty (0 samples)"
    if n < min_samples:
        ms, need_ms = 1000 * n / sample_rate, 1000 * min_samples / sample_rate
        return (f"audio of {n} samples ({ms:.0f} ms) is shorter than one encoder frame "
                f"(needs >= {min_samples} samples, {need_ms:.0f} ms)")
    values = torch.as_tensor(np.asarray(audio)) if not isinstance(audio, torch.Tensor) else audio
    if not torch.isfinite(values).all():
        return "audio contains NaN or infinite values"
    return None


def to_mono_tensor(audio: Any) -> torch.Tensor:
    """A ``(N,)`` float32 tensor from a ``(N,)``, ``(1, N)`` or ``(N, 1)`` array (after :func:`audio_problem`)."""
    return torch.as_tensor(np.asarray(audio, dtype=np.float32)).reshape(-1)


def load_cut_audio(cut: Any) -> np.ndarray:
    """The samples of a lhotse cut, as ``cut.load_audio()`` returns them.

    Raises:
        BadSampleError: if the audio cannot be read (no recording, missing file, corrupt data), naming the cut
            and its audio source.

    >>> from lhotse import AudioSource, MonoCut, Recording
    >>> rec = Recording("r", [AudioSource("file", [0], "/no/such.wav")], 16000, 16000, 1.0)
    >>> load_cut_audio(MonoCut("utt1", 0.0, 1.0, 0, recording=rec))
    Traceback (most recent call last):
    ...
    nemo_salad.parts.audio_checks.BadSampleError: sample 'utt1': cannot read audio /no/such.wav: the file does not \
exist (expected a readable audio file)
    """
    recording = getattr(cut, "recording", None)
    if recording is None:
        raise BadSampleError(cut.id, "the cut has no recording (expected a cut with audio)")
    sources = ", ".join(str(s.source) for s in recording.sources)
    try:
        return cut.load_audio()
    except Exception as exc:  # any loader error (missing file, corrupt or unsupported data) means "unreadable"
        if any(s.type == "file" and not Path(str(s.source)).exists() for s in recording.sources):
            detail = "the file does not exist"
        else:  # lhotse's message without its trailing dump of the call
            lines = [line.strip() for line in str(exc).splitlines()
                     if line.strip() and not line.startswith(("[extra info]", "Set LHOTSE_"))]
            detail = f"{type(exc).__name__}: {' '.join(lines)[:500]}"
        raise BadSampleError(cut.id, f"cannot read audio {sources}: {detail} (expected a readable audio "
                                     "file)") from exc

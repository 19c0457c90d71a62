"""Helpers for the synthesis tests."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from nemo_salad.synthesis import SineBackend


def dominant_frequency(wave: np.ndarray, sample_rate: int) -> float:
    """Frequency (Hz) of the largest FFT bin of a real signal."""
    spectrum = np.abs(np.fft.rfft(wave.astype(np.float64) * np.hanning(len(wave))))
    return float(np.fft.rfftfreq(len(wave), 1.0 / sample_rate)[int(spectrum.argmax())])


class RecordingBackend(SineBackend):
    """SineBackend that remembers the batches it was called with, optionally failing on or silencing some texts."""

    def __init__(self, *args, fail_on: Sequence[str] = (), silent_on: Sequence[str] = (), delay: float = 0.0,
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[list[str]] = []
        self.fail_on, self.silent_on, self.delay = set(fail_on), set(silent_on), delay

    def synthesize(self, texts, voice=None):
        self.calls.append(list(texts))
        if self.delay:
            time.sleep(self.delay)
        bad = self.fail_on.intersection(texts)
        if bad:
            raise RuntimeError(f"cannot speak {sorted(bad)}")
        waves = super().synthesize(texts, voice)
        return [np.zeros(0, np.float32) if t in self.silent_on else w for t, w in zip(texts, waves, strict=True)]

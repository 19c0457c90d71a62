"""A deterministic stand-in for a TTS engine, for tests and dry runs: a tone whose length follows the text."""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

__all__ = ["SineBackend"]


class SineBackend:
    """Fake TTS: ``len(text) * seconds_per_char`` seconds of a sine tone whose pitch is a hash of the text.

    It is not speech, but the duration of every output is exact and the pitch identifies the text, so tests can
    check that each stored waveform belongs to its transcript.

    Args:
        sample_rate (int): output rate in Hz. Default: 16000.
        seconds_per_char (float): output seconds per text character. Default: 0.06.
        amplitude (float): peak amplitude. Default: 0.3.

    >>> wave, = SineBackend().synthesize(["hello"])
    >>> wave.shape, wave.dtype, SineBackend.frequency("hello") == SineBackend.frequency("hello")
    ((4800,), dtype('float32'), True)
    """

    name = "sine"

    def __init__(self, sample_rate: int = 16000, seconds_per_char: float = 0.06, amplitude: float = 0.3) -> None:
        if sample_rate <= 0 or seconds_per_char <= 0:
            raise ValueError(f"sample_rate and seconds_per_char must be > 0, got {sample_rate}, {seconds_per_char}")
        self.sample_rate = int(sample_rate)
        self.seconds_per_char = float(seconds_per_char)
        self.amplitude = float(amplitude)

    @staticmethod
    def frequency(text: str) -> float:
        """Tone frequency in Hz (200-800) for ``text``: a stable hash, identical across processes."""
        return 200.0 + zlib.crc32(text.encode("utf-8")) % 600

    def num_samples(self, text: str) -> int:
        """Exact output length for ``text``."""
        return int(round(len(text) * self.seconds_per_char * self.sample_rate))

    def synthesize(self, texts: Sequence[str], voice: str | None = None) -> list[np.ndarray]:
        """One tone per text; ``voice`` is ignored (the tone has no voice)."""
        out = []
        for text in texts:
            t = np.arange(self.num_samples(text), dtype=np.float64) / self.sample_rate
            out.append((self.amplitude * np.sin(2 * np.pi * self.frequency(text) * t)).astype(np.float32))
        return out

    def provenance(self) -> dict[str, str]:
        return {"backend": self.name, "voice": "", "checkpoint": f"sine:{self.seconds_per_char}s/char"}

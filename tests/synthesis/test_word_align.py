"""Word timings of synthesized speech: Whisper word timestamps vs the TTS engine's own phoneme durations."""

from __future__ import annotations

import numpy as np
import pytest

from nemo_salad.synthesis.word_align import WhisperWordAligner, build_aligner, match_words

TEXT = "The quick brown fox jumps over a lazy dog near seven green houses."
# Whisper derives word times from cross-attention on 20 ms frames and puts a boundary somewhere around the pause
# between two words; on this sentence its boundaries lie 0.01-0.2 s from piper's (median 0.08 s). Short function
# words ("a", "the") are the worst. Hence: every boundary within 0.25 s, and 0.1 s on average.
MAX_ERROR_S = 0.25
MEAN_ERROR_S = 0.1


def _piper_reference(backend, text: str) -> tuple[np.ndarray, int, list[float]]:
    """Audio of ``text`` and its word boundaries (middle of each inter-word pause) from piper's phoneme durations."""
    pytest.importorskip("onnx")
    from piper import PiperVoice, SynthesisConfig

    voice = PiperVoice.load(backend.model_path, config_path=backend.config_path, include_alignments=True)
    still = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)  # no sampling noise: the same audio every run
    chunks = list(voice.synthesize(text, syn_config=still, include_alignments=True))
    if any(c.phoneme_alignments is None for c in chunks):
        pytest.skip("this piper voice gives no phoneme alignments")
    sample_rate = voice.config.sample_rate
    boundaries, position, n_words = [], 0, 1
    for chunk in chunks:
        for item in chunk.phoneme_alignments:
            if item.phoneme == " ":
                boundaries.append((position + item.num_samples / 2) / sample_rate)
                n_words += 1
            position += item.num_samples
    audio = np.concatenate([c.audio_float_array for c in chunks])
    assert n_words == len(text.split()), "piper grouped the words differently; pick another text"
    return audio, sample_rate, boundaries


def test_whisper_word_boundaries_match_the_tts_durations(piper_backend, whisper):
    audio, sample_rate, reference = _piper_reference(piper_backend, TEXT)
    alignment = WhisperWordAligner(transcriber=whisper).align([audio], [TEXT], sample_rate)[0]
    assert alignment is not None
    items = alignment["word"]
    assert [a.symbol for a in items] == TEXT.split()
    found = [a.end for a in items[:-1]]
    errors = np.abs(np.array(found) - np.array(reference))
    detail = list(zip(TEXT.split(), np.round(reference, 3).tolist(), found))
    assert errors.max() <= MAX_ERROR_S and errors.mean() <= MEAN_ERROR_S, detail
    assert all(a.start >= b.end - 1e-6 for b, a in zip(items, items[1:]))


def test_an_utterance_whisper_cannot_hear_gets_no_alignment(whisper):
    rng = np.random.default_rng(0)
    noise = (0.01 * rng.standard_normal(16000 * 2)).astype(np.float32)
    assert WhisperWordAligner(transcriber=whisper).align([noise], [TEXT], 16000) == [None]


def test_match_words_interpolates_unrecognised_words_between_matched_neighbours():
    recognised = [("the", 0.0, 0.2), ("quick", 0.2, 0.5), ("fax", 0.5, 0.9), ("dog", 1.5, 1.8)]
    items = match_words("The quick brown fox jumps over dog.".split(), recognised, 2.0, min_matched=0.4)
    times = {a.symbol: (a.start, round(a.end, 3)) for a in items}
    assert times["The"] == (0.0, 0.2) and times["dog."] == (1.5, 1.8)
    assert times["brown"][0] == 0.5  # deleted words share the time between "quick" and the next pair
    assert times["over"][1] == 1.5
    assert [a.symbol for a in items] == "The quick brown fox jumps over dog.".split()
    assert all(b.start >= a.end for a, b in zip(items, items[1:]))


def test_match_words_refuses_when_too_few_words_are_recognised():
    assert match_words(["alpha", "beta", "gamma"], [("delta", 0.0, 1.0)], 1.0) is None
    assert match_words([], [], 1.0) == []


def test_build_aligner_names():
    assert build_aligner("none") is None
    with pytest.raises(ValueError, match="'whisper' or 'none'"):
        build_aligner("mfa")


def test_writer_stores_word_alignments_and_names_the_unaligned(tmp_path, piper_backend, whisper):
    from nemo_salad.synthesis import SineBackend, load_synthesized, synthesize_to_shar, text_cuts

    aligner = WhisperWordAligner(transcriber=whisper)
    spoken = synthesize_to_shar(text_cuts([("a", "Good morning to all of you.")]), piper_backend, tmp_path / "piper",
                                progress=False, aligner=aligner)
    cut = next(iter(load_synthesized(tmp_path / "piper")))
    words = cut.supervisions[0].alignment["word"]
    assert [w.symbol for w in words] == "Good morning to all of you.".split()
    assert 0.0 <= words[0].start < words[-1].end <= cut.duration
    assert cut.custom["word_aligner"] == "whisper"
    assert (spoken.n_aligned, spoken.unaligned) == (1, [])

    tones = synthesize_to_shar(text_cuts([("t", "Nobody can hear these words.")]), SineBackend(), tmp_path / "sine",
                               progress=False, aligner=aligner)
    assert (tones.n_aligned, tones.unaligned) == (0, ["t"])
    assert next(iter(load_synthesized(tmp_path / "sine"))).supervisions[0].alignment is None

"""Speaking conditions: white noise at an exact SNR on synthesized and recorded cuts (measured against the clean
audio), seeded per text, text-only cuts passed through; a memo that voices each text once."""

from __future__ import annotations

import io
import logging

import numpy as np
import pytest
import soundfile as sf

from nemo_salad.evaluation.conditions import MemoSpeech, NoisySpeech, Voice
from nemo_salad.evaluation.recorded import RecordedSpeech
from nemo_salad.evaluation.spoken import SynthesizedSpeech, TranscriptOnlySpeech
from nemo_salad.synthesis import SineBackend

TEXTS = ["The man broke his toe.", "He dropped a hammer on his foot.", "What happened as a result?"]


def _snr_db(clean: np.ndarray, noisy: np.ndarray) -> float:
    clean, noisy = clean.astype(np.float64), noisy.astype(np.float64)
    return float(10 * np.log10((clean ** 2).sum() / ((noisy - clean) ** 2).sum()))


@pytest.fixture(scope="module")
def sine(tmp_path_factory):
    return SynthesizedSpeech(SineBackend(), root=tmp_path_factory.mktemp("speech"))


@pytest.mark.parametrize("snr_db", [20.0, 10.0, 0.0, -5.0])
def test_the_measured_snr_is_the_configured_one(sine, snr_db):
    clean = sine.cuts_for("snr", TEXTS)
    noisy = NoisySpeech(sine, snr_db, seed=0).cuts_for("snr", TEXTS)
    assert set(noisy) == set(TEXTS)
    for text in TEXTS:
        x, y = clean[text].load_audio(), noisy[text].load_audio()
        assert y.shape == x.shape and noisy[text].sampling_rate == clean[text].sampling_rate
        assert abs(_snr_db(x, y) - snr_db) < 0.1
        assert noisy[text].supervisions[0].text == text and noisy[text].custom["snr_db"] == snr_db
        assert noisy[text].duration == pytest.approx(clean[text].duration)


def test_noise_is_seeded_per_text_and_white(sine):
    a = NoisySpeech(sine, 10.0, seed=0).cuts_for("a", TEXTS)
    b = NoisySpeech(sine, 10.0, seed=0).cuts_for("b", TEXTS[::-1])  # another key and order
    c = NoisySpeech(sine, 10.0, seed=1).cuts_for("a", TEXTS)
    clean = sine.cuts_for("a", TEXTS)
    for text in TEXTS:
        np.testing.assert_array_equal(a[text].load_audio(), b[text].load_audio())
        assert not np.array_equal(a[text].load_audio(), c[text].load_audio())
    noise = (a[TEXTS[1]].load_audio() - clean[TEXTS[1]].load_audio()).astype(np.float64)[0]
    assert abs(noise.mean()) < 0.1 * noise.std()  # zero mean
    lag1 = np.corrcoef(noise[:-1], noise[1:])[0, 1]
    assert abs(lag1) < 0.05  # white: no correlation between neighbouring samples (a sine has ~1)


def test_recorded_cuts_get_noise_too():
    rate = 16000
    tone = (0.1 * np.sin(2 * np.pi * 330 * np.arange(rate // 2) / rate)).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, tone, rate, format="WAV", subtype="FLOAT")
    source = RecordedSpeech({"Recorded question?": buf.getvalue()})
    cut = NoisySpeech(source, 5.0).cuts_for("rec", ["Recorded question?"])["Recorded question?"]
    assert cut.custom["audio_source"] == "recorded"
    assert abs(_snr_db(tone[None], cut.load_audio()) - 5.0) < 0.1


def test_text_only_cuts_pass_through_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        cuts = NoisySpeech(TranscriptOnlySpeech(), 10.0).cuts_for("t", TEXTS[:2])
    assert all(not c.has_recording for c in cuts.values())
    assert "adds no noise" in caplog.text


def test_memo_voices_each_text_once(sine):
    calls = []

    class Counting:
        def cuts_for(self, key, texts):
            calls.append(list(texts))
            return sine.cuts_for(key, [t for t in texts if t != "unvoiceable"])

    memo = MemoSpeech(Counting())
    first = memo.cuts_for("k", TEXTS[:2])
    second = memo.cuts_for("k2", [*TEXTS, "unvoiceable"])
    again = memo.cuts_for("k3", ["unvoiceable", TEXTS[0]])
    assert calls == [TEXTS[:2], [TEXTS[2], "unvoiceable"]]  # only new texts; a failed one is not retried
    assert second[TEXTS[0]] is first[TEXTS[0]] and "unvoiceable" not in again
    memo.clear()
    memo.cuts_for("k4", TEXTS[:1])
    assert calls[-1] == TEXTS[:1]


def test_voice_validation():
    with pytest.raises(ValueError, match="main condition"):
        Voice("default")
    with pytest.raises(ValueError, match="snr_db"):
        Voice("x", snr_db=float("inf"))
    with pytest.raises(ValueError, match="finite"):
        NoisySpeech(TranscriptOnlySpeech(), float("nan"))

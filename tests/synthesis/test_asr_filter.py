"""ASR round-trip filter: CER/WER against jiwer, and dropping mismatched TTS output with real and NeMo ASR."""

from __future__ import annotations

import json
import random

import jiwer
import numpy as np
import pytest

from nemo_salad.synthesis import (
    CERFilter,
    NeMoTranscriber,
    SineBackend,
    character_error_rate,
    load_synthesized,
    synthesize_to_shar,
    text_cuts,
    word_error_rate,
)
from nemo_salad.synthesis.asr_filter import basic_normalize


def test_cer_and_wer_match_jiwer():
    rng = random.Random(0)
    alphabet = "abc de"
    def sample(n: int) -> str:  # jiwer strips and collapses spaces, so give it text that has none to collapse
        return " ".join("".join(rng.choice(alphabet) for _ in range(n)).split())

    for _ in range(200):
        ref, hyp = sample(rng.randint(1, 30)), sample(rng.randint(1, 30))
        if ref and hyp:
            assert character_error_rate(ref, hyp) == pytest.approx(jiwer.cer(ref, hyp))
    refs = ["the cat sat on the mat", "hello world", "a b c d"]
    hyps = ["the cat sat on mat", "hello there world", "a x c d e"]
    assert word_error_rate(refs, hyps, normalize=basic_normalize) == pytest.approx(jiwer.wer(refs, hyps))
    assert character_error_rate("", "") == 0.0 and character_error_rate("", "x") == 1.0


class SaysSomethingElse:
    """A TTS fault: for the texts in ``swap`` the wrapped backend speaks another sentence."""

    def __init__(self, backend, swap: dict[str, str]) -> None:
        self.inner, self.swap = backend, swap
        self.name, self.sample_rate = backend.name, backend.sample_rate
        self.calls = 0

    def synthesize(self, texts, voice=None):
        self.calls += len(texts)
        return self.inner.synthesize([self.swap.get(t, t) for t in texts], voice)

    def provenance(self):
        return self.inner.provenance()


def test_whisper_round_trip_drops_mismatched_audio(piper_backend, whisper, tmp_path, caplog):
    items = [("good-1", "What is the capital of France?"),
             ("wrong", "The library opens at nine in the morning."),
             ("good-2", "The quick brown fox jumps over the lazy dog.")]
    backend = SaysSomethingElse(piper_backend, {items[1][1]: "Bananas are yellow and sweet."})
    with caplog.at_level("WARNING"):
        report = synthesize_to_shar(text_cuts(items), backend, tmp_path, asr_filter=CERFilter(whisper, max_cer=0.3),
                                    progress=False)
    assert (report.n_written, report.n_filtered, report.n_skipped) == (2, 1, {})
    kept = {c.id: c for c in load_synthesized(tmp_path)}
    assert sorted(kept) == ["good-1", "good-2"]
    for cut in kept.values():
        assert cut.custom["asr_cer"] <= 0.3 and isinstance(cut.custom["asr_text"], str)
    dropped = [json.loads(line) for line in (tmp_path / "dropped.000000.jsonl").read_text().splitlines()]
    assert [(d["id"], d["reason"]) for d in dropped] == [("wrong", "cer_above_threshold")]
    assert dropped[0]["cer"] > 0.3 and "yellow" in dropped[0]["asr_text"].lower()
    assert "filtered 'wrong'" in caplog.text
    # a rerun does not synthesize (nor transcribe) the filtered item again
    calls = backend.calls
    rerun = synthesize_to_shar(text_cuts(items), backend, tmp_path, asr_filter=CERFilter(whisper), progress=False)
    assert (rerun.n_resumed, rerun.n_written, backend.calls) == (3, 0, calls)


@pytest.fixture(scope="module")
def tiny_ctc():
    """A random-weight NeMo CTC model (character vocabulary): its transcripts are gibberish."""
    from nemo.collections.asr.models import EncDecCTCModel
    from omegaconf import OmegaConf

    labels = list(" abcdefghijklmnopqrstuvwxyz'")
    cfg = {
        "sample_rate": 16000, "labels": labels,
        "train_ds": {"manifest_filepath": None, "sample_rate": 16000, "labels": labels, "batch_size": 2,
                     "defer_setup": True},
        "preprocessor": {"_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor",
                         "sample_rate": 16000, "features": 64, "dither": 0.0},
        "encoder": {"_target_": "nemo.collections.asr.modules.ConvASREncoder", "feat_in": 64, "activation": "relu",
                    "jasper": [{"filters": 32, "repeat": 1, "kernel": [11], "stride": [2], "dilation": [1],
                                "dropout": 0.0, "residual": False, "separable": True}]},
        "decoder": {"_target_": "nemo.collections.asr.modules.ConvASRDecoder", "feat_in": 32,
                    "num_classes": len(labels), "vocabulary": labels},
        "optim": {"name": "adam", "lr": 1e-3},
    }
    return EncDecCTCModel(OmegaConf.create(cfg)).eval()


def test_nemo_asr_transcriber_in_the_writer(tiny_ctc, tmp_path):
    asr = NeMoTranscriber(tiny_ctc, batch_size=2, device="cpu")
    waves = SineBackend(sample_rate=22050).synthesize(["one", "two words"])
    hyps = asr.transcribe(waves, sample_rate=22050)
    assert len(hyps) == 2 and all(isinstance(h, str) for h in hyps)
    items = [("a", "A sentence to check."), ("b", "Another sentence to check.")]
    scored = synthesize_to_shar(text_cuts(items), SineBackend(), tmp_path / "scored",
                                asr_filter=CERFilter(asr, max_cer=None), progress=False)
    assert scored.n_written == 2 and scored.n_filtered == 0  # max_cer=None only annotates
    assert all(np.isfinite(c.custom["asr_cer"]) for c in load_synthesized(tmp_path / "scored"))
    strict = synthesize_to_shar(text_cuts(items), SineBackend(), tmp_path / "strict",
                                asr_filter=CERFilter(asr, max_cer=0.0), progress=False)
    assert (strict.n_written, strict.n_filtered) == (0, 2)  # gibberish never matches exactly

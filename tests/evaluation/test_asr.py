"""Cascade front ends on real audio: Whisper tiny.en on piper-synthesized benchmark items, and a NeMo ASR model."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from nemo_salad.evaluation import (
    CascadeSystem,
    ScoringSettings,
    SynthesizedSpeech,
    TextSystem,
    evaluate_benchmark,
    load_benchmark,
)
from nemo_salad.evaluation.asr import CutTranscriber, build_transcriber
from nemo_salad.evaluation.scoring import ScoreRequest, score_full_forward
from nemo_salad.evaluation.spoken import spoken_cut_id
from nemo_salad.synthesis import NeMoTranscriber, PiperBackend


def _cut_from_audio(audio: np.ndarray, sample_rate: int, text: str, tmp_path):
    import soundfile as sf
    from lhotse import Recording, SupervisionSegment

    cid = spoken_cut_id(text)
    path = tmp_path / f"{cid}.wav"
    sf.write(str(path), audio, sample_rate)
    cut = Recording.from_file(str(path), recording_id=cid).to_cut()
    cut.supervisions = [SupervisionSegment(cid, cid, 0.0, cut.duration, text=text)]
    return cut


def _words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]", " ", text.lower()).split()


def _wer(ref: str, hyp: str) -> float:
    r, h = _words(ref), _words(hyp)
    d = list(range(len(h) + 1))
    for i, rw in enumerate(r, 1):
        prev, d[0] = d[0], i
        for j, hw in enumerate(h, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (rw != hw))
    return d[len(h)] / max(len(r), 1)


def test_whisper_cascade_on_synthesized_items(tiny_llm, byte_tok, tmp_path):
    """Real TTS → Whisper tiny.en → text LLM: the transcripts recover the spoken premises (WER), and the cascade
    scores exactly the prompt built from the transcript."""
    bench = load_benchmark("copa", n_items=3, seed=4)
    cascade = CascadeSystem(tiny_llm, byte_tok, build_transcriber({"name": "whisper"}))
    speech = SynthesizedSpeech(PiperBackend(), root=tmp_path)
    res = evaluate_benchmark(bench, [TextSystem(tiny_llm, byte_tok), cascade], ScoringSettings(max_shots=0), speech)
    items = {i.id: i for i in bench.items}
    wers = []
    for rec in res.items:
        (ref,), (hyp,) = rec["spoken"], rec["systems"]["cascade"]["transcripts"]
        wers.append(_wer(ref, hyp))
        # the cascade scored the transcript: rebuild its prompt as a string and score by full forwards
        connector = items[rec["id"]].query[1].text
        ctx = tiny_llm.embed(torch.tensor(byte_tok(" " + hyp + connector)["input_ids"])[None])[0]
        opts = [byte_tok(o)["input_ids"] for o in rec["options"]]
        expected = score_full_forward(tiny_llm, [ScoreRequest(ctx.detach(), opts)])[0]
        assert rec["systems"]["cascade"]["scores"]["sum"] == pytest.approx(expected, abs=2e-5)
    hyps = [r["systems"]["cascade"]["transcripts"] for r in res.items]
    assert sum(wers) / len(wers) <= 0.25, list(zip(wers, hyps, strict=True))


@pytest.fixture(scope="module")
def tiny_nemo_ctc():
    from nemo.collections.asr.models import EncDecCTCModel
    from omegaconf import OmegaConf

    vocab = list(" abcdefghijklmnopqrstuvwxyz'")
    cfg = OmegaConf.create({
        "sample_rate": 16000,
        "preprocessor": {"_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor",
                         "sample_rate": 16000, "features": 80},
        "encoder": {"_target_": "nemo.collections.asr.modules.ConformerEncoder", "feat_in": 80, "n_layers": 1,
                    "d_model": 32, "n_heads": 2, "subsampling": "dw_striding", "subsampling_factor": 8,
                    "subsampling_conv_channels": 32},
        "decoder": {"_target_": "nemo.collections.asr.modules.ConvASRDecoder", "feat_in": 32,
                    "num_classes": len(vocab), "vocabulary": vocab},
        "train_ds": None, "validation_ds": None, "test_ds": None, "optim": None,
    })
    return EncDecCTCModel(cfg=cfg).eval()


def test_nemo_transcriber_reads_cuts_at_the_model_rate(tiny_nemo_ctc, tmp_path):
    """A (random, tiny) NeMo CTC model restored from a .nemo file transcribes lhotse cuts at another sample rate;
    the output is the model's own transcription of the same resampled audio."""
    g = np.random.default_rng(0)
    cuts = [_cut_from_audio(0.1 * g.standard_normal(n).astype(np.float32), 22050, f"c{n}", tmp_path)
            for n in (22050, 11025)]
    path = tmp_path / "tiny.nemo"
    tiny_nemo_ctc.save_to(str(path))
    asr = CutTranscriber(NeMoTranscriber(str(path), batch_size=2, device="cpu"))
    got = asr.transcribe(cuts)
    assert len(got) == 2 and all(isinstance(t, str) for t in got)
    direct = tiny_nemo_ctc.transcribe([c.resample(16000).load_audio()[0] for c in cuts], batch_size=2, verbose=False)
    assert got == [h.text if hasattr(h, "text") else h for h in direct]
    assert asr.transcribe([]) == []

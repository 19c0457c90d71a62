"""CTC forced alignment of a manifest through NeMo's Viterbi aligner, with a stand-in CTC model that listens to
tone speech (each letter a 40 ms sine of its own frequency), so word boundaries are known by construction."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch
from lhotse import CutSet, MonoCut, Recording, SupervisionSegment
from lhotse.serialization import load_manifest

from nemo_salad.data.align import CTCWordAligner, align_manifest
from tests.helpers.tone_speech import SR, tone_audio

FRAME = 0.02  # the stand-in model's output frame (a 10 ms stride subsampled x 2)
VOCAB = [" "] + [chr(c) for c in range(97, 123)] + ["'"]


class ToneCTC:
    """A character CTC "model": per 20 ms frame, the letter whose tone matches best, or blank in silence."""

    def __init__(self) -> None:
        self.decoder = SimpleNamespace(vocabulary=VOCAB)
        t = np.arange(int(FRAME * SR)) / SR
        freqs = [300.0 + 60.0 * ((ord(ch) - 97) % 26) for ch in VOCAB[1:27]]
        self.bank = np.stack([np.exp(-2j * np.pi * f * t) for f in freqs])  # (26, samples per frame)

    def _log_probs(self, audio: np.ndarray) -> torch.Tensor:
        n = int(FRAME * SR)
        frames = audio[: len(audio) // n * n].reshape(-1, n)  # (T, n)
        probs = np.full((len(frames), len(VOCAB) + 1), 0.02 / len(VOCAB))
        for i, frame in enumerate(frames):
            best = len(VOCAB) if np.sqrt(np.mean(frame**2)) < 0.01 else 1 + int(np.abs(self.bank @ frame).argmax())
            probs[i, best] = 0.98
        return torch.log(torch.as_tensor(probs, dtype=torch.float32))

    def transcribe(self, audio, batch_size, return_hypotheses, **_):
        return [SimpleNamespace(y_sequence=self._log_probs(a), text="") for a in audio]


def _cut(path, words: list[str], pauses: list[float], cut_id: str, text: str | None = None):
    """Audio of ``words`` with ``pauses[i]`` seconds of silence before word i; returns the cut and true times."""
    pieces, times, t = [], [], 0.0
    for word, pause in zip(words, pauses):
        pieces += [np.zeros(round(pause * SR), np.float32), tone_audio(word)[: len(word) * 640]]
        times.append((t + pause, t + pause + len(word) * 0.04))
        t = times[-1][1]
    pieces.append(np.zeros(round(0.1 * SR), np.float32))
    sf.write(path, np.concatenate(pieces), SR)
    rec = Recording.from_file(path, recording_id=cut_id)
    sup = SupervisionSegment(cut_id, cut_id, 0.0, rec.duration, text=text if text is not None else " ".join(words))
    return MonoCut(cut_id, 0.0, rec.duration, 0, recording=rec, supervisions=[sup]), times


def _manifest(tmp_path, n: int = 5):
    rng = np.random.default_rng(0)
    cuts, truth = [], {}
    for i in range(n):
        words = list(rng.choice(["the", "cat", "sat", "on", "mat", "dog", "ran", "park"], size=5))
        pauses = [float(p) for p in rng.choice([0.0, 0.06, 0.2, 0.5], size=5)]
        cut, times = _cut(tmp_path / f"c{i}.flac", words, pauses, f"c{i}", text=" ".join(words).capitalize() + ".")
        cuts.append(cut)
        truth[cut.id] = times
    CutSet(cuts).to_file(tmp_path / "in.jsonl.gz")
    return tmp_path / "in.jsonl.gz", truth


def test_forced_alignment_recovers_word_boundaries(tmp_path):
    manifest, truth = _manifest(tmp_path)
    report = align_manifest(manifest, tmp_path / "out.jsonl.gz", CTCWordAligner(ToneCTC(), frame_seconds=FRAME),
                            batch_size=2, progress=False)
    assert report.n_aligned == 5 and report.unaligned == []
    out = load_manifest(tmp_path / "out.jsonl.gz")
    assert [c.id for c in out] == [f"c{i}" for i in range(5)]
    for cut in out:
        items = cut.supervisions[0].alignment["word"]
        assert " ".join(a.symbol for a in items) == cut.supervisions[0].text  # original spelling kept
        found = np.array([(a.start, a.end) for a in items])
        # Pauses and letters are whole 20 ms frames; between two words without a pause the path must still pass
        # through the word-separator token, which takes one frame from the earlier word: one frame of tolerance.
        assert np.abs(found - np.array(truth[cut.id])).max() <= FRAME + 1e-6, (cut.id, found, truth[cut.id])


def test_cuts_that_cannot_be_aligned_are_named_counted_and_kept(tmp_path, caplog):
    good, _ = _cut(tmp_path / "g.flac", ["the", "cat"], [0.1, 0.1], "good")
    long, _ = _cut(tmp_path / "l.flac", ["on"], [0.0], "too_long", text="the cat sat on the mat " * 10)
    gone, _ = _cut(tmp_path / "m.flac", ["dog"], [0.0], "missing")
    (tmp_path / "m.flac").unlink()
    CutSet([good, long, gone]).to_file(tmp_path / "in.jsonl")
    report = align_manifest(tmp_path / "in.jsonl", tmp_path / "out.jsonl", CTCWordAligner(ToneCTC(), FRAME),
                            batch_size=3, progress=False)
    reasons = dict(report.unaligned)
    assert report.n_aligned == 1 and sorted(reasons) == ["missing", "too_long"]
    assert "cannot read audio" in reasons["missing"] and "no alignment path" in reasons["too_long"]
    out = {c.id: c for c in load_manifest(tmp_path / "out.jsonl")}
    assert sorted(out) == ["good", "missing", "too_long"] and out["too_long"].supervisions[0].alignment is None
    assert any("missing" in r.getMessage() and "too_long" in r.getMessage() for r in caplog.records)


class _Dies(CTCWordAligner):
    def __init__(self, after: int) -> None:
        super().__init__(ToneCTC(), FRAME)
        self.calls, self.after = 0, after

    def align(self, cuts):
        self.calls += 1
        if self.calls > self.after:
            raise KeyboardInterrupt("killed")
        return super().align(cuts)


def test_a_killed_run_leaves_no_output_and_resumes_without_redoing(tmp_path):
    manifest, _ = _manifest(tmp_path)
    out = tmp_path / "out.jsonl.gz"
    with pytest.raises(KeyboardInterrupt):
        align_manifest(manifest, out, _Dies(after=1), batch_size=2, progress=False)
    assert not out.exists()  # never a half-written manifest
    partial = tmp_path / "out.jsonl.gz.partial.jsonl"
    assert [json.loads(line)["id"] for line in partial.read_text().splitlines()] == ["c0", "c1"]
    with open(partial, "a") as handle:  # as if the kill came in the middle of writing a line
        handle.write('{"id": "c2", "start": 0')
    resumed = _Dies(after=10)
    report = align_manifest(manifest, out, resumed, batch_size=2, progress=False)
    assert report.n_resumed == 2 and report.n_aligned == 3 and resumed.calls == 2
    assert [c.id for c in load_manifest(out)] == [f"c{i}" for i in range(5)]
    assert all(c.supervisions[0].alignment for c in load_manifest(out))
    assert not partial.exists()


def test_bad_arguments(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        align_manifest(tmp_path / "nope.jsonl", tmp_path / "o.jsonl", None)
    manifest, _ = _manifest(tmp_path, n=1)
    with pytest.raises(ValueError, match="is the input manifest"):
        align_manifest(manifest, manifest, None)
    with pytest.raises(ValueError, match="batch_size=0"):
        align_manifest(manifest, tmp_path / "o.jsonl", None, batch_size=0)


def test_a_nemo_ctc_model_goes_through_the_same_path(tmp_path):
    """A random-weight NeMo ``EncDecCTCModel``: its hypotheses' log-probs and frame rate feed the Viterbi aligner."""
    from nemo.collections.asr.models import EncDecCTCModel
    from omegaconf import OmegaConf

    labels = VOCAB
    model = EncDecCTCModel(OmegaConf.create({
        "sample_rate": 16000, "labels": labels,
        "preprocessor": {"_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor",
                         "sample_rate": 16000, "features": 64, "dither": 0.0, "window_stride": 0.01},
        "encoder": {"_target_": "nemo.collections.asr.modules.ConvASREncoder", "feat_in": 64, "activation": "relu",
                    "jasper": [{"filters": 32, "repeat": 1, "kernel": [11], "stride": [2], "dilation": [1],
                                "dropout": 0.0, "residual": False, "separable": True}]},
        "decoder": {"_target_": "nemo.collections.asr.modules.ConvASRDecoder", "feat_in": 32,
                    "num_classes": len(labels), "vocabulary": labels},
    })).eval()
    cut, _ = _cut(tmp_path / "a.flac", ["the", "cat", "sat"], [0.1, 0.2, 0.1], "a", text="The cat, sat!")
    with pytest.raises(ValueError, match="pass frame_seconds"):
        CTCWordAligner(SimpleNamespace(cfg={})).align([cut])
    (result,) = CTCWordAligner(model).align([cut])  # 10 ms stride x 2 = 20 ms frames, read from the model
    items = result["word"]
    assert [a.symbol for a in items] == ["The", "cat,", "sat!"]
    assert 0.0 <= items[0].start and all(a.end <= b.start + 1e-6 for a, b in zip(items, items[1:]))
    assert items[-1].end <= cut.duration  # the model pads its features: frames past the audio are clipped

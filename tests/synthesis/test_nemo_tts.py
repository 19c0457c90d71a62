"""NeMo FastPitch + HiFi-GAN backend with tiny random-weight models built from configs (no downloads).

The random FastPitch predicts exactly 6 mel frames per token, so every output length is known: tokens x 6 x 256.
"""

from __future__ import annotations

import numpy as np
import pytest
from omegaconf import open_dict

from nemo_salad.synthesis import NeMoTTSBackend, build_backend, load_synthesized, synthesize_to_shar, text_cuts

TEXTS = ["The quick brown fox jumps over the lazy dog near the bank.", "Hello world, this is a test.", "Short."]
HOP, FRAMES_PER_TOKEN = 256, 6


@pytest.fixture(scope="module")
def backend(tiny_nemo_models):
    fastpitch, hifigan = tiny_nemo_models
    return NeMoTTSBackend(fastpitch, hifigan, device="cpu")


def test_batched_synthesis_matches_one_by_one(backend):
    batched = backend.synthesize(TEXTS)
    single = [backend.synthesize([text])[0] for text in TEXTS]
    unsliced = NeMoTTSBackend(backend.spec_generator, backend.vocoder, device="cpu", vocoder_max_frames=0)
    whole = unsliced.synthesize(TEXTS)
    assert backend.sample_rate == 22050
    for text, b, s, w in zip(TEXTS, batched, single, whole, strict=True):
        n_tokens = len(backend.tokenize(text))
        assert len(b) == len(s) == len(w) == n_tokens * FRAMES_PER_TOKEN * HOP  # trimmed by predicted duration
        assert b.dtype == np.float32 and np.isfinite(b).all() and np.abs(b).max() > 1e-3
        # Padding changes a shorter item slightly: FastPitch's pitch predictor (2 convs) sees the padded position
        # after the last token, and the decoder's attention spreads that over the item (<1e-3 measured); at the
        # very end HiFi-GAN's receptive field sees silence frames instead of zero padding.
        interior = len(b) - 8 * HOP
        np.testing.assert_allclose(b[:interior], s[:interior], atol=2e-3)
        np.testing.assert_allclose(b[:interior], w[:interior], atol=2e-3)
    np.testing.assert_allclose(batched[0], single[0], atol=1e-5)  # the longest item (first) has no padding


def test_vocoder_slices_respect_the_frame_budget(backend):
    backend_small = NeMoTTSBackend(backend.spec_generator, backend.vocoder, device="cpu", vocoder_max_frames=500)
    frames = [300, 200, 150, 100, 100, 90, 10]
    slices = backend_small._vocoder_slices(frames)
    assert [s for s, _ in slices][0] == 0 and slices[-1][1] == len(frames)
    assert all(a[1] == b[0] for a, b in zip(slices, slices[1:], strict=False))  # consecutive, nothing lost
    assert all((stop - start) * max(frames[start:stop]) <= 500 or stop - start == 1 for start, stop in slices)


def test_end_to_end_to_shar(backend, tmp_path):
    report = synthesize_to_shar(text_cuts([(f"t{i}", t) for i, t in enumerate(TEXTS)]), backend, tmp_path,
                                batch_size=2, progress=False)
    assert report.n_written == 3 and report.n_skipped == {}
    cuts = {c.id: c for c in load_synthesized(tmp_path)}
    for i, text in enumerate(TEXTS):
        cut = cuts[f"t{i}"]
        native = len(backend.tokenize(text)) * FRAMES_PER_TOKEN * HOP
        assert abs(cut.num_samples - native * 16000 / 22050) <= 1
        assert cut.load_audio().shape == (1, cut.num_samples) and cut.sampling_rate == 16000
        assert cut.supervisions[0].text == text
        assert cut.custom["tts_backend"] == "nemo"
        assert cut.custom["tts_checkpoint"] == "<in-memory FastPitchModel>+<in-memory HifiGanModel>"


def test_dot_nemo_checkpoint_goes_through_the_same_path(backend, tiny_nemo_models, tmp_path):
    fastpitch, hifigan = tiny_nemo_models
    path = tmp_path / "tiny_fastpitch.nemo"
    fastpitch.save_to(str(path))  # small; HiFi-GAN .nemo files are ~284 MB even when tiny, so not here
    restored = NeMoTTSBackend(str(path), hifigan, device="cpu")
    assert restored.provenance()["checkpoint"] == f"{path}+<in-memory HifiGanModel>"
    for a, b in zip(restored.synthesize(TEXTS), backend.synthesize(TEXTS), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    from_config = build_backend({"name": "nemo", "spec_generator": str(path), "vocoder": hifigan, "device": "cpu"})
    assert len(from_config.synthesize(["Hi."])[0]) == len(backend.tokenize("Hi.")) * FRAMES_PER_TOKEN * HOP
    with pytest.raises(FileNotFoundError, match="missing.nemo does not exist"):
        NeMoTTSBackend(str(tmp_path / "missing.nemo"), hifigan, device="cpu")


def test_bad_configurations_are_refused(backend, tiny_nemo_models):
    fastpitch, hifigan = tiny_nemo_models
    with pytest.raises(ValueError, match="has 1 speaker"):
        backend.synthesize(["Hi."], voice="3")
    with pytest.raises(TypeError, match="expected a FastPitchModel instance, got HifiGanModel"):
        NeMoTTSBackend(hifigan, hifigan, device="cpu")
    from nemo_salad.synthesis.backends.nemo_configs import random_fastpitch

    other_rate = random_fastpitch()
    with open_dict(other_rate.cfg):
        other_rate.cfg.sample_rate = 44100
    with pytest.raises(ValueError, match="is for 44100 Hz but vocoder .* outputs 22050 Hz"):
        NeMoTTSBackend(other_rate, hifigan, device="cpu")

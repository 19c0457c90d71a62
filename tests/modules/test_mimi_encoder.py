"""Mimi encoder: 16 → 24 kHz resampling (against analytic sines), frame rate and lengths (against transformers'
``get_encoded_length``), latents equal to what ``MimiModel.encode`` quantizes, batching, resolved config."""

from __future__ import annotations

import math

import pytest
import torch

from nemo_salad.models import build as B
from nemo_salad.modules.mimi_encoder import MimiSpeechEncoder, SincResampler, build_mimi_encoder
from tests.helpers.encoders import assert_batch_equals_clips_alone
from tests.helpers.tiny import TINY_ENCODERS

TINY = TINY_ENCODERS["mimi_tiny"]["config"]


def _clips(samples: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lens = torch.tensor(samples)
    audio = torch.full((len(samples), max(samples)), 0.5)  # garbage in the padding
    for i, n in enumerate(samples):
        audio[i, :n] = 0.1 * torch.randn(n, generator=g)
    return audio, lens


@pytest.fixture(scope="module")
def mimi_dir(tmp_path_factory):
    from transformers import MimiConfig, MimiModel

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("mimi")
    MimiModel(MimiConfig(**TINY)).eval().save_pretrained(str(path))
    return path


@pytest.mark.parametrize("freq", [100.0, 440.0, 1000.0, 3000.0, 5000.0])
def test_resampling_16k_to_24k_reproduces_sines(freq):
    up = SincResampler(16000, 24000)
    n = 8000
    x = torch.sin(2 * math.pi * freq * torch.arange(n, dtype=torch.float64) / 16000).float()[None]
    y = up(x)[0].double()
    want = torch.sin(2 * math.pi * freq * torch.arange(len(y), dtype=torch.float64) / 24000)
    assert len(y) == 12000 and up.output_lengths(torch.tensor([n, 1, 2, 3])).tolist() == [12000, 2, 3, 5]
    assert (y[600:-600] - want[600:-600]).abs().max() < 1e-3  # away from the edges (zeros outside)


@pytest.mark.parametrize("freq", [3000.0, 6000.0])
def test_resampling_leaves_no_spectral_image(freq):
    """Upsampling by 3 makes an image at 16 kHz - f, which the low-pass must remove; after decimation by 2 it
    would sit at 16 kHz - f, or at 24 kHz - (16 kHz - f) when that is above the 12 kHz Nyquist frequency."""
    up = SincResampler(16000, 24000)
    x = torch.sin(2 * math.pi * freq * torch.arange(16000, dtype=torch.float64) / 16000).float()[None]
    spectrum = torch.fft.rfft(up(x)[0, :24000].double() * torch.hann_window(24000, dtype=torch.float64)).abs()
    image = 16000 - freq if 16000 - freq <= 12000 else 8000 + freq
    assert spectrum[int(image)] < 1e-3 * spectrum[int(freq)]


def test_latents_are_what_mimi_quantizes(mimi_dir):
    """Per clip of a batch: the latents equal the ``downsample`` output inside ``MimiModel.encode`` on the clip
    (resampled, zero-padded to whole frames), quantizing them gives ``encode``'s own codes, and the frame counts
    are transformers' ``get_encoded_length`` at 12.5 frames/s."""
    from transformers import MimiModel

    reference = MimiModel.from_pretrained(str(mimi_dir)).eval()
    enc = build_mimi_encoder({"kind": "mimi", "pretrained": str(mimi_dir), "freeze": True})
    assert enc.frame_rate == 12.5 and enc.output_dim == 16
    audio, lens = _clips([16000 * 3 + 5, 16000, 500, 1])
    with torch.no_grad():
        feats, out_lens = enc(audio, lens)
    resampled = enc.resample.output_lengths(lens)
    assert out_lens.tolist() == reference.get_encoded_length(resampled).tolist() == [38, 13, 1, 1]
    for i, n in enumerate(lens.tolist()):
        frames = int(out_lens[i])
        wave = enc.resample(audio[i:i + 1, :n])
        wave = torch.nn.functional.pad(wave, (0, frames * 1920 - wave.shape[1]))[:, None]  # (1, 1, S)
        seen = {}
        hook = reference.downsample.register_forward_hook(lambda m, a, out, seen=seen: seen.setdefault("latents", out))
        with torch.no_grad():
            codes = reference.encode(wave).audio_codes  # (1, Q, F)
        hook.remove()
        assert torch.allclose(feats[i, :frames], seen["latents"][0].T, atol=1e-5), i
        with torch.no_grad():
            ours = reference.quantizer.encode(feats[i:i + 1, :frames].transpose(1, 2)).transpose(0, 1)
        assert torch.equal(ours, codes), i
        assert (feats[i, frames:] == 0).all()


def test_batch_equals_clips_alone():
    torch.manual_seed(0)
    enc = MimiSpeechEncoder(TINY).double().eval()
    audio, lens = _clips([24000, 7000, 1919, 40000])
    assert_batch_equals_clips_alone(enc, audio, lens)
    assert enc.min_samples() == 1 and int(enc.encoded_lengths(torch.tensor([1]))) == 1
    assert int(enc.encoded_lengths(torch.tensor([16000 * 8]))) == 100


def test_resolved_config_rebuilds_the_same_architecture(mimi_dir):
    enc = build_mimi_encoder({"kind": "mimi", "pretrained": str(mimi_dir), "freeze": False})
    cfg = B.resolved_encoder_config({"kind": "mimi", "pretrained": str(mimi_dir), "freeze": False}, enc)
    assert cfg["pretrained"] is None and cfg["config"]["hidden_size"] == 16
    rebuilt = B.build_speech_encoder(cfg, load_weights=True)
    rebuilt.load_state_dict(enc.state_dict(), strict=True)
    audio, lens = _clips([9000])
    with torch.no_grad():
        assert torch.equal(rebuilt(audio, lens)[0], enc(audio, lens)[0])
    assert not any(name.startswith(("decoder", "quantizer", "upsample")) for name in enc.state_dict())


def test_clear_errors(mimi_dir):
    with pytest.raises(ValueError, match=r"kind: mimi.*SALAD_MIMI"):
        B.build_speech_encoder({"kind": "mimi", "pretrained": None})
    with pytest.raises(FileNotFoundError, match=r"model.encoder.pretrained='/no/such/mimi': no such directory"):
        B.build_speech_encoder({"kind": "mimi", "pretrained": "/no/such/mimi"})
    with pytest.raises(ValueError, match=r"disagrees with .*config.json.*'hidden_size': \(16, 512\)"):
        B.build_speech_encoder({"kind": "mimi", "pretrained": str(mimi_dir), "config": {"hidden_size": 512}})

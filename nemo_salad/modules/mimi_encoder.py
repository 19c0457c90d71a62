"""Mimi's encoder (``transformers``' ``MimiModel``, encoder side) as a speech encoder: 16 kHz audio → 12.5 frames/s.

Mimi (the neural codec of Moshi, the paper's speech encoder) reads 24 kHz audio: a causal SEANet convolution stack
(hop 960 samples, 25 Hz), a causal transformer, and a stride-2 causal convolution (``downsample``) to 12.5 Hz,
whose output the residual vector quantizer turns into codes. The features taken here are that continuous
**pre-quantization latent** — the ``downsample`` output, ``(B, 512, F)`` for the released model, which is exactly
the tensor ``MimiModel.encode`` hands to ``quantizer.encode``: it holds everything the codes hold (and what the
quantization error drops), is differentiable for a trainable encoder, and already runs at 12.5 Hz, whereas
de-quantized codes would lose detail and the 25 Hz transformer output would double the frame count. The
quantizer and the decoder are not kept.

The project's 16 kHz audio is resampled to 24 kHz in torch (:class:`SincResampler`, windowed-sinc). Each clip is
then zero-padded to a whole number of frames (1920 samples at 24 kHz): every layer is causal, so a clip's frames
depend only on the clip and the silence after it, never on its batch mates.

Legend: ``B`` batch, ``N`` samples at 16 kHz, ``S`` samples at the model's rate, ``F`` frames, ``D`` latent width.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as nnf
from torch import Tensor, nn

from nemo_salad.modules.hf_speech_encoder import HFSpeechEncoder

__all__ = ["MimiSpeechEncoder", "SincResampler", "build_mimi_encoder", "read_mimi_folder"]

_BOOKKEEPING = ("architectures", "model_type", "transformers_version", "torch_dtype", "dtype", "_name_or_path")


class SincResampler(nn.Module):
    """Band-limited resampling by a rational factor: a Hann-windowed sinc low-pass as a strided ``conv1d``.

    The kernel is the one of ``torchaudio.functional.resample`` (``sinc_interp_hann``): cut-off at ``rolloff``
    times the lower Nyquist frequency, ``width`` zero crossings on each side. Samples before and after the
    waveform count as zeros.

    Args:
        orig_rate (int): input rate in Hz.
        new_rate (int): output rate in Hz.
        width (int): zero crossings of the sinc on each side (longer = sharper). Default: 16.
        rolloff (float): cut-off as a fraction of the lower Nyquist frequency. Default: 0.95.

    >>> up = SincResampler(16000, 24000)
    >>> up(torch.zeros(2, 16000)).shape, up.output_lengths(torch.tensor([16000, 7])).tolist()
    (torch.Size([2, 24000]), [24000, 11])
    """

    def __init__(self, orig_rate: int, new_rate: int, width: int = 16, rolloff: float = 0.95) -> None:
        super().__init__()
        g = math.gcd(int(orig_rate), int(new_rate))
        self.orig, self.new = int(orig_rate) // g, int(new_rate) // g
        base = min(self.orig, self.new) * rolloff
        self.pad = math.ceil(width * self.orig / base)
        idx = torch.arange(-self.pad, self.pad + self.orig, dtype=torch.float64)[None] / self.orig  # (1, L)
        t = (-torch.arange(self.new, dtype=torch.float64)[:, None] / self.new + idx) * base  # (new, L)
        t = t.clamp(-width, width)
        window = torch.cos(t * math.pi / width / 2) ** 2
        t = t * math.pi
        sinc = torch.where(t == 0, torch.ones_like(t), torch.sin(t) / t)
        kernel = (sinc * window * base / self.orig).float()[:, None]  # (new, 1, L)
        self.register_buffer("kernel", kernel, persistent=False)

    def output_lengths(self, num_samples: Tensor) -> Tensor:
        """Output samples for ``num_samples`` inputs: ``ceil(N * new_rate / orig_rate)``."""
        return torch.div(num_samples * self.new + self.orig - 1, self.orig, rounding_mode="floor")

    def forward(self, audio: Tensor) -> Tensor:
        """Resample ``(B, N)`` → ``(B, ceil(N * new / orig))``."""
        if self.orig == self.new:
            return audio
        b, n = audio.shape
        dtype = torch.promote_types(self.kernel.dtype, torch.float32)  # at least float32, also in a bf16 model
        x = nnf.pad(audio[:, None].to(dtype), (self.pad, self.pad + self.orig))  # (B, 1, N + ...)
        y = nnf.conv1d(x, self.kernel.to(dtype), stride=self.orig)  # (B, new, N / orig + ...)
        y = y.transpose(1, 2).reshape(b, -1)  # interleave the phases
        return y[:, : int(self.output_lengths(torch.tensor(n)))]


class MimiSpeechEncoder(HFSpeechEncoder):
    """Mimi's encoder up to the quantizer: ``(B, N)`` 16 kHz audio → ``(B, F, D)`` latents at 12.5 frames/s.

    Args:
        config (dict): ``MimiConfig`` fields (others keep their defaults, those of the released model).
        freeze (bool): keep the weights fixed and the module in eval mode. Default: False.

    Raises:
        ValueError: if the config's rate is not a whole number of samples per frame.

    >>> tiny = {"hidden_size": 16, "num_filters": 4, "num_hidden_layers": 1, "intermediate_size": 32,
    ...         "num_attention_heads": 2, "num_key_value_heads": 2, "head_dim": 8, "codebook_dim": 16,
    ...         "vector_quantization_hidden_dimension": 16, "num_quantizers": 2, "codebook_size": 16,
    ...         "upsample_groups": 16}
    >>> enc = MimiSpeechEncoder(tiny)
    >>> feats, lens = enc(torch.zeros(2, 16000), torch.tensor([16000, 8000]))
    >>> feats.shape, lens.tolist(), enc.frame_rate
    (torch.Size([2, 13, 16]), [13, 7], 12.5)
    """

    kind = "mimi"

    def __init__(self, config: dict[str, Any], freeze: bool = False) -> None:
        super().__init__()
        from transformers import MimiConfig, MimiModel

        arch = MimiConfig(**config)
        self.config = {k: v for k, v in arch.to_diff_dict().items() if k not in _BOOKKEEPING}
        hop = arch.sampling_rate / arch.frame_rate
        if hop != int(hop):
            raise ValueError(f"Mimi config: sampling_rate={arch.sampling_rate} / frame_rate={arch.frame_rate} is "
                             "not a whole number of samples per frame")
        self.hop, self._frame_rate = int(hop), float(arch.frame_rate)
        codec = MimiModel(arch)  # only the encoder side is kept
        self.encoder, self.encoder_transformer = codec.encoder, codec.encoder_transformer
        self.downsample = codec.downsample if codec.downsample is not None else nn.Identity()
        self.resample = SincResampler(self.sample_rate, arch.sampling_rate)
        self.set_frozen(freeze)

    @property
    def output_dim(self) -> int:
        """Latent width ``D`` (``hidden_size``, 512 for the released model)."""
        return int(self.encoder_transformer.config.hidden_size)

    @property
    def frame_rate(self) -> float:
        """Frames per second (12.5 for the released model)."""
        return self._frame_rate

    def encoded_lengths(self, num_samples: Tensor) -> Tensor:
        """Frames for ``(B,)`` 16 kHz sample counts: ``ceil(S / hop)`` with ``S = ceil(N * 3 / 2)`` at 24 kHz."""
        resampled = self.resample.output_lengths(num_samples.long())
        return torch.div(resampled + self.hop - 1, self.hop, rounding_mode="floor")

    def min_samples(self) -> int:
        """The fewest samples that give one frame: 1 (every clip is padded to whole frames)."""
        return 1

    def forward(self, audio: Tensor, audio_lens: Tensor) -> tuple[Tensor, Tensor]:
        """Encode a right-padded batch.

        Args:
            audio (Tensor): ``(B, N)`` float waveforms at 16 kHz.
            audio_lens (Tensor): ``(B,)`` valid samples per row.

        Returns:
            tuple[Tensor, Tensor]: latents ``(B, F, D)`` (zero past each clip) and valid frames ``(B,)``.
        """
        lens = self.encoded_lengths(audio_lens)
        valid_in = torch.arange(audio.shape[1], device=audio.device)[None] < audio_lens[:, None]
        wave = self.resample(audio.float() * valid_in)  # (B, S)
        total = int(lens.max()) * self.hop if len(lens) else 0
        wave = nnf.pad(wave, (0, max(total - wave.shape[1], 0)))[:, :total]
        valid = torch.arange(total, device=audio.device)[None] < self.resample.output_lengths(audio_lens)[:, None]
        x = (wave * valid).to(self.encoder.layers[0].conv.weight.dtype)[:, None]  # (B, 1, S): silence after clips
        x = self.encoder(x)  # (B, D, 2F) at 25 Hz
        x = self.encoder_transformer(x.transpose(1, 2), use_cache=False, return_dict=True).last_hidden_state
        x = self.downsample(x.transpose(1, 2)).transpose(1, 2)  # (B, F, D)
        frames = torch.arange(x.shape[1], device=x.device)[None] < lens[:, None]
        return x * frames[..., None], lens


def read_mimi_folder(path: str | Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Config and encoder-side weights (``encoder.*``, ``encoder_transformer.*``, ``downsample.*``) of a local
    Hugging Face Mimi folder.

    Args:
        path (str | Path): a folder with ``config.json`` and weights of a ``MimiModel`` (e.g. kyutai/mimi).

    Returns:
        tuple: ``(config, state_dict)``, keys as in :class:`MimiSpeechEncoder`.

    Raises:
        CheckpointError: for a missing folder, config or weight file.
        ValueError: if the folder is not a Mimi model.

    >>> config, state = read_mimi_folder("/path/to/mimi")  # doctest: +SKIP
    """
    from nemo_salad.llm.hf_checkpoint import read_hf_checkpoint

    config, weights, _ = read_hf_checkpoint(path)
    if config.get("model_type") != "mimi":
        raise ValueError(f"{Path(path) / 'config.json'} has model_type={config.get('model_type')!r}, expected 'mimi'"
                         " (a MimiModel folder such as kyutai/mimi)")
    keep = ("encoder.", "encoder_transformer.", "downsample.")
    state = {k: v for k, v in weights.items() if k.startswith(keep)}
    return {k: v for k, v in config.items() if k not in _BOOKKEEPING}, state


def build_mimi_encoder(cfg: dict[str, Any], load_weights: bool = True) -> MimiSpeechEncoder:
    """The Mimi encoder of a ``model.encoder`` section with ``kind: mimi``.

    Args:
        cfg (dict): ``pretrained`` (a local Hugging Face Mimi folder; null builds ``config`` with random weights),
            ``config`` (``MimiConfig`` fields; with ``pretrained``, those given must match the checkpoint),
            ``freeze``.
        load_weights (bool): False builds the checkpoint's architecture with random weights (used when restoring a
            ``.nemo``, whose weights are loaded afterwards). Default: True.

    Returns:
        MimiSpeechEncoder: the encoder.

    Raises:
        ValueError: if neither ``pretrained`` nor ``config`` is set, they disagree, or weights are missing.
        FileNotFoundError: for a ``pretrained`` folder that does not exist.

    >>> enc = build_mimi_encoder({"kind": "mimi", "pretrained": "/path/to/mimi", "freeze": True})  # doctest: +SKIP
    >>> enc.output_dim, enc.frame_rate  # doctest: +SKIP
    (512, 12.5)
    """
    pretrained, given = cfg.get("pretrained"), dict(cfg.get("config") or {})
    freeze = bool(cfg.get("freeze", False))
    if not pretrained:
        if not given:
            raise ValueError("model.encoder (kind: mimi): set `pretrained` (a local Hugging Face Mimi folder, e.g. "
                             "via SALAD_MIMI=/path/to/mimi) or `config` (MimiConfig fields of a randomly initialised "
                             "encoder)")
        return MimiSpeechEncoder(given, freeze=freeze)
    source = Path(str(pretrained))
    if not source.is_dir():
        raise FileNotFoundError(f"model.encoder.pretrained={str(pretrained)!r}: no such directory (expected a local "
                                "Hugging Face Mimi folder with config.json and model.safetensors)")
    from transformers import MimiConfig

    found, state = read_mimi_folder(source)
    arch = MimiConfig(**found)
    diff = {k: (getattr(arch, k, None), v) for k, v in given.items() if getattr(arch, k, None) != v}
    if diff:
        raise ValueError(f"model.encoder.config disagrees with {source / 'config.json'} (key: (found, given)): "
                         f"{diff}; set model.encoder.config: null to take the checkpoint's")
    encoder = MimiSpeechEncoder(found, freeze=freeze)
    if load_weights:
        missing, unexpected = encoder.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"{source}: encoder weights do not fit its config.json: missing {missing[:5]}"
                             f"{'...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}")
    return encoder

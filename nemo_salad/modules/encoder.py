"""The speech encoder: NeMo's mel-spectrogram preprocessor followed by a (Fast)Conformer encoder.

Built from configs with random weights, or taken from a pretrained NeMo ASR checkpoint (a ``.nemo`` path or a
``from_pretrained`` name), keeping only its preprocessor and encoder. With FastConformer's 8× subsampling of
10 ms mel frames the output runs at 12.5 frames/s (the rate of the paper's Mimi encoder).

Legend: ``B`` batch, ``N`` audio samples, ``F`` encoder frames, ``D`` encoder width.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from nemo_salad.parts.safe_config import check_targets

__all__ = ["SpeechEncoder", "disable_length_sync", "load_pretrained_asr_parts"]


def _as_container(cfg: Any) -> dict:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)


def disable_length_sync(module: nn.Module) -> nn.Module:
    """Turn off the all-reduce that NeMo's ``ConformerEncoder`` runs in every forward under ``torch.distributed``
    (``sync_max_audio_length``: the longest input over all ranks, to size its positional-encoding table alike).

    A rank whose batch is text replay does not run the encoder, so that collective would pair with another rank's
    gradient reduction and fail or hang data-parallel training. Without it each rank extends its own table as
    needed, to the same values.

    Args:
        module (nn.Module): searched with ``modules()``.

    Returns:
        nn.Module: ``module``.

    >>> enc = SpeechEncoder(*SpeechEncoder.tiny_configs())  # calls this
    >>> enc.encoder.sync_max_audio_length
    False
    """
    for m in module.modules():
        if hasattr(m, "sync_max_audio_length"):
            m.sync_max_audio_length = False
    return module


def load_pretrained_asr_parts(path_or_name: str) -> tuple[dict, dict, dict[str, Tensor], dict[str, Tensor]]:
    """Preprocessor and encoder (configs and weights) of a pretrained NeMo ASR model.

    Args:
        path_or_name (str): a ``.nemo`` file, or a NeMo pretrained model name (downloads unless cached).

    Returns:
        tuple: ``(preprocessor_cfg, encoder_cfg, preprocessor_state, encoder_state)``.

    Raises:
        FileNotFoundError: a path ending in ``.nemo`` that does not exist.
        ValueError: a model without ``preprocessor`` and ``encoder``.
    """
    from nemo.collections.asr.models import ASRModel

    from nemo_salad.checkpoint.nemo_io import SafeSaveRestoreConnector, safe_restore_from

    if path_or_name.endswith(".nemo"):
        if not Path(path_or_name).is_file():
            raise FileNotFoundError(f"pretrained ASR checkpoint {path_or_name} does not exist (expected a .nemo file)")
        asr = safe_restore_from(ASRModel, path_or_name, map_location="cpu")
    else:
        asr = ASRModel.from_pretrained(path_or_name, map_location="cpu",
                                       save_restore_connector=SafeSaveRestoreConnector())
    if not (hasattr(asr, "preprocessor") and hasattr(asr, "encoder")):
        raise ValueError(f"{path_or_name}: {type(asr).__name__} has no preprocessor/encoder to take")
    return (_as_container(asr.cfg.preprocessor), _as_container(asr.cfg.encoder),
            asr.preprocessor.state_dict(), asr.encoder.state_dict())


class SpeechEncoder(nn.Module):
    """Mel preprocessor + Conformer encoder: ``(B, N)`` 16 kHz audio → ``(B, F, D)`` features.

    Args:
        preprocessor (dict): NeMo config of the preprocessor (``_target_`` an
            ``AudioToMelSpectrogramPreprocessor``).
        encoder (dict): NeMo config of the encoder (``_target_`` a ``ConformerEncoder``).
        freeze (bool): keep the weights fixed and the module in eval mode. Default: False.

    >>> enc = SpeechEncoder(*SpeechEncoder.tiny_configs())
    >>> feats, lens = enc(torch.zeros(2, 16000), torch.tensor([16000, 8000]))
    >>> feats.shape[0], lens.tolist() == enc.encoded_lengths(torch.tensor([16000, 8000])).tolist()
    (2, True)
    """

    def __init__(self, preprocessor: dict, encoder: dict, freeze: bool = False) -> None:
        super().__init__()
        from nemo.core.classes.common import Serialization

        check_targets({"preprocessor": preprocessor, "encoder": encoder}, source="speech encoder config")
        self.preprocessor_cfg = _as_container(preprocessor)
        self.encoder_cfg = _as_container(encoder)
        self.preprocessor = Serialization.from_config_dict(OmegaConf.create(self.preprocessor_cfg))
        self.encoder = disable_length_sync(Serialization.from_config_dict(OmegaConf.create(self.encoder_cfg)))
        self.frozen = freeze
        if freeze:
            self.requires_grad_(False)
            self.eval()

    @staticmethod
    def tiny_configs(d_model: int = 64, n_layers: int = 2, n_heads: int = 4) -> tuple[dict, dict]:
        """Configs of a small FastConformer (8× subsampling, 80 mel bins) for tests and the CPU demo."""
        pre = {"_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor", "sample_rate": 16000,
               "normalize": "per_feature", "window_size": 0.025, "window_stride": 0.01, "features": 80,
               "n_fft": 512, "dither": 0.0, "pad_to": 0}
        enc = {"_target_": "nemo.collections.asr.modules.ConformerEncoder", "feat_in": 80, "n_layers": n_layers,
               "d_model": d_model, "subsampling": "dw_striding", "subsampling_factor": 8,
               "subsampling_conv_channels": d_model, "n_heads": n_heads, "ff_expansion_factor": 4,
               "conv_kernel_size": 9, "dropout": 0.0, "dropout_pre_encoder": 0.0, "dropout_emb": 0.0,
               "dropout_att": 0.0, "xscaling": True}
        return pre, enc

    # ------------------------------------------------------------------ properties
    @property
    def sample_rate(self) -> int:
        return int(self.preprocessor_cfg.get("sample_rate", 16000))

    @property
    def output_dim(self) -> int:
        return int(self.encoder._feat_out)

    @property
    def frame_rate(self) -> float:
        """Encoder frames per second (12.5 for FastConformer with 10 ms hops and 8× subsampling)."""
        hop = self.preprocessor.featurizer.hop_length / self.sample_rate
        return 1.0 / (hop * self.encoder.subsampling_factor)

    def train(self, mode: bool = True) -> SpeechEncoder:
        """A frozen encoder stays in eval mode (its BatchNorm statistics must not drift)."""
        return super().train(mode and not self.frozen)

    # ------------------------------------------------------------------ lengths
    def encoded_lengths(self, num_samples: Tensor) -> Tensor:
        """Encoder frames produced for audio of ``num_samples`` samples, without running the network.

        Args:
            num_samples (Tensor): ``(B,)`` sample counts.

        Returns:
            Tensor: ``(B,)`` frame counts (0 when the audio is too short for one frame).
        """
        from nemo.collections.asr.parts.submodules.subsampling import ConvSubsampling, calc_length

        mel = self.preprocessor.featurizer.get_seq_len(num_samples.float())
        sub = self.encoder.pre_encode
        if isinstance(sub, ConvSubsampling) and sub.conv2d_subsampling:
            out = calc_length(mel, all_paddings=sub._left_padding + sub._right_padding, kernel_size=sub._kernel_size,
                              stride=sub._stride, ceil_mode=sub._ceil_mode, repeat_num=sub._sampling_num)
        else:  # other subsampling kinds: measure with a forward pass of silence
            with torch.no_grad():
                _, out = self.forward(torch.zeros(len(num_samples), int(num_samples.max())), num_samples)
        return out.clamp(min=0).long()

    def min_samples(self) -> int:
        """The fewest audio samples that yield one encoder frame."""
        n = torch.arange(1, 4 * self.sample_rate)
        ok = (self.encoded_lengths(n) >= 1).nonzero()
        return int(n[ok[0]]) if len(ok) else 4 * self.sample_rate

    # ------------------------------------------------------------------ forward
    def forward(self, audio: Tensor, audio_lens: Tensor) -> tuple[Tensor, Tensor]:
        """Encode a right-padded batch.

        Args:
            audio (Tensor): ``(B, N)`` float waveforms at :attr:`sample_rate`.
            audio_lens (Tensor): ``(B,)`` valid samples per row.

        Returns:
            tuple[Tensor, Tensor]: features ``(B, F, D)`` and valid frames ``(B,)``.
        """
        mel, mel_lens = self.preprocessor(input_signal=audio, length=audio_lens)  # (B, 80, M)
        feats, lens = self.encoder(audio_signal=mel, length=mel_lens)  # (B, D, F)
        return feats.transpose(1, 2), lens

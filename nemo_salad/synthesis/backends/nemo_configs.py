"""FastPitch and HiFi-GAN model configs built in code (NeMo's wheel ships no YAML), for random-weight models.

Tests and benchmarks use them: a random FastPitch + HiFi-GAN runs the exact inference path of a trained pair
(tokenizer, padding, duration-based trimming, vocoding) without downloading anything. The character tokenizer needs
no data files; phoneme G2P needs a CMUdict, which trained ``.nemo`` files carry. :func:`random_fastpitch` fixes
every token's predicted duration (``frames_per_token``) so that random models produce realistic output lengths.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["fastpitch_config", "hifigan_config", "random_fastpitch", "random_hifigan"]

_RATE, _MELS, _HOP, _WIN = 22050, 80, 256, 1024


def fastpitch_config(d_model: int = 32, n_layers: int = 2, d_inner: int = 64, filter_size: int = 32,
                     n_speakers: int = 1) -> dict[str, Any]:
    """A FastPitch (learned alignment, English characters) config; ``d_model=384, n_layers=6, d_inner=1536,
    filter_size=256`` is the size of NeMo's released English FastPitch.

    >>> fastpitch_config()["input_fft"]["d_model"]
    32
    """

    def fft(target: str) -> dict[str, Any]:
        return {"_target_": f"nemo.collections.tts.modules.transformer.{target}", "n_layer": n_layers, "n_head": 1,
                "d_model": d_model, "d_head": max(d_model // 2, 16), "d_inner": d_inner, "kernel_size": 3,
                "dropout": 0.1, "dropatt": 0.1, "dropemb": 0.0}

    def predictor() -> dict[str, Any]:
        return {"_target_": "nemo.collections.tts.modules.fastpitch.TemporalPredictor", "input_size": d_model,
                "kernel_size": 3, "filter_size": filter_size, "dropout": 0.1, "n_layers": 2}

    return {
        "learn_alignment": True, "n_speakers": n_speakers, "max_token_duration": 75, "symbols_embedding_dim": d_model,
        "pitch_embedding_kernel_size": 3, "pitch_mean": 212.0, "pitch_std": 68.0, "sample_rate": _RATE,
        "n_mel_channels": _MELS, "n_window_size": _WIN, "n_window_stride": _HOP, "n_fft": _WIN, "lowfreq": 0,
        "highfreq": 8000, "window": "hann",
        "text_tokenizer": {
            "_target_": "nemo.collections.common.tokenizers.text_to_speech.tts_tokenizers.EnglishCharsTokenizer",
            "punct": True, "apostrophe": True, "pad_with_space": True},
        "train_ds": {"dataset": {"_target_": "nemo.collections.tts.data.dataset.TTSDataset"}, "defer_setup": True},
        "preprocessor": {
            "_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor", "features": _MELS,
            "lowfreq": 0, "highfreq": 8000, "n_fft": _WIN, "n_window_size": _WIN, "window_size": False,
            "n_window_stride": _HOP, "window_stride": False, "pad_to": 1, "pad_value": 0, "sample_rate": _RATE,
            "window": "hann", "normalize": None, "preemph": None, "dither": 0.0, "frame_splicing": 1, "log": True,
            "log_zero_guard_type": "add", "log_zero_guard_value": 1e-5, "mag_power": 1.0},
        "input_fft": {**fft("FFTransformerEncoder"), "d_embed": d_model},
        "output_fft": fft("FFTransformerDecoder"),
        "alignment_module": {"_target_": "nemo.collections.tts.modules.aligner.AlignmentEncoder",
                             "n_text_channels": d_model},
        "duration_predictor": predictor(),
        "pitch_predictor": predictor(),
        "optim": {"name": "adamw", "lr": 1e-3},
    }


def hifigan_config(channels: int = 32, resblock_kernel_sizes: tuple[int, ...] = (3,)) -> dict[str, Any]:
    """A HiFi-GAN config (hop 256 at 22.05 kHz); ``channels=512, resblock_kernel_sizes=(3, 7, 11)`` is V1.

    >>> hifigan_config()["generator"]["upsample_rates"]
    [8, 8, 2, 2]
    """
    return {
        "train_ds": {"dataset": {"_target_": "nemo.collections.tts.data.dataset.VocoderDataset"},
                     "defer_setup": True},
        "preprocessor": {
            "_target_": "nemo.collections.asr.parts.preprocessing.features.FilterbankFeatures", "nfilt": _MELS,
            "lowfreq": 0, "highfreq": 8000, "n_fft": _WIN, "n_window_size": _WIN, "n_window_stride": _HOP,
            "pad_to": 0, "pad_value": -11.52, "sample_rate": _RATE, "window": "hann", "normalize": None,
            "preemph": None, "dither": 0.0, "frame_splicing": 1, "log": True, "log_zero_guard_type": "clamp",
            "log_zero_guard_value": 1e-5, "mag_power": 1.0, "use_grads": False, "exact_pad": True},
        "generator": {
            "_target_": "nemo.collections.tts.modules.hifigan_modules.Generator", "resblock": 1,
            "upsample_rates": [8, 8, 2, 2], "upsample_kernel_sizes": [16, 16, 4, 4],
            "upsample_initial_channel": channels, "resblock_kernel_sizes": list(resblock_kernel_sizes),
            "resblock_dilation_sizes": [[1, 3, 5]] * len(resblock_kernel_sizes)},
        "optim": {"_target_": "torch.optim.AdamW", "lr": 2e-4},
        "max_steps": 1,
    }


def random_fastpitch(seed: int = 0, frames_per_token: float = 6.0, **config: Any) -> Any:
    """A random-weight ``FastPitchModel`` (eval mode) whose duration predictor outputs ``frames_per_token``.

    Args:
        seed (int): torch seed for the weights. Default: 0.
        frames_per_token (float): predicted mel frames per input token (6 at 86 frames/s is ~14 chars/s, a
            natural speaking rate). Default: 6.0.
        **config: overrides for :func:`fastpitch_config`.

    >>> model = random_fastpitch()  # doctest: +SKIP
    """
    import torch
    from nemo.collections.tts.models import FastPitchModel
    from omegaconf import OmegaConf

    torch.manual_seed(seed)
    model = FastPitchModel(OmegaConf.create(fastpitch_config(**config))).eval()
    with torch.no_grad():  # log_to_duration: exp(bias) - 1 frames for every real token
        model.fastpitch.duration_predictor.fc.weight.zero_()
        model.fastpitch.duration_predictor.fc.bias.fill_(math.log1p(frames_per_token))
    return model


def random_hifigan(seed: int = 0, **config: Any) -> Any:
    """A random-weight ``HifiGanModel`` (eval mode); never ``save_to`` it (its discriminators make ~284 MB).

    >>> vocoder = random_hifigan()  # doctest: +SKIP
    """
    import torch
    from nemo.collections.tts.models import HifiGanModel
    from omegaconf import OmegaConf

    torch.manual_seed(seed)
    return HifiGanModel(OmegaConf.create(hifigan_config(**config))).eval()

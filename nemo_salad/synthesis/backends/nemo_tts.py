"""NeMo TTS: a spectrogram generator (FastPitch) and a vocoder (HiFi-GAN), batched on GPU or CPU.

Text goes through the spectrogram generator's own ``parse`` - NeMo's text normaliser and G2P/tokenizer as stored in
its ``.nemo`` (phoneme models carry their CMUdict as a ``.nemo`` artifact). A batch is padded with the encoder's
padding id; FastPitch masks padded tokens, so each text's mel length is the sum of its own predicted durations
(``dec_lens``). Padded mel frames are set to the vocoder's silence value before vocoding, and every waveform is cut
to ``dec_lens * hop`` samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["NeMoTTSBackend", "load_nemo_model"]

_SILENCE_LOG_MEL = -11.52  # log(1e-5): NeMo's mel value of digital silence (HiFi-GAN preprocessor pad_value)
#: packages a TTS model's config may instantiate besides the default allowlist (FastPitch's text normaliser)
TTS_TARGET_PREFIXES = ("nemo_text_processing.",)


def load_nemo_model(cls: Any, ref: Any, device: str = "cpu") -> Any:
    """A NeMo model from an instance, a ``.nemo`` file or a NeMo pretrained name, in eval mode on ``device``.

    Files and pretrained names are restored with :class:`~nemo_salad.checkpoint.nemo_io.SafeSaveRestoreConnector`: the
    archived config may only name classes and functions of the allowed packages (and ``nemo_text_processing``).

    Args:
        cls: the NeMo model class (e.g. ``FastPitchModel``).
        ref: an instance of ``cls``, a path to a ``.nemo`` file, or a pretrained name such as ``"tts_en_fastpitch"``
            (pretrained names are fetched by NeMo from NGC/Hugging Face unless already in its cache).
        device (str): torch device. Default: "cpu".

    Returns:
        the model, ``.eval()`` and on ``device``.

    Raises:
        FileNotFoundError: for a ``.nemo`` path that does not exist.
        TypeError: for an instance of another class.
        UnsafeTargetError: if the archived config names anything else.

    >>> from nemo.collections.tts.models import FastPitchModel  # doctest: +SKIP
    >>> load_nemo_model(FastPitchModel, "checkpoints/fastpitch.nemo")  # doctest: +SKIP
    """
    import torch

    from nemo_salad.checkpoint.nemo_io import SafeSaveRestoreConnector

    if isinstance(ref, torch.nn.Module):
        if not isinstance(ref, cls):
            raise TypeError(f"expected a {cls.__name__} instance, got {type(ref).__name__}")
        model = ref
    elif str(ref).endswith(".nemo") or Path(str(ref)).exists():
        path = Path(str(ref))
        if not path.is_file():
            raise FileNotFoundError(f"{cls.__name__} checkpoint {path} does not exist")
        model = cls.restore_from(str(path), map_location=torch.device(device),
                                 save_restore_connector=SafeSaveRestoreConnector(TTS_TARGET_PREFIXES))
    else:
        model = cls.from_pretrained(str(ref), map_location=torch.device(device),
                                    save_restore_connector=SafeSaveRestoreConnector(TTS_TARGET_PREFIXES))
    return model.to(device).eval()


def _describe(ref: Any) -> str:
    return f"<in-memory {type(ref).__name__}>" if not isinstance(ref, (str, Path)) else str(ref)


class NeMoTTSBackend:
    """FastPitch + HiFi-GAN from NeMo, batched.

    Args:
        spec_generator: ``FastPitchModel`` instance, ``.nemo`` path or NeMo pretrained name.
            Default: "tts_en_fastpitch".
        vocoder: ``HifiGanModel`` instance, ``.nemo`` path or NeMo pretrained name. Default: "tts_en_hifigan".
        device (str | None): torch device; ``None`` picks CUDA when available. Default: None.
        speaker (int | None): speaker id of a multi-speaker FastPitch. Default: None.
        pace (float): > 1 speaks faster. Default: 1.0.
        normalize_text (bool): run the model's text normaliser (when its ``.nemo`` has one). Default: True.
        vocoder_max_frames (int | None): most mel frames (batch x padded length) per HiFi-GAN call; a longer batch
            is vocoded in consecutive slices. On CPU, HiFi-GAN's large upsampled activations make one big call
            slower than several cache-sized ones (one call per batch of 8 ran at 0.28x the speed of one-by-one
            in ``benchmarks/synthesis_speed.py``). ``None``: 1024 on CPU, unlimited on GPU. Default: None.

    Raises:
        ValueError: if the two models disagree on the sample rate or mel channels.

    >>> backend = NeMoTTSBackend("fastpitch.nemo", "hifigan.nemo", device="cpu")  # doctest: +SKIP
    >>> waves = backend.synthesize(["Hello there.", "A longer sentence to speak."])  # doctest: +SKIP
    """

    name = "nemo"

    def __init__(self, spec_generator: Any = "tts_en_fastpitch", vocoder: Any = "tts_en_hifigan",
                 device: str | None = None, speaker: int | None = None, pace: float = 1.0,
                 normalize_text: bool = True, vocoder_max_frames: int | None = None) -> None:
        import torch
        from nemo.collections.tts.models import FastPitchModel, HifiGanModel

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.spec_generator = load_nemo_model(FastPitchModel, spec_generator, self.device)
        self.vocoder = load_nemo_model(HifiGanModel, vocoder, self.device)
        self._refs = (_describe(spec_generator), _describe(vocoder))
        self.speaker, self.pace, self.normalize_text = speaker, float(pace), bool(normalize_text)
        self.sample_rate = int(self.vocoder.sample_rate)
        sg_cfg, voc_cfg = self.spec_generator.cfg, self.vocoder.cfg
        sg_rate = sg_cfg.get("sample_rate", sg_cfg.get("preprocessor", {}).get("sample_rate"))
        if sg_rate is not None and int(sg_rate) != self.sample_rate:
            raise ValueError(f"spectrogram generator {self._refs[0]} is for {sg_rate} Hz but vocoder {self._refs[1]} "
                             f"outputs {self.sample_rate} Hz; use a matching pair")
        n_mels, voc_mels = sg_cfg.get("n_mel_channels"), voc_cfg.get("preprocessor", {}).get("nfilt")
        if n_mels is not None and voc_mels is not None and int(n_mels) != int(voc_mels):
            raise ValueError(f"spectrogram generator makes {n_mels} mel channels, vocoder expects {voc_mels}")
        self.pad_id = int(self.spec_generator.fastpitch.encoder.padding_idx)
        self.silence = float(voc_cfg.get("preprocessor", {}).get("pad_value", _SILENCE_LOG_MEL))
        self.n_speakers = int(sg_cfg.get("n_speakers", 1) or 1)
        if vocoder_max_frames is None:
            vocoder_max_frames = 1024 if str(self.device).startswith("cpu") else 0
        self.vocoder_max_frames = int(vocoder_max_frames)  # 0: no limit

    def _speaker_tensor(self, voice: str | None, batch: int) -> Any:
        import torch

        speaker = self.speaker if voice is None else voice
        if speaker is None:
            return None
        if not str(speaker).isdigit() or int(speaker) >= self.n_speakers:
            raise ValueError(f"NeMo FastPitch {self._refs[0]} has {self.n_speakers} speaker(s) (ids 0..."
                             f"{self.n_speakers - 1}); got voice={speaker!r}")
        return torch.full((batch,), int(speaker), dtype=torch.long, device=self.device)

    def tokenize(self, text: str) -> list[int]:
        """Token ids of ``text`` after NeMo's normalisation and G2P (the model's ``parse``)."""
        return self.spec_generator.parse(text, normalize=self.normalize_text)[0].tolist()

    def synthesize(self, texts: Sequence[str], voice: str | None = None) -> list[np.ndarray]:
        """Waveforms ``(T_i,)`` float32 at the vocoder's rate; one padded FastPitch and one HiFi-GAN call per batch.

        ``voice`` is a speaker id (as a string) of a multi-speaker FastPitch; ``None`` uses ``speaker``.
        """
        import torch

        if not texts:
            return []
        tokens = [self.tokenize(text) for text in texts]
        lengths = [len(t) for t in tokens]
        batch = torch.full((len(texts), max(max(lengths), 1)), self.pad_id, dtype=torch.long)  # (B, T_text)
        for i, ids in enumerate(tokens):
            batch[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        with torch.inference_mode():
            spec, dec_lens, *_ = self.spec_generator(text=batch.to(self.device), durs=None, pitch=None,
                                                     speaker=self._speaker_tensor(voice, len(texts)), pace=self.pace)
            # spec: (B, n_mels, T_spec); frames past each dec_len are the projection bias of masked frames
            frames = torch.arange(spec.shape[-1], device=spec.device)[None, :]  # (1, T_spec)
            spec = spec.masked_fill((frames >= dec_lens[:, None])[:, None, :], self.silence)
            waves: list[np.ndarray] = []
            for start, stop in self._vocoder_slices(dec_lens.tolist()):
                # each slice is cut to its own longest mel so that short texts do not pay for long ones
                longest = int(dec_lens[start:stop].max())
                if longest == 0:  # nothing to vocode (e.g. durations all predicted as zero)
                    waves += [np.zeros(0, np.float32) for _ in range(start, stop)]
                    continue
                part = spec[start:stop, :, :longest]
                audio = self.vocoder.convert_spectrogram_to_audio(spec=part)  # (b, T_part * hop)
                hop = audio.shape[-1] // part.shape[-1]
                audio = audio.float().cpu().numpy()
                waves += [audio[i, : int(dec_lens[start + i]) * hop].copy() for i in range(stop - start)]
        return [wave if lengths[i] else np.zeros(0, np.float32) for i, wave in enumerate(waves)]

    def _vocoder_slices(self, frames: list[int]) -> list[tuple[int, int]]:
        """Consecutive ``[start, stop)`` ranges whose ``count x longest`` stays within ``vocoder_max_frames``."""
        slices, start = [], 0
        while start < len(frames):
            stop, longest = start + 1, max(frames[start], 1)
            while stop < len(frames):
                longest_next = max(longest, frames[stop])
                if self.vocoder_max_frames and (stop + 1 - start) * longest_next > self.vocoder_max_frames:
                    break
                stop, longest = stop + 1, longest_next
            slices.append((start, stop))
            start = stop
        return slices

    def provenance(self) -> dict[str, str]:
        voice = "" if self.speaker is None else str(self.speaker)
        pace = "" if self.pace == 1.0 else f" (pace={self.pace:g})"  # changes the audio, so it identifies it
        return {"backend": self.name, "voice": voice, "checkpoint": f"{self._refs[0]}+{self._refs[1]}{pace}"}

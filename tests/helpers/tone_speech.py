"""'Tone speech': a deterministic text-to-audio code whose content a tiny model can learn in a few steps.

Each letter is 40 ms of a sine whose frequency depends on the letter; each word is followed by 40 ms of
silence. Word durations are therefore exactly proportional to ``len(word) + 1`` — the proportional alignment
fallback of :mod:`nemo_salad.data.layout` is exact on this audio.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
from lhotse import CutSet, MonoCut, Recording, SupervisionSegment

UNIT = 0.04
SR = 16000


def tone_audio(text: str) -> np.ndarray:
    t = np.arange(int(UNIT * SR)) / SR
    pieces = []
    for word in text.split():
        for ch in word:
            freq = 300.0 + 60.0 * ((ord(ch.lower()) - 97) % 26)
            pieces.append(0.3 * np.sin(2 * np.pi * freq * t))
        pieces.append(np.zeros_like(t))
    return np.concatenate(pieces).astype(np.float32)


def tone_cuts(texts: list[str], out_dir: Path, prefix: str = "utt") -> CutSet:
    """Write one FLAC per text and return cuts with supervisions (no word alignment)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    cuts = []
    for i, text in enumerate(texts):
        path = out_dir / f"{prefix}{i}.flac"
        sf.write(path, tone_audio(text), SR)
        rec = Recording.from_file(path, recording_id=f"{prefix}{i}")
        sup = SupervisionSegment(id=f"{prefix}{i}", recording_id=rec.id, start=0.0, duration=rec.duration, text=text)
        cuts.append(MonoCut(id=f"{prefix}{i}", start=0.0, duration=rec.duration, channel=0, recording=rec,
                            supervisions=[sup]))
    return CutSet.from_cuts(cuts)


WORDS = ("the cat sat on mat a dog ran in park he turned sharply and faced across table ever tried failed no matter "
         "try again speech text are two views of language").split()


def random_sentences(n: int, seed: int = 0, min_words: int = 6, max_words: int = 14) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=rng.integers(min_words, max_words + 1))) for _ in range(n)]

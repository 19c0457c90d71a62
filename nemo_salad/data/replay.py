"""Text replay as lhotse cuts: recording-less cuts holding one text each.

Each becomes a cut without a recording (``custom["kind"] = "text"``) whose duration is a rough reading time
(0.4 s per word), so that duration-bucketed samplers can batch them too. Used by :mod:`nemo_salad.data.sources`
(``texts:`` entries) and :mod:`nemo_salad.data.demo` (its ``text_replay`` part).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from lhotse import CutSet, MonoCut, SupervisionSegment

__all__ = ["SECONDS_PER_WORD", "read_replay_texts", "text_cuts_for_replay"]

SECONDS_PER_WORD = 0.4


def text_cuts_for_replay(items: Iterable[tuple[str, str]]) -> CutSet:
    """Recording-less cuts holding one text each (for text replay).

    >>> cuts = text_cuts_for_replay([("a", "two words")])
    >>> cuts[0].has_recording, cuts[0].supervisions[0].text, cuts[0].duration
    (False, 'two words', 0.8)
    """
    cuts = []
    for item_id, text in items:
        duration = max(SECONDS_PER_WORD, SECONDS_PER_WORD * len(text.split()))
        sup = SupervisionSegment(id=item_id, recording_id=item_id, start=0.0, duration=duration, text=text)
        cuts.append(MonoCut(id=item_id, start=0.0, duration=duration, channel=0, supervisions=[sup],
                            custom={"kind": "text"}))
    return CutSet.from_cuts(cuts)


def read_replay_texts(path: str | Path) -> CutSet:
    """Text-replay cuts from a JSONL of ``{"id", "text"}`` lines (bad lines are skipped, counted and logged).

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: if no line is usable, or two lines share an id.
    """
    from nemo_salad.data.text_corpus import read_text_jsonl

    docs = read_text_jsonl(path)
    if not docs:
        raise ValueError(f"{path}: no usable line (expected JSON objects with a non-empty 'text')")
    return text_cuts_for_replay((d.id, d.text) for d in docs)

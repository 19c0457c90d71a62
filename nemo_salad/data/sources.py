"""Turn the ``data.sources`` entries of a config into lhotse CutSets.

An entry names exactly one of:

* ``shar: <dir>`` — a lhotse Shar directory (what the synthesis layer writes);
* ``manifest: <path>`` — a lhotse cuts manifest (``.jsonl`` / ``.jsonl.gz``), e.g. LibriHeavy or
  Emilia-YODAS prepared with lhotse's recipes, audio paths local;
* ``texts: <path>`` — a JSONL of ``{"id": ..., "text": ...}`` lines for text replay;
* ``demo: <part>`` — the embedded CPU demo corpus (built on first use, see :mod:`nemo_salad.data.demo`).

Text items become cuts without a recording (``custom["kind"] = "text"``) whose duration is a rough reading
time (0.4 s per word), so that duration-bucketed samplers can batch them too.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lhotse import CutSet, MonoCut, SupervisionSegment

__all__ = ["SECONDS_PER_WORD", "load_source", "read_replay_texts", "text_cuts_for_replay"]

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


def _load_shar(path: Path) -> CutSet:
    """A Shar directory: one written by the synthesis layer (which keeps reports beside the shards), or any
    other lhotse Shar directory."""
    from nemo_salad.synthesis import load_synthesized

    if (path / "report.json").is_file() or any(path.glob("dropped.*.jsonl")):
        return load_synthesized(path)
    return CutSet.from_shar(in_dir=str(path))


def load_source(entry: dict[str, Any], demo: Any = None) -> CutSet:
    """The CutSet of one ``data.sources`` entry (see the module docstring).

    Raises:
        ValueError: if the entry names none or several of ``shar``/``manifest``/``texts``/``demo``.
        FileNotFoundError: for a missing path, naming it.
    """
    kinds = [k for k in ("shar", "manifest", "texts", "demo") if entry.get(k)]
    if len(kinds) != 1:
        raise ValueError(f"data source {entry.get('name')!r}: set exactly one of shar, manifest, texts, demo "
                         f"(got {kinds or 'none'})")
    kind, value = kinds[0], entry[kinds[0]]
    if kind == "demo":
        from nemo_salad.data.demo import demo_source

        return demo_source(str(value), demo)
    if kind == "texts":
        return read_replay_texts(value)
    path = Path(value)
    if not path.exists():
        raise FileNotFoundError(f"data source {entry.get('name')!r}: {kind} path {path} does not exist")
    if kind == "shar":
        return _load_shar(path)
    return CutSet.from_jsonl_lazy(str(path)) if ".jsonl" in path.name else CutSet.from_file(str(path))

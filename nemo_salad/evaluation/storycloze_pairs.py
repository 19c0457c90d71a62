"""Spoken StoryCloze (sSC / tSC) pairs from local files: the official StoryCloze CSV or a manifest of pairs.

The spoken StoryCloze benchmarks of TWIST (Hassid et al. 2023, ``slp-rl/SpokenStoryCloze``) turn each StoryCloze
story into two whole spoken stories — the same four context sentences with two different endings:

* **sSC** — the incorrect ending is StoryCloze's own adversarial ending;
* **tSC** ("topic") — the incorrect ending is the correct ending of another, randomly drawn story.

A :class:`StoryPair` holds the shared context, the two endings and, optionally, recordings (of the context alone,
and of each whole story). Sources:

* :func:`storycloze_pairs` — the official CSV (``InputSentence1``-``4``, ``RandomFifthSentenceQuiz1/2``,
  ``AnswerRightEnding``; read with the ``storycloze`` benchmark adapter, bad rows counted as there): sSC pairs
  use the two quiz endings; tSC pairs give story ``i`` the correct ending of story ``donor(i)``, where ``donor`` is
  a seeded random cyclic permutation (never the story itself). Speech is synthesized by the caller's source.
* :func:`read_pair_manifest` — JSONL, one pair per line::

      {"id": "0", "correct": {"text": "<whole story>", "audio": "0_correct.wav"},
       "incorrect": {"text": "<whole story>", "audio": "0_incorrect.wav"},
       "context": {"text": "<first sentences>", "audio": "0_context.wav"}}

  ``audio`` fields are optional (paths relative to the manifest) and replace synthesis where present;
  ``context`` is optional: without ``context.text`` the context is the longest run of whole sentences the two
  stories share (leaving each at least one sentence of ending). The released sSC/tSC wav folders hold whole
  stories only; write them into such a manifest with their transcripts (the speech-prompt mode then voices the
  context with the caller's source unless ``context.audio`` is given).

Texts are normalised as the synthesis layer stores them (NFC, single spaces), so text and speech agree exactly.
Scoring, and why the all-speech condition has no row for a speech-in / text-out model, is in
:mod:`nemo_salad.evaluation.storycloze_spoken`.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from nemo_salad.evaluation.items import speakable
from nemo_salad.evaluation.loaders import iter_jsonl, load_benchmark

__all__ = ["KINDS", "MODES", "StoryClozeSet", "StoryPair", "load_spoken_storycloze", "read_pair_manifest",
           "shared_context", "storycloze_pairs"]

KINDS = ("sSC", "tSC")
#: "continuation": spoken context, text endings; "full_story": each whole story
MODES = ("continuation", "full_story")
_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+|(?<=[.!?][\"'\u201d\u2019)])\s+")
T = TypeVar("T")


@dataclass(frozen=True)
class StoryPair:
    """One StoryCloze story in its two versions.

    Args:
        id (str): unique within the set.
        context (str): the shared first sentences.
        correct_ending (str): the ending of the coherent story.
        incorrect_ending (str): the adversarial (sSC) or random (tSC) ending.
        correct_audio (str | None): a recording of the whole correct story. Default: None.
        incorrect_audio (str | None): a recording of the whole incorrect story. Default: None.
        context_audio (str | None): a recording of the context alone. Default: None.

    >>> p = StoryPair("s1", "Tom got a dog.", "He loved it.", "He sold the moon.")
    >>> p.correct_story, p.spoken_texts("continuation")
    ('Tom got a dog. He loved it.', ('Tom got a dog.',))
    """

    id: str
    context: str
    correct_ending: str
    incorrect_ending: str
    correct_audio: str | None = None
    incorrect_audio: str | None = None
    context_audio: str | None = None

    @property
    def correct_story(self) -> str:
        return f"{self.context} {self.correct_ending}"

    @property
    def incorrect_story(self) -> str:
        return f"{self.context} {self.incorrect_ending}"

    def spoken_texts(self, mode: str) -> tuple[str, ...]:
        """What is heard: the context ("continuation") or both whole stories ("full_story")."""
        _check_mode(mode)
        return (self.context,) if mode == "continuation" else (self.correct_story, self.incorrect_story)

    def recordings(self, mode: str) -> dict[str, str]:
        """``spoken text -> audio path`` for the texts of ``mode`` that have a recording."""
        pairs = ([(self.context, self.context_audio)] if mode == "continuation" else
                 [(self.correct_story, self.correct_audio), (self.incorrect_story, self.incorrect_audio)])
        return {t: a for t, a in pairs if a is not None}


@dataclass
class StoryClozeSet:
    """Pairs read from one source.

    Attributes:
        name (str): "sSC", "tSC" or the manifest's name. source (str): the file read.
        pairs (list[StoryPair]): the pairs (validated, selected). n_rows (int): rows read.
        skipped (dict[str, int]): rows skipped per reason (CSV input).
    """

    name: str
    source: str
    pairs: list[StoryPair]
    n_rows: int
    skipped: dict[str, int] = field(default_factory=dict)


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}; expected one of {MODES}")


def _select(seq: Sequence[T], n: int | None, seed: int) -> list[T]:
    """A seeded subset of ``n`` elements in their original order (all when ``n`` is None or too large)."""
    if n is None or n >= len(seq):
        return list(seq)
    if n <= 0:
        raise ValueError(f"n_items must be positive or None, got {n}")
    return [seq[i] for i in sorted(random.Random(seed).sample(range(len(seq)), n))]


def storycloze_pairs(path: str | Path, kind: str = "sSC", seed: int = 0, n_items: int | None = None) -> StoryClozeSet:
    """sSC or tSC pairs from the official StoryCloze CSV (or the same columns as JSONL).

    Args:
        path (str | Path): e.g. ``cloze_test_test__spring2016.csv``.
        kind (str): "sSC" (StoryCloze's adversarial ending) or "tSC" (another story's correct ending).
            Default: "sSC".
        seed (int): seed of the tSC ending draw and of the subset. Default: 0.
        n_items (int | None): a seeded subset of this many pairs (after the tSC draw). Default: None (all).

    Returns:
        StoryClozeSet

    Raises:
        ValueError: for an unknown ``kind``, a file that does not fit the StoryCloze schema or has no valid row
            (naming the file), or tSC with fewer than two stories.
    """
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}; expected one of {KINDS}")
    bench = load_benchmark("storycloze", path=path)
    skipped = dict(bench.skipped)
    items = [it for it in bench.items if all(speakable(o) for o in it.options)]
    if len(items) < len(bench.items):  # an ending with nothing speakable (e.g. punctuation only)
        skipped["empty_option"] = skipped.get("empty_option", 0) + len(bench.items) - len(items)
    right = [speakable(it.options[it.gold]) for it in items]
    if kind == "sSC":
        wrong = [speakable(it.options[1 - it.gold]) for it in items]
    else:
        if len(items) < 2:
            raise ValueError(f"{path}: tSC needs at least two valid stories to borrow an ending from, got {len(items)}")
        order = list(range(len(items)))
        random.Random(f"{seed}/tSC").shuffle(order)
        donor = {order[k]: order[(k + 1) % len(order)] for k in range(len(order))}
        wrong = [right[donor[i]] for i in range(len(items))]
    pairs = [StoryPair(it.id, it.query[0].text, c, w) for it, c, w in zip(items, right, wrong, strict=True)]
    return StoryClozeSet(kind, str(path), _select(pairs, n_items, seed), bench.n_rows, skipped)


def _sentences(text: str) -> list[str]:
    return [s for s in _SENTENCE_BREAK.split(text) if s]


def shared_context(correct: str, incorrect: str) -> tuple[str, str, str] | None:
    """``(context, correct_ending, incorrect_ending)``: the longest run of whole sentences both stories start with,
    leaving each story at least one sentence of ending; None when they share no first sentence.

    >>> shared_context("A b. C d. He won.", "A b. C d. He lost it.")
    ('A b. C d.', 'He won.', 'He lost it.')
    >>> shared_context("A b. Same.", "A b. Same."), shared_context("A b.", "X y.")
    (('A b.', 'Same.', 'Same.'), None)
    """
    a, b = _sentences(correct), _sentences(incorrect)
    k = 0
    while k < min(len(a), len(b)) - 1 and a[k] == b[k]:
        k += 1
    if k == 0:
        return None
    return " ".join(a[:k]), " ".join(a[k:]), " ".join(b[k:])


def _version(row: dict[str, Any], name: str, where: str, base: Path, need_text: bool = True
             ) -> tuple[str, str | None]:
    """``(normalised text or "", resolved audio path or None)`` of the field ``name`` of a manifest row."""
    value = row.get(name)
    if value is None and not need_text:
        return "", None
    if not isinstance(value, dict):
        raise ValueError(f"{where}: field {name!r} must be an object {{\"text\": ..., \"audio\": ...}}, got "
                         f"{type(value).__name__}")
    text = value.get("text")
    if text is not None and not isinstance(text, str):
        raise ValueError(f"{where}: {name}.text must be a string, got {type(text).__name__}")
    text = speakable(text) if text else ""
    if need_text and not text:
        raise ValueError(f"{where}: {name}.text is missing or empty; expected the text of the whole story")
    audio = value.get("audio")
    if audio is not None:
        if not isinstance(audio, str) or not audio.strip():
            raise ValueError(f"{where}: {name}.audio must be a file path, got {audio!r}")
        path = Path(audio) if Path(audio).is_absolute() else base / audio
        if not path.is_file():
            raise FileNotFoundError(f"{where}: {name}.audio {path} does not exist")
        audio = str(path)
    return text, audio


def _manifest_pair(row: dict[str, Any], n: int, where: str, base: Path) -> StoryPair:
    correct, correct_audio = _version(row, "correct", where, base)
    incorrect, incorrect_audio = _version(row, "incorrect", where, base)
    context, context_audio = _version(row, "context", where, base, need_text=False)
    if context:
        ends = []
        for name, story in (("correct", correct), ("incorrect", incorrect)):
            if not story.startswith(context + " "):
                raise ValueError(f"{where}: context.text {context[:60]!r} is not the start of {name}.text "
                                 f"{story[:60]!r} (followed by an ending)")
            ends.append(story[len(context) + 1:])
        split = (context, ends[0], ends[1])
    else:
        found = shared_context(correct, incorrect)
        if found is None:
            raise ValueError(f"{where}: correct.text and incorrect.text share no first sentence; give the shared "
                             "part as context.text")
        split = found
    return StoryPair(str(row.get("id", n)), *split, correct_audio, incorrect_audio, context_audio)


def read_pair_manifest(path: str | Path, name: str | None = None, n_items: int | None = None,
                       seed: int = 0) -> StoryClozeSet:
    """Pairs from a JSONL manifest (format in the module docstring).

    Args:
        path (str | Path): the manifest.
        name (str | None): the set's name. Default: the file's stem.
        n_items (int | None): a seeded subset of this many pairs. Default: None (all).
        seed (int): subset seed. Default: 0.

    Returns:
        StoryClozeSet

    Raises:
        FileNotFoundError: if the manifest or a referenced audio file does not exist (naming file and line).
        ValueError: for invalid JSON, a missing or empty field, stories that share no context, or duplicate
            ids (each naming the file, line and field).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"spoken StoryCloze manifest {path} does not exist")
    pairs: list[StoryPair] = []
    n_rows = 0
    for n, row in iter_jsonl(path, "one pair object per line"):
        n_rows += 1
        where = f"{path}:{n}"
        if not isinstance(row, dict):
            raise ValueError(f"{where}: expected a JSON object with id, correct and incorrect")
        pairs.append(_manifest_pair(row, n, where, path.parent))
    if not pairs:
        raise ValueError(f"{path}: no pairs; expected one JSON object per line with correct and incorrect")
    ids = [p.id for p in pairs]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise ValueError(f"{path}: duplicate pair ids {dup[:5]}; every line needs its own id")
    return StoryClozeSet(name or path.stem, str(path), _select(pairs, n_items, seed), n_rows)


def load_spoken_storycloze(path: str | Path, kind: str = "sSC", seed: int = 0,
                           n_items: int | None = None) -> StoryClozeSet:
    """A manifest (``.jsonl`` whose rows have ``correct``/``incorrect`` objects) or the StoryCloze CSV.

    >>> load_spoken_storycloze("missing.csv")
    Traceback (most recent call last):
    ...
    FileNotFoundError: benchmark data missing.csv does not exist
    """
    path = Path(path)
    if path.suffix == ".jsonl" and path.is_file():
        with open(path, encoding="utf-8") as f:
            first = next((line for line in f if line.strip()), "")
        try:
            is_manifest = isinstance(row := json.loads(first), dict) and "correct" in row
        except json.JSONDecodeError:
            is_manifest = True  # let the manifest reader name the bad line
        if is_manifest:
            return read_pair_manifest(path, name=kind, n_items=n_items, seed=seed)
    return storycloze_pairs(path, kind, seed, n_items)

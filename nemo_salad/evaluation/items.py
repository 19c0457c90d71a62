"""Multiple-choice items as prompt segments, their validation, and the count of items skipped for bad input.

An item is a *query* — a tuple of :class:`Segment` s, some of which are marked ``spoken`` (their text is read
aloud in the speech condition) — followed by answer *options* that are always text continuations. Benchmark
adapters (see :mod:`nemo_salad.evaluation.benchmarks`) turn raw dataset rows into items with
:func:`make_item`, which raises :class:`SkipItem` for bad rows; :class:`SkipCounter` collects the reasons.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["MCItem", "Segment", "SkipCounter", "SkipItem", "make_item", "select_items", "speakable"]

log = logging.getLogger(__name__)

#: reasons an input row is skipped, with what each means (keys of :class:`SkipCounter`)
SKIP_REASONS = {
    "missing_answer": "the row has no answer key / label",
    "gold_out_of_range": "the answer key does not name one of the options",
    "no_options": "the row has zero answer options",
    "empty_option": "an answer option is empty",
    "empty_query": "the question / context is empty",
    "unparsed_prompt": "the answer options could not be parsed from the prompt text (no 'A. ... B. ...' labels)",
    "no_audio": "the row has no recorded audio",
}


@dataclass(frozen=True)
class Segment:
    """A piece of prompt text; ``spoken=True`` marks text that is read aloud in the speech condition.

    >>> Segment("Question:"), Segment("Which gas do plants take in?", spoken=True).spoken
    (Segment(text='Question:', spoken=False), True)
    """

    text: str
    spoken: bool = False


@dataclass(frozen=True)
class MCItem:
    """One multiple-choice item.

    Args:
        id (str): unique within its benchmark.
        query (tuple[Segment, ...]): the prompt of this item (context / question), before the options.
        options (tuple[str, ...]): the answer continuations, exactly as appended to the prompt (leading space
            included).
        gold (int): index of the correct option.
        group (str): a sub-task (e.g. the MMLU subject); few-shot examples come from the same group.
            Default: "".
        preamble (str): text placed once before the few-shot examples (e.g. the MMLU header). Default: "".

    >>> item = MCItem("q1", (Segment("Question:"), Segment("2+2?", spoken=True), Segment("\\nAnswer:")),
    ...               (" 4", " 5"), 0)
    >>> item.spoken_texts
    ('2+2?',)
    """

    id: str
    query: tuple[Segment, ...]
    options: tuple[str, ...]
    gold: int
    group: str = ""
    preamble: str = ""

    @property
    def spoken_texts(self) -> tuple[str, ...]:
        """Texts of the spoken segments of the query, in order."""
        return tuple(s.text for s in self.query if s.spoken)


class SkipItem(ValueError):
    """A row that cannot become an item; ``reason`` is a key of ``SKIP_REASONS``."""

    def __init__(self, reason: str, detail: str = "") -> None:
        if reason not in SKIP_REASONS:
            raise ValueError(f"unknown skip reason {reason!r}; expected one of {sorted(SKIP_REASONS)}")
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def _gold_index(answer: Any, n_options: int, labels: Sequence[str] | None) -> int:
    """The option index named by ``answer`` (an int index, a numeric string, or one of ``labels``)."""
    if answer is None or (isinstance(answer, str) and not answer.strip()):
        raise SkipItem("missing_answer", "no answer key")
    if isinstance(answer, bool):
        raise SkipItem("missing_answer", f"answer key {answer!r} is not an index or label")
    if isinstance(answer, str):
        key = answer.strip()
        if labels is not None:
            if key in labels:
                return list(labels).index(key)
            raise SkipItem("gold_out_of_range", f"answer key {key!r} not among labels {list(labels)}")
        if key.lstrip("-").isdigit():
            answer = int(key)
        elif len(key) == 1 and key.isalpha():
            answer = ord(key.upper()) - ord("A")
        else:
            raise SkipItem("missing_answer", f"answer key {key!r} is not an index or label")
    if not isinstance(answer, int):
        raise SkipItem("missing_answer", f"answer key {answer!r} is not an index or label")
    if answer < 0:  # unlabeled rows of test splits carry -1
        raise SkipItem("missing_answer", f"answer key {answer} (unlabeled)")
    if answer >= n_options:
        raise SkipItem("gold_out_of_range", f"answer index {answer} but {n_options} options")
    return answer


def speakable(text: str) -> str:
    """The text exactly as the synthesis layer voices and stores it (NFC, no control characters, single spaces),
    so that text and speech conditions agree on every character; "" if nothing speakable is left.

    >>> speakable("  two   spaces "), speakable("   ")
    ('two spaces', '')
    """
    from nemo_salad.synthesis.text import validate_text

    normalised, _ = validate_text(text, max_chars=1 << 30)
    return normalised or ""


def make_item(id: str, query: Sequence[Segment], options: Sequence[str] | None, answer: Any,
              labels: Sequence[str] | None = None, group: str = "", preamble: str = "") -> MCItem:
    """Validate one row and build its :class:`MCItem`.

    Args:
        id (str): item id.
        query (Sequence[Segment]): prompt segments.
        options (Sequence[str] | None): answer continuations (with their leading space).
        answer (Any): the gold answer: an int index, a digit string, a letter (``"B"``), or one of ``labels``.
        labels (Sequence[str] | None): option labels (e.g. ARC's ``["A", "B", "C", "D"]`` or ``["1", "2"]``);
            when given, a string answer must be one of them. Default: None.
        group (str): sub-task name. Default: "".
        preamble (str): text before the few-shot examples. Default: "".

    Returns:
        MCItem: spoken segments normalised as the synthesis layer stores them (NFC, single spaces).

    Raises:
        SkipItem: with ``reason`` in ``SKIP_REASONS``.

    >>> make_item("a", [Segment("Q?", spoken=True)], [" x", " y"], "B").gold
    1
    >>> make_item("a", [Segment("Q?", spoken=True)], [], 0)
    Traceback (most recent call last):
    ...
    nemo_salad.evaluation.items.SkipItem: no_options: the row has 0 options
    """
    query = [Segment(speakable(s.text), True) if s.spoken else s for s in query]
    options = tuple(options or ())
    if not options:
        raise SkipItem("no_options", "the row has 0 options")
    if any(not o.strip() for o in options):
        raise SkipItem("empty_option", f"options {list(options)!r}")
    if any(s.spoken and not s.text.strip() for s in query) or not any(s.text.strip() for s in query):
        raise SkipItem("empty_query", f"query {[s.text for s in query]!r}")
    gold = _gold_index(answer, len(options), labels)
    return MCItem(str(id), tuple(query), options, gold, group, preamble)


@dataclass
class SkipCounter:
    """Counts rows skipped per reason for one source, keeps a few example ids, and logs a summary.

    >>> c = SkipCounter("demo.jsonl")
    >>> c.add(SkipItem("missing_answer"), "row-7"); c.n_skipped
    1
    """

    source: str
    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, err: SkipItem, row_id: str) -> None:
        self.counts[err.reason] += 1
        ids = self.examples.setdefault(err.reason, [])
        if len(ids) < 3:
            ids.append(f"{row_id} ({err})")

    @property
    def n_skipped(self) -> int:
        return sum(self.counts.values())

    def log_summary(self, name: str, n_rows: int) -> None:
        """Log one warning naming the source, the counts per reason and example rows (nothing if none)."""
        if self.n_skipped:
            detail = ", ".join(f"{k}={v}" for k, v in sorted(self.counts.items()))
            log.warning("%s (%s): skipped %d of %d rows for bad input: %s; e.g. %s", name, self.source,
                        self.n_skipped, n_rows, detail, "; ".join(x for v in self.examples.values() for x in v))


def select_items(items: Sequence[MCItem], n: int | None, seed: int = 0) -> list[MCItem]:
    """A seeded subset of ``n`` items in their original order (all items when ``n`` is None or too large).

    >>> its = [MCItem(str(i), (Segment("q", True),), (" a",), 0) for i in range(10)]
    >>> [i.id for i in select_items(its, 3, seed=0)] == [i.id for i in select_items(its, 3, seed=0)]
    True
    """
    if n is None or n >= len(items):
        return list(items)
    if n <= 0:
        raise ValueError(f"n_items must be positive or None, got {n}")
    keep = sorted(random.Random(seed).sample(range(len(items)), n))
    return [items[i] for i in keep]

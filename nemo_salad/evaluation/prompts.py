"""Few-shot prompts as segment lists, their tokenization, and the context budget.

A prompt is ``[preamble] + shot_1 + ... + shot_k + query``; a shot is an item's query segments followed by its
gold answer and a blank line. Every segment is tokenized on its own and the ids are concatenated, in every
system, so the text and speech conditions share exactly the same text tokens around the spoken parts. In the
text conditions a spoken segment is tokenized as ``" " + text`` (:func:`spoken_token_ids`) — the same ids the
identity speech path embeds.

Shots are a fixed, seeded draw per benchmark (per group, e.g. MMLU subject) from the shot pool; for each item
the first ``k`` shots that fit the context budget are used (``k <= max_shots``), skipping the item itself.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from nemo_salad.evaluation.items import MCItem, Segment

__all__ = ["SHOT_SEPARATOR", "SPOKEN_PREFIX", "choose_shot_candidates", "fit_shots", "prompt_segments",
           "shot_segments", "shots_for", "spoken_token_ids", "text_token_ids"]

#: prepended to a spoken segment's text when it is tokenized as text
SPOKEN_PREFIX = " "
#: ends every few-shot example
SHOT_SEPARATOR = "\n\n"


def text_token_ids(tokenizer: Any, text: str) -> list[int]:
    """Token ids of one text segment (no special tokens); ``tokenizer`` is any Hugging Face-style callable.

    >>> byte_tokenizer = lambda text, add_special_tokens=False: {"input_ids": list(text.encode())}
    >>> text_token_ids(byte_tokenizer, "Hi")
    [72, 105]
    """
    if not text:
        return []
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def spoken_token_ids(tokenizer: Any, text: str) -> list[int]:
    """Token ids of the text of a spoken segment: ``SPOKEN_PREFIX + text`` (no special tokens).

    Used by every text condition and by the identity speech path, so their ids agree exactly.

    >>> spoken_token_ids(lambda text, add_special_tokens=False: {"input_ids": list(text.encode())}, "Hi ")
    [32, 72, 105]
    """
    return text_token_ids(tokenizer, SPOKEN_PREFIX + text.strip()) if text.strip() else []


def shot_segments(item: MCItem) -> tuple[Segment, ...]:
    """The segments of ``item`` as a solved few-shot example: query, gold answer, blank line.

    >>> shot_segments(MCItem("a", (Segment("Q", spoken=True),), (" yes", " no"), 1))[-1]
    Segment(text=' no\\n\\n', spoken=False)
    """
    return item.query + (Segment(item.options[item.gold] + SHOT_SEPARATOR),)


def choose_shot_candidates(pool: Sequence[MCItem], max_shots: int, seed: int = 0) -> dict[str, list[MCItem]]:
    """A seeded draw of ``max_shots + 1`` candidates per group (one spare replaces the scored item itself).

    >>> pool = [MCItem(str(i), (Segment("q", True),), (" a",), 0) for i in range(9)]
    >>> len(choose_shot_candidates(pool, 5)[""])
    6
    """
    groups: dict[str, list[MCItem]] = {}
    for item in pool:
        groups.setdefault(item.group, []).append(item)
    out = {}
    for group, members in sorted(groups.items()):
        order = list(range(len(members)))
        random.Random(f"{seed}/{group}").shuffle(order)
        out[group] = [members[i] for i in order[:max_shots + 1]]
    return out


def shots_for(item: MCItem, candidates: dict[str, list[MCItem]], max_shots: int) -> list[MCItem]:
    """Up to ``max_shots`` shot candidates of ``item``'s group, excluding the item itself (same id or query).

    >>> a, b = (MCItem(i, (Segment(i, True),), (" x",), 0) for i in "ab")
    >>> [s.id for s in shots_for(a, {"": [a, b]}, 5)]
    ['b']
    """
    same = candidates.get(item.group, [])
    return [s for s in same if s.id != item.id and s.query != item.query][:max_shots]


def prompt_segments(item: MCItem, shots: Sequence[MCItem]) -> list[tuple[Segment, bool]]:
    """The full context of ``item`` as ``(segment, in_shot)`` pairs: preamble, shots, query.

    >>> item = MCItem("a", (Segment("Q", spoken=True), Segment(":")), (" x",), 0, preamble="Header\\n\\n")
    >>> [(s.text, shot) for s, shot in prompt_segments(item, [item])]
    [('Header\\n\\n', False), ('Q', True), (':', True), (' x\\n\\n', True), ('Q', False), (':', False)]
    """
    out: list[tuple[Segment, bool]] = [(Segment(item.preamble), False)] if item.preamble else []
    for shot in shots:
        out.extend((seg, True) for seg in shot_segments(shot))
    out.extend((seg, False) for seg in item.query)
    return out


def fit_shots(shot_lengths: Sequence[int], base_length: int, max_tokens: int) -> int | None:
    """The largest ``k`` with ``base_length + sum(shot_lengths[:k]) <= max_tokens``; None if nothing fits.

    Args:
        shot_lengths (Sequence[int]): length of each candidate shot, in order (tokens + speech frames).
        base_length (int): preamble + query + the longest option.
        max_tokens (int): the context budget.

    >>> fit_shots([10, 10, 10], 75, 100), fit_shots([10], 101, 100)
    (2, None)
    """
    if base_length > max_tokens:
        return None
    total, k = base_length, 0
    for n in shot_lengths:
        if total + n > max_tokens:
            break
        total, k = total + n, k + 1
    return k

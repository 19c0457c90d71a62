"""Text items -> text-only lhotse cuts (the writer's input), and reading them from JSONL.

A text cut has no recording yet: id, one supervision holding the text, and custom fields ``source_id`` (the id of
the text in its origin, e.g. a benchmark question id) and ``source`` (the origin's name); any other keys of a dict
item are kept in ``custom`` too (e.g. a cluster id). Texts are not validated here - the writer does it and counts
what it skips - but invalid bytes are kept visible (``surrogateescape``) so they are skipped as ``invalid_utf8``.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from lhotse import CutSet, MonoCut, SupervisionSegment

from nemo_salad.synthesis.text import decode_text

__all__ = ["cut_text", "read_text_items", "text_cuts"]


def _item_fields(item: Any, index: int) -> tuple[str, Any, dict[str, Any]]:
    if isinstance(item, dict):
        missing = [key for key in ("id", "text") if key not in item]
        if missing:
            raise ValueError(f"text item #{index} lacks {missing}; expected keys 'id' and 'text', got {sorted(item)}")
        extra = {k: v for k, v in item.items() if k not in ("id", "text")}
        return item["id"], item["text"], extra
    if isinstance(item, (tuple, list)) and len(item) == 2:
        return item[0], item[1], {}
    raise ValueError(f"text item #{index} must be an (id, text) pair or a dict with 'id' and 'text', got {item!r:.120}")


def text_cuts(items: Iterable[tuple[str, str]] | Iterable[dict[str, Any]], source: str = "") -> CutSet:
    """Text-only cuts from ``(id, text)`` pairs or ``{"id", "text", ...}`` dicts.

    Args:
        items: pairs or dicts; a dict's ``source_id`` and ``source`` override the defaults, other keys go to
            ``custom`` unchanged.
        source (str): name of the text origin stored in every cut. Default: "".

    Returns:
        CutSet: eager, in input order (duplicate ids are kept; the writer skips repeats).

    Raises:
        ValueError: for an item without an id or text, or an id that is not a non-empty string.

    >>> cuts = text_cuts([("q1", "What is two plus two?"), {"id": "q2", "text": "Hi.", "cluster": 3}], source="demo")
    >>> [(c.id, cut_text(c), c.custom["source"], c.custom.get("cluster")) for c in cuts]
    [('q1', 'What is two plus two?', 'demo', None), ('q2', 'Hi.', 'demo', 3)]
    """
    cuts = []
    for index, item in enumerate(items):
        cut_id, text, extra = _item_fields(item, index)
        if not isinstance(cut_id, str) or not cut_id.strip():
            raise ValueError(f"text item #{index} has id {cut_id!r}; ids must be non-empty strings")
        if text is not None and not isinstance(text, (str, bytes)):
            raise ValueError(f"text item {cut_id!r} has text of type {type(text).__name__}; expected str or bytes")
        custom = {"source_id": cut_id, "source": source, **extra}
        supervision = SupervisionSegment(id=cut_id, recording_id=cut_id, start=0.0, duration=0.0,
                                         text=decode_text(text) if text is not None else None)
        cuts.append(MonoCut(id=cut_id, start=0.0, duration=0.0, channel=0, supervisions=[supervision], custom=custom))
    return CutSet(cuts)


def cut_text(cut: Any) -> str | None:
    """The text to speak for a cut: its supervisions' texts joined by spaces (``None`` when there is none).

    >>> cut_text(text_cuts([("a", "Hello.")])[0])
    'Hello.'
    """
    texts = [s.text for s in cut.supervisions if s.text is not None]
    return " ".join(texts) if texts else None


def read_text_items(path: str | Path) -> Iterator[dict[str, Any]]:
    """Dicts from a JSONL (or ``.jsonl.gz``) file of ``{"id": ..., "text": ..., ...}`` lines; blank lines are ignored.

    Lines are decoded as UTF-8 with ``surrogateescape`` so that a text with invalid bytes reaches the writer (which
    skips it as ``invalid_utf8``) instead of aborting the read.

    Raises:
        ValueError: naming ``file:line`` for a line that is not a JSON object with ``id`` and ``text``.

    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "t.jsonl")
    >>> _ = open(path, "w").write('{"id": "a", "text": "Hi."}\\n\\n')
    >>> list(read_text_items(path))
    [{'id': 'a', 'text': 'Hi.'}]
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            line = raw.decode("utf-8", errors="surrogateescape").strip()
            if not line:
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{number} is not valid JSON ({err.msg}); expected one object per line "
                                 'like {"id": "...", "text": "..."}') from err
            if not isinstance(item, dict) or "id" not in item or "text" not in item:
                found = sorted(item) if isinstance(item, dict) else type(item).__name__
                raise ValueError(f"{path}:{number} needs keys 'id' and 'text', found {found}")
            yield item

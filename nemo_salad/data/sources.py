"""Turn the ``data.sources`` entries of a config into lhotse CutSets.

An entry names exactly one of:

* ``shar: <dir>`` — a lhotse Shar directory (what the synthesis layer writes);
* ``manifest: <path>`` — a lhotse cuts manifest (``.jsonl`` / ``.jsonl.gz``), e.g. LibriHeavy or
  Emilia-YODAS prepared with lhotse's recipes, audio paths local;
* ``texts: <path>`` — a JSONL of ``{"id": ..., "text": ...}`` lines for text replay;
* ``demo: <part>`` — the embedded CPU demo corpus (built on first use, see :mod:`nemo_salad.data.demo`).

Text items become cuts without a recording (see :mod:`nemo_salad.data.replay`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lhotse import CutSet

from nemo_salad.data.replay import read_replay_texts

__all__ = ["load_source"]


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

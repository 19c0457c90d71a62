"""Spoken versions of the benchmark texts: synthesized once with the synthesis layer, cached as lhotse Shar.

A spoken text becomes one cut whose id is a hash of the text (:func:`spoken_cut_id`), so a text shared by
several prompts (e.g. a few-shot example) is synthesized once. :class:`SynthesizedSpeech` writes the cuts with
``nemo_salad.synthesis.synthesize_to_shar`` into ``<cache>/eval-speech/<key>-<digest>`` — the key names the
benchmark, split and item count, the digest covers the backend provenance and the texts — and reads them back
with ``load_synthesized``. Writing is resumable; a ``COMPLETE`` marker makes later runs load without work.
:class:`TranscriptOnlySpeech` gives text-only cuts (no audio) for the identity path and reference transcribers.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from lhotse import MonoCut, SupervisionSegment
from lhotse.cut import Cut

from nemo_salad.parts.cache import cache_root, file_lock

__all__ = ["SpokenSource", "SynthesizedSpeech", "TranscriptOnlySpeech", "spoken_cut_id"]

log = logging.getLogger(__name__)


def spoken_cut_id(text: str) -> str:
    """A stable cut id for a spoken text.

    >>> spoken_cut_id("Hello there.")
    'sp-95e3ac566567c9c43558'
    """
    return "sp-" + hashlib.sha1(text.encode("utf-8")).hexdigest()[:20]


class SpokenSource(Protocol):
    """Provides a cut (audio + transcript) for each spoken text."""

    def cuts_for(self, key: str, texts: Sequence[str]) -> dict[str, Cut]:
        """``text -> cut`` for every text that could be voiced (texts that failed are absent)."""
        ...


class TranscriptOnlySpeech:
    """Text-only cuts (a supervision with the text, no recording): for the identity speech path and reference
    transcribers, which never read audio.

    >>> cut = TranscriptOnlySpeech().cuts_for("demo", ["Hi there"])["Hi there"]
    >>> cut.supervisions[0].text, cut.has_recording
    ('Hi there', False)
    """

    def cuts_for(self, key: str, texts: Sequence[str]) -> dict[str, Cut]:
        out: dict[str, Cut] = {}
        for text in texts:
            cid = spoken_cut_id(text)
            duration = max(0.5, 0.06 * len(text))
            out[text] = MonoCut(cid, 0.0, duration, 0, supervisions=[
                SupervisionSegment(cid, cid, 0.0, duration, text=text)])
        return out


class SynthesizedSpeech:
    """Speech synthesized with a TTS backend of the synthesis layer, cached as Shar.

    Args:
        backend (TTSBackend): a ``nemo_salad.synthesis`` backend (``synthesize``, ``provenance``).
        root (str | Path | None): cache directory. Default: ``<cache_root()>/eval-speech``.
        batch_size (int): texts per synthesis call. Default: 8.
        max_chars (int): longest text voiced (longer ones are skipped and their items counted as ``no_speech``).
            Default: 2000.
        progress (bool): show a progress bar while synthesizing. Default: False.

    >>> source = SynthesizedSpeech(SineBackend())  # doctest: +SKIP
    >>> cuts = source.cuts_for("arc_easy-validation-200", ["Which gas do plants take in?"])  # doctest: +SKIP
    """

    def __init__(self, backend: Any, root: str | Path | None = None, batch_size: int = 8, max_chars: int = 2000,
                 progress: bool = False) -> None:
        self.backend, self.batch_size, self.max_chars, self.progress = backend, batch_size, max_chars, progress
        self.root = Path(root) if root is not None else cache_root() / "eval-speech"

    def directory(self, key: str, texts: Sequence[str]) -> Path:
        """The cache directory of ``texts`` voiced by this backend."""
        digest = hashlib.sha1(json.dumps([sorted(self.backend.provenance().items()), sorted(set(texts))],
                                         ensure_ascii=False).encode("utf-8")).hexdigest()[:16]
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in key)
        return self.root / f"{safe}-{digest}"

    def cuts_for(self, key: str, texts: Sequence[str]) -> dict[str, Cut]:
        from nemo_salad.synthesis import load_synthesized, synthesize_to_shar, text_cuts

        unique = sorted(set(texts))
        out_dir = self.directory(key, unique)
        by_id = {spoken_cut_id(t): t for t in unique}
        with file_lock(out_dir.with_name(out_dir.name + ".lock")):
            if not (out_dir / "COMPLETE").is_file():
                out_dir.mkdir(parents=True, exist_ok=True)
                report = synthesize_to_shar(text_cuts([(cid, t) for cid, t in by_id.items()], source=key),
                                            self.backend, out_dir, batch_size=self.batch_size,
                                            max_chars=self.max_chars, progress=self.progress)
                if getattr(report, "n_skipped", None):
                    log.warning("%s: synthesis skipped %s (those items are left out of every system)", key,
                                report.n_skipped)
                (out_dir / "COMPLETE").write_text(json.dumps({"n_texts": len(unique)}))
        cuts = {by_id[c.id]: c for c in load_synthesized(out_dir) if c.id in by_id}
        return cuts

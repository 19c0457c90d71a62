"""Text cuts -> speech -> lhotse Shar: batched, length-sorted, resumable, with provenance and counted skips.

Items are read in windows of ``shard_size``; a window is sorted by text length (longest first), synthesized in
batches of ``batch_size``, resampled to ``sample_rate`` mono, optionally ASR-checked, and committed as one shard
(see :mod:`nemo_salad.synthesis.shar_store`). A rerun after a kill skips every id of a committed shard - written
or dropped - and redoes the rest, so no id is lost or duplicated. With a word aligner (e.g.
:class:`~nemo_salad.synthesis.word_align.WhisperWordAligner`) each written supervision carries a lhotse word
alignment; an item it cannot align is written without one and named in the report's ``unaligned``. A rerun
must use the same settings: ids dropped earlier (bad text, high CER) stay dropped.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from lhotse import CutSet

from nemo_salad.synthesis.asr_filter import CERFilter
from nemo_salad.synthesis.audio import as_mono_float32, is_silent, resample
from nemo_salad.synthesis.backends.base import TTSBackend
from nemo_salad.synthesis.cuts import cut_text
from nemo_salad.synthesis.shar_store import ShardBuilder, output_lock, scan_output
from nemo_salad.synthesis.text import validate_text
from nemo_salad.synthesis.word_align import WordAligner

__all__ = ["CER_ABOVE_THRESHOLD", "DUPLICATE_ID", "EMPTY_AUDIO", "SYNTHESIS_ERROR", "SynthesisReport",
           "synthesize_to_shar"]

log = logging.getLogger(__name__)

DUPLICATE_ID = "duplicate_id"
EMPTY_AUDIO = "empty_audio"
SYNTHESIS_ERROR = "synthesis_error"
CER_ABOVE_THRESHOLD = "cer_above_threshold"


@dataclasses.dataclass
class SynthesisReport:
    """What one :func:`synthesize_to_shar` call did (also saved as ``out_dir/report.json``).

    Attributes:
        n_written (int): cuts written by this run.
        n_skipped (dict[str, int]): skipped items by reason (``empty_text``, ``punctuation_only``, ``too_long``,
            ``invalid_utf8``, ``duplicate_id``, ``empty_audio``, ``synthesis_error``).
        n_filtered (int): items dropped by the ASR round-trip check (CER above the threshold).
        audio_seconds (float): seconds of audio written by this run.
        wall_seconds (float): wall time of this run.
        rtf (float): real-time factor, ``wall_seconds / audio_seconds`` (whole pipeline; lower is faster).
        items_per_second (float): ``n_written / wall_seconds``.
        n_resumed (int): input ids already committed by an earlier run (not redone).
        n_shards (int): shards committed by this run.
        provenance (dict[str, str]): the backend's provenance.
        n_aligned (int): written cuts that carry a word alignment.
        unaligned (list[str]): ids of written cuts the word aligner could not align (stored without one).
    """

    n_written: int = 0
    n_skipped: dict[str, int] = dataclasses.field(default_factory=dict)
    n_filtered: int = 0
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    rtf: float = 0.0
    items_per_second: float = 0.0
    n_resumed: int = 0
    n_shards: int = 0
    provenance: dict[str, str] = dataclasses.field(default_factory=dict)
    n_aligned: int = 0
    unaligned: list[str] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        """Write as JSON atomically (temporary file + rename)."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, path)


class _Run:
    """State of one writer run: the backend, counters, progress bar."""

    def __init__(self, backend: TTSBackend, out_dir: Path, batch_size: int, sample_rate: int,
                 asr_filter: CERFilter | None, voice: str | None, pbar: Any,
                 aligner: WordAligner | None = None) -> None:
        self.backend, self.out_dir, self.batch_size, self.sample_rate = backend, out_dir, batch_size, sample_rate
        self.aligner = aligner
        self.asr_filter, self.voice, self.pbar = asr_filter, voice, pbar
        self.skipped: Counter[str] = Counter()
        self.report = SynthesisReport()
        provenance = dict(backend.provenance())
        if voice is not None:
            provenance["voice"] = str(voice)
        self.report.provenance = provenance
        self.custom = {"tts_backend": provenance.get("backend", backend.name), "tts_voice": provenance.get("voice", ""),
                       "tts_checkpoint": provenance.get("checkpoint", ""), "tts_sample_rate": int(backend.sample_rate)}
        self.any_success = False
        self.start = time.perf_counter()

    def skip(self, shard: ShardBuilder | None, cut_id: str, reason: str, **detail: Any) -> None:
        self.skipped[reason] += 1
        log.warning("skipped %r: %s%s", cut_id, reason, f" {detail}" if detail else "")
        if shard is not None:
            shard.drop(cut_id, reason, **detail)

    def _call(self, texts: Sequence[str]) -> list[np.ndarray]:
        waves = self.backend.synthesize(list(texts), voice=self.voice)
        if len(waves) != len(texts):
            raise RuntimeError(f"{self.backend.name} returned {len(waves)} waveforms for {len(texts)} texts")
        self.any_success = True
        return list(waves)

    def _call_one(self, text: str) -> np.ndarray | Exception:
        try:
            return self._call([text])[0]
        except Exception as error:  # noqa: BLE001 - reported by the caller as a counted skip
            return error

    def _synthesize(self, texts: Sequence[str]) -> list[np.ndarray | Exception]:
        """The backend on a batch; on failure, one by one so that one bad text costs only itself."""
        try:
            return list(self._call(texts))
        except Exception as batch_error:  # noqa: BLE001 - retried per item below, each failure is reported
            results: list[np.ndarray | Exception] = (
                [batch_error] if len(texts) == 1 else [self._call_one(text) for text in texts])
        errors = [r for r in results if isinstance(r, Exception)]
        if not self.any_success and len(errors) == len(results):
            raise RuntimeError(f"TTS backend {self.backend.name!r} failed on every text of the first batch; "
                               f"first error: {errors[0]!r}") from errors[0]
        return results

    def write_shard(self, index: int, window: list[tuple[Any, str]], drops: list[tuple[str, str]]) -> None:
        with ShardBuilder(self.out_dir, index) as shard:
            for cut_id, reason in drops:
                self.skip(shard, cut_id, reason)
            order = sorted(window, key=lambda item: len(item[1]), reverse=True)
            for start in range(0, len(order), self.batch_size):
                self._write_batch(shard, order[start : start + self.batch_size])
            shard.commit()
        self.report.n_shards += 1

    def _write_batch(self, shard: ShardBuilder, batch: list[tuple[Any, str]]) -> None:
        ready: list[tuple[Any, str, np.ndarray]] = []
        for (cut, text), wave in zip(batch, self._synthesize([text for _, text in batch]), strict=True):
            if isinstance(wave, Exception):
                self.skip(shard, cut.id, SYNTHESIS_ERROR, error=repr(wave)[:300])
                continue
            wave = resample(as_mono_float32(wave), int(self.backend.sample_rate), self.sample_rate)
            if is_silent(wave):
                self.skip(shard, cut.id, EMPTY_AUDIO, samples=int(wave.size))
                continue
            peak = float(np.abs(wave).max())
            ready.append((cut, text, wave / peak if peak > 1.0 else wave))
        scores: list[tuple[float, str, bool] | None] = [None] * len(ready)
        if self.asr_filter is not None and ready:
            scores = list(self.asr_filter.score([w for _, _, w in ready], [t for _, t, _ in ready], self.sample_rate))
        kept: list[tuple[Any, str, np.ndarray, dict[str, Any]]] = []
        for (cut, text, wave), score in zip(ready, scores, strict=True):
            custom = dict(self.custom)
            custom.setdefault("source_id", (cut.custom or {}).get("source_id", cut.id))
            if score is not None:
                cer, hypothesis, keep = score
                if not keep:
                    self.report.n_filtered += 1
                    log.warning("filtered %r: CER %.3f > %s (ASR heard %r for %r)", cut.id, cer,
                                self.asr_filter.max_cer, hypothesis[:80], text[:80])  # type: ignore[union-attr]
                    shard.drop(cut.id, CER_ABOVE_THRESHOLD, cer=round(cer, 4), asr_text=hypothesis)
                    continue
                custom.update(asr_cer=round(cer, 4), asr_text=hypothesis)
            kept.append((cut, text, wave, custom))
        alignments: list[Any] = [None] * len(kept)
        if self.aligner is not None and kept:
            alignments = self.aligner.align([w for _, _, w, _ in kept], [t for _, t, _, _ in kept], self.sample_rate)
        for (cut, text, wave, custom), alignment in zip(kept, alignments, strict=True):
            if self.aligner is not None:
                custom["word_aligner"] = self.aligner.name
                if alignment is None:
                    self.report.unaligned.append(cut.id)
                    log.warning("no word alignment for %r: %s did not recognise enough of %r", cut.id,
                                self.aligner.name, text[:80])
                else:
                    self.report.n_aligned += 1
            shard.add(cut, wave, self.sample_rate, text, custom, alignment=alignment)
            self.report.n_written += 1
            self.report.audio_seconds += wave.shape[0] / self.sample_rate
        self.progress(len(batch))

    def progress(self, n: int) -> None:
        if self.pbar is None:
            return
        self.pbar.update(n)
        wall = time.perf_counter() - self.start
        audio = self.report.audio_seconds
        self.pbar.set_postfix({"items/s": f"{self.report.n_written / max(wall, 1e-9):.2f}",
                               "RTF": f"{wall / audio:.3f}" if audio else "-"}, refresh=False)

    def finish(self) -> SynthesisReport:
        report = self.report
        report.n_skipped = dict(sorted(self.skipped.items()))
        report.wall_seconds = time.perf_counter() - self.start
        report.rtf = report.wall_seconds / report.audio_seconds if report.audio_seconds else 0.0
        report.items_per_second = report.n_written / report.wall_seconds if report.wall_seconds else 0.0
        return report


def _progress_bar(cuts: Iterable[Any], enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    total = None
    if isinstance(cuts, CutSet) and not cuts.is_lazy:
        total = len(cuts)
    elif isinstance(cuts, (list, tuple)):
        total = len(cuts)
    return tqdm(total=total, desc="synthesize", unit="item", dynamic_ncols=True)


def synthesize_to_shar(cuts: CutSet | Iterable[Any], backend: TTSBackend, out_dir: str | Path, *,
                       batch_size: int = 8, shard_size: int = 500, sample_rate: int = 16000,
                       asr_filter: CERFilter | None = None, max_chars: int = 600, progress: bool = True,
                       voice: str | None = None, aligner: WordAligner | None = None) -> SynthesisReport:
    """Synthesize the text of every cut into lhotse Shar shards in ``out_dir`` (resumable).

    Args:
        cuts (CutSet | Iterable[Cut]): cuts whose supervision text is spoken (e.g. from :func:`text_cuts`); the
            cut id becomes the output cut id and recording id.
        backend (TTSBackend): the TTS engine.
        out_dir (str | Path): output directory (created). Rerun with the same arguments to resume.
        batch_size (int): texts per backend call. Default: 8.
        shard_size (int): input items per shard (written cuts per shard may be fewer). Default: 500.
        sample_rate (int): stored audio rate in Hz (mono). Default: 16000.
        asr_filter (CERFilter | None): ASR round-trip check; ``None`` disables it. Default: None.
        max_chars (int): longer texts are skipped as ``too_long``. Default: 600.
        progress (bool): show a tqdm bar with items/s and real-time factor. Default: True.
        voice (str | None): passed to ``backend.synthesize`` and stored as ``tts_voice``. Default: None.
        aligner (WordAligner | None): stores word timings in each supervision's ``alignment["word"]`` (name in
            the cut's ``word_aligner`` field); ``None`` stores none. Default: None.

    Returns:
        SynthesisReport: counts and speed of this run (also in ``out_dir/report.json``).

    Raises:
        ValueError: for non-positive sizes or rate; RuntimeError if the backend fails on every text of the
            first batch (a setup problem, not a bad text) or another run holds ``out_dir``.

    >>> import tempfile
    >>> from nemo_salad.synthesis import SineBackend, text_cuts
    >>> cuts = text_cuts([("a", "Hello there."), ("b", "?!"), ("c", "Good night.")])
    >>> report = synthesize_to_shar(cuts, SineBackend(), tempfile.mkdtemp(), progress=False)
    >>> report.n_written, report.n_skipped
    (2, {'punctuation_only': 1})
    """
    for name, value in (("batch_size", batch_size), ("shard_size", shard_size), ("sample_rate", sample_rate),
                        ("max_chars", max_chars)):
        if int(value) <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pbar = _progress_bar(cuts, progress)
    try:
        with output_lock(out_dir):
            state = scan_output(out_dir)
            run = _Run(backend, out_dir, int(batch_size), int(sample_rate), asr_filter, voice, pbar, aligner)
            index = state.next_shard
            window: list[tuple[Any, str]] = []
            drops: list[tuple[str, str]] = []
            seen: set[str] = set()
            for cut in cuts:
                if cut.id in seen:
                    run.skip(None, cut.id, DUPLICATE_ID)
                    run.progress(1)
                    continue
                seen.add(cut.id)
                if cut.id in state.done_ids:
                    run.report.n_resumed += 1
                    run.progress(1)
                    continue
                text, reason = validate_text(cut_text(cut), max_chars=max_chars)
                if reason is not None:
                    drops.append((cut.id, reason))
                    run.progress(1)
                else:
                    window.append((cut, text))  # type: ignore[arg-type]
                if len(window) >= shard_size:
                    run.write_shard(index, window, drops)
                    index, window, drops = index + 1, [], []
            if window or drops:
                run.write_shard(index, window, drops)
            report = run.finish()
            report.save(out_dir / "report.json")
    finally:
        if pbar is not None:
            pbar.close()
    log.info("synthesized %d items (%.1f s audio, RTF %.3f) into %s; skipped %s, filtered %d, resumed %d",
             report.n_written, report.audio_seconds, report.rtf, out_dir, report.n_skipped, report.n_filtered,
             report.n_resumed)
    if report.unaligned:
        log.warning("%d of %d written items have no word alignment (%s): %s", len(report.unaligned),
                    report.n_written, out_dir, report.unaligned[:20])
    return report

"""Word alignments for natural speech: CTC forced alignment of a lhotse manifest with a NeMo CTC model.

The transcript of each cut is force-aligned to the log-probabilities of a NeMo CTC ASR model with NeMo's Viterbi
aligner (the one NeMo Forced Aligner uses, :mod:`nemo.collections.asr.parts.utils.aligner_utils`), and the word
times are stored as the supervision's lhotse word alignment (``{"word": [AlignmentItem, ...]}``), which the
interleaved layout (:mod:`nemo_salad.data.layout`) cuts the audio at.

:func:`align_manifest` works in batches and can be killed at any point: finished cuts are appended to
``<output>.partial.jsonl`` (one complete line per cut, flushed per batch), a rerun skips them, and the output
manifest appears only when every cut is done (written to a temporary file, then renamed). A cut that cannot be
aligned (unreadable audio, empty transcript, more tokens than frames) is written unchanged, named in the report
and the log.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from lhotse import CutSet
from lhotse.serialization import load_manifest_lazy
from lhotse.supervision import AlignmentItem

__all__ = ["AlignReport", "CTCWordAligner", "align_manifest"]

log = logging.getLogger(__name__)


def _normalize(word: str) -> str:
    """Lower case, letters/digits/apostrophes only (the alphabet of English CTC models)."""
    return "".join(ch for ch in word.lower() if ch.isalnum() or ch == "'")


class CTCWordAligner:
    """Word times of transcripts in audio from a NeMo CTC model's log-probabilities (Viterbi forced alignment).

    Args:
        model: a NeMo CTC ASR model (``EncDecCTCModel`` / ``EncDecCTCModelBPE``, or a hybrid's CTC side): anything
            with ``transcribe(audio, batch_size=..., return_hypotheses=True)`` whose hypotheses carry the
            log-probabilities in ``y_sequence``, and a ``tokenizer`` or ``decoder.vocabulary``.
        frame_seconds (float | None): duration of one output frame; ``None`` takes it from the model config
            (``preprocessor.window_stride * encoder.subsampling_factor``). Default: None.
        sample_rate (int): rate the model expects; audio is resampled to it. Default: 16000.
        normalize (bool): lower-case words and drop punctuation before aligning (for models without
            punctuation); the stored symbols keep the original spelling. Default: True.

    >>> from nemo.collections.asr.models import ASRModel  # doctest: +SKIP
    >>> aligner = CTCWordAligner(ASRModel.restore_from("stt_en_fastconformer_ctc_large.nemo"))  # doctest: +SKIP
    >>> aligner.align([cut])[0]["word"][0]  # doctest: +SKIP
    AlignmentItem(symbol='Hello', start=0.32, duration=0.4, score=None)
    """

    def __init__(self, model: Any, frame_seconds: float | None = None, sample_rate: int = 16000,
                 normalize: bool = True) -> None:
        self.model, self.frame_seconds = model, frame_seconds
        self.sample_rate, self.normalize = int(sample_rate), normalize

    def _frame(self) -> float:
        if self.frame_seconds is not None:
            return float(self.frame_seconds)
        try:
            return float(self.model.cfg.preprocessor.window_stride) * int(self.model.encoder.subsampling_factor)
        except Exception as exc:  # noqa: BLE001 - any missing piece means the same thing
            raise ValueError("cannot tell the CTC model's output frame duration from model.cfg.preprocessor."
                             "window_stride and model.encoder.subsampling_factor; pass frame_seconds") from exc

    def _audio(self, cut: Any) -> np.ndarray:
        if cut.sampling_rate != self.sample_rate:
            cut = cut.resample(self.sample_rate)
        return np.asarray(cut.load_audio(), dtype=np.float32).mean(axis=0)  # (T,)

    def align(self, cuts: Sequence[Any]) -> list[dict[str, list[AlignmentItem]] | str]:
        """Word alignment of each cut's first supervision, or the reason it could not be aligned.

        Args:
            cuts (Sequence[Cut]): one batch of cuts with recordings and transcripts.

        Returns:
            list[dict[str, list[AlignmentItem]] | str]: per cut, ``{"word": [...]}`` with times relative to the
            cut, or a string saying why there is none.

        Raises:
            ValueError: if ``frame_seconds`` is None and the model's config does not give the frame duration.
        """
        from nemo.collections.asr.parts.utils.aligner_utils import (
            Segment,
            Word,
            add_t_start_end_to_utt_obj,
            get_batch_variables,
            viterbi_decoding,
        )

        frame = self._frame()
        results: list[Any] = [None] * len(cuts)
        todo: list[tuple[int, np.ndarray, list[str], list[str]]] = []
        for i, cut in enumerate(cuts):
            words = (cut.supervisions[0].text or "").split() if cut.supervisions else []
            spoken = [_normalize(w) if self.normalize else w for w in words]
            if not any(spoken):
                results[i] = "empty transcript"
                continue
            try:
                todo.append((i, self._audio(cut), words, spoken))
            except Exception as exc:  # noqa: BLE001 - any loader error makes this one cut unalignable
                results[i] = f"cannot read audio: {type(exc).__name__}: {exc}"
        if not todo:
            return results
        hypotheses = self.model.transcribe([audio for _, audio, _, _ in todo], batch_size=len(todo),
                                           return_hypotheses=True, verbose=False)
        if isinstance(hypotheses, tuple):  # hybrid models return (best, all)
            hypotheses = hypotheses[0]
        texts = [" ".join(w for w in spoken if w) for _, _, _, spoken in todo]
        log_probs, y, t_lens, u_lens, utts, _ = get_batch_variables(
            hypotheses, self.model, segment_separators=None, gt_text_batch=texts, output_timestep_duration=frame,
            has_hypotheses=True)
        paths = viterbi_decoding(log_probs, y, t_lens, u_lens, viterbi_device="cpu")
        for (i, _, words, spoken), utt, path in zip(todo, utts, paths):
            utt = add_t_start_end_to_utt_obj(utt, path, frame)
            found = [item for seg in utt.segments_and_tokens if isinstance(seg, Segment)
                     for item in seg.words_and_tokens if isinstance(item, Word)]
            if len(found) != sum(1 for w in spoken if w) or any(w.t_start < 0 or w.t_end < 0 for w in found):
                results[i] = "no alignment path (transcript longer than the audio allows?)"
                continue
            results[i] = {"word": _with_unspoken(words, spoken, found, float(cuts[i].duration))}
        return results


def _with_unspoken(words: list[str], spoken: list[str], found: list[Any], duration: float) -> list[AlignmentItem]:
    """Alignment items for all ``words``, clipped to ``duration`` (models pad their features, so the last frames
    may lie past the audio); a word with nothing to align (e.g. "—") gets zero length in place."""
    out, it, previous_end = [], iter(found), 0.0
    for word, key in zip(words, spoken):
        if key:
            hit = next(it)
            start, end = min(max(float(hit.t_start), previous_end), duration), min(float(hit.t_end), duration)
        else:
            start = end = previous_end
        out.append(AlignmentItem(symbol=word, start=round(start, 3), duration=round(max(end - start, 0.0), 3)))
        previous_end = max(previous_end, end)
    return out


@dataclasses.dataclass
class AlignReport:
    """What one :func:`align_manifest` call did.

    Attributes:
        n_aligned (int): cuts aligned by this run.
        n_resumed (int): cuts already done by an earlier, interrupted run (not redone).
        unaligned (list[tuple[str, str]]): ``(cut id, reason)`` of the cuts this run could not align; they are
            written without a word alignment.
    """

    n_aligned: int = 0
    n_resumed: int = 0
    unaligned: list[tuple[str, str]] = dataclasses.field(default_factory=list)


def _done_lines(partial: Path) -> tuple[list[str], set[str]]:
    """Complete lines of a partial file (a line cut short by a kill is dropped) and their cut ids."""
    if not partial.is_file():
        return [], set()
    lines, ids = [], set()
    for line in partial.read_text(encoding="utf-8").splitlines(keepends=True):
        if not line.endswith("\n"):
            break
        try:
            ids.add(json.loads(line)["id"])
        except (json.JSONDecodeError, KeyError):
            break
        lines.append(line)
    return lines, ids


def _batches(cuts: Any, size: int, skip: set[str]) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for cut in cuts:
        if cut.id in skip:
            continue
        batch.append(cut)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def align_manifest(input_path: str | Path, output_path: str | Path, aligner: Any, batch_size: int = 16,
                   progress: bool = True) -> AlignReport:
    """Add word alignments to every cut of a lhotse cuts manifest (resumable; see the module docstring).

    Args:
        input_path (str | Path): lhotse cuts manifest (``.jsonl`` or ``.jsonl.gz``).
        output_path (str | Path): the aligned manifest, written when complete.
        aligner: a :class:`CTCWordAligner` (or anything with its ``align(cuts)``).
        batch_size (int): cuts per model call. Default: 16.
        progress (bool): show a tqdm bar. Default: True.

    Returns:
        AlignReport: counts of this run and the unaligned cuts with reasons.

    Raises:
        ValueError: for a non-positive ``batch_size`` or an output path equal to the input.
        FileNotFoundError: if the input manifest does not exist.
    """
    input_path, output_path = Path(input_path), Path(output_path)
    if int(batch_size) <= 0:
        raise ValueError(f"batch_size={batch_size!r}; expected a positive integer")
    if not input_path.is_file():
        raise FileNotFoundError(f"cuts manifest {input_path} does not exist; expected a lhotse .jsonl(.gz) file")
    if input_path.resolve() == output_path.resolve():
        raise ValueError(f"output {output_path} is the input manifest; write the aligned cuts to another file")
    partial = output_path.with_name(output_path.name + ".partial.jsonl")
    lines, done = _done_lines(partial)
    if partial.is_file():  # rewrite atomically without a line a kill may have left half-written
        tmp_partial = partial.with_name(f".{partial.name}.tmp-{os.getpid()}")
        tmp_partial.write_text("".join(lines), encoding="utf-8")
        os.replace(tmp_partial, partial)
    report = AlignReport(n_resumed=len(done))
    cuts = load_manifest_lazy(input_path)
    pbar = None
    if progress:
        from tqdm.auto import tqdm

        pbar = tqdm(desc="align", unit="cut", initial=len(done), dynamic_ncols=True)
    try:
        with open(partial, "a", encoding="utf-8") as handle:
            for batch in _batches(cuts, int(batch_size), done):
                for cut, result in zip(batch, aligner.align(batch), strict=True):
                    if isinstance(result, str):
                        report.unaligned.append((cut.id, result))
                        log.warning("cannot align cut %r: %s", cut.id, result)
                    else:
                        sup = dataclasses.replace(cut.supervisions[0], alignment=result)
                        cut = dataclasses.replace(cut, supervisions=[sup, *cut.supervisions[1:]])
                        report.n_aligned += 1
                    handle.write(json.dumps(cut.to_dict(), ensure_ascii=False) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
                if pbar is not None:
                    pbar.update(len(batch))
                    pbar.set_postfix({"unaligned": len(report.unaligned)}, refresh=False)
    finally:
        if pbar is not None:
            pbar.close()
    tmp = output_path.with_name(f".tmp-{os.getpid()}-{output_path.name}")  # same suffix: same format
    CutSet.from_dicts(json.loads(line) for line in _done_lines(partial)[0]).to_file(tmp)
    os.replace(tmp, output_path)
    partial.unlink()
    if report.unaligned:
        log.warning("%d cut(s) of %s could not be aligned and were written without word times: %s",
                    len(report.unaligned), input_path, [cut_id for cut_id, _ in report.unaligned[:20]])
    return report

"""Collate lhotse cuts into :class:`~nemo_salad.data.batch.SaladBatch` tensors, with every skip decided here.

A cut with a recording is a speech utterance: its words are planned into speech and text spans
(:mod:`nemo_salad.data.layout`), the audio of each speech span is cut out, and each span's text is tokenized
on its own (later spans with a leading space) so that the teacher's all-text sequence is exactly the
concatenation of the span tokens. A cut without a recording is a text-replay item: one text segment. The
documents are then checked and laid into (optionally packed) rows by :mod:`nemo_salad.data.batch` — in the
data-loader workers, so the training process receives tensors.

Unusable cuts never stop training, and this is the one place they are found: a missing or unreadable audio file,
an empty transcript, audio longer than ``max_duration``, too few words, a span too short for one adapter frame, or
a sequence longer than the LLM context (or ``pack_length``) is skipped once, logged with the cut id and the audio
file, and returned in ``batch.skipped`` for the model to count per source (``batch.source``, see
:mod:`nemo_salad.data.skips`).

A speech cut without a word alignment is laid out with proportional word times when
``layout.alignment_fallback=proportional``: its id goes to ``batch.proportional`` (the model logs the running
count as ``train/proportional_cuts``) and the dataset logs a warning with its count on the first such cut and
every ``PROPORTIONAL_WARN_EVERY`` after.
"""

from __future__ import annotations

import random
import zlib
from typing import Any

import torch
from lhotse import CutSet
from nemo.utils import logging

from nemo_salad.data.batch import FrameCounter, SaladBatch, Segment, SkipSample, collate, make_document
from nemo_salad.data.layout import LayoutConfig, has_word_alignment, plan_spans, word_timings
from nemo_salad.data.sampler import SOURCE_ATTR
from nemo_salad.parts.audio_checks import audio_problem

__all__ = ["PROPORTIONAL_WARN_EVERY", "SaladDataset", "SkipSample"]

PROPORTIONAL_WARN_EVERY = 1000


def _audio_file(cut: Any) -> str:
    try:
        return ", ".join(str(s.source) for s in cut.recording.sources)
    except AttributeError:
        return "<no recording>"


class SaladDataset(torch.utils.data.Dataset):
    """``__getitem__(cuts) -> SaladBatch`` for :class:`~nemo_salad.models.SaladModel` (lhotse map-style).

    Args:
        tokenizer: a ``transformers`` tokenizer.
        layout (LayoutConfig): how utterances become segments.
        frames (FrameCounter): adapter frames per clip length (``SaladModel.frame_counter``).
        pad_id (int): token id of padding and speech slots (``SaladModel.pad_id``).
        max_len (int | None): the LLM context; longer samples are skipped. Default: None.
        sample_rate (int): the encoder's rate; other rates are resampled. Default: 16000.
        max_duration (float): longer utterances are skipped. Default: 40.0.
        max_text_tokens (int): text-replay items are truncated to this many tokens. Default: 512.
        pack_length (int | None): pack samples into rows of at most this many positions (None: one sample per row).
            Default: None.
        seed (int): layout randomness is seeded from ``(seed, cut id)``. Default: 0.
        source (str | None): the source name of batches whose CutSet names none (a mixture batch names its
            own, see :data:`~nemo_salad.data.sampler.SOURCE_ATTR`). Default: None.
    """

    def __init__(self, tokenizer: Any, layout: LayoutConfig | None = None, *, frames: FrameCounter, pad_id: int,
                 max_len: int | None = None, sample_rate: int = 16000, max_duration: float = 40.0,
                 max_text_tokens: int = 512, pack_length: int | None = None, seed: int = 0,
                 source: str | None = None) -> None:
        self.tokenizer, self.source, self.frames, self.pad_id = tokenizer, source, frames, int(pad_id)
        self.layout = layout or LayoutConfig()
        self.sample_rate = sample_rate
        self.max_duration, self.max_text_tokens, self.seed = max_duration, max_text_tokens, seed
        self.pack_length = int(pack_length) if pack_length else None
        limits = [n for n in (max_len, self.pack_length) if n]
        self.max_len = min(limits) if limits else None
        if frames.max_samples < round(max_duration * sample_rate):
            raise ValueError(f"the frame table covers {frames.max_samples} samples, fewer than data.max_duration="
                             f"{max_duration} s at {sample_rate} Hz")
        self.n_proportional = 0  # cuts laid out with proportional word times by this process

    def _count_proportional(self, cut_ids: list[str], source: str | None) -> None:
        """Warn on the first cut laid out with proportional word times, then every ``PROPORTIONAL_WARN_EVERY``."""
        before = self.n_proportional
        self.n_proportional += len(cut_ids)
        every = PROPORTIONAL_WARN_EVERY
        if cut_ids and (before == 0 or before // every != self.n_proportional // every):
            logging.warning(f"{self.n_proportional} cut(s) (this batch: source {source!r}) so far have no word "
                            f"alignment and were laid out with proportional word times (e.g. {cut_ids[0]}); add "
                            "alignments (examples/salad_align.py) or set layout.alignment_fallback=skip")

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False).input_ids

    def _rng(self, cut_id: str) -> random.Random:
        return random.Random(zlib.crc32(f"{self.seed}:{cut_id}".encode()))

    def _text_sample(self, cut: Any) -> list[Segment]:
        text = " ".join((s.text or "") for s in cut.supervisions).strip()
        if not text:
            raise SkipSample("empty_text", "empty text")
        return [Segment("text", self._encode(text)[: self.max_text_tokens])]

    def _speech_sample(self, cut: Any, clips: list[torch.Tensor], new_clips: list[torch.Tensor]) -> list[Segment]:
        """The cut's segments; its speech spans' audio goes to ``new_clips`` (numbered after ``clips``)."""
        if not cut.supervisions or not (cut.supervisions[0].text or "").strip():
            raise SkipSample("empty_text", "empty transcript")
        if cut.duration > self.max_duration:
            raise SkipSample("too_long_audio",
                             f"audio is {cut.duration:.1f} s, longer than max_duration={self.max_duration} s")
        words = word_timings(cut, self.layout.alignment_fallback)
        if words is None:
            raise SkipSample("no_alignment", "no word alignment (layout.alignment_fallback=skip)")
        if len(words) < self.layout.min_words:
            raise SkipSample("too_few_words",
                             f"{len(words)} word(s), fewer than layout.min_words={self.layout.min_words}")
        words = words[: self.layout.max_words]
        if cut.sampling_rate != self.sample_rate:
            cut = cut.resample(self.sample_rate)
        try:
            audio = torch.as_tensor(cut.load_audio())  # (channels, samples)
        except Exception as exc:  # missing file, corrupt data: any loader error means "unreadable"
            raise SkipSample("unreadable_audio",
                             f"cannot read audio {_audio_file(cut)}: {type(exc).__name__}: {exc}") from exc
        problem = audio_problem(audio, self.sample_rate, self.sample_rate, self.frames.min_samples)
        if problem:
            raise SkipSample("bad_audio", f"{problem} ({_audio_file(cut)})")
        audio = audio.reshape(-1)
        segments = []
        for j, span in enumerate(plan_spans(words, self.layout, self._rng(cut.id))):
            ids = self._encode((" " if j else "") + span.text)
            if span.kind == "speech":
                a, b = round(span.start * self.sample_rate), round(span.end * self.sample_rate)
                clip = audio[a:b]  # a span too short for a frame is skipped by make_document
                segments.append(Segment("speech", ids, clip=len(clips) + len(new_clips)))
                new_clips.append(clip)
            else:
                segments.append(Segment("text", ids))
        return segments

    def __getitem__(self, cuts: CutSet) -> SaladBatch:
        documents, clips, skipped, kinds, proportional = [], [], [], [], []
        for cut in cuts:
            try:
                new: list[torch.Tensor] = []
                segments = self._speech_sample(cut, clips, new) if cut.has_recording else self._text_sample(cut)
                documents.append(make_document(cut.id, segments, [len(c) for c in clips + new], self.frames,
                                               self.pad_id, self.max_len))
            except SkipSample as skip:
                logging.warning(f"skipping cut {cut.id}: {skip}")
                skipped.append((cut.id, str(skip)))
                kinds.append(skip.kind)
                continue
            clips.extend(new)
            if cut.has_recording and not has_word_alignment(cut):
                proportional.append(cut.id)
        source = getattr(cuts, SOURCE_ATTR, None) or self.source
        self._count_proportional(proportional, source)
        # rows no wider than any sample may be: the context, or pack_length if smaller
        capacity = self.max_len if self.pack_length else None
        return collate(documents, clips, self.pad_id, capacity, skipped, proportional, source, kinds)

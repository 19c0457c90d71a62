"""The batch contract: documents of speech and text spans → a :class:`SaladBatch` of tensors, packed or not.

A *document* is one training sample as planned by the dataset: a list of :class:`Segment`\\ s. A text segment gives
its tokens to the student and to the teacher; a speech segment gives the student as many slots as the adapter will
produce frames for its clip (:class:`FrameCounter`, the encoder's and adapter's length formulas) and the teacher its
transcript tokens. For every student position whose *next* position holds a text token, the teacher position that
predicts the same token is recorded (``student_pos`` ↔ ``teacher_pos``): distillation and NLL compare the two models
exactly there, including the first text token after a speech span, which the student predicts from speech frames.

:func:`make_document` checks one document (a speech span without frames or transcript, an empty document, a
sequence longer than the context) and raises :class:`SkipSample` naming the reason — the only place a bad sample is
found. :func:`collate` lays documents into rows: one per row (right-padded), or *packed* — several documents per row
up to ``pack_length`` positions, in as few rows as fit and filled evenly (:func:`pack_rows`), student and teacher rows
packed separately. Each
position carries its document index (``-1`` at padding) and its position within the document, so attention
(:meth:`SaladBatch.attention_mask`) and RoPE positions stay inside each document: a packed document's hidden states
equal the same document's alone. Speech clips are ordered as their slots appear row by row, so the model fills the
slots with one ``masked_scatter`` of the adapter's frames.

Legend: ``R``/``Rt`` student/teacher rows, ``Ts``/``Tt`` their lengths, ``C`` speech clips, ``N`` longest clip in
audio samples, ``P`` compared (student, teacher) position pairs, ``D`` documents.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal

import torch
from torch import Tensor

__all__ = ["SKIP_KINDS", "Document", "FrameCounter", "SaladBatch", "Segment", "SkipSample", "collate", "make_document",
           "pack_rows"]


class SkipSample(Exception):
    """Raised while building one sample; the sample is skipped (once, by the dataset) with this reason.

    Args:
        kind (str): the reason's class, counted per run (``train/skipped/<kind>``), one of :data:`SKIP_KINDS`.
        detail (str): what was wrong with this sample (the message).

    >>> err = SkipSample("empty_text", "speech segment has an empty transcript")
    >>> err.kind, str(err)
    ('empty_text', 'speech segment has an empty transcript')
    """

    def __init__(self, kind: str, detail: str) -> None:
        if kind not in SKIP_KINDS:
            raise ValueError(f"skip kind {kind!r}; expected one of {SKIP_KINDS}")
        super().__init__(detail)
        self.kind = kind


#: the classes of reasons a sample is skipped for
SKIP_KINDS = ("unreadable_audio", "bad_audio", "empty_text", "too_long_audio", "too_few_words", "no_alignment",
              "no_frame", "bad_clip", "too_long_sequence")


@dataclass
class Segment:
    """One span of a sample.

    Args:
        kind (str): ``"text"`` or ``"speech"``.
        ids (list[int]): token ids (for speech: the transcript's, read by the teacher).
        clip (int): for speech, the index of its audio clip in the batch (``SaladBatch.audio``). Default: -1.
    """

    kind: Literal["text", "speech"]
    ids: list[int]
    clip: int = -1


class FrameCounter:
    """Adapter frames for a speech clip of ``n`` audio samples, from the encoder's and adapter's length formulas.

    A lookup table over ``0 .. max_samples``: building a batch needs no network, and a worker process gets a plain
    tensor. The model checks every step that its encoder and adapter produced exactly these counts.

    Args:
        table (Tensor): ``(max_samples + 1,)`` frames per sample count.

    >>> fc = FrameCounter.from_formula(lambda n: torch.div(n, 160, rounding_mode="floor"), 16000, downsample=4)
    >>> fc(159), fc(160), fc(800), fc.min_samples
    (0, 1, 2, 160)
    """

    def __init__(self, table: Tensor) -> None:
        self.table = table.to(torch.int32).contiguous()
        ok = (self.table >= 1).nonzero()
        self.min_samples = int(ok[0]) if len(ok) else len(self.table)

    @classmethod
    def from_formula(cls, encoded_lengths: Any, max_samples: int, downsample: int = 1) -> FrameCounter:
        """``ceil(encoded_lengths(n) / downsample)`` for every ``n`` up to ``max_samples`` (adapters stack
        ``downsample`` frames, the last group zero-padded)."""
        n = torch.arange(int(max_samples) + 1)
        frames = torch.as_tensor(encoded_lengths(n)).long().clamp(min=0)
        return cls(torch.div(frames + downsample - 1, downsample, rounding_mode="floor"))

    @property
    def max_samples(self) -> int:
        return len(self.table) - 1

    def __call__(self, num_samples: int) -> int:
        if not 0 <= num_samples <= self.max_samples:
            raise ValueError(f"a speech clip of {num_samples} samples is longer than the longest the frame table "
                             f"covers ({self.max_samples}; data.max_duration bounds it)")
        return int(self.table[num_samples])


@dataclass
class Document:
    """One checked sample, ready to be laid into rows (built by :func:`make_document`)."""

    id: str
    segments: list[Segment]
    student_ids: list[int]  # pad id at speech slots
    speech: list[bool]
    teacher_ids: list[int]
    pairs: list[tuple[int, int, int]]  # (student position, teacher position, target) inside the document
    clips: list[int]  # the document's speech clips, in slot order (indices into the caller's clip list)
    frames: list[int]  # slots (adapter frames) of each of those clips


def make_document(sample_id: str, segments: Sequence[Segment], clip_samples: Sequence[int],
                  frames: FrameCounter | None, pad_id: int, max_len: int | None = None) -> Document:
    """Check one sample and lay out its student and teacher sequences.

    Args:
        sample_id (str): names the sample in skip reasons.
        segments: the sample's spans; a speech segment's ``clip`` indexes ``clip_samples``.
        clip_samples: audio samples of every clip of the batch.
        frames (FrameCounter | None): adapter frames per clip length (None: the batch has no speech).
        pad_id (int): token id of speech slots in ``student_ids``.
        max_len (int | None): longest allowed student or teacher sequence (the LLM context, or the packing length).

    Raises:
        SkipSample: a speech segment without frames or transcript, an unknown clip, an empty sample, or a sequence
            longer than ``max_len``.

    >>> doc = make_document("a", [Segment("text", [1, 2]), Segment("speech", [3, 4, 5], 0), Segment("text", [6])],
    ...                     [320], FrameCounter.from_formula(lambda n: n // 160, 320), pad_id=0)
    >>> doc.student_ids, doc.teacher_ids, doc.pairs
    ([1, 2, 0, 0, 6], [1, 2, 3, 4, 5, 6], [(0, 0, 2), (3, 4, 6)])
    """
    s_ids: list[int] = []
    speech: list[bool] = []
    t_ids: list[int] = []
    pairs: list[tuple[int, int, int]] = []
    clips: list[int] = []
    counts: list[int] = []
    for seg in segments:
        if seg.kind == "text":
            s0, t0 = len(s_ids), len(t_ids)
            pairs.extend((s0 + j - 1, t0 + j - 1, tok) for j, tok in enumerate(seg.ids) if s0 + j >= 1 and t0 + j >= 1)
            s_ids.extend(seg.ids)
            speech.extend([False] * len(seg.ids))
        elif seg.kind == "speech":
            if frames is None or not 0 <= seg.clip < len(clip_samples):
                raise SkipSample("bad_clip", f"speech segment refers to clip {seg.clip}, which the batch lacks")
            n = frames(int(clip_samples[seg.clip]))
            if n < 1:
                raise SkipSample("no_frame", f"speech span of {int(clip_samples[seg.clip])} audio samples gives no "
                                 "encoder frame "
                                 f"(fewest: {frames.min_samples})")
            if not seg.ids:
                raise SkipSample("empty_text", "speech segment has an empty transcript")
            s_ids.extend([pad_id] * n)
            speech.extend([True] * n)
            clips.append(seg.clip)
            counts.append(n)
        else:
            raise ValueError(f"sample {sample_id!r}: segment kind {seg.kind!r}; expected 'text' or 'speech'")
        t_ids.extend(seg.ids)
    if not s_ids:
        raise SkipSample("empty_text", "sample has no tokens and no speech")
    if max_len is not None and max(len(s_ids), len(t_ids)) > max_len:
        raise SkipSample("too_long_sequence", f"sequence of {len(s_ids)} student / {len(t_ids)} teacher positions "
                         "exceeds the limit of "
                         f"{max_len} (the LLM context, or data.pack_length)")
    return Document(sample_id, list(segments), s_ids, speech, t_ids, pairs, clips, counts)


def pack_rows(lengths: Sequence[int], capacity: int | None) -> list[list[int]]:
    """Documents per row: one each without ``capacity``; else as few rows as the total length needs (more only when
    a document fits in none), filled evenly — each document, longest first, goes to the least filled row it fits in
    — so that every row is close to the longest and little is padded. Each row lists its documents in their
    original order.

    >>> pack_rows([5, 3, 4, 2], None), pack_rows([5, 3, 4, 2], 8)
    ([[0], [1], [2], [3]], [[0, 3], [1, 2]])
    """
    if capacity is None:
        return [[i] for i in range(len(lengths))]
    if any(n > capacity for n in lengths):
        raise ValueError(f"a document of {max(lengths)} positions does not fit a row of {capacity}")
    order = sorted(range(len(lengths)), key=lambda k: (-lengths[k], k))
    count = max(1, -(-sum(lengths) // capacity))
    while True:
        rows: list[list[int]] = [[] for _ in range(count)]
        load = [0] * count
        for i in order:
            fits = [r for r in range(count) if load[r] + lengths[i] <= capacity]
            if not fits:
                break
            r = min(fits, key=lambda k: (load[k], k))
            rows[r].append(i)
            load[r] += lengths[i]
        else:
            return [sorted(r) for r in rows if r]
        count += 1


def _lay_out(seqs: Sequence[Sequence[int]], rows: list[list[int]], pad: int) -> tuple[Tensor, Tensor, Tensor,
                                                                                   list[int]]:
    """ids, document index, position within the document ``(rows, T)`` and each document's flat start offset."""
    width = max(sum(len(seqs[d]) for d in row) for row in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    doc = torch.full((len(rows), width), -1, dtype=torch.long)
    pos = torch.zeros((len(rows), width), dtype=torch.long)
    start = [0] * len(seqs)
    for r, row in enumerate(rows):
        off = 0
        for d in row:
            n = len(seqs[d])
            ids[r, off:off + n] = torch.tensor(seqs[d], dtype=torch.long)
            doc[r, off:off + n] = d
            pos[r, off:off + n] = torch.arange(n)
            start[d] = r * width + off
            off += n
    return ids, doc, pos, start


@dataclass
class SaladBatch:
    """Student and teacher inputs of a batch as tensors, and where the two are compared (see the module docstring).

    ``segments``, ``skipped``, ``proportional`` and ``source`` describe the batch (tests, counts, logs); the model
    reads only tensors.
    """

    student_ids: Tensor  # (R, Ts) token ids; pad id at speech slots and padding
    speech_mask: Tensor  # (R, Ts) True at speech slots
    student_doc: Tensor  # (R, Ts) document index, -1 at padding
    student_positions: Tensor  # (R, Ts) position within the document
    teacher_ids: Tensor  # (Rt, Tt) the all-text sequences
    teacher_doc: Tensor  # (Rt, Tt)
    teacher_positions: Tensor  # (Rt, Tt)
    student_pos: Tensor  # (P,) flat index into R*Ts: positions whose next position is a text token
    teacher_pos: Tensor  # (P,) flat index into Rt*Tt: the teacher position predicting the same token
    targets: Tensor  # (P,) the token predicted there
    sample_index: Tensor  # (P,) the document of each pair
    audio: Tensor  # (C, N) speech clips in slot order, zero-padded
    audio_lens: Tensor  # (C,) valid samples per clip
    clip_frames: Tensor  # (C,) adapter frames per clip (the slots it fills)
    sample_ids: list[str] = field(default_factory=list)  # (D,)
    segments: list[list[Segment]] = field(default_factory=list)  # (D,) each document's plan; clips index `audio`
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (cut id, reason) of samples left out
    skip_kinds: list[str] = field(default_factory=list)  # the class of each of those reasons (SKIP_KINDS)
    proportional: list[str] = field(default_factory=list)  # speech cuts laid out with proportional word times
    source: str | None = None
    packed: bool = False  # some row holds several documents (student or teacher side)
    padded_fraction: float = 0.0  # padded share of all student and teacher positions (what packing reduces)
    positions: int = 0  # real student positions: the LLM positions the batch trains on (data.batch_tokens)

    # ------------------------------------------------------------------ sizes
    @property
    def num_samples(self) -> int:
        return len(self.sample_ids)

    @property
    def num_targets(self) -> int:
        return int(self.targets.numel())

    @property
    def has_speech(self) -> bool:
        return bool(self.audio_lens.numel())

    @property
    def student_mask(self) -> Tensor:
        """``(R, Ts)`` True at real positions."""
        return self.student_doc >= 0

    @property
    def teacher_mask(self) -> Tensor:
        """``(Rt, Tt)`` True at real positions."""
        return self.teacher_doc >= 0

    # ------------------------------------------------------------------ attention
    def student_position_ids(self) -> Tensor | None:
        """``student_positions``, or None when every row is one document from position 0 (then the LLM's own
        ``0 .. T-1`` positions are the same and cheaper: one RoPE table for all rows)."""
        return self.student_positions if self.packed else None

    def teacher_position_ids(self) -> Tensor | None:
        """``teacher_positions``, or None as for :meth:`student_position_ids`."""
        return self.teacher_positions if self.packed else None

    @staticmethod
    def attention_mask(doc: Tensor) -> Tensor:
        """Causal attention inside each document, megatron's convention (True = may not attend): ``(R, T) → (R, 1,
        T, T)``. A padding position attends to itself only (a fully masked row would turn into NaN).

        >>> SaladBatch.attention_mask(torch.tensor([[0, 0, 1, -1]]))[0, 0].int().tolist()
        [[0, 1, 1, 1], [0, 0, 1, 1], [1, 1, 0, 1], [1, 1, 1, 0]]
        """
        t = doc.shape[1]
        causal = torch.ones(t, t, dtype=torch.bool, device=doc.device).tril()
        allowed = (doc[:, :, None] == doc[:, None, :]) & (doc[:, None, :] >= 0) & causal
        allowed |= torch.eye(t, dtype=torch.bool, device=doc.device)
        return ~allowed[:, None]

    def speech_context(self) -> Tensor:
        """``(P,)`` True for the compared pairs whose student position is at or after the first speech slot of its
        document: the student's context there holds speech. Before it the student reads the same text as the
        teacher (misalignment is measured only where speech is in context).

        >>> fc = FrameCounter.from_formula(lambda n: n // 100, 1000)
        >>> doc = make_document("a", [Segment("text", [1, 2, 3]), Segment("speech", [7], 0), Segment("text", [4])],
        ...                     [200], fc, pad_id=0)
        >>> b = collate([doc], [torch.zeros(200)], pad_id=0)
        >>> b.student_pos.tolist(), b.speech_context().tolist()
        ([0, 1, 4], [False, False, True])
        """
        doc = self.student_doc.flatten()
        slots = self.speech_mask.flatten().nonzero().squeeze(1)  # flat indices of speech slots, row by row
        count = int(doc.max()) + 1 if doc.numel() else 0
        first = torch.full((count,), doc.numel(), dtype=torch.long, device=doc.device)  # no speech: never
        first.scatter_reduce_(0, doc[slots], slots, reduce="amin")
        return self.student_pos >= first[self.sample_index]  # a document is contiguous inside one row

    def teacher_next_positions(self) -> Tensor:
        """Flat indices into ``Rt*Tt`` of teacher positions whose next position is in the same document: ``(K,)``."""
        doc = self.teacher_doc
        both = (doc[:, :-1] == doc[:, 1:]) & (doc[:, :-1] >= 0)
        r, t = both.nonzero(as_tuple=True)
        return r * doc.shape[1] + t

    # ------------------------------------------------------------------ movement
    def to(self, device: Any, non_blocking: bool = False) -> SaladBatch:
        """A copy with every tensor on ``device``."""
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        for name, value in moved.items():
            if isinstance(value, Tensor):
                moved[name] = value.to(device, non_blocking=non_blocking)
        return SaladBatch(**moved)


def collate(documents: Sequence[Document], clips: Sequence[Tensor], pad_id: int, pack_length: int | None = None,
            skipped: Sequence[tuple[str, str]] = (), proportional: Sequence[str] = (), source: str | None = None,
            skip_kinds: Sequence[str] = ()) -> SaladBatch:
    """Lay checked documents into student and teacher rows.

    Args:
        documents: from :func:`make_document`.
        clips: ``(n,)`` waveforms the documents' speech segments index.
        pad_id (int): token id at padding and speech slots.
        pack_length (int | None): pack documents into rows of at most this many positions; None: one per row.
        skipped, proportional, source, skip_kinds: carried into the batch (see :class:`SaladBatch`).

    Returns:
        SaladBatch: clips reordered to slot order; each segment's ``clip`` renumbered to match.

    Raises:
        ValueError: a document longer than ``pack_length`` (:func:`make_document` with ``max_len`` skips those).

    >>> fc = FrameCounter.from_formula(lambda n: n // 100, 1000)
    >>> docs = [make_document(f"d{i}", [Segment("speech", [7], i), Segment("text", [1, 2])], [200, 300], fc, pad_id=0)
    ...         for i in range(2)]
    >>> b = collate(docs, [torch.zeros(200), torch.zeros(300)], pad_id=0, pack_length=16)
    >>> b.student_ids.tolist(), b.student_doc.tolist(), b.clip_frames.tolist(), b.padded_fraction
    ([[0, 0, 1, 2, 0, 0, 0, 1, 2]], [[0, 0, 0, 0, 1, 1, 1, 1, 1]], [2, 3], 0.0)
    """
    if not documents:
        empty = torch.zeros(0, 0, dtype=torch.long)
        none = torch.zeros(0, dtype=torch.long)
        return SaladBatch(empty, empty.bool(), empty, empty, empty, empty, empty, none, none, none, none,
                          torch.zeros(0, 0), none, none, skipped=list(skipped), skip_kinds=list(skip_kinds),
                          proportional=list(proportional), source=source)
    s_rows = pack_rows([len(d.student_ids) for d in documents], pack_length)
    t_rows = pack_rows([len(d.teacher_ids) for d in documents], pack_length)
    s_ids, s_doc, s_pos, s_start = _lay_out([d.student_ids for d in documents], s_rows, pad_id)
    t_ids, t_doc, t_pos, t_start = _lay_out([d.teacher_ids for d in documents], t_rows, pad_id)
    speech = torch.zeros_like(s_ids, dtype=torch.bool)
    width = s_ids.shape[1]
    order: list[int] = []  # batch clips in slot order
    frames: list[int] = []
    segments: list[list[Segment]] = [[] for _ in documents]
    for row in s_rows:
        for d in row:
            doc = documents[d]
            flat = torch.tensor(doc.speech, dtype=torch.bool)
            r, off = divmod(s_start[d], width)
            speech[r, off:off + len(flat)] = flat
            renumber = {c: len(order) + i for i, c in enumerate(doc.clips)}
            order.extend(doc.clips)
            frames.extend(doc.frames)
            segments[d] = [Segment(s.kind, s.ids, renumber[s.clip]) if s.kind == "speech" else s for s in doc.segments]
    pairs = [(s_start[d] + s, t_start[d] + t, y, d) for d, doc in enumerate(documents) for s, t, y in doc.pairs]
    student = sum(len(d.student_ids) for d in documents)
    real = student + sum(len(d.teacher_ids) for d in documents)
    pair = torch.tensor(pairs, dtype=torch.long).reshape(-1, 4)
    lens = torch.tensor([len(clips[c]) for c in order], dtype=torch.long)
    audio = torch.zeros(len(order), int(lens.max()) if len(order) else 0)
    for i, c in enumerate(order):
        audio[i, : len(clips[c])] = clips[c]
    return SaladBatch(s_ids, speech, s_doc, s_pos, t_ids, t_doc, t_pos, pair[:, 0], pair[:, 1], pair[:, 2],
                      pair[:, 3], audio, lens, torch.tensor(frames, dtype=torch.long),
                      sample_ids=[d.id for d in documents], segments=segments, skipped=list(skipped),
                      skip_kinds=list(skip_kinds), proportional=list(proportional), source=source,
                      packed=any(len(r) > 1 for r in s_rows + t_rows), positions=student,
                      padded_fraction=1.0 - real / (s_doc.numel() + t_doc.numel()))

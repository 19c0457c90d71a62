"""Splice speech into the LLM input and keep the map to the teacher's all-text sequence.

A sample is a list of :class:`Segment`\\ s. A text segment contributes its token embeddings to the student
and its tokens to the teacher; a speech segment contributes adapter frames to the student and its transcript
tokens to the teacher. Both layouts of the method are lists of segments:

* speech prefix, text continuation: ``[speech(words 0..k), text(words k..)]``;
* interleaved: ``[text, speech, text, speech, ...]``.

For every student position whose *next* position holds a text token, the teacher position that predicts the
same token is recorded (``student_pos`` ↔ ``teacher_pos``): distillation and NLL compare the two models exactly
there, including the first text token after a speech span, which the student predicts from speech frames.

Legend: ``B`` samples, ``Ts``/``Tt`` padded student/teacher lengths, ``H`` LLM width, ``C`` speech clips in
the batch, ``F`` frames per clip, ``N`` aligned prediction positions in the batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from nemo_salad.parts.audio_checks import BadSampleError

__all__ = ["Segment", "SplicedBatch", "splice"]


@dataclass
class Segment:
    """One span of a sample.

    Args:
        kind (str): ``"text"`` or ``"speech"``.
        ids (list[int]): token ids (for speech: the transcript's, read by the teacher).
        clip (int): for speech, the row of the batch's audio clips holding its audio. Default: -1.
    """

    kind: Literal["text", "speech"]
    ids: list[int]
    clip: int = -1


@dataclass
class SplicedBatch:
    """Student and teacher inputs of a batch, and the positions where the two are compared."""

    inputs_embeds: Tensor  # (B, Ts, H) student input
    student_mask: Tensor  # (B, Ts) True at real positions
    student_ids: Tensor  # (B, Ts) token id at text positions, pad id elsewhere
    is_speech: Tensor  # (B, Ts) True at speech frames
    text_index: Tensor  # (B, Ts) teacher position of the same token at text positions, -1 elsewhere
    teacher_ids: Tensor  # (B, Tt)
    teacher_mask: Tensor  # (B, Tt)
    student_pos: Tensor  # (N,) flat index into B*Ts: positions whose next position is a text token
    teacher_pos: Tensor  # (N,) flat index into B*Tt: the teacher position predicting the same token
    targets: Tensor  # (N,) the token predicted there
    sample_index: Tensor  # (N,) which sample each comparison belongs to
    sample_ids: list[str] = field(default_factory=list)

    @property
    def num_targets(self) -> int:
        return int(self.targets.numel())


def _pad_stack(rows: Sequence[Tensor], length: int, side: str, value: float | int) -> Tensor:
    out = rows[0].new_full((len(rows), length, *rows[0].shape[1:]), value)
    for i, row in enumerate(rows):
        if side == "left":
            out[i, length - len(row):] = row
        else:
            out[i, : len(row)] = row
    return out


def splice(samples: Sequence[Sequence[Segment]], frames: Tensor | None, frame_lens: Tensor | None,
           embed: Callable[[Tensor], Tensor], pad_id: int, pad_side: str = "right",
           sample_ids: Sequence[str] | None = None, max_len: int | None = None) -> SplicedBatch:
    """Build the student's interleaved embeddings and the teacher's all-text ids for a batch.

    Args:
        samples: per sample, its segments.
        frames (Tensor | None): ``(C, F, H)`` adapter output of every speech clip (None if no speech).
        frame_lens (Tensor | None): ``(C,)`` valid frames per clip.
        embed (Callable): token ids ``(L,)`` → embeddings ``(L, H)`` (the student LLM's input embedding).
        pad_id (int): id used at padded / speech positions of ``student_ids`` and padded teacher positions.
        pad_side (str): ``"right"`` or ``"left"``. Default: "right".
        sample_ids (Sequence[str] | None): names used in error messages.
        max_len (int | None): longest allowed student or teacher sequence (the LLM's context).

    Returns:
        SplicedBatch

    Raises:
        BadSampleError: a speech segment with no frames or no transcript tokens, an empty sample, or a
            sequence longer than ``max_len`` — naming the sample.

    >>> emb = lambda ids: torch.nn.functional.one_hot(ids, 8).float()
    >>> frames, lens = torch.ones(1, 3, 8), torch.tensor([2])
    >>> b = splice([[Segment("text", [1, 2]), Segment("speech", [3, 4, 5], clip=0), Segment("text", [6])]],
    ...            frames, lens, emb, pad_id=0)
    >>> b.teacher_ids.tolist(), b.text_index.tolist(), b.targets.tolist()
    ([[1, 2, 3, 4, 5, 6]], [[0, 1, -1, -1, 5]], [2, 6])
    """
    if pad_side not in ("left", "right"):
        raise ValueError(f"pad_side={pad_side!r}; expected 'left' or 'right'")
    names = list(sample_ids) if sample_ids is not None else [str(i) for i in range(len(samples))]
    device = frames.device if frames is not None else None

    # 1. embed every text token of the batch in one call
    text_ids = [torch.tensor(seg.ids, dtype=torch.long) for s in samples for seg in s if seg.kind == "text"]
    flat = torch.cat(text_ids) if text_ids else torch.zeros(0, dtype=torch.long)
    if device is None:
        probe = embed(flat[:1] if len(flat) else torch.zeros(1, dtype=torch.long))
        device = probe.device
    text_emb = embed(flat.to(device)).split([len(t) for t in text_ids]) if text_ids else []

    student_rows, sid_rows, speech_rows, index_rows, teacher_rows, pairs = [], [], [], [], [], []
    k = 0
    for b, segments in enumerate(samples):
        pieces, sids, speech, index, teacher = [], [], [], [], []
        s_len = t_len = 0
        for seg in segments:
            if seg.kind == "text":
                n = len(seg.ids)
                pieces.append(text_emb[k])
                k += 1
                sids.extend(seg.ids)
                speech.extend([False] * n)
                for j in range(n):
                    index.append(t_len + j)
                    if s_len + j >= 1 and t_len + j >= 1:
                        pairs.append((b, s_len + j - 1, t_len + j - 1, seg.ids[j]))
                s_len += n
            elif seg.kind == "speech":
                if frames is None or frame_lens is None or not 0 <= seg.clip < len(frame_lens):
                    raise BadSampleError(names[b], f"speech segment refers to clip {seg.clip}, which the batch lacks")
                n = int(frame_lens[seg.clip])
                if n < 1:
                    raise BadSampleError(names[b], "speech segment produced no encoder frames")
                if not seg.ids:
                    raise BadSampleError(names[b], "speech segment has an empty transcript")
                pieces.append(frames[seg.clip, :n])
                sids.extend([pad_id] * n)
                speech.extend([True] * n)
                index.extend([-1] * n)
                s_len += n
            else:
                raise ValueError(f"sample {names[b]!r}: segment kind {seg.kind!r}; expected 'text' or 'speech'")
            teacher.extend(seg.ids)
            t_len += len(seg.ids)
        if s_len == 0:
            raise BadSampleError(names[b], "sample has no tokens and no speech")
        if max_len is not None and max(s_len, t_len) > max_len:
            raise BadSampleError(names[b], f"sequence of {s_len} student / {t_len} teacher positions exceeds the "
                                           f"LLM context of {max_len}")
        student_rows.append(torch.cat(pieces))
        sid_rows.append(torch.tensor(sids, dtype=torch.long))
        speech_rows.append(torch.tensor(speech, dtype=torch.bool))
        index_rows.append(torch.tensor(index, dtype=torch.long))
        teacher_rows.append(torch.tensor(teacher, dtype=torch.long))

    ts, tt = max(len(r) for r in student_rows), max(len(r) for r in teacher_rows)
    inputs_embeds = _pad_stack(student_rows, ts, pad_side, 0.0)
    ones = [torch.ones(len(r), dtype=torch.bool) for r in student_rows]
    student_mask = _pad_stack(ones, ts, pad_side, False)
    teacher_mask = _pad_stack([torch.ones(len(r), dtype=torch.bool) for r in teacher_rows], tt, pad_side, False)
    off_s = [ts - len(r) if pad_side == "left" else 0 for r in student_rows]
    off_t = [tt - len(r) if pad_side == "left" else 0 for r in teacher_rows]
    text_index = _pad_stack([torch.where(i >= 0, i + off_t[b], i) for b, i in enumerate(index_rows)], ts, pad_side, -1)
    b_idx = torch.tensor([p[0] for p in pairs], dtype=torch.long)
    s_pos = torch.tensor([p[1] + off_s[p[0]] for p in pairs], dtype=torch.long)
    t_pos = torch.tensor([p[2] + off_t[p[0]] for p in pairs], dtype=torch.long)
    to = dict(device=device)
    return SplicedBatch(
        inputs_embeds=inputs_embeds,
        student_mask=student_mask.to(**to),
        student_ids=_pad_stack(sid_rows, ts, pad_side, pad_id).to(**to),
        is_speech=_pad_stack(speech_rows, ts, pad_side, False).to(**to),
        text_index=text_index.to(**to),
        teacher_ids=_pad_stack(teacher_rows, tt, pad_side, pad_id).to(**to),
        teacher_mask=teacher_mask.to(**to),
        student_pos=(b_idx * ts + s_pos).to(**to),
        teacher_pos=(b_idx * tt + t_pos).to(**to),
        targets=torch.tensor([p[3] for p in pairs], dtype=torch.long, device=device),
        sample_index=b_idx.to(**to),
        sample_ids=names,
    )

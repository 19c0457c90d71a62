"""Batches of interleaved speech/text documents for model tests, and the identity speech path."""

from __future__ import annotations

import torch

from nemo_salad.data.batch import Document, FrameCounter, SaladBatch, Segment, collate, make_document

TEXTS = ["the cat sat on the mat", "a dog ran in the park", "ever tried ever failed no matter try again",
         "he turned sharply and faced gregson across the table"]

#: audio samples per frame of the identity path's frame counter
IDENTITY_HOP = 160


def encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False).input_ids


def make_documents(model, layout: str, seconds: list[float] | None = None, seed: int = 0, identity: bool = False
                   ) -> tuple[list[Document], list[torch.Tensor]]:
    """Samples of different lengths in one of the two layouts of the method, checked, and their clips.

    ``prefix``: the first words spoken, the rest as text. ``interleaved``: text, speech, text, speech, text.
    ``lead``: three words of text, two spoken, the rest as text.
    Audio is random noise of the given durations (one clip per speech segment); with ``identity`` each clip has
    ``IDENTITY_HOP`` samples per transcript token and one slot per token (see :func:`identity_speech`).
    """
    g = torch.Generator().manual_seed(seed)
    tok = model.tokenizer
    plans, clips = [], []
    for i, text in enumerate(TEXTS):
        words = text.split()
        if layout == "prefix":
            k = 2 + i % 3
            spans = [("speech", words[:k]), ("text", words[k:])]
        elif layout == "interleaved":
            spans = [("text", words[:1]), ("speech", words[1:3]), ("text", words[3:4]), ("speech", words[4:6]),
                     ("text", words[6:])]
        elif layout == "lead":  # text first: several compared positions before any speech
            spans = [("text", words[:3]), ("speech", words[3:5]), ("text", words[5:])]
        else:
            raise ValueError(layout)
        segs = []
        for j, (kind, span) in enumerate(spans):
            if not span:
                continue
            ids = encode(tok, ("" if j == 0 else " ") + " ".join(span))
            clip = -1
            if kind == "speech":
                clip = len(clips)
                n = len(ids) * IDENTITY_HOP if identity else int(16000 * (seconds[clip % len(seconds)] if seconds
                                                                           else 0.5 + 0.25 * (clip % 4)))
                clips.append(0.1 * torch.randn(n, generator=g))
            segs.append(Segment(kind, ids, clip))
        plans.append(segs)
    frames = identity_counter() if identity else model.frame_counter(max_seconds=5.0)
    docs = [make_document(f"s{i}", segs, [len(c) for c in clips], frames, model.pad_id)
            for i, segs in enumerate(plans)]
    return docs, clips


def make_batch(model, layout: str, seconds: list[float] | None = None, seed: int = 0, identity: bool = False,
               pack_length: int | None = None) -> SaladBatch:
    """:func:`make_documents` collated (one document per row, or packed into rows of ``pack_length``)."""
    docs, clips = make_documents(model, layout, seconds, seed, identity)
    return collate(docs, clips, model.pad_id, pack_length)


def identity_counter() -> FrameCounter:
    return FrameCounter.from_formula(lambda n: torch.div(n, IDENTITY_HOP, rounding_mode="floor"), 16000)


def identity_speech(model, batch: SaladBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Test-only identity path: each clip's 'adapter output' is the text embedding of its transcript (a batch made
    with ``identity=True``)."""
    transcripts = {seg.clip: seg.ids for segs in batch.segments for seg in segs if seg.kind == "speech"}
    lens = torch.tensor([len(transcripts[c]) for c in range(len(transcripts))])
    frames = torch.zeros(len(transcripts), int(lens.max()), model.llm.hidden_size)
    for c, ids in transcripts.items():
        frames[c, : len(ids)] = model.llm.embed(torch.tensor(ids))
    return frames, lens


def speech_in_context(batch: SaladBatch) -> list[bool]:
    """Per compared pair: is there a speech slot at or before the student position, in the same document?"""
    width = batch.student_ids.shape[1]
    out = []
    for p in batch.student_pos.tolist():
        r, t = divmod(p, width)
        doc = int(batch.student_doc[r, t])
        out.append(any(bool(batch.speech_mask[r, u]) and int(batch.student_doc[r, u]) == doc for u in range(t + 1)))
    return out

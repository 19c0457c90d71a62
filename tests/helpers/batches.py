"""Batches of interleaved speech/text segments for model tests, and the identity speech path."""

from __future__ import annotations

import torch

from nemo_salad.modules.splice import Segment

TEXTS = ["the cat sat on the mat", "a dog ran in the park", "ever tried ever failed no matter try again",
         "he turned sharply and faced gregson across the table"]


def encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False).input_ids


def make_batch(tokenizer, layout: str, seconds: list[float] | None = None, seed: int = 0) -> dict:
    """Samples of different lengths in one of the two layouts of the method.

    ``prefix``: the first words spoken, the rest as text. ``interleaved``: text, speech, text, speech, text.
    Audio is random noise of the given durations (one clip per speech segment).
    """
    g = torch.Generator().manual_seed(seed)
    samples, clips = [], []
    for i, text in enumerate(TEXTS):
        words = text.split()
        if layout == "prefix":
            k = 2 + i % 3
            spans = [("speech", words[:k]), ("text", words[k:])]
        elif layout == "interleaved":
            spans = [("text", words[:1]), ("speech", words[1:3]), ("text", words[3:4]), ("speech", words[4:6]),
                     ("text", words[6:])]
        else:
            raise ValueError(layout)
        segs = []
        for j, (kind, span) in enumerate(spans):
            if not span:
                continue
            ids = encode(tokenizer, ("" if j == 0 else " ") + " ".join(span))
            clip = -1
            if kind == "speech":
                clip = len(clips)
                clips.append(int(16000 * (seconds[clip % len(seconds)] if seconds else 0.5 + 0.25 * (clip % 4))))
            segs.append(Segment(kind, ids, clip))
        samples.append(segs)
    lens = torch.tensor(clips)
    audio = torch.zeros(len(clips), int(lens.max()))
    for c, n in enumerate(clips):
        audio[c, :n] = 0.1 * torch.randn(n, generator=g)
    ids = [f"s{i}" for i in range(len(samples))]
    return {"audio": audio, "audio_lens": lens, "segments": samples, "sample_ids": ids}


def identity_speech(model, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Test-only identity path: each clip's 'adapter output' is the text embedding of its transcript."""
    transcripts = {seg.clip: seg.ids for segs in batch["segments"] for seg in segs if seg.kind == "speech"}
    lens = torch.tensor([len(transcripts[c]) for c in range(len(transcripts))])
    frames = torch.zeros(len(transcripts), int(lens.max()), model.llm.hidden_size)
    for c, ids in transcripts.items():
        frames[c, : len(ids)] = model.llm.embed(torch.tensor(ids))
    return frames, lens

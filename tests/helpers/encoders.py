"""Checks shared by the speech-encoder tests."""

from __future__ import annotations

import torch


def assert_batch_equals_clips_alone(enc: torch.nn.Module, audio: torch.Tensor, lens: torch.Tensor) -> None:
    """Each clip of a right-padded float64 batch encodes to the same frames and length as the clip alone."""
    with torch.no_grad():
        feats, out_lens = enc(audio.double(), lens)
        for i, n in enumerate(lens.tolist()):
            alone, alone_lens = enc(audio[i:i + 1, :n].double(), lens[i:i + 1])
            assert int(alone_lens[0]) == int(out_lens[i]) == alone.shape[1]
            assert torch.allclose(feats[i, : alone.shape[1]], alone[0], atol=1e-10), i

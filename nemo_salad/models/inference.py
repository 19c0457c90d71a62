"""Inference with a :class:`~nemo_salad.models.SaladModel`: speech embeddings of lhotse cuts (evaluation, the run
report), with a per-clip feature cache for frozen clip-independent encoders, and greedy decoding from speech.

Legend: ``C`` clips, ``N`` audio samples, ``F`` frames, ``H`` LLM width.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from nemo_salad.llm.model import attention_mask_from_padding
from nemo_salad.parts.audio_checks import BadSampleError, audio_problem, load_cut_audio, to_mono_tensor

__all__ = ["ClipFeatureCache", "audio_batch", "encode_cuts", "generate"]


class ClipFeatureCache:
    """Encoder features of whole clips, for a frozen encoder whose output for a clip does not depend on the other
    clips of its batch (``clip_independent``, e.g. Whisper): :meth:`SaladModel.encode_cuts` (evaluation, the run
    report) then encodes every clip once per process, however many times it is scored. Training is not cached: its
    speech spans are cut anew from each utterance every epoch. Least recently used clips are dropped beyond
    ``max_bytes``.

    >>> cache = ClipFeatureCache(max_bytes=48); cache.put("a", torch.zeros(2, 4)); cache.put("b", torch.ones(2, 4))
    >>> "a" in cache, "b" in cache, cache.get("b").shape  # 32 bytes each: "a" was dropped for "b"
    (False, True, torch.Size([2, 4]))
    """

    def __init__(self, max_bytes: int = 1 << 30) -> None:
        self.max_bytes, self.nbytes = int(max_bytes), 0
        self._items: OrderedDict[Any, Tensor] = OrderedDict()

    @staticmethod
    def key(cut: Any) -> tuple[Any, ...]:
        """What identifies a clip's audio: its id, recording (id and file paths), channel, span and rate."""
        rec = getattr(cut, "recording", None)
        sources = tuple(str(src.source) for src in getattr(rec, "sources", ()) if isinstance(src.source, str))
        return (cut.id, getattr(cut, "recording_id", None), sources, getattr(cut, "channel", None),
                round(float(cut.start), 6), round(float(cut.duration), 6), cut.sampling_rate)

    def __contains__(self, key: Any) -> bool:
        return key in self._items

    def get(self, key: Any) -> Tensor:
        self._items.move_to_end(key)
        return self._items[key]

    def put(self, key: Any, feats: Tensor) -> None:
        feats = feats.detach().to("cpu", copy=True)
        old = self._items.pop(key, None)
        if old is not None:
            self.nbytes -= old.numel() * old.element_size()
        self._items[key] = feats
        self.nbytes += feats.numel() * feats.element_size()
        while self.nbytes > self.max_bytes and len(self._items) > 1:
            _, old = self._items.popitem(last=False)
            self.nbytes -= old.numel() * old.element_size()


def audio_batch(model: Any, audios: Sequence[Any], sample_rates: Sequence[int], ids: Sequence[str]
                ) -> tuple[Tensor, Tensor]:
    """Checked, zero-padded waveforms ``(C, N)`` and their lengths ``(C,)`` on the model's device.

    Raises:
        BadSampleError: for audio the encoder cannot take (empty, wrong rate, not mono, shorter than one frame).
    """
    rows = []
    for audio, sr, name in zip(audios, sample_rates, ids):
        problem = audio_problem(audio, sr, model.encoder.sample_rate, model.min_audio_samples)
        if problem:
            raise BadSampleError(name, problem)
        rows.append(to_mono_tensor(audio))
    lens = torch.tensor([len(r) for r in rows])
    padded = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)
    return padded.to(model.device), lens.to(model.device)


@torch.no_grad()
def encode_cuts(model: Any, cuts: Sequence[Any]) -> list[Tensor]:
    """Speech embeddings ``(F_i, H)`` of lhotse cuts (16 kHz mono), in the LLM's input-embedding space.

    A frozen, clip-independent encoder (Whisper) encodes each clip once per process (``model.clip_features``).

    Raises:
        BadSampleError: for audio that cannot be read or encoded, naming the cut (and its file).
    """
    encoder = model.encoder
    if not (getattr(encoder, "frozen", False) and getattr(encoder, "clip_independent", False)):
        audio, lens = audio_batch(model, [load_cut_audio(c) for c in cuts], [c.sampling_rate for c in cuts],
                                  [c.id for c in cuts])
        frames, flens = model.perceive(audio, lens)
        return [frames[i, : int(n)] for i, n in enumerate(flens)]
    cache: ClipFeatureCache = model.clip_features
    keys = [ClipFeatureCache.key(c) for c in cuts]
    found = {k: cache.get(k) for k in keys if k in cache}  # read before any put
    missing = [i for i, k in enumerate(keys) if k not in found]
    if missing:
        audio, lens = audio_batch(model, [load_cut_audio(cuts[i]) for i in missing],
                                  [cuts[i].sampling_rate for i in missing], [cuts[i].id for i in missing])
        feats, flens = encoder(audio, lens)
        for row, i in enumerate(missing):
            found[keys[i]] = feats[row, : int(flens[row])]
            cache.put(keys[i], found[keys[i]])
    rows = [found[k].to(model.device) for k in keys]
    flens = torch.tensor([len(r) for r in rows], device=model.device)
    feats = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)  # (C, F, D), zero past each clip
    frames, flens = model.adapter(feats, flens)
    return [frames[i, : int(n)] for i, n in enumerate(flens)]


@torch.no_grad()
def generate(model: Any, audios: Sequence[Any], sample_rate: int = 16000, prompt: str = "", prefix: str = "",
             max_new_tokens: int = 32, ids: Sequence[str] | None = None) -> list[str]:
    """Greedy decoding from speech: ``[prefix text, speech, prompt text] → continuation`` (rows left-padded).

    Raises:
        BadSampleError: for unusable audio, naming the sample.
    """
    names = list(ids) if ids is not None else [f"audio[{i}]" for i in range(len(audios))]
    audio, lens = audio_batch(model, audios, [sample_rate] * len(audios), names)
    frames, flens = model.perceive(audio, lens)
    llm, tok = model.llm, model.tokenizer
    encode = lambda text: tok(text, add_special_tokens=False).input_ids if text else []  # noqa: E731
    before, after = (torch.tensor(encode(t), dtype=torch.long, device=frames.device) for t in (prefix, prompt))
    rows = [torch.cat([llm.embed(before), frames[i, : int(n)], llm.embed(after)]) for i, n in enumerate(flens)]
    width = max(len(r) for r in rows)
    embeds = torch.stack([torch.nn.functional.pad(r, (0, 0, width - len(r), 0)) for r in rows])  # (C, T, H)
    mask = torch.stack([torch.arange(width, device=embeds.device) >= width - len(r) for r in rows])
    out = torch.zeros(len(rows), 0, dtype=torch.long, device=embeds.device)
    for _ in range(max_new_tokens):
        hidden = llm.hidden_states(inputs_embeds=embeds, attention_mask=attention_mask_from_padding(
            mask, embeds.shape[1]))
        nxt = llm.logits(hidden[:, -1]).argmax(-1)  # (C,)
        out = torch.cat([out, nxt[:, None]], dim=1)
        embeds = torch.cat([embeds, llm.embed(nxt[:, None])], dim=1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
    eos = tok.eos_token_id
    return [tok.decode(row[: row.index(eos)] if eos in row else row) for row in out.tolist()]

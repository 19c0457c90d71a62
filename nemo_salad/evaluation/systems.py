"""The systems compared by the harness, and the protocol a speech model implements to be evaluated.

A system turns the *spoken* segments of prompts into LLM inputs; everything else (text segments, options,
scoring) is shared. Roles:

* ``topline`` — the original text LLM reading the text (:class:`TextSystem`);
* ``speech`` — the speech model hearing the spoken segments (:class:`SpeechSystem`);
* ``speech_text`` — the speech model's LLM reading the text, to measure forgetting (:class:`TextSystem`);
* ``cascade`` — an ASR model transcribes the speech, the text LLM reads the transcript (:class:`CascadeSystem`).

Text conditions return token ids for a spoken segment (:func:`~nemo_salad.evaluation.prompts.spoken_token_ids`),
the speech condition returns embeddings ``(T_i, H)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import torch
from lhotse.cut import Cut
from torch import Tensor

from nemo_salad.evaluation.prompts import spoken_token_ids

__all__ = ["ROLE_LABELS", "CascadeSystem", "IdentitySpeechEncoder", "SpeechContextEncoder", "SpeechSystem", "System",
           "TextSystem", "Transcriber", "standard_systems"]

ROLE_LABELS = {
    "topline": "Text LLM on text (topline)",
    "cascade": "ASR + text LLM (cascade)",
    "speech": "Speech model on speech",
    "speech_text": "Speech model on text",
}

SpokenInput = list[int] | Tensor


@runtime_checkable
class SpeechContextEncoder(Protocol):
    """What a speech model implements to be evaluated (the speech model class, e.g. a LightningModule).

    Attributes:
        llm (MegatronLLM): the (speech-adapted) LLM that reads the embeddings.
        tokenizer: its Hugging Face tokenizer.
    """

    llm: Any
    tokenizer: Any

    def encode_cuts(self, cuts: Sequence[Cut]) -> list[Tensor]:
        """For each cut (16 kHz mono audio + supervision), its speech embeddings ``(T_i, H)`` in the LLM's
        input-embedding space, ready to be spliced between token embeddings."""
        ...


@runtime_checkable
class Transcriber(Protocol):
    """An ASR front end of the cascade."""

    def transcribe(self, cuts: Sequence[Cut]) -> list[str]:
        """One transcript per cut, same order."""
        ...


class IdentitySpeechEncoder:
    """The identity speech path, for tests and harness checks: a cut's "speech embeddings" are the token
    embeddings of its transcript, tokenized exactly as the text conditions tokenize a spoken segment. With it,
    speech accuracy equals text accuracy exactly.

    Args:
        llm (MegatronLLM): the LLM.
        tokenizer: its tokenizer.

    >>> from nemo_salad.llm import LLMConfig, MegatronLLM
    >>> from lhotse import MonoCut, SupervisionSegment
    >>> tok = lambda text, add_special_tokens=False: {"input_ids": list(text.encode())}
    >>> enc = IdentitySpeechEncoder(MegatronLLM(LLMConfig.preset("tiny-llama")), tok)
    >>> cut = MonoCut("c", 0, 1, 0, supervisions=[SupervisionSegment("c", "c", 0, 1, text="Hi")])
    >>> enc.encode_cuts([cut])[0].shape
    torch.Size([3, 64])
    """

    def __init__(self, llm: Any, tokenizer: Any) -> None:
        self.llm, self.tokenizer = llm, tokenizer

    def encode_cuts(self, cuts: Sequence[Cut]) -> list[Tensor]:
        device = self.llm.gpt.embedding.word_embeddings.weight.device
        out = []
        for cut in cuts:
            ids = torch.tensor(spoken_token_ids(self.tokenizer, cut.supervisions[0].text), device=device)
            out.append(self.llm.embed(ids[None])[0])  # (T_i, H)
        return out


class System(Protocol):
    """A system under evaluation: see the module docstring for the roles."""

    name: str
    role: str
    llm: Any
    tokenizer: Any
    needs_audio: bool

    def spoken_inputs(self, texts: Sequence[str], cuts: Mapping[str, Cut]) -> dict[str, SpokenInput]:
        """Map each spoken text to its LLM input: token ids (text conditions) or embeddings ``(T_i, H)``."""
        ...


class TextSystem:
    """An LLM reading the text of the spoken segments (topline, or the speech model's LLM on text).

    Args:
        llm (MegatronLLM): the LLM.
        tokenizer: its tokenizer.
        name (str): result key. Default: "text_llm".
        role (str): "topline" or "speech_text". Default: "topline".

    >>> s = TextSystem(None, lambda text, add_special_tokens=False: {"input_ids": list(text.encode())})
    >>> s.spoken_inputs(["Hi"], {})
    {'Hi': [32, 72, 105]}
    """

    needs_audio = False

    def __init__(self, llm: Any, tokenizer: Any, name: str = "text_llm", role: str = "topline") -> None:
        self.llm, self.tokenizer, self.name, self.role = llm, tokenizer, name, role

    def spoken_inputs(self, texts: Sequence[str], cuts: Mapping[str, Cut]) -> dict[str, SpokenInput]:
        return {t: spoken_token_ids(self.tokenizer, t) for t in texts}


class SpeechSystem:
    """A speech model hearing the spoken segments.

    Args:
        model (SpeechContextEncoder): the speech model.
        name (str): result key. Default: "speech_model".
        batch_size (int): cuts per ``encode_cuts`` call. Default: 8.

    Raises:
        TypeError: if ``model`` lacks the protocol's members.

    >>> system = SpeechSystem(my_speech_model)  # doctest: +SKIP
    >>> system.spoken_inputs(["Which gas?"], cuts)["Which gas?"].shape  # doctest: +SKIP
    torch.Size([11, 576])
    """

    needs_audio = True
    role = "speech"

    def __init__(self, model: SpeechContextEncoder, name: str = "speech_model", batch_size: int = 8) -> None:
        if not isinstance(model, SpeechContextEncoder):
            raise TypeError(f"{type(model).__name__} does not implement SpeechContextEncoder: it needs attributes "
                            "`llm`, `tokenizer` and a method `encode_cuts(cuts) -> list[Tensor (T_i, H)]`")
        self.model, self.name, self.batch_size = model, name, batch_size
        self.llm, self.tokenizer = model.llm, model.tokenizer

    def spoken_inputs(self, texts: Sequence[str], cuts: Mapping[str, Cut]) -> dict[str, SpokenInput]:
        weight = self.llm.gpt.embedding.word_embeddings.weight
        out: dict[str, SpokenInput] = {}
        for s in range(0, len(texts), self.batch_size):
            batch = list(texts[s:s + self.batch_size])
            embs = self.model.encode_cuts([cuts[t] for t in batch])
            if len(embs) != len(batch):
                raise ValueError(f"{type(self.model).__name__}.encode_cuts returned {len(embs)} tensors for "
                                 f"{len(batch)} cuts")
            for text, emb in zip(batch, embs, strict=True):
                if emb.dim() != 2 or emb.shape[1] != weight.shape[1]:
                    raise ValueError(f"{type(self.model).__name__}.encode_cuts returned shape {tuple(emb.shape)}; "
                                     f"expected (T_i, {weight.shape[1]}) embeddings in the LLM input space")
                out[text] = emb.to(device=weight.device, dtype=weight.dtype)
        return out


class CascadeSystem:
    """ASR → text LLM: the spoken segments are transcribed, the transcripts read as text.

    Args:
        llm (MegatronLLM): the text LLM.
        tokenizer: its tokenizer.
        transcriber (Transcriber): the ASR front end.
        name (str): result key. Default: "cascade".
        batch_size (int): cuts per ``transcribe`` call. Default: 16.

    Attributes:
        transcripts (dict[str, str]): reference text -> transcript, for every segment heard so far.

    >>> from nemo_salad.evaluation.asr import ReferenceTranscriber
    >>> from nemo_salad.evaluation.spoken import TranscriptOnlySpeech
    >>> tok = lambda text, add_special_tokens=False: {"input_ids": list(text.encode())}
    >>> cascade = CascadeSystem(None, tok, ReferenceTranscriber())
    >>> cascade.spoken_inputs(["Hi"], TranscriptOnlySpeech().cuts_for("demo", ["Hi"])), cascade.transcripts
    ({'Hi': [32, 72, 105]}, {'Hi': 'Hi'})
    """

    needs_audio = True
    role = "cascade"

    def __init__(self, llm: Any, tokenizer: Any, transcriber: Transcriber, name: str = "cascade",
                 batch_size: int = 16) -> None:
        self.llm, self.tokenizer, self.transcriber = llm, tokenizer, transcriber
        self.name, self.batch_size = name, batch_size
        self.transcripts: dict[str, str] = {}

    def spoken_inputs(self, texts: Sequence[str], cuts: Mapping[str, Cut]) -> dict[str, SpokenInput]:
        todo = [t for t in texts if t not in self.transcripts]
        for s in range(0, len(todo), self.batch_size):
            batch = todo[s:s + self.batch_size]
            hyps = self.transcriber.transcribe([cuts[t] for t in batch])
            if len(hyps) != len(batch):
                raise ValueError(f"{type(self.transcriber).__name__}.transcribe returned {len(hyps)} transcripts "
                                 f"for {len(batch)} cuts")
            self.transcripts.update(zip(batch, (h.strip() for h in hyps), strict=True))
        return {t: spoken_token_ids(self.tokenizer, self.transcripts[t]) for t in texts}


def standard_systems(text_llm: Any, tokenizer: Any, speech_model: SpeechContextEncoder | None = None,
                     transcriber: Transcriber | None = None) -> list[Any]:
    """The paper's rows: topline, cascade (with a transcriber), speech and speech-on-text (with a speech model).

    >>> [s.role for s in standard_systems(None, None)]
    ['topline']
    """
    systems: list[Any] = [TextSystem(text_llm, tokenizer)]
    if transcriber is not None:
        systems.append(CascadeSystem(text_llm, tokenizer, transcriber))
    if speech_model is not None:
        systems.append(SpeechSystem(speech_model))
        systems.append(TextSystem(speech_model.llm, speech_model.tokenizer, name="speech_model_text",
                                  role="speech_text"))
    return systems

"""The text teacher: the original LLM reading the transcript, as an object chosen once by ``model.teacher.mode``.

* :class:`CopyTeacher` (``copy``) — a separate frozen copy of the original LLM (full fine-tuning of the student, as
  in the paper). It lives in the network as ``module.teacher``.
* :class:`SharedTeacher` (``shared``) — the student's own weights with LoRA switched off, or the frozen student LLM
  itself: no second copy in memory. Only valid when the student LLM is frozen or trained through LoRA.
* ``none`` — no teacher (:func:`make_teacher` returns None): NLL only.

A teacher works on a :class:`~nemo_salad.models.network.SaladNetwork` (reached through megatron's wrappers by the
model), so the same object serves a wrapped and an unwrapped network. Legend: ``R`` rows, ``T`` positions, ``H``
width, ``V`` vocabulary (this rank's shard under tensor parallelism).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from nemo_salad.llm import LLMConfig, MegatronLLM
from nemo_salad.modules.lora import lora_disabled

__all__ = ["TEACHER_MODES", "CopyTeacher", "SharedTeacher", "Teacher", "make_teacher"]

TEACHER_MODES = ("copy", "shared", "none")


class Teacher:
    """What distillation and the gap metrics need from the original LLM."""

    mode = ""

    def check(self, lora: bool, frozen: bool) -> None:
        """Refuse a student setting this teacher cannot serve (raises ValueError)."""

    def build(self, llm: MegatronLLM, arch: dict[str, Any], attention: str) -> MegatronLLM | None:
        """The network's ``teacher`` module, built from the student before LoRA is applied (None: no module)."""
        return None

    def _llm(self, network: Any) -> MegatronLLM:
        raise NotImplementedError

    def _context(self, network: Any) -> Any:
        return lora_disabled(network.llm)

    @torch.no_grad()
    def hidden_states(self, network: Any, input_ids: Tensor, attention_mask: Tensor | None = None,
                      position_ids: Tensor | None = None) -> Tensor:
        """Final hidden states ``(R, T, H)`` of the all-text sequence, without gradients."""
        with self._context(network):
            return self._llm(network).hidden_states(input_ids=input_ids, attention_mask=attention_mask,
                                                    position_ids=position_ids)

    def logits(self, network: Any, hidden: Tensor) -> Tensor:
        """Project hidden states ``(..., H)`` with the teacher's own output layer: ``(..., V)``."""
        with self._context(network):
            return self._llm(network).logits(hidden)

    def output_weight(self, network: Any) -> Tensor:
        """The teacher's ``(V, H)`` output projection, without gradients."""
        return self._llm(network).output_weight.detach()


class CopyTeacher(Teacher):
    """A separate frozen copy of the original LLM (``module.teacher``)."""

    mode = "copy"

    def build(self, llm: MegatronLLM, arch: dict[str, Any], attention: str) -> MegatronLLM:
        teacher = MegatronLLM(LLMConfig.from_dict(arch), attention=attention)
        teacher.load_state_dict(llm.state_dict())
        return teacher.requires_grad_(False).eval()

    def _llm(self, network: Any) -> MegatronLLM:
        return network.teacher

    def _context(self, network: Any) -> Any:
        import contextlib

        return contextlib.nullcontext()


class SharedTeacher(Teacher):
    """The student LLM with LoRA off (or the frozen student itself)."""

    mode = "shared"

    def check(self, lora: bool, frozen: bool) -> None:
        if not lora and not frozen:
            raise ValueError("model.teacher.mode=shared needs a frozen student LLM (model.llm.freeze=true) or LoRA "
                             "(model.llm.lora); with full fine-tuning use mode=copy")

    def _llm(self, network: Any) -> MegatronLLM:
        return network.llm


def make_teacher(mode: str) -> Teacher | None:
    """The teacher of ``model.teacher.mode``; None for ``none``.

    >>> make_teacher("shared").mode, make_teacher("none")
    ('shared', None)
    """
    if mode not in TEACHER_MODES:
        raise ValueError(f"model.teacher.mode={mode!r}; expected one of {TEACHER_MODES}")
    return {"copy": CopyTeacher, "shared": SharedTeacher}.get(mode, lambda: None)()

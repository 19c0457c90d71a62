"""The ``model`` section's schema: teacher, loss and optimizer settings typed, each default written once.

The parts (``llm``, ``encoder``, ``adapter``, ``tokenizer``) stay free-form: each builder checks its own keys. The loss
defaults are :class:`~nemo_salad.losses.DistillationLoss`'s signature; ``optim`` is
:class:`~nemo_salad.parts.optim.OptimConfig`.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf

from nemo_salad.losses import DistillationLoss
from nemo_salad.parts.optim import OptimConfig
from nemo_salad.parts.schema import typed_section

__all__ = ["OLD_MODEL_KEYS", "LossConfig", "ModelConfig", "TeacherConfig", "model_config"]


_LOSS = inspect.signature(DistillationLoss.__init__).parameters


@dataclass
class LossConfig:
    """``model.loss``: the keyword arguments of :class:`~nemo_salad.losses.DistillationLoss` (its defaults)."""

    alpha: float = _LOSS["alpha"].default
    direction: str = _LOSS["direction"].default  # forward | reverse | js
    temperature: float = _LOSS["temperature"].default
    chunk_size: int = _LOSS["chunk_size"].default


@dataclass
class TeacherConfig:
    """``model.teacher``: ``copy`` (a frozen copy of the LLM), ``shared`` (the student, LoRA off) or ``none``."""

    mode: str = "copy"


#: keys of ``model`` configs saved by earlier versions, ignored when a ``.nemo`` is restored
OLD_MODEL_KEYS = ("splice", "on_bad_sample")


@dataclass
class ModelConfig:
    """``model``: the parts (free-form: each builder checks its own keys) and the typed training settings."""

    llm: dict[str, Any] = MISSING
    encoder: dict[str, Any] = MISSING
    adapter: dict[str, Any] = MISSING
    tokenizer: dict[str, Any] = field(default_factory=dict)  # dir (null: the LLM's), or files (in a .nemo)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    target: str | None = None  # NeMo's bookkeeping (ModelPT writes both into a saved model's config)
    nemo_version: str | None = None


def model_config(cfg: Any) -> DictConfig:
    """The ``model`` section with every default filled in and :data:`OLD_MODEL_KEYS` dropped, untyped (NeMo adds
    its own keys); interpolations are resolved first.

    Raises:
        ConfigSchemaError: for a value of the wrong type or an unknown key, naming the full key.

    >>> model_config({"llm": {}, "encoder": {}, "adapter": {}, "splice": {"x": 1}}).loss.temperature
    1.0
    """
    plain = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg or {})
    for key in OLD_MODEL_KEYS:
        plain.pop(key, None)
    return OmegaConf.create(OmegaConf.to_container(typed_section(ModelConfig, plain, "model config", "model.")))

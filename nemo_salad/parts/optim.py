"""AdamW with per-part learning rates and the warmup–stable–decay schedule of the paper.

Parameter groups: the modality adapter, the speech encoder (when trainable), the LLM (full fine-tuning) and
its LoRA matrices, each with its own learning rate; biases and normalisation weights get no weight decay.
Schedule (per optimizer step): linear warmup over ``warmup_steps``, constant, then linear decay to
``min_lr_ratio`` over the last ``decay_fraction`` of ``max_steps`` (paper: 500 warmup steps, decay over the last
20%). Stage II uses ``warmup_steps: 0, decay_fraction: 1.0`` to decay from the resumed rate to 0.

Config (``model.optim``): the fields of :class:`OptimConfig`, which holds their defaults; every function here takes
the section as a mapping (missing keys take those defaults) or an :class:`OptimConfig`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch import nn

__all__ = ["OptimConfig", "build_optimizer", "optim_config", "param_groups", "part_learning_rates", "wsd_factor",
           "wsd_schedule"]


@dataclass
class OptimConfig:
    """``model.optim``: per-part AdamW learning rates and the warmup-stable-decay schedule (the module docstring).

    Also the training config's schema of that section (:mod:`nemo_salad.recipes.schema`).
    """

    adapter_lr: float = 1e-3
    encoder_lr: float | None = None  # null: adapter_lr
    llm_lr: float = 5e-5
    lora_lr: float | None = None  # null: adapter_lr
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    warmup_steps: int = 500  # paper: 500
    decay_fraction: float = 0.2  # linear decay over the last 20% of trainer.max_steps (paper)
    min_lr_ratio: float = 0.0


def optim_config(cfg: OptimConfig | Mapping[str, Any] | None) -> OptimConfig:
    """``model.optim`` as an :class:`OptimConfig`: missing keys take its defaults, values its types.

    Raises:
        ValueError: for an unknown key or a value of the wrong type, naming it.

    >>> optim_config({"adapter_lr": 2e-3}).lora_lr is None
    True
    """
    if isinstance(cfg, OptimConfig):
        return cfg
    plain = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg or {})
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(OptimConfig), plain))
    except OmegaConfBaseException as err:  # an unknown key, a value of the wrong type
        raise ValueError(f"model.optim: {str(err).splitlines()[0]} (keys: {sorted(OptimConfig.__dataclass_fields__)})"
                         ) from err


def wsd_factor(step: int, max_steps: int, warmup_steps: int, decay_fraction: float, min_lr_ratio: float = 0.0) -> float:
    """Learning-rate multiplier at ``step`` (0-based) of the warmup–stable–decay schedule.

    >>> [round(wsd_factor(s, 10, 2, 0.2), 2) for s in range(11)]
    [0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.0]
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = int(round(decay_fraction * max_steps))
    decay_start = max_steps - decay_steps
    if decay_steps <= 0 or step < decay_start:
        return 1.0
    progress = min(1.0, (step - decay_start) / decay_steps)  # reaches min_lr_ratio at max_steps
    return 1.0 - (1.0 - min_lr_ratio) * progress


def wsd_schedule(cfg: OptimConfig | Mapping[str, Any], max_steps: int) -> Callable[[int], float]:
    """The per-step learning-rate multiplier of ``model.optim`` (for ``LambdaLR``), validated now.

    Raises:
        ValueError: if ``max_steps`` is not positive.
    """
    if max_steps is None or max_steps <= 0:
        raise ValueError(f"trainer.max_steps={max_steps}: the warmup-stable-decay schedule needs a positive max_steps")
    o = optim_config(cfg)
    return lambda step: wsd_factor(step, max_steps, o.warmup_steps, o.decay_fraction, o.min_lr_ratio)


def part_learning_rates(cfg: OptimConfig | Mapping[str, Any]) -> dict[str, float]:
    """Learning rate of each part (``adapter``, ``encoder``, ``llm``, ``lora``); null encoder/LoRA rates follow the
    adapter's.

    >>> part_learning_rates({"adapter_lr": 1e-3, "llm_lr": 5e-5})["lora"]
    0.001
    """
    o = optim_config(cfg)
    return {"adapter": o.adapter_lr, "encoder": o.adapter_lr if o.encoder_lr is None else o.encoder_lr,
            "llm": o.llm_lr, "lora": o.adapter_lr if o.lora_lr is None else o.lora_lr}


def _no_decay(name: str, param: nn.Parameter) -> bool:
    return param.ndim < 2 or "norm" in name or name.endswith(".bias")


def param_groups(model: Any, cfg: OptimConfig | Mapping[str, Any]) -> list[dict[str, Any]]:
    """Trainable parameters of ``model`` grouped by part (adapter, encoder, llm, lora) and by decay.

    Raises:
        ValueError: if nothing is trainable.
    """
    cfg = optim_config(cfg)
    lrs, wd = part_learning_rates(cfg), cfg.weight_decay
    groups: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for part in ("adapter", "encoder", "llm"):
        module = getattr(model, part)
        for name, param in module.named_parameters():
            if not param.requires_grad:
                continue
            key = ("lora" if part == "llm" and ".lora." in name else part, _no_decay(name, param))
            groups.setdefault(key, []).append(param)
    if not groups:
        raise ValueError("no trainable parameters: the adapter, encoder and LLM are all frozen")
    return [{"params": params, "lr": lrs[part], "weight_decay": 0.0 if no_decay else wd, "name": f"{part}"
             + ("/no_decay" if no_decay else "")} for (part, no_decay), params in sorted(groups.items())]


def build_optimizer(model: Any, cfg: OptimConfig | Mapping[str, Any], max_steps: int) -> dict[str, Any]:
    """``configure_optimizers`` result: AdamW + per-step WSD LambdaLR."""
    cfg = optim_config(cfg)
    groups = param_groups(model, cfg)
    opt = torch.optim.AdamW(groups, betas=tuple(cfg.betas), eps=cfg.eps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, wsd_schedule(cfg, max_steps))
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 1}}

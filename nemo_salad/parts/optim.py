"""AdamW with per-part learning rates and the warmup–stable–decay schedule of the paper.

Parameter groups: the modality adapter, the speech encoder (when trainable), the LLM (full fine-tuning) and
its LoRA matrices, each with its own learning rate; biases and normalisation weights get no weight decay.
Schedule (per optimizer step): linear warmup over ``warmup_steps``, constant, then linear decay to
``min_lr_ratio`` over the last ``decay_fraction`` of ``max_steps`` (paper: 500 warmup steps, decay over the last
20%). Stage II uses ``warmup_steps: 0, decay_fraction: 1.0`` to decay from the resumed rate to 0.

Config (``model.optim``)::

    adapter_lr: 1.0e-3
    encoder_lr: null         # null: same as adapter_lr
    llm_lr: 5.0e-5
    lora_lr: null            # null: same as adapter_lr
    weight_decay: 0.1
    betas: [0.9, 0.95]
    eps: 1.0e-8
    warmup_steps: 500
    decay_fraction: 0.2
    min_lr_ratio: 0.0
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

__all__ = ["build_optimizer", "param_groups", "part_learning_rates", "wsd_factor", "wsd_schedule"]


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


def wsd_schedule(cfg: dict[str, Any], max_steps: int) -> Callable[[int], float]:
    """The per-step learning-rate multiplier of ``model.optim`` (for ``LambdaLR``), validated now.

    Raises:
        ValueError: if ``max_steps`` is not positive.
    """
    if max_steps is None or max_steps <= 0:
        raise ValueError(f"trainer.max_steps={max_steps}: the warmup-stable-decay schedule needs a positive max_steps")
    warmup, decay = int(cfg.get("warmup_steps", 500)), float(cfg.get("decay_fraction", 0.2))
    floor = float(cfg.get("min_lr_ratio", 0.0))
    return lambda step: wsd_factor(step, max_steps, warmup, decay, floor)


def part_learning_rates(cfg: dict[str, Any]) -> dict[str, float]:
    """Learning rate of each part (``adapter``, ``encoder``, ``llm``, ``lora``); null encoder/LoRA rates follow the
    adapter's.

    >>> part_learning_rates({"adapter_lr": 1e-3, "llm_lr": 5e-5})["lora"]
    0.001
    """
    adapter_lr = float(cfg.get("adapter_lr", 1e-3))
    return {"adapter": adapter_lr, "encoder": float(cfg.get("encoder_lr") or adapter_lr),
            "llm": float(cfg.get("llm_lr", 5e-5)), "lora": float(cfg.get("lora_lr") or adapter_lr)}


def _no_decay(name: str, param: nn.Parameter) -> bool:
    return param.ndim < 2 or "norm" in name or name.endswith(".bias")


def param_groups(model: Any, cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """Trainable parameters of ``model`` grouped by part (adapter, encoder, llm, lora) and by decay.

    Raises:
        ValueError: if nothing is trainable.
    """
    lrs = part_learning_rates(cfg)
    wd = float(cfg.get("weight_decay", 0.1))
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


def build_optimizer(model: Any, cfg: dict[str, Any], max_steps: int) -> dict[str, Any]:
    """``configure_optimizers`` result: AdamW + per-step WSD LambdaLR."""
    groups = param_groups(model, cfg)
    opt = torch.optim.AdamW(groups, betas=tuple(cfg.get("betas", (0.9, 0.95))), eps=float(cfg.get("eps", 1e-8)))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, wsd_schedule(cfg, max_steps))
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 1}}

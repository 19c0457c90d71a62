"""Continue another run's optimizer state (``init_from`` with ``init_optimizer: true``): Stage II of SALAD resumes the
Stage I checkpoint taken before its learning-rate decay with its AdamW moments and step counts, but with its own
schedule, data and step count.

Only the per-parameter state moves (``exp_avg``, ``exp_avg_sq``, ``step``): the parameter groups keep the
hyper-parameters the new run's optimizer and schedule gave them (learning rates, ``initial_lr``, weight decay, betas,
eps), so Stage II's schedule decides the rate from its first step. The checkpoint's groups must be the new
optimizer's: the same names (:func:`nemo_salad.parts.optim.param_groups`), the same number of parameters in each,
and moments of each parameter's shape; a difference is named, before anything is loaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from nemo.utils import logging

from nemo_salad.checkpoint.checkpoint_io import SafeCheckpointIO

__all__ = ["checkpoint_optimizer_state", "restore_optimizer_state"]


def checkpoint_optimizer_state(path: str) -> dict[str, Any]:
    """The state dict of the one optimizer a Lightning checkpoint saved (read with ``weights_only=True``).

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: for a checkpoint without optimizer state (saved with ``save_weights_only``) or with several.

    >>> checkpoint_optimizer_state("/no/such/run.ckpt")
    Traceback (most recent call last):
    ...
    FileNotFoundError: Checkpoint file not found: /no/such/run.ckpt
    """
    state = SafeCheckpointIO().load_checkpoint(path, map_location="cpu")
    states = state.get("optimizer_states") if isinstance(state, Mapping) else None
    if not states:
        raise ValueError(f"init_from={path} holds no optimizer state (a weights-only checkpoint): set "
                         "init_optimizer=false to start from its weights with fresh AdamW moments")
    if len(states) != 1:
        raise ValueError(f"init_from={path} holds {len(states)} optimizer states; SaladModel trains one optimizer")
    return states[0]


def _group_layout(groups: list[Mapping[str, Any]]) -> str:
    """``"adapter(4), llm/no_decay(6)"``: each group's name and parameter count."""
    return ", ".join(f"{g.get('name', f'group{i}')}({len(g['params'])})" for i, g in enumerate(groups))


def _check_fits(optimizer: torch.optim.Optimizer, saved: Mapping[str, Any], names: Mapping[int, str],
                source: str) -> None:
    """Raise ``ValueError`` naming what differs between the checkpoint's groups (and moments) and ``optimizer``'s."""
    mine, theirs = optimizer.param_groups, list(saved.get("param_groups") or [])
    if [(g.get("name"), len(g["params"])) for g in mine] != [(g.get("name"), len(g["params"])) for g in theirs]:
        raise ValueError(f"init_from={source}: its optimizer's parameter groups do not fit this model's (checkpoint: "
                         f"{_group_layout(theirs)}; this model: {_group_layout(mine)}); the trainable parts (LoRA, "
                         "frozen encoder or LLM) must be those of the run that saved it, or set init_optimizer=false")
    wrong = []
    for group, stored in zip(mine, theirs):
        for param, index in zip(group["params"], stored["params"]):
            moment = (saved.get("state") or {}).get(index, {}).get("exp_avg")
            if moment is not None and tuple(moment.shape) != tuple(param.shape):
                wrong.append(f"{group.get('name')}: {names.get(id(param), '?')} {tuple(param.shape)} "
                             f"(checkpoint moments {tuple(moment.shape)})")
    if wrong:
        raise ValueError(f"init_from={source}: {len(wrong)} parameter(s) differ in shape from the checkpoint's "
                         f"optimizer state: {'; '.join(wrong[:5])}{' ...' if len(wrong) > 5 else ''}")


def restore_optimizer_state(optimizer: torch.optim.Optimizer, path: str, names: Mapping[int, str] | None = None,
                            state: Mapping[str, Any] | None = None) -> float:
    """Load a checkpoint's per-parameter optimizer state into a freshly built optimizer, keeping its groups'
    hyper-parameters.

    Args:
        optimizer (torch.optim.Optimizer): the new run's optimizer (e.g. AdamW of
            :func:`nemo_salad.parts.optim.build_optimizer`), before its first step.
        path (str): the Lightning checkpoint (``<name>-pre-decay.ckpt``), named in messages.
        names (Mapping[int, str] | None): ``id(parameter) -> name``, for the messages. Default: none.
        state (Mapping | None): the checkpoint's optimizer state dict, if already read; else read from ``path``.

    Returns:
        float: the largest Adam step count restored (the optimizer steps the checkpoint's run took).

    Raises:
        ValueError: if the groups or the moments' shapes differ (naming them), or the checkpoint holds no
            optimizer state.

    >>> w = torch.nn.Parameter(torch.ones(2))
    >>> old = torch.optim.AdamW([{"params": [w], "lr": 0.1, "name": "adapter"}])
    >>> w.grad = torch.ones(2); old.step()
    >>> new = torch.optim.AdamW([{"params": [w], "lr": 0.05, "name": "adapter"}])
    >>> restore_optimizer_state(new, "run.ckpt", state=old.state_dict())
    1.0
    >>> new.param_groups[0]["lr"], torch.equal(new.state[w]["exp_avg"], old.state[w]["exp_avg"])
    (0.05, True)
    """
    saved = dict(checkpoint_optimizer_state(path) if state is None else state)
    _check_fits(optimizer, saved, names or {}, path)
    hyper = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    optimizer.load_state_dict(saved)  # moments cast to each parameter's dtype and device; `step` kept as saved
    changed = []
    for group, own, stored in zip(optimizer.param_groups, hyper, saved["param_groups"]):
        if stored.get("lr") != own.get("lr"):
            changed.append(f"{own.get('name')} {own.get('lr'):g} (checkpoint {stored.get('lr'):g})")
        group.update(own)
    steps = [float(s["step"]) for s in optimizer.state.values() if "step" in s]
    step = max(steps, default=0.0)
    logging.info(f"init_from={path}: continuing its optimizer state (AdamW moments after {step:g} steps) with this "
                 "run's learning rates and schedule")
    if changed:
        logging.info(f"init_from={path}: this run starts at other learning rates than the checkpoint's last: "
                     + ", ".join(changed))
    return step

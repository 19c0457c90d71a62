"""Checkpointable state for megatron's distributed optimizer when it falls back to torch's Adam.

Without TransformerEngine or apex, megatron-core 0.15's ``DistributedOptimizer`` drives ``torch.optim.AdamW``. Three
things then go wrong with its checkpoints (none with TE's or apex's fused Adam):

1. torch creates Adam's state lazily at the first step, but ``DistributedOptimizer.state_dict`` requires one
   ``step`` shared by every state: a checkpoint saved before the first step fails, and so does *loading* one,
   because loading starts by asking the freshly built optimizer for its state dict.
2. loading the fully reshardable format then stops with ``KeyError: 'step'``: it copies every state entry of a
   parameter from the checkpoint's, which keeps ``step`` elsewhere (in the parameter groups).
3. on load it gives every parameter's state the *same* ``step`` tensor; torch's Adam increments each parameter's
   ``step`` in place, so after a resume the shared count advanced once per parameter per step and the bias
   correction of every later step was wrong.

:func:`checkpointable_torch_adam` fixes these on a built megatron optimizer: it creates the state torch would create
at the first step (zero moments, ``step`` 0: the first step is unchanged), leaves ``step`` out of the per-parameter
copy (megatron sets it from the parameter groups) and gives every parameter its own ``step`` after each load. With
TE or apex it does nothing.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["checkpointable_torch_adam", "uses_torch_adam"]


def _parts(mcore_optimizer: Any) -> list[Any]:
    """The distributed optimizers inside megatron's (possibly chained) optimizer that drive torch's Adam/AdamW."""
    from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer

    parts = getattr(mcore_optimizer, "chained_optimizers", None) or [mcore_optimizer]
    return [p for p in parts if isinstance(p, DistributedOptimizer)
            and isinstance(p.optimizer, (torch.optim.Adam, torch.optim.AdamW))]


def uses_torch_adam(mcore_optimizer: Any) -> bool:
    """True when megatron's distributed optimizer runs torch's Adam (no TransformerEngine or apex)."""
    from megatron.core.optimizer import distrib_optimizer

    return not distrib_optimizer.HAVE_APEX_OR_TE and bool(_parts(mcore_optimizer))


def _init_state(adam: torch.optim.Optimizer) -> None:
    """Torch's lazy Adam state, created now: zero moments and a per-parameter ``step`` of 0 (fp32 on the CPU, as
    torch makes it for the non-fused, non-capturable implementation that megatron selects)."""
    for group in adam.param_groups:
        for p in group["params"]:
            state = adam.state[p]
            if state:
                continue
            state["step"] = torch.tensor(0.0, dtype=torch.float32)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            if group.get("amsgrad"):
                state["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)


def _own_steps(adam: torch.optim.Optimizer) -> None:
    """Give every parameter's state its own ``step`` tensor (megatron's load shares one among all)."""
    for state in adam.state.values():
        if isinstance(state.get("step"), torch.Tensor):
            state["step"] = state["step"].detach().clone()


def checkpointable_torch_adam(mcore_optimizer: Any) -> Any:
    """Make megatron's distributed optimizer over torch's Adam save before its first step and resume exactly.

    Args:
        mcore_optimizer: what ``megatron.core.optimizer.get_megatron_optimizer`` returned (a ``ChainedOptimizer`` or
            a ``DistributedOptimizer``).

    Returns:
        The same optimizer (its state initialised, its ``load_state_dict`` giving each parameter its own step).
    """
    if not uses_torch_adam(mcore_optimizer):
        return mcore_optimizer
    for part in _parts(mcore_optimizer):
        _init_state(part.optimizer)
        if getattr(part, "_salad_own_steps", False):
            continue
        load, set_states = part.load_state_dict, part._set_main_param_and_optimizer_states

        def load_state_dict(state_dict: dict[str, Any], _load: Any = load, _adam: Any = part.optimizer) -> None:
            _load(state_dict)
            _own_steps(_adam)

        def set_main_param_and_optimizer_states(model_param: Any, tensors: dict[str, Any], _set: Any = set_states,
                                                _part: Any = part) -> None:
            if "step" not in tensors:  # the step stays as load_state_dict set it from the parameter groups
                step = _part._get_main_param_and_optimizer_states(model_param).get("step")
                tensors = tensors if step is None else {**tensors, "step": step}
            _set(model_param, tensors)

        part.load_state_dict = load_state_dict
        part._set_main_param_and_optimizer_states = set_main_param_and_optimizer_states
        part._salad_own_steps = True
    return mcore_optimizer

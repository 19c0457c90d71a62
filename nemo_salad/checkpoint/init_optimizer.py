"""Continue another run's optimizer state (``init_from`` with ``init_optimizer: true``): Stage II of SALAD resumes the
Stage I checkpoint taken before its learning-rate decay with its AdamW moments and step counts, but with its own
schedule, data and step count.

Only the per-parameter state moves (``exp_avg``, ``exp_avg_sq``, ``step``; under the megatron strategy also the
fp32 main parameters of megatron's distributed optimizer): the parameter groups keep the hyper-parameters the new
run's optimizer and schedule gave them (learning rates, ``initial_lr``, megatron's ``max_lr`` / ``min_lr`` /
``pre_mult_lr``, weight decay, betas, eps), so Stage II's schedule decides the rate from its first step.

* :func:`restore_optimizer_state`: a Lightning checkpoint (the plain path's AdamW). The checkpoint's groups must be
  the new optimizer's: the same names (:func:`nemo_salad.parts.optim.param_groups`), the same number of parameters in
  each, and moments of each parameter's shape; a difference is named, before anything is loaded.
* :func:`restore_megatron_optimizer_state`: a megatron distributed checkpoint (``trainer.strategy: megatron``), read
  by NeMo's selective restore (``RestoreConfig(load_optim_state=True)``) without the trainer's loops or its
  learning-rate scheduler. Its state is stored per parameter name, so it loads at another tensor- or data-parallel
  size and another adapter-to-LLM rate ratio; it must hold the state of every trainable parameter of the new run.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from nemo.utils import logging

from nemo_salad.checkpoint.checkpoint_io import SafeCheckpointIO

__all__ = ["checkpoint_optimizer_state", "restore_megatron_optimizer_state", "restore_optimizer_state"]


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


#: parameter-group keys that are not hyper-parameters: ``step`` is where megatron keeps Adam's step count
#: (TransformerEngine's / apex's fused Adam read it there; for torch's Adam it is copied into every parameter's state)
_STATE_KEYS = ("params", "step")


def _hyper_parameters(groups: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each parameter group's hyper-parameters (everything but its parameters and step count)."""
    return [{k: v for k, v in g.items() if k not in _STATE_KEYS} for g in groups]


def _optimizer_parts(mcore_optimizer: Any) -> list[Any]:
    """The optimizers inside megatron's (possibly chained) optimizer."""
    return list(getattr(mcore_optimizer, "chained_optimizers", None) or [mcore_optimizer])


def _with_own_groups(state_dict: Mapping[str, Any], groups: list[Mapping[str, Any]], source: str,
                     saved: list[list[dict[str, Any]]]) -> Mapping[str, Any]:
    """A distributed optimizer's checkpoint state whose parameter groups are ``groups``' hyper-parameters with the
    checkpoint's step count; the checkpoint's own groups are appended to ``saved``.

    Megatron pairs the checkpoint's groups with the optimizer's by ``wd_mult`` / ``lr_mult`` and takes every
    hyper-parameter from the checkpoint; a run at another adapter-to-LLM rate ratio (``lr_mult``) would find no pair.
    The per-parameter state (main parameters, moments) is loaded by parameter name, apart from the groups.

    >>> state = {"optimizer": {"param_groups": [{"lr": 0.1, "lr_mult": 2.0, "step": 7}]}, "param_state": {}}
    >>> _with_own_groups(state, [{"params": [0], "lr": 0.05, "lr_mult": 3.0}], "s1", [])["optimizer"]
    {'param_groups': [{'lr': 0.05, 'lr_mult': 3.0, 'step': 7}]}
    """
    inner = state_dict.get("optimizer")
    if not isinstance(inner, Mapping) or "param_groups" not in inner:
        return state_dict
    saved.append([dict(g) for g in inner["param_groups"]])
    steps = {g["step"] for g in inner["param_groups"] if g.get("step") is not None}
    if len(steps) > 1:
        raise ValueError(f"init_from={source}: its optimizer's parameter groups hold different step counts {steps}")
    own = _hyper_parameters(groups)
    if steps:
        step = steps.pop()
        for group in own:
            group["step"] = step
    return {**state_dict, "optimizer": {**inner, "param_groups": own}}


def _megatron_adam_step(mcore_optimizer: Any) -> float:
    """The largest Adam step count of megatron's optimizer: per parameter for torch's Adam, per parameter group for
    TransformerEngine's or apex's."""
    steps = [float(s["step"]) for part in _optimizer_parts(mcore_optimizer) for s in part.optimizer.state.values()
             if isinstance(s, Mapping) and "step" in s]
    steps += [float(g["step"]) for g in mcore_optimizer.param_groups if g.get("step") is not None]
    return max(steps, default=0.0)


def restore_megatron_optimizer_state(strategy: Any, path: str) -> float:
    """Load a megatron distributed checkpoint's optimizer state into the new run's megatron optimizer (built by
    :func:`nemo_salad.recipes.megatron.megatron_optimizer`), keeping its groups' hyper-parameters.

    NeMo's ``MegatronStrategy.selective_restore`` reads the checkpoint with ``RestoreConfig(load_model_state=False,
    load_optim_state=True)`` (the weights were loaded when the model was built, ``SaladModel.init_from``) through
    the strategy's checkpoint IO, inside :func:`~nemo_salad.checkpoint.safe_checkpoint.safe_checkpoint_reading`.
    Megatron's distributed optimizer then holds the checkpoint's fp32 main parameters, Adam moments and step count
    (re-sharded to this run's tensor- and data-parallel layout: the checkpoint is fully reshardable). Megatron would
    also take the checkpoint's parameter groups (learning rates, ``max_lr`` / ``min_lr``, weight decay); they are
    this run's instead (:func:`_with_own_groups`), so its schedule applies from its step 0. The trainer's loops
    (global step) and learning-rate scheduler are not restored.

    Args:
        strategy (MegatronStrategy): the trainer's strategy, set up (its optimizer built, before the first step).
        path (str): the checkpoint: a ``MegatronStrategy`` checkpoint folder, or its ``<folder>.ckpt`` name.

    Returns:
        float: the largest Adam step count restored (the optimizer steps the checkpoint's run took).

    Raises:
        ValueError: if ``path`` is not a megatron distributed checkpoint (a plain path's Lightning checkpoint: its
            AdamW state does not load into megatron's distributed optimizer) or the strategy holds other than one
            optimizer.
        RuntimeError: if NeMo's load fails (e.g. the checkpoint lacks the state of a trainable parameter of this
            run), or the restore left this run's parameter groups changed.
    """
    from nemo.lightning.pytorch.strategies.utils import RestoreConfig

    from nemo_salad.checkpoint.distributed import is_distributed_checkpoint, resolve_checkpoint
    from nemo_salad.checkpoint.safe_checkpoint import safe_checkpoint_reading

    folder = resolve_checkpoint(str(path))
    if not is_distributed_checkpoint(folder):
        raise ValueError(f"init_from={path}: not a megatron distributed checkpoint; under trainer.strategy=megatron "
                         "only a megatron run's optimizer state loads (a plain run's AdamW state does not fit "
                         "megatron's distributed optimizer): set init_optimizer=false for its weights only")
    if len(strategy.optimizers) != 1:
        raise ValueError(f"init_optimizer: expected one optimizer, the strategy has {len(strategy.optimizers)}")
    optimizer = strategy.optimizers[0]
    own = _hyper_parameters(optimizer.param_groups)
    saved: list[list[dict[str, Any]]] = []
    parts = _optimizer_parts(optimizer.mcore_optimizer)
    loads = [part.__dict__.get("load_state_dict") for part in parts]  # instance wrappers (torch_adam_state)
    for part in parts:
        def load_state_dict(state_dict: Mapping[str, Any], _load: Any = part.load_state_dict, _part: Any = part
                            ) -> None:
            _load(_with_own_groups(state_dict, _part.optimizer.param_groups, str(path), saved))

        part.load_state_dict = load_state_dict
    previous = strategy.restore_config
    strategy.restore_config = RestoreConfig(path=str(folder), load_model_state=False, load_optim_state=True,
                                            load_artifacts=False)
    try:
        with safe_checkpoint_reading(folder):
            strategy.selective_restore()
    finally:
        strategy.restore_config = previous
        for part, load in zip(parts, loads):
            if load is None:
                del part.load_state_dict
            else:
                part.load_state_dict = load
    if _hyper_parameters(optimizer.param_groups) != own:
        raise RuntimeError(f"init_from={path}: restoring its optimizer state changed this run's parameter groups")
    step = _megatron_adam_step(optimizer.mcore_optimizer)
    logging.info(f"init_from={path}: continuing its optimizer state (megatron's distributed optimizer: fp32 main "
                 f"parameters and Adam moments after {step:g} steps) with this run's learning rates and schedule")
    theirs = sorted({float(g["lr"]) for groups in saved[-len(parts):] for g in groups if "lr" in g})
    mine = sorted({float(g["lr"]) for g in own if "lr" in g})
    if saved and theirs != mine:
        logging.info(f"init_from={path}: this run starts at other learning rates than the checkpoint's last: "
                     f"{', '.join(f'{lr:g}' for lr in mine)} (checkpoint {', '.join(f'{lr:g}' for lr in theirs)})")
    return step

"""One MegatronStrategy training step outside ``trainer.fit``: the objects NeMo-2's strategy builds, wired the way it
wires them, for benchmarks and step-by-step checks.

:func:`wrap` puts a built :class:`~nemo_salad.models.SaladModel` into ``MegatronParallel`` with the recipe's
precision plugin (``Float16Module`` for bf16), megatron ``DistributedDataParallel`` (gradient buffers), the data
sampler (micro-batches per step) and the megatron optimizer of :func:`~nemo_salad.recipes.megatron.megatron_optimizer`
with its schedule; :func:`train_step` runs megatron's schedule over one step's micro-batches and the optimizer.
Megatron's parallel state must exist (``init_model_parallel`` or the strategy's).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["MegatronLoop", "train_step", "wrap"]


@dataclass
class MegatronLoop:
    """What :func:`train_step` needs: the wrapped model, megatron's optimizer and the learning-rate schedule."""

    parallel: Any  # nemo.lightning.MegatronParallel
    optimizer: Any
    scheduler: Any


def wrap(model: Any, optim: dict[str, Any], max_steps: int, precision: str = "bf16-mixed",
         megatron: dict[str, Any] | None = None, clip_grad: float | None = None) -> MegatronLoop:
    """Wrap a built SaladModel as ``MegatronStrategy`` does at the start of ``fit``.

    Args:
        model (SaladModel): built (``configure_model`` called), on its device.
        optim (dict): the ``model.optim`` section. max_steps (int): the schedule's length.
        precision (str): ``bf16-mixed`` (``Float16Module``, fp32 master weights) or ``32``. Default: bf16-mixed.
        megatron (dict | None): the ``megatron`` section. clip_grad (float | None): gradient-norm clipping.
    """
    import torch.distributed as dist
    from nemo.lightning.megatron_parallel import MegatronParallel

    from nemo_salad.recipes.megatron import megatron_optimizer, megatron_trainer_kwargs

    world = dist.get_world_size() if dist.is_initialized() else 1  # every rank of this run: its device count
    kwargs = megatron_trainer_kwargs({"strategy": "megatron", "precision": precision, "devices": world}, megatron)
    strategy, plugin = kwargs["strategy"], kwargs["plugins"][-1]
    parallel = MegatronParallel(model, precision_plugin=plugin, cpu=not next(model.parameters()).is_cuda,
                                ddp_config=strategy.ddp_config, convert_module_fn=plugin.convert_module)
    parallel.callbacks.add(strategy.data_sampler)  # sets the micro-batch count of each step
    model.megatron = True  # megatron's schedule calls the steps (the strategy flag a MegatronStrategy trainer sets)
    parallel.apply_convert_module_fn()
    parallel.init_ddp()
    module = megatron_optimizer(optim, max_steps=max_steps, bf16=precision.startswith("bf16"), clip_grad=clip_grad)
    module.on_fit_start(None, model)  # installs finalize_model_grads (the gradient reduction) on the config
    model.on_fit_start()
    optimizer = module.optimizers(parallel)[0]
    scheduler = module.lr_scheduler.scheduler(parallel, optimizer)["lr_scheduler"]["scheduler"]
    return MegatronLoop(parallel, optimizer, scheduler)


def train_step(loop: MegatronLoop, micro_batches: list[dict[str, Any]]) -> float:
    """One optimizer step over ``micro_batches`` (as many as ``megatron.num_microbatches``); the reduced loss."""
    for chunk in loop.parallel:
        chunk.module.zero_grad_buffer()
    loop.optimizer.zero_grad()
    loss = loop.parallel.training_step(iter([(b, i, 0) for i, b in enumerate(micro_batches)]))
    loop.optimizer.step()
    loop.scheduler.step()
    return float(loss)

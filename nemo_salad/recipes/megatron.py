"""Training on NeMo-2's ``MegatronStrategy``: tensor + data parallelism, the distributed optimizer, bf16.

A training config selects it with ``trainer.strategy: megatron`` and a ``megatron`` section::

    trainer: {accelerator: gpu, devices: 8, num_nodes: 4, precision: bf16-mixed, strategy: megatron}
    megatron:
      tensor_model_parallel_size: 2
      use_distributed_optimizer: true
      overlap_grad_reduce: true
      overlap_param_gather: true
      ckpt_async_save: true

The strategy and precision plugin are built here, in code (configs may only instantiate allowlisted classes).
:class:`~nemo_salad.models.SaladModel` is then built in ``configure_model`` after the strategy has created the
parallel groups; the student and the teacher are split over the same tensor-parallel ranks and the distillation
loss works on the vocabulary shards. The model's network (``model.module``) is what the strategy wraps: megatron's
``Float16Module`` (bf16 weights) and ``DistributedDataParallel`` (gradient buffers, reduced bucket by bucket). The
optimizer is megatron's (``MegatronOptimizerModule``): one Adam over all trainable parameters, the LLM at
``optim.llm_lr`` and every other part (adapter, encoder, LoRA) at ``optim.adapter_lr`` through megatron's
learning-rate multiplier, on the same warmup-stable-decay schedule as the plain path, clipping the gradient norm
at ``trainer.gradient_clip_val``. :class:`SaladDataSampler` tells megatron's schedule how many of the data
module's variable-size batches make one step (``num_microbatches``). Checkpoints are megatron distributed
checkpoints (``SaladModel.sharded_state_dict``; the optimizer state fully reshardable), which load at another
tensor-parallel size. Pipeline parallelism is not supported (see ``SaladModel.configure_model``).
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["MEGATRON_DEFAULTS", "SaladDataSampler", "megatron_optimizer", "megatron_trainer_kwargs", "non_llm_param"]

#: The ``megatron`` config section's keys and defaults (the one place they are written; the training config's
#: schema, :class:`nemo_salad.recipes.schema.MegatronConfig`, is made from it).
MEGATRON_DEFAULTS: dict[str, Any] = {
    "tensor_model_parallel_size": 1,
    "pipeline_model_parallel_size": 1,
    "use_distributed_optimizer": True,
    "overlap_grad_reduce": True,
    "overlap_param_gather": True,
    "grad_reduce_in_fp32": True,
    "ckpt_async_save": True,
    "ckpt_parallel_save": True,
    "ckpt_optim_fully_reshardable": True,
    "ckpt_load_optimizer": True,
    "num_microbatches": 1,
}


class SaladDataSampler:
    """Tells megatron's schedule how many micro-batches make one optimizer step (NeMo's ``DataSampler`` role).

    SaladModel's batches come from lhotse samplers that bound each batch by total duration, so batch size and
    length vary from batch to batch; each data-parallel rank draws its own (see
    :func:`nemo_salad.data.datamodule.data_parallel_shard`) and NeMo's fixed-size ``MegatronDataSampler`` does not
    apply. A training step pulls ``num_microbatches`` batches and accumulates their gradients; validation uses one
    batch per step. The schedule's ``micro_batch_size`` and ``seq_length`` are placeholders: without pipeline
    parallelism megatron only needs them for communication buffers between stages.

    Args:
        num_microbatches (int): batches per optimizer step on each data-parallel rank (gradient accumulation).
    """

    #: each DataLoader batch is one micro-batch (not NeMo-1's global-batch sampler, which NeMo would split)
    dataloader_type = "single"

    def __init__(self, num_microbatches: int = 1) -> None:
        if int(num_microbatches) < 1:
            raise ValueError(f"megatron.num_microbatches={num_microbatches}; expected an integer >= 1")
        self.num_microbatches = int(num_microbatches)
        self.trainer: Any = None

    def connect(self, trainer: Any) -> None:
        self.trainer = trainer

    def setup(self, global_rank: int) -> None:
        """Nothing to set up: the datamodule's lhotse samplers shard by data-parallel rank."""

    def transform_dataloader(self, dataloader: Any, consumed_samples: int = 0) -> Any:
        return dataloader

    def on_megatron_step_start(self, step: Any) -> Any:
        """Fill in the step's micro-batch count (``MegatronParallel`` calls this before each step)."""
        import dataclasses

        return dataclasses.replace(step, num_microbatches=1 if step.forward_only else self.num_microbatches,
                                   micro_batch_size=1, seq_length=1)


def _section(megatron: dict[str, Any] | None) -> dict[str, Any]:
    megatron = dict(megatron or {})
    unknown = sorted(set(megatron) - set(MEGATRON_DEFAULTS))
    if unknown:
        raise ValueError(f"megatron: unknown keys {unknown}; expected some of {sorted(MEGATRON_DEFAULTS)}")
    out = {**MEGATRON_DEFAULTS, **megatron}
    if int(out["pipeline_model_parallel_size"]) != 1:
        raise ValueError("megatron.pipeline_model_parallel_size must be 1: SaladModel does not support pipeline "
                         "parallelism; scale with tensor_model_parallel_size and data parallelism")
    return out


def megatron_trainer_kwargs(trainer: dict[str, Any], megatron: dict[str, Any] | None) -> dict[str, Any]:
    """``pl.Trainer`` keyword arguments with ``strategy: megatron`` replaced by a ``MegatronStrategy`` and the
    precision by megatron's mixed-precision plugin.

    Args:
        trainer (dict): the ``trainer`` section (``strategy: megatron``).
        megatron (dict | None): the ``megatron`` section (keys of :data:`MEGATRON_DEFAULTS`).

    Raises:
        ValueError: for unknown keys, pipeline parallelism, or devices × nodes not a multiple of the
            tensor-parallel size.
    """
    from megatron.core.distributed import DistributedDataParallelConfig
    from nemo import lightning as nl

    m = _section(megatron)
    out = dict(trainer)
    tp = int(m["tensor_model_parallel_size"])
    devices, nodes = out.get("devices", 1), int(out.get("num_nodes", 1))
    if isinstance(devices, int) and (devices * nodes) % tp:
        raise ValueError(f"trainer.devices × trainer.num_nodes = {devices * nodes} is not a multiple of "
                         f"megatron.tensor_model_parallel_size = {tp}")
    ddp = DistributedDataParallelConfig(use_distributed_optimizer=bool(m["use_distributed_optimizer"]),
                                        overlap_grad_reduce=bool(m["overlap_grad_reduce"]),
                                        overlap_param_gather=bool(m["overlap_param_gather"]),
                                        grad_reduce_in_fp32=bool(m["grad_reduce_in_fp32"]),
                                        check_for_nan_in_grad=True)
    out.pop("gradient_clip_val", None)  # megatron's optimizer clips (megatron_optimizer's clip_grad)
    if out.pop("gradient_clip_algorithm", None) not in (None, "norm"):
        raise ValueError("trainer.gradient_clip_algorithm must be 'norm' under the megatron strategy")
    if int(out.get("accumulate_grad_batches", 1)) != 1:
        raise ValueError("trainer.accumulate_grad_batches must be 1 under the megatron strategy: accumulate with "
                         "megatron.num_microbatches")
    strategy = nl.MegatronStrategy(tensor_model_parallel_size=tp, pipeline_model_parallel_size=1,
                                   context_parallel_size=1, sequence_parallel=False, ddp=ddp,
                                   data_sampler=SaladDataSampler(int(m["num_microbatches"])),
                                   ckpt_async_save=bool(m["ckpt_async_save"]),
                                   ckpt_parallel_save=bool(m["ckpt_parallel_save"]),
                                   ckpt_optim_fully_reshardable=bool(m["ckpt_optim_fully_reshardable"]),
                                   ckpt_load_optimizer=bool(m["ckpt_load_optimizer"]))
    out["strategy"] = _safe_resume(strategy)  # resume reads checkpoints with safe_checkpoint_reading
    precision = str(out.pop("precision", "bf16-mixed"))
    out["plugins"] = [p for p in out.get("plugins", []) or []] + [nl.MegatronMixedPrecision(precision=precision)]
    return out


def _safe_resume(strategy: Any) -> Any:
    """``strategy`` whose checkpoint loading (resume) unpickles nothing but checkpoint data (see
    :func:`nemo_salad.checkpoint.safe_checkpoint.safe_checkpoint_reading`)."""
    from nemo_salad.checkpoint.safe_checkpoint import safe_checkpoint_reading

    load_checkpoint = strategy.load_checkpoint

    def safe_load_checkpoint(checkpoint_path: Any, *args: Any, **kwargs: Any) -> Any:
        with safe_checkpoint_reading(checkpoint_path):
            return load_checkpoint(checkpoint_path, *args, **kwargs)

    strategy.load_checkpoint = safe_load_checkpoint
    return strategy


def non_llm_param(name: str, param: torch.nn.Parameter | None = None) -> bool:
    """True for parameters trained at ``optim.adapter_lr`` (adapter, encoder, LoRA); False for the LLM's own.

    Names may carry the wrappers' ``module.`` prefixes.

    >>> non_llm_param("module.adapter.in_proj.weight"), non_llm_param("module.llm.gpt.decoder.final_layernorm.weight")
    (True, False)
    >>> non_llm_param("llm.gpt.decoder.layers.0.mlp.linear_fc1.lora.a.weight")
    True
    """
    while name.startswith("module."):
        name = name[len("module."):]
    return not name.startswith("llm.") or ".lora." in name


def megatron_optimizer(optim: Any, max_steps: int, bf16: bool = True, clip_grad: float | None = None
                       ) -> Any:
    """A ``MegatronOptimizerModule`` equivalent to the plain path's AdamW groups and schedule.

    Args:
        optim (OptimConfig | dict): the ``model.optim`` section (missing keys: the defaults of
            :class:`~nemo_salad.parts.optim.OptimConfig`).
        max_steps (int): ``trainer.max_steps`` (the schedule's length).
        bf16 (bool): bf16 training (fp32 master weights in the optimizer). Default: True.
        clip_grad (float | None): gradient-norm clipping threshold, ``trainer.gradient_clip_val`` (Lightning's
            own clipping does not apply under megatron); None or 0 for none. Default: None.

    Raises:
        ValueError: if ``encoder_lr`` or ``lora_lr`` differ from ``adapter_lr`` (megatron's optimizer has one
            multiplier), or ``max_steps`` is not positive.
    """
    from megatron.core.optimizer import OptimizerConfig
    from nemo.lightning.pytorch.optim import LRSchedulerModule, MegatronOptimizerModule

    from nemo_salad.checkpoint.torch_adam_state import checkpointable_torch_adam
    from nemo_salad.parts.optim import optim_config, part_learning_rates, wsd_schedule

    o = optim_config(optim)  # the schema's defaults (nemo_salad.parts.optim.OptimConfig)
    lrs = part_learning_rates(o)
    adapter_lr, llm_lr = lrs["adapter"], lrs["llm"]
    for key in ("encoder_lr", "lora_lr"):
        if getattr(o, key) not in (None, adapter_lr):
            raise ValueError(f"model.optim.{key}={getattr(o, key)} must equal adapter_lr={adapter_lr} (or be null) "
                             "under the megatron strategy: its optimizer scales one group of parameters")
    factor = wsd_schedule(o, max_steps)
    config = OptimizerConfig(optimizer="adam", lr=llm_lr, weight_decay=o.weight_decay,
                             adam_beta1=float(o.betas[0]), adam_beta2=float(o.betas[1]),
                             adam_eps=o.eps, clip_grad=float(clip_grad or 0.0),
                             bf16=bf16, params_dtype=torch.float32, use_distributed_optimizer=True)

    class _WSD(LRSchedulerModule):
        """The warmup-stable-decay schedule of :func:`nemo_salad.parts.optim.wsd_schedule`, stepped per step."""

        def scheduler(self, model: Any, optimizer: Any) -> dict[str, Any]:
            sched = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 1}}

    class _Optimizer(MegatronOptimizerModule):
        """Megatron's optimizer; over torch's Adam (no TE/apex) made checkpointable before its first step and
        resumable exactly (:mod:`nemo_salad.checkpoint.torch_adam_state`)."""

        def optimizers(self, model: Any) -> list[Any]:
            optimizers = super().optimizers(model)
            for optimizer in optimizers:
                checkpointable_torch_adam(optimizer.mcore_optimizer)
            return optimizers

    lr_mult = adapter_lr / llm_lr if llm_lr > 0 else 1.0
    return _Optimizer(config=config, lr_scheduler=_WSD(), scale_lr_cond=non_llm_param, lr_mult=lr_mult)

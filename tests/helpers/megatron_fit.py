"""Run the Stage I recipe under NeMo-2's MegatronStrategy on CPU (one process): ``trainer.fit`` with megatron's
DDP, distributed optimizer, bf16 ``Float16Module``, validation, megatron distributed checkpoints, resume and the
``.nemo`` export — everything the GPU path runs, with :func:`tests.helpers.megatron_step.cuda_standins` for the
few places that allocate on CUDA.

    python -m tests.helpers.megatron_fit CORPUS EXP_DIR MAX_STEPS [--devices N --tp T] [--config stage2]
        [--record OUT --first-batch K] [-- HYDRA_OVERRIDES...]

Prints ``EXPORTED <path>`` at the end. A second call with the same EXP_DIR resumes from its last checkpoint
(weights, optimizer, schedule, data position).

With ``--record OUT`` the recipe (``build``: ``init_from``, its callbacks) is fit instead on MAX_STEPS fixed
batches, those numbered K, K + 1, ... of one sequence that is the same in every run (the data module's stream
restarts in a new run), and :func:`optimizer_record` writes to OUT what megatron's distributed optimizer holds
before the first step and after each step.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any


def megatron_overrides(corpus: Path, exp_dir: Path, max_steps: int, devices: int = 1, tp: int = 1) -> list[str]:
    """The tiny Stage I overrides of ``tests.training.conftest`` under NeMo-2's MegatronStrategy on CPU."""
    from tests.training.conftest import tiny_overrides

    return tiny_overrides(corpus, exp_dir, max_steps=max_steps) + [
        "+trainer.strategy=megatron", "trainer.accelerator=cpu", f"trainer.devices={devices}",
        "trainer.precision=bf16-mixed", "trainer.val_check_interval=3", "model.optim.lora_lr=null",
        f"+megatron={{tensor_model_parallel_size: {tp}, ckpt_async_save: false, overlap_grad_reduce: true}}",
        f"model.adapter.num_query_groups={max(tp, 1)}"]  # heads and query groups split over the TP ranks


def optimizer_record() -> Any:
    """A callback that records, per parameter (by name), the bf16 model weight and what megatron's distributed
    optimizer holds for it (fp32 main parameter, Adam moments, step count): in ``states[0]`` before the first step
    (once the ``on_train_start`` callbacks added before it, such as ``InitOptimizerState``, have run) and in
    ``states[k]`` after step k; and in ``groups[k]`` the numeric hyper-parameters of each parameter group that
    step k + 1 used (learning rate, weight decay, megatron's ``max_lr`` ...). (Built here, not at import: torch is
    imported after ``main`` has set the thread count.)"""
    import lightning.pytorch as pl
    import torch

    def state(trainer: pl.Trainer, pl_module: Any) -> dict[str, dict[str, torch.Tensor]]:
        names = {id(p): n for n, p in pl_module.named_parameters()}
        mcore = trainer.optimizers[0].mcore_optimizer
        out = {}
        for part in getattr(mcore, "chained_optimizers", None) or [mcore]:
            for param in part.model_param_group_index_map:
                held = part._get_main_param_and_optimizer_states(param)
                out[names[id(param)]] = {"model": param.detach().clone(),
                                         **{k: torch.as_tensor(v).detach().clone() for k, v in held.items()}}
        return out

    class OptimizerRecord(pl.Callback):
        def __init__(self) -> None:
            self.states: dict[int, dict[str, dict[str, torch.Tensor]]] = {}
            self.groups: dict[int, list[dict[str, float]]] = {}

        def on_train_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
            self.states[trainer.global_step] = state(trainer, pl_module)

        def on_train_batch_start(self, trainer: pl.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
            self.groups[trainer.global_step] = [
                {k: float(v) for k, v in g.items() if isinstance(v, int | float) and not isinstance(v, bool)}
                for g in trainer.optimizers[0].param_groups]

        def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
                               ) -> None:
            self.states[trainer.global_step] = state(trainer, pl_module)

    return OptimizerRecord()


def record_fit(cfg: Any, out: Path, first_batch: int) -> None:
    """Fit the recipe of ``cfg`` on ``trainer.max_steps`` fixed batches from ``first_batch`` and save its
    :func:`optimizer_record` (and the restored Adam step count of ``init_optimizer``, if any) to ``out``."""
    import torch
    import torch.distributed as dist
    from torch.utils.data import DataLoader

    from nemo_salad.callbacks import InitOptimizerState
    from nemo_salad.recipes.train import build
    from tests.helpers.batches import make_batch

    trainer, model, _ = build(cfg)
    record = optimizer_record()
    trainer.callbacks.append(record)
    batches = [make_batch(model, ("prefix", "interleaved")[i % 2], seed=i)
               for i in range(first_batch, first_batch + trainer.max_steps)]
    trainer.fit(model, train_dataloaders=DataLoader(batches, batch_size=None, collate_fn=lambda b: b))
    restored = [cb.restored_step for cb in trainer.callbacks if isinstance(cb, InitOptimizerState)]
    if not dist.is_initialized() or dist.get_rank() == 0:
        torch.save({"states": record.states, "groups": record.groups, "global_step": trainer.global_step,
                    "restored_step": restored[0] if restored else None}, out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("corpus", type=Path)
    parser.add_argument("exp_dir", type=Path)
    parser.add_argument("max_steps", type=int)
    parser.add_argument("--devices", type=int, default=1, help="processes (Lightning launches the others)")
    parser.add_argument("--tp", type=int, default=1, help="tensor-parallel size")
    parser.add_argument("--config", default="stage1", help="the shipped config (stage1, stage2)")
    parser.add_argument("--record", type=Path, help="fit on fixed batches and save the optimizer's record here")
    parser.add_argument("--first-batch", type=int, default=0, help="with --record: the first fixed batch")
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []  # more Hydra overrides
    args = parser.parse_args(argv[: len(argv) - len(extra) - (1 if extra else 0)])
    os.environ["OMP_NUM_THREADS"] = "1"

    from nemo_salad.recipes.train import train
    from tests.helpers.megatron_step import cuda_standins
    from tests.training.conftest import compose

    overrides = megatron_overrides(args.corpus, args.exp_dir, args.max_steps, args.devices, args.tp)
    with cuda_standins():
        if args.record:
            record_fit(compose(overrides + extra, name=args.config), args.record, args.first_batch)
            return
        exported = train(compose(overrides + extra, name=args.config))
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_rank() == 0:  # one line, not one per process
        print(f"EXPORTED {exported}", flush=True)


if __name__ == "__main__":
    main()

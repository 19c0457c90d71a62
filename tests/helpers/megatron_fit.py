"""Run the Stage I recipe under NeMo-2's MegatronStrategy on CPU (one process): ``trainer.fit`` with megatron's
DDP, distributed optimizer, bf16 ``Float16Module``, validation, megatron distributed checkpoints, resume and the
``.nemo`` export — everything the GPU path runs, with :func:`tests.helpers.megatron_step.cuda_standins` for the
few places that allocate on CUDA.

    python -m tests.helpers.megatron_fit CORPUS EXP_DIR MAX_STEPS [--devices N --tp T] [--config stage2]
        [-- HYDRA_OVERRIDES...]

Prints ``EXPORTED <path>`` at the end. A second call with the same EXP_DIR resumes from its last checkpoint
(weights, optimizer, schedule, data position).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def megatron_overrides(corpus: Path, exp_dir: Path, max_steps: int, devices: int = 1, tp: int = 1) -> list[str]:
    """The tiny Stage I overrides of ``tests.training.conftest`` under NeMo-2's MegatronStrategy on CPU."""
    from tests.training.conftest import tiny_overrides

    return tiny_overrides(corpus, exp_dir, max_steps=max_steps) + [
        "+trainer.strategy=megatron", "trainer.accelerator=cpu", f"trainer.devices={devices}",
        "trainer.precision=bf16-mixed", "trainer.val_check_interval=3", "model.optim.lora_lr=null",
        f"+megatron={{tensor_model_parallel_size: {tp}, ckpt_async_save: false, overlap_grad_reduce: true}}",
        f"model.adapter.num_query_groups={max(tp, 1)}"]  # heads and query groups split over the TP ranks


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("corpus", type=Path)
    parser.add_argument("exp_dir", type=Path)
    parser.add_argument("max_steps", type=int)
    parser.add_argument("--devices", type=int, default=1, help="processes (Lightning launches the others)")
    parser.add_argument("--tp", type=int, default=1, help="tensor-parallel size")
    parser.add_argument("--config", default="stage1", help="the shipped config (stage1, stage2)")
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []  # more Hydra overrides
    args = parser.parse_args(argv[: len(argv) - len(extra) - (1 if extra else 0)])
    os.environ["OMP_NUM_THREADS"] = "1"

    from nemo_salad.recipes.train import train
    from tests.helpers.megatron_step import cuda_standins
    from tests.training.conftest import compose

    overrides = megatron_overrides(args.corpus, args.exp_dir, args.max_steps, args.devices, args.tp)
    with cuda_standins():
        exported = train(compose(overrides + extra, name=args.config))
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_rank() == 0:  # one line, not one per process
        print(f"EXPORTED {exported}", flush=True)


if __name__ == "__main__":
    main()

"""One rank of the distributed-checkpoint resharding check (spawned by tests/distributed/test_dist_checkpoint.py).

Each rank builds the tiny SaladModel at tensor-parallel size 2, loads the TP=1 checkpoint the parent wrote, records
the loss, takes one SGD step (so LoRA, adapter and encoder weights change on both ranks), records the new loss and
saves a TP=2 checkpoint for the parent to load at TP=1.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch


def model_config(tokenizer_dir: Path) -> dict:
    from tests.helpers.tiny import model_cfg

    return model_cfg(tokenizer_dir, teacher="copy", **{"llm.lora": {"rank": 4, "alpha": 8.0},
                                                       "adapter.num_query_groups": 2})


def loss_on_fixed_batch(model) -> torch.Tensor:
    from tests.helpers.batches import make_batch

    return model.compute_loss(make_batch(model, "interleaved", seed=3)).loss


def sgd_step(model, lr: float = 0.5) -> None:
    """One plain SGD step on every trainable parameter (the same update on every tensor-parallel rank)."""
    model.zero_grad(set_to_none=True)
    loss_on_fixed_batch(model).backward()
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p -= lr * p.grad


def run(rank: int, world: int, init_file: str, work: str) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    import torch.distributed as dist

    from nemo_salad.checkpoint.distributed import load_distributed, save_distributed
    from nemo_salad.llm.parallel import init_model_parallel
    from nemo_salad.models import SaladModel

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    init_model_parallel(tensor_model_parallel_size=world)
    work_dir = Path(work)
    torch.manual_seed(100 + rank)  # a different random start on each rank: everything must come from the checkpoint
    model = SaladModel(model_config(work_dir / "tok")).eval()
    load_distributed(model, work_dir / "tp1")
    out = {"loaded": loss_on_fixed_batch(model).detach()}
    sgd_step(model)
    out["stepped"] = loss_on_fixed_batch(model).detach()
    save_distributed(model, work_dir / "tp2")
    torch.save(out, work_dir / f"rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()

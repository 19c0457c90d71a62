"""One rank of the 2-process tensor-parallel check (spawned by tests/distributed/test_tensor_parallel.py)."""

from __future__ import annotations

import os
from pathlib import Path

import torch


def tp_config():
    from nemo_salad.llm import LLMConfig

    return LLMConfig.preset("tiny-qwen2", num_attention_heads=4, num_query_groups=2, hidden_size=64, vocab_size=256)


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    ids = torch.randint(0, 256, (2, 12), generator=g)
    return ids, torch.roll(ids, -1, dims=1)[:, :-1].reshape(-1)


def compute(student, teacher) -> dict[str, torch.Tensor]:
    """Logits, distillation loss and gradients, the same code at any tensor-parallel size."""
    from nemo_salad.losses import fused_distillation

    ids, targets = batch()
    hs = student.hidden_states(input_ids=ids)[:, :-1].reshape(-1, student.hidden_size)
    with torch.no_grad():
        ht = teacher.hidden_states(input_ids=ids)[:, :-1].reshape(-1, teacher.hidden_size)
    out = fused_distillation(hs, student.output_weight, ht, teacher.output_weight, targets, alpha=0.7,
                             direction="js", tp_group=student.tp_group)
    out.loss.backward()
    with torch.no_grad():
        logits = student(input_ids=ids)
    grads = {n: p.grad.clone() for n, p in student.gpt.named_parameters() if p.grad is not None}
    return {"logits": logits, "loss": out.loss.detach(), "kd": out.kd, "nll": out.nll, **{f"grad/{k}": v for k, v in
                                                                                         grads.items()}}


def run(rank: int, world: int, init_file: str, work: str) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    import torch.distributed as dist
    from megatron.core import parallel_state

    from nemo_salad.llm import MegatronLLM
    from nemo_salad.llm.cpu import ensure_cpu_support
    from nemo_salad.llm.hf_convert import load_megatron_state

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    ensure_cpu_support()
    parallel_state.initialize_model_parallel(world, 1)
    full = torch.load(Path(work) / "full.pt", weights_only=True)
    student = MegatronLLM(tp_config(), parallel_output=True)
    teacher = MegatronLLM(tp_config(), parallel_output=True).requires_grad_(False)
    load_megatron_state(student, full["student"])
    load_megatron_state(teacher, full["teacher"])
    torch.save(compute(student, teacher), Path(work) / f"rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()

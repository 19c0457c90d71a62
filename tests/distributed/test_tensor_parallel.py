"""Tensor parallelism over 2 CPU processes (gloo): the same logits, distillation loss and gradients as one
process, with the vocabulary kept split (the loss all-reduces normalisers; nothing gathers the vocabulary)."""

from __future__ import annotations

import pytest
import torch
import torch.multiprocessing as mp

from nemo_salad.llm import MegatronLLM
from tests.helpers.tp_worker import compute, run, tp_config

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU/gloo variant")


def test_tp2_matches_tp1(tmp_path):
    torch.manual_seed(0)
    student, teacher = MegatronLLM(tp_config()), MegatronLLM(tp_config()).requires_grad_(False)
    with torch.no_grad():  # non-trivial norms and biases, so that every tensor matters
        for p in list(student.parameters()) + list(teacher.parameters()):
            if p.ndim == 1:
                p.copy_(1 + 0.1 * torch.randn_like(p))
    full = {"student": {k: v for k, v in student.gpt.state_dict().items() if not k.endswith("_extra_state")},
            "teacher": {k: v for k, v in teacher.gpt.state_dict().items() if not k.endswith("_extra_state")}}
    torch.save(full, tmp_path / "full.pt")
    ref = compute(student, teacher)

    mp.start_processes(run, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, start_method="spawn")
    shards = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    v = tp_config().vocab_size // 2
    for r, got in enumerate(shards):
        assert torch.allclose(got["logits"], ref["logits"][..., r * v:(r + 1) * v], atol=1e-5)
        for key in ("loss", "kd", "nll"):
            assert torch.allclose(got[key], ref[key], rtol=1e-5, atol=1e-7), key
    params = dict(student.gpt.named_parameters())
    for name, full_grad in ((k[5:], g) for k, g in ref.items() if k.startswith("grad/")):
        param = params[name]
        parts = [s[f"grad/{name}"] for s in shards]
        if not getattr(param, "tensor_model_parallel", False):
            expected = [full_grad, full_grad]
        elif name.endswith("linear_fc1.weight"):
            gate, up = full_grad.chunk(2)
            expected = [torch.cat([gate.chunk(2)[r], up.chunk(2)[r]]) for r in range(2)]
        else:
            expected = list(full_grad.chunk(2, dim=param.partition_dim))
        for r in range(2):
            assert torch.allclose(parts[r], expected[r], atol=1e-5, rtol=1e-4), (name, r)

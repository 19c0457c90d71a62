"""Megatron distributed checkpoints of SaladModel: saved at one tensor-parallel size, loaded at another.

The parent (TP=1) saves; two gloo processes (TP=2) load it, train one step and save; the parent loads that TP=2
checkpoint at TP=1. The losses on a fixed batch must agree across the three, which fails if any tensor (a LoRA
factor, a SwiGLU half, the teacher, the encoder) is dropped, replicated where it is split, or split wrongly.
"""

from __future__ import annotations

import pytest
import torch
import torch.multiprocessing as mp

from nemo_salad.checkpoint.distributed import (
    is_distributed_checkpoint,
    load_distributed,
    save_distributed,
    sharded_state_dict,
)
from nemo_salad.models import SaladModel
from tests.helpers.dist_ckpt_worker import loss_on_fixed_batch, model_config, run, sgd_step
from tests.helpers.tiny import make_tokenizer

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU/gloo variant")


def _perturbed_model(tok, seed: int) -> SaladModel:
    torch.manual_seed(seed)
    model = SaladModel(model_config(tok)).eval()
    with torch.no_grad():  # non-zero LoRA b and non-trivial norms: every tensor changes the loss
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def test_tp1_to_tp2_and_back(tmp_path):
    tok = make_tokenizer(tmp_path / "tok")
    model = _perturbed_model(tok, seed=0)
    expected_loaded = loss_on_fixed_batch(model).detach()
    save_distributed(model, tmp_path / "tp1")
    assert is_distributed_checkpoint(tmp_path / "tp1")
    sgd_step(model)  # what the TP=2 ranks do, at TP=1
    expected_stepped = loss_on_fixed_batch(model).detach()

    mp.start_processes(run, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, start_method="spawn")
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert torch.allclose(got["loaded"], expected_loaded, rtol=1e-5, atol=1e-6), rank
        assert torch.allclose(got["stepped"], expected_stepped, rtol=1e-4, atol=1e-6), rank

    back = _perturbed_model(tok, seed=1)
    assert not torch.allclose(loss_on_fixed_batch(back), expected_stepped, rtol=1e-3)
    load_distributed(back, tmp_path / "tp2")
    assert torch.allclose(loss_on_fixed_batch(back).detach(), expected_stepped, rtol=1e-4, atol=1e-6)
    for (name, want), got in zip(model.state_dict().items(), back.state_dict().values()):
        if isinstance(want, torch.Tensor):
            assert torch.allclose(got, want, atol=1e-5), name


def test_sharded_state_dict_covers_every_tensor_and_splits_lora(tmp_path):
    from megatron.core.dist_checkpointing.mapping import ShardedTensor, ShardedTensorFactory

    model = _perturbed_model(make_tokenizer(tmp_path / "tok"), seed=0)
    sharded = sharded_state_dict(model)
    assert {k for k in sharded if not k.endswith("_extra_state")} == {k for k in model.state_dict()
                                                                       if not k.endswith("_extra_state")}
    layer = "module.llm.gpt.decoder.layers.0."
    assert isinstance(sharded[f"{layer}mlp.linear_fc1.lora.b.weight"], ShardedTensorFactory)  # [gate; up]
    qkv_b = sharded[f"{layer}self_attention.linear_qkv.lora.b.weight"]
    proj_a = sharded[f"{layer}self_attention.linear_proj.lora.a.weight"]
    assert isinstance(qkv_b, ShardedTensor) and isinstance(proj_a, ShardedTensor)
    assert qkv_b.replica_id == (0, 0, 0) and proj_a.replica_id == (0, 0, 0)  # split over TP, not TP-replicated
    enc = next(k for k in sharded if k.startswith("module.encoder."))
    assert sharded[enc].replica_id[1:] == (0, 0)


def test_load_errors_name_the_checkpoint(tmp_path):
    tok = make_tokenizer(tmp_path / "tok")
    model = _perturbed_model(tok, seed=0)
    with pytest.raises(FileNotFoundError, match="not a megatron-core distributed checkpoint"):
        load_distributed(model, tmp_path)
    save_distributed(model, tmp_path / "ck")
    with pytest.raises(FileExistsError, match="not empty"):
        save_distributed(model, tmp_path / "ck")
    from tests.helpers.tiny import model_cfg

    other = SaladModel(model_cfg(tok, teacher="shared", **{"llm.lora": {"rank": 2, "alpha": 4.0},
                                                            "adapter.num_query_groups": 2}))
    with pytest.raises(ValueError, match=str(tmp_path / "ck")):
        load_distributed(other, tmp_path / "ck")

"""SaladModel trained through the pieces of NeMo-2's MegatronStrategy step (MegatronParallel, Float16Module,
megatron DDP, the distributed optimizer, megatron's schedule) gives the plain path's losses and weights: fp32 in
one process, data parallelism over 2 gloo processes, and bf16 within bf16's precision."""

from __future__ import annotations

import pytest
import torch
import torch.multiprocessing as mp

from nemo_salad.checkpoint.distributed import load_distributed, save_distributed
from nemo_salad.llm.parallel import init_model_parallel
from nemo_salad.models.salad import SaladModel
from tests.helpers.megatron_step import (
    OPTIM,
    config,
    cuda_standins,
    make_batches,
    megatron_steps,
    plain_steps,
    run_parallel,
    split_batch,
)
from tests.helpers.tiny import make_tokenizer

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU/gloo variant")


def _model(tok, seed: int = 3) -> SaladModel:
    init_model_parallel()
    torch.manual_seed(seed)
    model = SaladModel(config(tok), defer_build=True)
    model.configure_model()
    return model.train()


def _state(model: SaladModel) -> dict[str, torch.Tensor]:
    return {k: v.detach().float().clone() for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return make_tokenizer(tmp_path_factory.mktemp("tok"))


def test_megatron_step_equals_the_plain_step(tok):
    reference, model = _model(tok), _model(tok)
    before = _state(model)
    assert all(torch.equal(before[k], v) for k, v in _state(reference).items())
    batches = make_batches(model)
    expected = plain_steps(reference, [[b] for b in batches], OPTIM)
    with cuda_standins():
        losses, wrapped = megatron_steps(model, [[b] for b in batches], OPTIM, precision="32")
    from megatron.core.distributed import DistributedDataParallel

    assert isinstance(model.module, DistributedDataParallel)  # trained wrapped, reached through the wrappers
    assert losses == pytest.approx(expected, rel=1e-5)
    got, want = _state(model), _state(reference)
    assert got.keys() == want.keys() == before.keys()
    moved = [k for k in got if not torch.equal(got[k], before[k])]
    assert any(k.startswith("module.llm.") for k in moved) and any(k.startswith("module.adapter.") for k in moved)
    assert any(k.startswith("module.encoder.") for k in moved)
    assert not any(k.startswith("module.teacher.") for k in moved)  # the teacher stays frozen
    for k in got:
        assert torch.allclose(got[k], want[k], atol=2e-6, rtol=1e-4), k


def test_megatron_bf16_step_runs_in_bf16_and_tracks_fp32(tok):
    reference, model = _model(tok), _model(tok)
    batches = make_batches(model, steps=3)
    expected = plain_steps(reference, [[b] for b in batches], OPTIM)
    with cuda_standins():
        losses, _ = megatron_steps(model, [[b] for b in batches], OPTIM, precision="bf16-mixed")
    from megatron.core.transformer.module import Float16Module

    assert isinstance(model.module.module, Float16Module)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert all(c.bf16 for c in model.megatron_configs())  # teacher and adapter blocks too (on_fit_start)
    assert losses == pytest.approx(expected, rel=0.05)
    got, want, start = _state(model), _state(reference), _state(_model(tok))
    for part in ("module.llm.", "module.adapter.", "module.encoder."):  # updates point the same way as fp32's
        keys = [k for k in got if k.startswith(part) and not torch.equal(want[k], start[k])]
        d_got = torch.cat([(got[k] - start[k]).flatten() for k in keys])
        d_want = torch.cat([(want[k] - start[k]).flatten() for k in keys])
        assert torch.nn.functional.cosine_similarity(d_got, d_want, dim=0) > 0.9, part


def test_micro_batches_accumulate_like_one_larger_step(tok):
    """megatron.num_microbatches=2: each step pulls two batches and accumulates their gradients (the mean of the two
    losses), with a text-replay batch (no speech) among them."""
    reference, model = _model(tok), _model(tok)
    speech = make_batches(model, steps=2)
    text = split_batch(model, speech[1], 1, text_only=True)[0]
    steps = [[speech[0], text], [text, speech[1]]]
    expected = plain_steps(reference, steps, OPTIM)
    with cuda_standins():
        losses, _ = megatron_steps(model, steps, OPTIM, megatron={"num_microbatches": 2, "overlap_grad_reduce": True})
    assert losses == pytest.approx(expected, rel=1e-5)
    got, want = _state(model), _state(reference)
    for k in got:
        assert torch.allclose(got[k], want[k], atol=2e-6, rtol=1e-4), k


@pytest.mark.parametrize("tp", [1, 2], ids=["data-parallel-2", "tensor-parallel-2"])
def test_two_processes_equal_one_process(tok, tmp_path, tp):
    """2 gloo processes as 2 data-parallel replicas (each on half of every batch) or as one model split over 2
    tensor-parallel ranks: the same losses and final weights as one process on the whole batch."""
    model = _model(tok)
    save_distributed(model, tmp_path / "init")
    reference = _model(tok, seed=99)  # different init, overwritten by the saved weights
    reference.load_state_dict(model.state_dict())
    dp = 2 // tp
    expected = plain_steps(reference, [split_batch(reference, b, dp) for b in make_batches(reference)], OPTIM)
    mp.start_processes(run_parallel, args=(2, str(tmp_path / "rdv"), str(tmp_path), str(tok), tp), nprocs=2,
                       start_method="spawn")
    for r in range(2):
        assert torch.load(tmp_path / f"rank{r}.pt", weights_only=True)["losses"] == pytest.approx(expected, rel=1e-5)
    final = _model(tok, seed=7)
    load_distributed(final, tmp_path / "final")  # written at TP=tp, read at TP=1
    got, want = _state(final), _state(reference)
    assert got.keys() == want.keys()
    for k, v in want.items():
        assert torch.allclose(got[k], v, atol=2e-6, rtol=1e-4), k


def _optimizer_checkpoint(loop, directory, load: bool = False) -> None:
    """Save (or load into) ``loop``'s optimizer as MegatronStrategy does: a megatron distributed checkpoint of the
    distributed optimizer's fully reshardable sharded state dict, loaded through the optimizer's ``load_state_dict``."""
    from megatron.core import dist_checkpointing
    from nemo.lightning._strategy_lib import optimizer_sharded_state_dict

    from nemo_salad.llm.cpu import cpu_dist_checkpointing

    metadata = {"singleton_local_shards": False, "chained_optim_avoid_prefix": True,
                "distrib_optim_sharding_type": "fully_reshardable"}
    sharded = optimizer_sharded_state_dict(loop.parallel, loop.optimizer, is_loading=load, metadata=metadata)
    with cpu_dist_checkpointing():
        if load:
            loop.optimizer.load_state_dict(dist_checkpointing.load({"optimizer": sharded}, str(directory))["optimizer"])
        else:
            directory.mkdir()
            dist_checkpointing.save({"optimizer": sharded}, str(directory))


def _adam_steps(loop) -> list[float]:
    """The ``step`` of every parameter's Adam state, each tensor once."""
    states = [s for part in loop.optimizer.mcore_optimizer.chained_optimizers for s in part.optimizer.state.values()]
    assert len({id(s["step"]) for s in states}) == len(states)  # one step tensor per parameter, none shared
    return sorted({float(s["step"]) for s in states})


def test_megatron_optimizer_saves_before_its_first_step_and_resumes_exactly(tok, tmp_path):
    """Without TE/apex megatron's distributed optimizer runs torch's AdamW, whose state torch creates lazily: it must
    still save before the first step, load into a never-stepped optimizer, and then continue exactly as the
    uninterrupted run (bf16: the fp32 master weights and both Adam moments come back from the checkpoint)."""
    from nemo_salad.recipes.megatron_loop import train_step, wrap

    model = _model(tok)
    batches = make_batches(model, steps=4)
    with cuda_standins():
        loop = wrap(model, OPTIM, max_steps=100, precision="bf16-mixed")
        _optimizer_checkpoint(loop, tmp_path / "optim-0")  # before any step
        for b in batches[:2]:
            train_step(loop, [b])
        save_distributed(model, tmp_path / "weights-2")
        _optimizer_checkpoint(loop, tmp_path / "optim-2")
        schedule = loop.scheduler.state_dict()
        expected = [train_step(loop, [b]) for b in batches[2:]]

        resumed = _model(tok, seed=7)
        load_distributed(resumed, tmp_path / "weights-2")
        again = wrap(resumed, OPTIM, max_steps=100, precision="bf16-mixed")
        _optimizer_checkpoint(again, tmp_path / "optim-2", load=True)
        again.scheduler.load_state_dict(schedule)
        assert _adam_steps(again) == [2.0]
        losses = [train_step(again, [b]) for b in batches[2:]]
    assert losses == expected
    assert _adam_steps(again) == _adam_steps(loop) == [4.0]
    got, want = _state(resumed), _state(model)
    assert got.keys() == want.keys()
    for k, v in want.items():
        assert torch.equal(got[k], v), k

"""Drive SaladModel through the pieces of NeMo-2's MegatronStrategy training step on CPU.

What runs is NeMo's and megatron-core's own code, as the strategy wires it (:mod:`nemo_salad.recipes.megatron_loop`):
``MegatronParallel`` around the model, the mixed-precision plugin's ``Float16Module`` conversion, megatron
``DistributedDataParallel`` (contiguous gradient buffers), megatron's distributed optimizer from
``MegatronOptimizerModule.optimizers``, ``finalize_model_grads``, and megatron's no-pipelining schedule calling the
model's ``data_step`` / ``training_step`` / ``training_loss_reduction``. These pieces, and ``trainer.fit`` under
``MegatronStrategy`` around them, assume CUDA in a few places; :func:`nemo_salad.llm.cpu.cuda_standins` (re-exported
here) maps exactly those to the CPU for the duration of a test: it changes where tensors live, not what is computed.

:func:`nemo_salad.recipes.bench.plain_steps` (re-exported here) is the reference: the same model trained by the plain
path (fp32, ``torch.optim.AdamW`` over ``param_groups``, the WSD schedule), one optimizer step per batch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from nemo_salad.llm.cpu import cuda_standins
from nemo_salad.recipes.bench import COMPARISON_OPTIM as OPTIM
from nemo_salad.recipes.bench import plain_steps

__all__ = ["OPTIM", "config", "cuda_standins", "make_batches", "megatron_steps", "plain_steps", "run_parallel",
           "split_batch"]

def config(tokenizer_dir: str | Path) -> dict[str, Any]:
    """The paper's setting in miniature: the tiny LLM fully fine-tuned next to a separate frozen teacher (``copy``),
    the tiny FastConformer and causal adapter, KD mixed with NLL; every part trainable, so both learning rates
    (LLM; adapter and encoder) are exercised."""
    from tests.helpers.tiny import model_cfg

    # layer norm in the conformer convolution: a bias right before batch norm has a zero gradient in exact arithmetic
    # (rounding noise that Adam would scale up), and batch-norm statistics would differ per data-parallel rank
    return model_cfg(tokenizer_dir, teacher="copy", **{"loss.alpha": 0.5, "adapter.num_query_groups": 2,  # TP <= 2
                                                       "encoder.encoder.conv_norm_type": "layer_norm"})


def make_batches(model: Any, steps: int = 2) -> list[Any]:
    """One batch per step (both layouts of the method, alternating)."""
    from tests.helpers.batches import make_batch

    return [make_batch(model, ("interleaved", "prefix")[i % 2], seed=i) for i in range(steps)]


def split_batch(model: Any, batch: Any, parts: int, text_only: bool = False) -> list[Any]:
    """Split a batch by documents into ``parts`` batches (each with the clips its documents use); ``text_only``
    keeps only the text segments (a text-replay batch, as the dataset collates it)."""
    from nemo_salad.data.batch import collate, make_document

    clips = [batch.audio[c, : int(n)] for c, n in enumerate(batch.audio_lens)]
    frames = model.frame_counter(max_seconds=5.0)
    docs = []
    for sample_id, segs in zip(batch.sample_ids, batch.segments):
        segs = [s for s in segs if s.kind == "text"] if text_only else segs
        docs.append(make_document(sample_id, segs, [len(c) for c in clips], frames, model.pad_id))
    n = len(docs)
    return [collate(docs[r * n // parts:(r + 1) * n // parts], clips, model.pad_id) for r in range(parts)]


def megatron_steps(model: Any, steps: list[list[dict[str, Any]]], optim: dict[str, Any], precision: str = "32",
                   megatron: dict[str, Any] | None = None) -> tuple[list[float], Any]:
    """Train a built SaladModel one megatron step per entry of ``steps`` (its micro-batches, as many as
    ``megatron.num_microbatches``) through :mod:`nemo_salad.recipes.megatron_loop`. Returns the reduced losses and
    the ``MegatronParallel``. Needs megatron's parallel state (any TP × DP) and :func:`cuda_standins`."""
    from nemo_salad.recipes.megatron_loop import train_step, wrap

    loop = wrap(model, optim, max_steps=100, precision=precision, megatron=megatron)
    return [train_step(loop, micro_batches) for micro_batches in steps], loop.parallel


def run_parallel(rank: int, world: int, init_file: str, work: str, tokenizer_dir: str, tp: int) -> None:
    """One rank of a 2-process check at tensor-parallel size ``tp`` (data parallel over the rest): load the shared
    initial weights, train on this data-parallel rank's share of every batch through :func:`megatron_steps`, write
    the losses (``rank<r>.pt``) and the final weights as a distributed checkpoint (``final/``)."""
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    import torch.distributed as dist
    from megatron.core import parallel_state

    from nemo_salad.checkpoint.distributed import load_distributed, save_distributed
    from nemo_salad.llm.cpu import ensure_cpu_support
    from nemo_salad.models.salad import SaladModel

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    ensure_cpu_support()
    parallel_state.initialize_model_parallel(tp, 1)
    model = SaladModel(config(tokenizer_dir), defer_build=True)
    model.configure_model()
    load_distributed(model, Path(work) / "init")
    model.train()
    dp, dp_rank = parallel_state.get_data_parallel_world_size(), parallel_state.get_data_parallel_rank()
    batches = [split_batch(model, b, dp)[dp_rank] for b in make_batches(model)]
    with cuda_standins():
        losses, _ = megatron_steps(model, [[b] for b in batches], OPTIM,
                                   megatron={"tensor_model_parallel_size": tp, "overlap_grad_reduce": True,
                                             "overlap_param_gather": False})
    torch.save({"losses": losses}, Path(work) / f"rank{rank}.pt")
    save_distributed(model, Path(work) / "final")
    dist.barrier()

"""Fit the tiny Stage I model on a fixed plan of batches: one rank of a plain-Lightning DDP run, or the one-process
reference of that run.

    python -m tests.helpers.ddp_fit CORPUS OUT_DIR --devices 2   # once per rank, with MASTER_ADDR, MASTER_PORT,
                                                                # WORLD_SIZE, RANK and LOCAL_RANK set
    python -m tests.helpers.ddp_fit CORPUS OUT_DIR --devices 1   # the reference

The recipe builds trainer and model (``trainer.strategy=ddp`` with 2 devices: :func:`nemo_salad.recipes.train.build`
makes the DDP strategy; Lightning's DDP takes the environment variables as an already-launched process group). The
batches come from the recipe's own dataset (``SaladDataModule.dataset()``) applied to fixed CutSets of the corpus:
rank ``r`` reads :func:`rank_plan` ``(r)``, one CutSet per optimizer step. The reference reads every rank's batches of
a step in turn, ``r0b0, r1b0, r0b1, r1b1, ...``, and accumulates them into one step (``accumulate_grad_batches=2``:
Lightning divides each loss by 2, as DDP's mean over 2 ranks does). Each process writes ``OUT_DIR/rank<r>.pt``: its
weights before and after training and the names of the trained parameters.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lhotse import CutSet

RANKS = 2
#: per optimizer step, what each rank reads: speech, then text replay (no audio: the encoder and adapter get no
#: gradient anywhere), speech, then rank 0 text and rank 1 speech (a gradient from one rank only)
PLAN = (("speech", "speech"), ("text", "text"), ("speech", "speech"), ("text", "speech"))
PER_BATCH = 2  # cuts per batch


def rank_plan(speech: CutSet, text: CutSet, rank: int) -> list[CutSet]:
    """The CutSets rank ``rank`` reads, one per step of :data:`PLAN`; no cut is read twice."""
    pools = {"speech": list(speech), "text": list(text)}
    taken = {"speech": 0, "text": 0}
    batches = []
    for step in PLAN:
        for r, kind in enumerate(step):
            cuts = pools[kind][taken[kind]: taken[kind] + PER_BATCH]
            taken[kind] += PER_BATCH
            if r == rank:
                batches.append(CutSet.from_cuts(cuts))
    return batches


class FixedBatches:
    """A DataLoader sampler yielding the given CutSets in order (the dataset collates each into a batch)."""

    def __init__(self, batches: list[CutSet]) -> None:
        self.batches = batches

    def __iter__(self) -> Iterator[CutSet]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def overrides(corpus: Path, exp_dir: Path, devices: int) -> list[str]:
    """The tiny Stage I run, plain DDP over ``devices`` processes (or one process accumulating ``RANKS`` batches)."""
    from tests.training.conftest import tiny_overrides

    out = tiny_overrides(corpus, exp_dir, max_steps=len(PLAN)) + [
        "threads=1", "report_gap_at_start=false", "trainer.accelerator=cpu", f"trainer.devices={devices}",
        "trainer.log_every_n_steps=1", "model.optim.warmup_steps=0",  # every step moves the weights
        "exp_manager.create_checkpoint_callback=false", "exp_manager.create_tensorboard_logger=false"]
    return out + (["+trainer.strategy=ddp"] if devices > 1 else [f"+trainer.accumulate_grad_batches={RANKS}"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("corpus", type=Path, help="tone corpus: train.jsonl.gz, replay.jsonl, tok/")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--devices", type=int, choices=(1, RANKS), required=True)
    args = parser.parse_args()

    import torch
    from torch.utils.data import DataLoader

    from nemo_salad.data.sources import load_source
    from nemo_salad.recipes.train import build
    from tests.training.conftest import compose

    rank = int(os.environ.get("RANK", 0))
    trainer, model, data = build(compose(overrides(args.corpus, args.out_dir / "exp", args.devices)))
    speech = load_source({"name": "speech", "manifest": str(args.corpus / "train.jsonl.gz")})
    text = load_source({"name": "text_replay", "texts": str(args.corpus / "replay.jsonl")})
    plans = [rank_plan(speech, text, r) for r in range(RANKS)]
    batches = plans[rank] if args.devices > 1 else [b for step in zip(*plans) for b in step]
    loader = DataLoader(data.dataset(), sampler=FixedBatches(batches), batch_size=None, num_workers=0)
    start = _Start()
    trainer.callbacks.append(start)
    trainer.fit(model, train_dataloaders=loader)
    if trainer.global_step != len(PLAN):
        raise RuntimeError(f"{trainer.global_step} optimizer steps, expected {len(PLAN)}")
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    if args.devices > 1 and world != args.devices:
        raise RuntimeError(f"trained in a process group of {world} process(es), expected {args.devices}: each rank "
                           "trained alone")
    trainable = [k for k, p in model.named_parameters() if p.requires_grad]
    torch.save({"init": start.state, "final": _state(model), "trainable": trainable}, args.out_dir / f"rank{rank}.pt")


def _state(model: Any) -> dict[str, Any]:
    """Every parameter (trained or frozen; buffers such as BatchNorm statistics are per rank under DDP)."""
    return {k: p.detach().clone() for k, p in model.named_parameters()}


class _Start(pl.Callback):
    """Keeps the weights training starts from (the model is built, and DDP-wrapped, inside ``fit``)."""

    def on_train_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self.state = _state(pl_module)


if __name__ == "__main__":
    main()

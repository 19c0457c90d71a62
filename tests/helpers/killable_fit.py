"""Run the tiny Stage I recipe in its own process, optionally killing it (SIGKILL) at a given step.

    python -m tests.helpers.killable_fit CORPUS EXP_DIR MAX_STEPS [--kill-at STEP] [-- HYDRA_OVERRIDES...]

``--kill-at STEP`` kills the process at the start of the first batch after ``STEP`` optimizer steps, as ``kill -9``
would: no cleanup, no checkpoint. Rerunning the same command without it resumes from the experiment directory's
last checkpoint (NeMo's exp_manager), as rerunning ``examples/salad_train.py`` does.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("corpus", type=Path)
    parser.add_argument("exp_dir", type=Path)
    parser.add_argument("max_steps", type=int)
    parser.add_argument("--kill-at", type=int, default=None, help="SIGKILL this process once this step is reached")
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []  # more Hydra overrides
    args = parser.parse_args(argv[: len(argv) - len(extra) - (1 if extra else 0)])
    os.environ["OMP_NUM_THREADS"] = "1"

    import lightning.pytorch as pl

    from nemo_salad.recipes.train import build
    from tests.training.conftest import compose, tiny_overrides

    class Kill(pl.Callback):
        def on_train_batch_start(self, trainer: pl.Trainer, pl_module: object, batch: object, batch_idx: int) -> None:
            if trainer.global_step >= args.kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

    trainer, model, data = build(compose(tiny_overrides(args.corpus, args.exp_dir, args.max_steps) + extra))
    if args.kill_at is not None:
        trainer.callbacks.append(Kill())
    trainer.fit(model, datamodule=data)


if __name__ == "__main__":
    main()

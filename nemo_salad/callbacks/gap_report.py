"""Report distillation loss, forgetting F and misalignment M on held-out data: before training and after
every validation, as a log line (and as logged metrics ``val/*``)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from nemo.utils import logging

from nemo_salad.data.skips import HeldOutCount
from nemo_salad.llm.parallel import data_parallel_group
from nemo_salad.metrics import GapStats, gap_stats
from nemo_salad.parts.distributed import sum_over_ranks

__all__ = ["GapReport"]


class GapReport(pl.Callback):
    """Measure held-out F, M and distillation loss at the start of training and log each validation's values.

    Args:
        at_start (bool): measure before the first step (skipped when resuming). Default: True.
        path (str | Path | None): also append each reported point to this JSONL file (rank 0), which a resumed run
            keeps appending to (a repeated step: the last line counts). Default: None.
    """

    def __init__(self, at_start: bool = True, path: str | Path | None = None) -> None:
        self.at_start = at_start
        self.path = Path(path) if path is not None else None
        self.history: list[dict[str, float]] = []

    @torch.no_grad()
    def measure(self, trainer: pl.Trainer, model: Any) -> dict[str, float]:
        """One pass over the validation data: mean KD loss per token, F, M and the number of skipped items.

        Raises:
            UnusableDataError: if every validation item was skipped (F and M would read 0).
        """
        loaders = trainer.datamodule.val_dataloader() if trainer.datamodule is not None else []
        loaders = loaders if isinstance(loaders, list) else [loaders]
        was_training = model.training
        model.eval()
        stats, kd_sum, kd_tokens, items = GapStats(), 0.0, 0, HeldOutCount("validation data")
        for loader in loaders:
            for batch in loader:
                items.add(batch)
                if not batch.num_samples:  # every sample skipped (counted above)
                    continue
                batch = model.transfer_batch_to_device(batch, model.device, 0)
                outputs = model(batch)  # one set of forward passes for the loss and the gap metrics
                out = model.compute_loss(batch, outputs)
                if out is not None and out.kd is not None:  # kd: None when α = 0 (not computed)
                    kd_sum += float(out.kd) * out.num_tokens
                    kd_tokens += out.num_tokens
                stats += gap_stats(model, batch, outputs=outputs)
        model.train(was_training)
        group = data_parallel_group()  # each data-parallel rank measured its own share
        stats, skipped = stats.all_reduce(group), items.finish(group)
        kd_sum, kd_tokens = sum_over_ranks([kd_sum, kd_tokens], group)
        kd = kd_sum / kd_tokens if kd_tokens else math.nan  # alpha = 0: not computed
        return {"kd": kd, **{k: float(v) for k, v in stats.as_dict().items()}, "skipped": float(skipped)}

    def _report(self, step: int, values: dict[str, float], trainer: pl.Trainer | None = None) -> None:
        self.history.append({"step": step, **values})
        if self.path is not None and (trainer is None or trainer.is_global_zero):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as out:
                out.write(json.dumps({"step": step, **values}) + "\n")
        kd = "n/a (alpha = 0)" if math.isnan(values["kd"]) else f"{values['kd']:.4f}"
        logging.info(f"[gap] step {step}: distillation loss {kd}  forgetting F {values['forgetting']:.4f}"
                     f"  misalignment M {values['misalignment']:.4f}")

    def on_train_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        if self.at_start and trainer.global_step == 0:
            values = self.measure(trainer, pl_module)
            self._report(0, values, trainer)
            for logger in trainer.loggers:
                logger.log_metrics({f"val/{k}": v for k, v in values.items()}, step=0)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        if trainer.sanity_checking:
            return
        metrics = trainer.callback_metrics
        if "val/misalignment" in metrics:
            self._report(trainer.global_step, {"kd": float(metrics.get("val/kd", float("nan"))),
                                               "forgetting": float(metrics["val/forgetting"]),
                                               "misalignment": float(metrics["val/misalignment"])}, trainer)

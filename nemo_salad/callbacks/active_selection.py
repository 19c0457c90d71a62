"""Lightning callback that runs Stage II active-selection rounds during training and adds the selected synthetic
speech to the training mixture without restarting the process.

When a round triggers (at train start — e.g. Stage II resuming from the Stage I checkpoint —, at a given step,
or every N steps), global rank 0 runs :func:`nemo_salad.selection.run_selection_round` with the current model's
misalignment (model in eval mode, no gradients). Each probe measurement runs on every rank together (a model split
over tensor-parallel ranks computes only so; :mod:`nemo_salad.callbacks.shared_measure`), while the rest of the
round (embedding, clustering, synthesis, files) stays on rank 0 and the other ranks wait, on a gloo group with its
own timeout (``wait_timeout_s``). The round's directory must be on a filesystem every node sees (as ``exp_dir`` is).
When the round is done every rank calls
``trainer.datamodule.add_training_source(name, cuts, weight)`` — with ``origin={"shar": <dir>}`` when the data
module accepts it, so that it can rebuild the source itself on resume. Finished rounds are kept in the callback
state; when the data module takes no origin, resuming from a checkpoint adds their data again (from disk) without
recomputing them. At the end of fit the
last round's probes can be measured again, giving M(c) before and after in its report.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from nemo_salad.callbacks.shared_measure import coordination_group, lead_or_follow
from nemo_salad.data.text_corpus import TextDoc
from nemo_salad.selection.active import load_selection
from nemo_salad.selection.artefacts import read_json
from nemo_salad.selection.config import SelectionConfig
from nemo_salad.selection.report import add_after_measurement
from nemo_salad.selection.round import run_selection_round

__all__ = ["ActiveSelectionCallback"]

log = logging.getLogger(__name__)

MeasureFactory = Callable[[pl.LightningModule], Callable[[Any], float]]


def _default_measure(module: pl.LightningModule) -> Callable[[Any], float]:
    from nemo_salad.metrics import misalignment_fn  # the Stage I metric: mean per-token KL(text || speech)

    return misalignment_fn(module)


class ActiveSelectionCallback(pl.Callback):
    """Run selection rounds and feed their synthetic speech to the data module.

    Args:
        selection (SelectionConfig | dict): round settings (budget, K, γ, probes, ...).
        corpus (Sequence[TextDoc] | Callable[[], Sequence[TextDoc]]): the broad text corpus, or a function
            building it on first use.
        backend (TTSBackend | dict): TTS engine, or a ``nemo_salad.synthesis.build_backend`` config.
        workdir (str | Path): rounds go to ``<workdir>/round_<step>``.
        measure_fn (Callable[[LightningModule], Callable[[CutSet], float]] | None): builds the misalignment
            measure for the current model. Default: ``nemo_salad.metrics.misalignment_fn``.
        asr_filter (CERFilter | dict | None): CER filter for synthesized speech, or its
            ``nemo_salad.synthesis.config.ASRFilterConfig`` fields (built on rank 0 when a round first needs it).
            Default: None.
        encoder (TextEncoder | None): sentence encoder overriding ``selection.embed``. Default: None.
        at_train_start (bool): run a round when training starts (after checkpoint restore), unless the restored
            state already holds the round of an earlier start (a restarted Stage II keeps its one round).
            Default: False.
        at_step (int | None): run a round when ``global_step`` reaches this value. Default: None.
        every_n_steps (int | None): run a round every N optimizer steps. Default: None.
        measure_after_fit (bool): at the end of fit, measure the last round's probes again and add
            ``misalignment_after`` to its report. Default: True.
        source_name (str): prefix of the training-source names. Default: "active".
        weight (float): sampling weight of each new source in the mixture. Default: 1.0.
        wait_timeout_s (float): how long the other ranks wait for rank 0's round (synthesis included) in a
            multi-process run. Default: 86400 (a day).

    >>> cb = ActiveSelectionCallback({"budget": 0.1}, corpus=[], backend={"name": "sine"}, workdir="/tmp/sel",
    ...                              at_step=100)
    >>> cb.state_dict()
    {'rounds': []}
    """

    def __init__(
        self,
        selection: SelectionConfig | dict[str, Any],
        corpus: Sequence[TextDoc] | Callable[[], Sequence[TextDoc]],
        backend: Any,
        workdir: str | Path,
        *,
        measure_fn: MeasureFactory | None = None,
        asr_filter: Any = None,
        encoder: Any = None,
        at_train_start: bool = False,
        at_step: int | None = None,
        every_n_steps: int | None = None,
        measure_after_fit: bool = True,
        source_name: str = "active",
        weight: float = 1.0,
        wait_timeout_s: float = 86400.0,
    ) -> None:
        super().__init__()
        self.config = selection if isinstance(selection, SelectionConfig) else SelectionConfig(**selection)
        if not (at_train_start or at_step is not None or every_n_steps):
            log.warning("ActiveSelectionCallback: no trigger set (at_train_start, at_step, every_n_steps); "
                        "it will never run a round")
        if every_n_steps is not None and every_n_steps <= 0:
            raise ValueError(f"every_n_steps must be a positive integer, got {every_n_steps}")
        if weight <= 0:
            raise ValueError(f"weight must be > 0, got {weight}")
        self._corpus = corpus
        self._backend = backend
        self.workdir = Path(workdir)
        self.measure_fn = measure_fn or _default_measure
        self.asr_filter, self.encoder = asr_filter, encoder
        self.at_train_start, self.at_step, self.every_n_steps = at_train_start, at_step, every_n_steps
        self.measure_after_fit, self.source_name, self.weight = measure_after_fit, source_name, float(weight)
        self.wait_timeout_s = float(wait_timeout_s)
        self.rounds: list[dict[str, Any]] = []
        self._added: set[str] = set()

    # ---- state -------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"rounds": [dict(r) for r in self.rounds]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rounds = [dict(r) for r in state_dict.get("rounds", [])]

    # ---- hooks -------------------------------------------------------------------------------------------
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not _accepts_origin(trainer.datamodule):
            for record in self.rounds:  # restored from a checkpoint: add their data again, from disk
                self._add_source(trainer, record)
        # else the data module rebuilds the sources itself from the origin given when they were added
        if self.at_train_start and not any(r.get("trigger") == "train_start" for r in self.rounds):
            self._maybe_run(trainer, pl_module, trainer.global_step, trigger="train_start")

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.global_step
        if step == self.at_step or (self.every_n_steps and step > 0 and step % self.every_n_steps == 0):
            self._maybe_run(trainer, pl_module, step)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.measure_after_fit and self.rounds:
            record, tag = self.rounds[-1], f"step{trainer.global_step}"
            with _eval_mode(pl_module):
                lead_or_follow(lambda measure: add_after_measurement(record["workdir"], measure, tag=tag),
                               self.measure_fn(pl_module), self._coordination)

    # ---- work --------------------------------------------------------------------------------------------
    def _maybe_run(self, trainer: pl.Trainer, pl_module: pl.LightningModule, step: int, trigger: str = "step"
                   ) -> None:
        if any(r["step"] == step for r in self.rounds):
            return
        workdir = self.workdir / f"round_{step:07d}"
        config = dataclasses.replace(self.config, measure_tag=f"step{step}")

        def round_on_rank_zero(measure: Callable[[Any], float]) -> None:
            run_selection_round(config, self._get_corpus(), measure, self._get_backend(), workdir,
                                asr_filter=self._get_asr_filter(), encoder=self.encoder)

        with _eval_mode(pl_module):
            # returns on every rank once rank 0's round is done (its files written): no further barrier needed
            lead_or_follow(round_on_rank_zero, self.measure_fn(pl_module), self._coordination)
        record = {"step": int(step), "workdir": str(workdir), "name": f"{self.source_name}_step{step}",
                  "weight": self.weight, "trigger": trigger}
        self.rounds.append(record)
        self._add_source(trainer, record)

    def _add_source(self, trainer: pl.Trainer, record: dict[str, Any]) -> None:
        if record["name"] in self._added:
            return
        datamodule = trainer.datamodule
        if datamodule is None or not callable(getattr(datamodule, "add_training_source", None)):
            raise TypeError("ActiveSelectionCallback needs trainer.datamodule.add_training_source(name, cuts, "
                            f"weight); got datamodule {type(datamodule).__name__}")
        report = read_json(Path(record["workdir"]) / "report.json")
        if report is None:
            raise FileNotFoundError(f"selection round {record['workdir']} has no report.json; cannot add its data")
        selection_dir = Path(record["workdir"]) / report["summary"]["selection_dir"]
        cuts = load_selection(selection_dir)
        if _accepts_origin(datamodule):  # lets a resumed run rebuild the source: {shar: <dir>}
            datamodule.add_training_source(record["name"], cuts, record["weight"],
                                           origin={"shar": str(selection_dir / "final")})
        else:
            datamodule.add_training_source(record["name"], cuts, record["weight"])
        self._added.add(record["name"])
        log.info("added training source %r (%d items) from %s", record["name"], report["summary"]["selected_items"],
                 record["workdir"])

    @functools.cached_property
    def _coordination(self) -> Any:
        """The gloo group rank 0 leads the others on (None in one process); made on first use, on every rank."""
        return coordination_group(self.wait_timeout_s)

    def _get_corpus(self) -> Sequence[TextDoc]:
        if callable(self._corpus):
            self._corpus = self._corpus()
        return self._corpus

    def _get_asr_filter(self) -> Any:
        if isinstance(self.asr_filter, dict) or hasattr(self.asr_filter, "keys"):
            from nemo_salad.synthesis.config import ASRFilterConfig, build_asr_filter

            self.asr_filter = build_asr_filter(ASRFilterConfig(**dict(self.asr_filter)))
        return self.asr_filter

    def _get_backend(self) -> Any:
        if isinstance(self._backend, dict) or hasattr(self._backend, "keys"):
            from nemo_salad.synthesis import build_backend

            self._backend = build_backend(self._backend)
        return self._backend


def _accepts_origin(datamodule: Any) -> bool:
    """Whether ``datamodule.add_training_source`` takes ``origin`` (then it restores added sources on resume)."""
    method = getattr(datamodule, "add_training_source", None)
    if method is None:
        return False
    try:
        return "origin" in inspect.signature(method).parameters
    except (TypeError, ValueError):
        return False


class _eval_mode:
    """Context manager: module in eval mode under ``torch.no_grad``, previous mode restored after."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module, self.was_training = module, module.training
        self._no_grad = torch.no_grad()

    def __enter__(self) -> None:
        self.module.eval()
        self._no_grad.__enter__()

    def __exit__(self, *exc: Any) -> None:
        self._no_grad.__exit__(*exc)
        self.module.train(self.was_training)

"""Build trainer, model and data from a Hydra config and train (Stage I and Stage II share this).

Everything the config instantiates is checked against the ``_target_`` allowlist first. NeMo's ``exp_manager``
provides checkpointing (``last.ckpt`` every ``every_n_train_steps``), TensorBoard logs, resuming from the last
checkpoint of the same experiment directory, and the ``.nemo`` export at the end. ``init_from`` starts a new run
from another run's weights and, with ``init_optimizer: true`` (Stage II from Stage I's pre-decay checkpoint), its
optimizer state, under this run's schedule, step count and data (:func:`init_optimizer_callback`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.strategies import DDPStrategy
from nemo.utils import logging
from nemo.utils.exp_manager import exp_manager
from omegaconf import DictConfig, OmegaConf

from nemo_salad.callbacks import (
    ActiveSelectionCallback,
    ExactResume,
    GapReport,
    InitOptimizerState,
    PreDecayCheckpoint,
    RunReport,
)
from nemo_salad.checkpoint.checkpoint_io import SafeCheckpointIO
from nemo_salad.data.datamodule import SaladDataModule
from nemo_salad.models.salad import SaladModel
from nemo_salad.parts.safe_config import check_targets
from nemo_salad.recipes.budget import token_budget
from nemo_salad.recipes.schema import ActiveSelectionConfig, typed_section, typed_training_config
from nemo_salad.recipes.validate import validate_training_config

__all__ = ["build", "ddp_strategy", "init_optimizer_callback", "train"]


def build(cfg: DictConfig) -> tuple[pl.Trainer, SaladModel, SaladDataModule]:
    """Trainer (with exp_manager), model and data module of a training config.

    Raises:
        ConfigValueError: (a ``ValueError``) for values outside their ranges, all listed, before anything is built.
        ConfigSchemaError: (a ``ValueError``) for an unknown key or a value of the wrong type
            (:mod:`nemo_salad.recipes.schema`), naming it.
    """
    check_targets(cfg, source="training config")
    validate_training_config(cfg)
    cfg = typed_training_config(cfg)  # every default of the schema filled in; unknown keys refused
    logging.info(token_budget(cfg).describe())
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    pl.seed_everything(cfg.seed, workers=True)
    # ExactResume: per-batch seeds and logger steps that a resumed run repeats exactly
    callbacks: list[Any] = [ExactResume(cfg.seed), GapReport(at_start=cfg.report_gap_at_start)]
    if cfg.active_selection:
        callbacks.append(active_selection_callback(cfg.active_selection))
    trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    megatron = trainer_cfg.get("strategy") == "megatron"
    ddp = trainer_cfg.get("strategy") == "ddp" or (trainer_cfg.get("strategy", "auto") == "auto"
                                                     and _several_processes(trainer_cfg))
    if megatron:  # NeMo-2 MegatronStrategy: tensor/data parallel, distributed optimizer, megatron checkpoints
        from nemo_salad.recipes.megatron import megatron_trainer_kwargs

        precision = str(trainer_cfg.get("precision", "bf16-mixed"))
        trainer_cfg = megatron_trainer_kwargs(trainer_cfg, OmegaConf.to_container(cfg.megatron or {}))
    elif cfg.megatron:
        raise ValueError("a `megatron` section is set but trainer.strategy is not `megatron`")
    elif ddp:
        trainer_cfg["strategy"] = ddp_strategy()
    else:  # auto, single_device (validate_training_config refused any other name)
        trainer_cfg.setdefault("plugins", []).append(SafeCheckpointIO())  # resume with weights_only=True
    trainer = pl.Trainer(**trainer_cfg, callbacks=callbacks)
    log_dir = exp_manager(trainer, cfg.exp_manager)
    trainer.callbacks.append(PreDecayCheckpoint(Path(log_dir or ".") / "checkpoints", cfg.name,
                                                cfg.model.optim.decay_fraction))
    if cfg.report:
        gap = next(cb for cb in trainer.callbacks if isinstance(cb, GapReport))
        trainer.callbacks.append(run_report_callback(cfg.report, gap, Path(log_dir or "."),
                                                     demo_only=_demo_only(cfg.data)))
    # under MegatronStrategy and DDP the model is built in configure_model, once the strategy has created the
    # process group: built now, its megatron layers would create a one-process group that DDP then reuses, and
    # every rank would train alone
    model = SaladModel(cfg.model, trainer=trainer, defer_build=True if ddp else None)
    if cfg.init_from and not trainer.ckpt_path:
        model.init_from = str(cfg.init_from)  # loaded right after the build (now, or in configure_model)
        restore = init_optimizer_callback(str(cfg.init_from), cfg.init_optimizer, megatron)
        if restore is not None:
            trainer.callbacks.append(restore)
    if megatron:
        from nemo_salad.recipes.megatron import megatron_optimizer

        megatron_optimizer(OmegaConf.to_container(cfg.model.optim, resolve=True), trainer.max_steps,
                           bf16="bf16" in precision, clip_grad=cfg.trainer.get("gradient_clip_val")).connect(model)
    data = SaladDataModule(cfg.data, model.tokenizer, model.frame_counter(cfg.data.max_duration),
                           model.pad_id, model.context_length)
    return trainer, model, data


def init_optimizer_callback(init_from: str, init_optimizer: bool, megatron: bool = False
                            ) -> InitOptimizerState | None:
    """What a new run takes of ``init_from`` besides its weights, said in the log.

    Args:
        init_from (str): the checkpoint (a ``.ckpt`` path may name the folder a megatron run saved).
        init_optimizer (bool): continue its optimizer state (AdamW moments and step counts; under the megatron
            strategy also the distributed optimizer's fp32 main parameters).
        megatron (bool): the run trains under ``trainer.strategy: megatron``.

    Returns:
        InitOptimizerState | None: the callback that loads the checkpoint's optimizer state before the first step;
        None for weights only (``init_optimizer: false``).

    Raises:
        ValueError: for ``init_optimizer`` with a ``.nemo`` (weights only), with a megatron checkpoint folder on the
            plain path (megatron's distributed optimizer state does not load into AdamW), or with a plain path's
            Lightning checkpoint under the megatron strategy (its AdamW state does not load into megatron's).

    >>> init_optimizer_callback("/runs/s1-pre-decay.ckpt", True).path
    '/runs/s1-pre-decay.ckpt'
    >>> init_optimizer_callback("/runs/s1-pre-decay.ckpt", True, megatron=True).megatron
    True
    >>> init_optimizer_callback("/runs/s1.nemo", False) is None
    True
    """
    from nemo_salad.checkpoint.distributed import is_distributed_checkpoint, resolve_checkpoint

    if not init_optimizer:
        logging.info(f"init_from={init_from}: weights only (init_optimizer=false); the optimizer starts with fresh "
                     "AdamW moments and step counts")
        return None
    if init_from.endswith(".nemo"):
        raise ValueError(f"init_optimizer=true with init_from={init_from}: a .nemo holds weights only; set "
                         "init_optimizer=false")
    resolved = resolve_checkpoint(init_from)
    if megatron:
        if Path(resolved).is_file():  # a missing path fails when the weights load
            raise ValueError(f"init_optimizer=true with init_from={init_from}: a Lightning checkpoint's AdamW state "
                             "does not load into megatron's distributed optimizer (trainer.strategy=megatron); set "
                             "init_optimizer=false for its weights only")
        return InitOptimizerState(init_from, megatron=True)
    if is_distributed_checkpoint(resolved):
        raise ValueError(f"init_optimizer=true with init_from={init_from}: a megatron checkpoint's optimizer state "
                         "(megatron's distributed optimizer) does not load into the plain path's AdamW; set "
                         "init_optimizer=false for its weights only")
    return InitOptimizerState(init_from)


def _several_processes(trainer: dict[str, Any]) -> bool:
    """Whether a ``trainer`` section starts several processes (Lightning's ``auto`` strategy then picks plain DDP,
    which must be the one :func:`ddp_strategy` builds).

    >>> _several_processes({"devices": 1}), _several_processes({"devices": 2}), _several_processes({"num_nodes": 2})
    (False, True, True)
    """
    devices, nodes = trainer.get("devices", "auto"), int(trainer.get("num_nodes", 1) or 1)
    if isinstance(devices, list | tuple):
        count = len(devices)
    elif isinstance(devices, str) and not devices.lstrip("-").isdigit():  # "auto"
        accelerator = str(trainer.get("accelerator", "auto"))
        count = torch.cuda.device_count() if accelerator in ("auto", "gpu", "cuda") else 1
    else:
        count = int(devices)
        if count == -1:
            count = torch.cuda.device_count() if str(trainer.get("accelerator", "auto")) != "cpu" else 1
    return max(count, 1) * nodes > 1


def ddp_strategy() -> DDPStrategy:
    """Lightning's plain DDP for ``trainer.strategy: ddp``, built here since configs may only instantiate
    allowlisted classes. Its processes are launched by Lightning (it runs the script again) or by an external
    launcher (torchrun, SLURM).

    ``find_unused_parameters=True``: a text-replay batch leaves the speech encoder and adapter without gradients,
    which plain DDP otherwise refuses at the next step ("Expected to have finished reduction in the prior
    iteration"). Parameters that no rank used keep ``grad=None``, so AdamW skips them as it does in one process
    (no moment decay, no weight decay); on a step where only some ranks read speech, the others count as zero in
    the average, as when one process accumulates the same batches. (Exact-zero gradients, as the Megatron path
    adds, would instead make every all-text step move these weights.)

    Returns:
        DDPStrategy: with :class:`SafeCheckpointIO` (resume with ``weights_only=True``).

    >>> strategy = ddp_strategy()
    >>> strategy._ddp_kwargs["find_unused_parameters"], type(strategy.checkpoint_io).__name__
    (True, 'SafeCheckpointIO')
    """
    return DDPStrategy(find_unused_parameters=True, checkpoint_io=SafeCheckpointIO())


def _demo_only(data: DictConfig) -> bool:
    """True when every training and validation source is the embedded demo corpus (decontaminated text)."""
    sources = list(data.get("sources") or [])
    val = data.get("validation") or {}
    return bool(data.get("demo")) and all(s.get("demo") for s in sources) and not (val.get("shar")
                                                                                  or val.get("manifest"))


def run_report_callback(report: DictConfig, gap: GapReport, out_dir: Path, demo_only: bool = False) -> RunReport:
    """The start/end spoken-benchmark report from a ``report`` config section (see ``conf/stage1.yaml``).

    ``demo_only``: the training text is the embedded demo's, decontaminated against ``EVAL_BENCHMARKS``."""
    from nemo_salad.data.olmo_text import EVAL_BENCHMARKS
    from nemo_salad.evaluation.config import speech_source
    from nemo_salad.evaluation.harness import ScoringSettings

    rep = OmegaConf.to_container(report, resolve=True)
    unknown = sorted(set(rep) - {"benchmarks", "n_items", "every_n_val", "seed", "tts", "scoring", "data"})
    if unknown:
        raise ValueError(f"report: unknown key(s) {unknown}; expected benchmarks, n_items, every_n_val, seed, tts, "
                         "scoring, data")
    speech = speech_source(rep.get("tts") or {"name": "piper"}, progress=True)
    names = list(rep.get("benchmarks") or ("arc_easy", "copa"))
    clean = demo_only and all(n in EVAL_BENCHMARKS for n in names)
    return RunReport(gap, speech, decontaminated="training text (the embedded demo corpus) excludes every passage "
                     "with an n-gram overlap with any item of " + ", ".join(EVAL_BENCHMARKS) if clean else None,
                     benchmarks=names, n_items=int(rep.get("n_items", 100)),
                     settings=ScoringSettings(**(rep.get("scoring") or {})),
                     every_n_val=int(rep.get("every_n_val", 0)), seed=int(rep.get("seed", 0)),
                     data=rep.get("data"), out_dir=out_dir)


def active_selection_callback(sel: DictConfig) -> ActiveSelectionCallback:
    """The Stage II selection callback from an ``active_selection`` config section (see ``conf/stage2.yaml``;
    its keys and defaults: :class:`~nemo_salad.recipes.schema.ActiveSelectionConfig`)."""
    from nemo_salad.selection.cli import CorpusConfig, load_corpus

    sel = typed_section(ActiveSelectionConfig, OmegaConf.to_container(sel, resolve=True)
                        if isinstance(sel, DictConfig) else sel, "active_selection", "active_selection.")
    corpus_cfg = CorpusConfig(**OmegaConf.to_container(sel.corpus, resolve=True))
    return ActiveSelectionCallback(OmegaConf.to_container(sel.selection, resolve=True),
                                   corpus=lambda: load_corpus(corpus_cfg),
                                   backend=OmegaConf.to_container(sel.tts, resolve=True), workdir=str(sel.workdir),
                                   asr_filter=OmegaConf.to_container(sel.asr_filter, resolve=True)
                                   if sel.asr_filter else None,
                                   at_train_start=sel.at_train_start, at_step=sel.at_step,
                                   every_n_steps=sel.every_n_steps, measure_after_fit=sel.measure_after_fit,
                                   weight=sel.weight, wait_timeout_s=sel.wait_timeout_s)


def train(cfg: DictConfig) -> Path | None:
    """Train; returns the path of the exported ``.nemo`` (None if the run exported nothing)."""
    trainer, model, data = build(cfg)
    trainer.fit(model, datamodule=data)  # resumes from trainer.ckpt_path when exp_manager found a checkpoint
    ckpt = getattr(trainer.checkpoint_callback, "dirpath", None)  # exp_manager saves the .nemo there
    roots = [Path(d) for d in (ckpt, trainer.log_dir) if d and Path(d).is_dir()] or [Path(".")]
    exported = sorted({p for root in roots for p in root.rglob("*.nemo")}, key=lambda p: p.stat().st_mtime)
    if exported:
        logging.info(f"exported {exported[-1]}")
        return exported[-1]
    return None

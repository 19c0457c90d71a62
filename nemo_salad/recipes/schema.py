"""Typed schema of the training config (``conf/stage*.yaml``): every key, its type and its one default.

The sections the code reads are dataclasses here; the readers (:func:`nemo_salad.recipes.train.build`, the data
module, the model, the optimizer) take their defaults from them and nowhere else. Some defaults live with the code
that owns them and are reused here, not repeated: the loss settings are :class:`~nemo_salad.losses.DistillationLoss`'s
signature, ``model.optim`` is :class:`~nemo_salad.parts.optim.OptimConfig`, the ``megatron`` section is
:data:`~nemo_salad.recipes.megatron.MEGATRON_DEFAULTS`, ``data.layout`` and ``data.demo`` are
:class:`~nemo_salad.data.layout.LayoutConfig` and the demo corpus's settings, and ``active_selection``'s corpus,
selection and ASR filter are the dataclasses of :mod:`nemo_salad.selection` and :mod:`nemo_salad.synthesis`.
Sections that select a swappable part (``model.llm``, ``model.encoder``, ``model.adapter``, ``trainer``,
``exp_manager``, ``report``) stay free-form mappings checked by their builders.

:func:`typed_training_config` merges a composed config into :class:`TrainingConfig`: a value of the wrong type or
an unknown key fails there, naming the full key. :func:`nemo_salad.recipes.train.build` calls it after the range
checks of :mod:`nemo_salad.recipes.validate`, before anything is built, so ``examples/salad_train.py`` and every
caller of ``build`` get it. :func:`register_schema` stores the schema in Hydra's ConfigStore as ``salad_training``:
a config whose defaults list names it is typed at compose time. The shipped configs do not name it, so that the
range checks still see (and report) each value as it was written, e.g. ``data.batch_duration=0`` rather than
``0.0``, and so that a config composes without importing this package.

Layout::

    TrainingConfig
      name, seed, threads, report_gap_at_start, init_from, init_optimizer
      model: ModelConfig       llm, encoder, adapter, tokenizer (free-form); teacher: TeacherConfig;
                               loss: LossConfig; optim: OptimConfig
      data: DataConfig         demo: DemoConfig | None; sources: [SourceConfig]; validation: ValidationConfig | None;
                               layout: LayoutSchema; batch/bucket sizes, durations, pack_length, skip settings
      megatron: MegatronConfig | None
      active_selection: ActiveSelectionConfig | None
      trainer, exp_manager, report (free-form)

>>> cfg = typed_training_config({"model": {"optim": {"adapter_lr": 2e-3}}})
>>> cfg.model.optim.adapter_lr, cfg.model.optim.llm_lr, cfg.data.max_duration, cfg.model.loss.direction
(0.002, 5e-05, 40.0, 'forward')
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from nemo_salad.data.config import DataConfig, DemoConfig, LayoutSchema, SourceConfig, ValidationConfig
from nemo_salad.models.config import OLD_MODEL_KEYS, LossConfig, ModelConfig, TeacherConfig, model_config
from nemo_salad.parts.optim import OptimConfig
from nemo_salad.parts.schema import ConfigSchemaError, default_field, typed_section
from nemo_salad.recipes.megatron import MEGATRON_DEFAULTS
from nemo_salad.selection.cli import CorpusConfig
from nemo_salad.selection.config import SelectionConfig
from nemo_salad.synthesis.config import ASRFilterConfig

__all__ = ["ActiveSelectionConfig", "ConfigSchemaError", "DataConfig", "DemoConfig", "LayoutSchema", "LossConfig",
           "MegatronConfig", "ModelConfig", "OLD_MODEL_KEYS", "OptimConfig", "SourceConfig", "TeacherConfig",
           "TrainingConfig", "ValidationConfig", "model_config", "register_schema", "typed_section",
           "typed_training_config"]


#: ``megatron``: the keys and defaults of :data:`~nemo_salad.recipes.megatron.MEGATRON_DEFAULTS`
MegatronConfig = dataclasses.make_dataclass(
    "MegatronConfig", [(key, type(value), default_field(value)) for key, value in MEGATRON_DEFAULTS.items()])


@dataclass
class ActiveSelectionConfig:
    """``active_selection``: the Stage II selection round (:class:`~nemo_salad.callbacks.ActiveSelectionCallback`)."""

    workdir: str = MISSING
    at_train_start: bool = True
    at_step: int | None = None
    every_n_steps: int | None = None
    measure_after_fit: bool = True
    weight: float = 1.0  # mixture weight of the selected synthetic speech
    wait_timeout_s: float = 86400.0  # multi-process: how long the other ranks wait for rank 0's round
    tts: dict[str, Any] = field(default_factory=lambda: {"name": "piper"})
    asr_filter: ASRFilterConfig | None = None
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)


@dataclass
class TrainingConfig:
    """The whole training config (``conf/stage1.yaml`` and the configs that compose it)."""

    name: str = "salad"
    seed: int = 0
    threads: int | None = None  # torch CPU threads; null: torch's default
    report_gap_at_start: bool = True  # held-out loss, F and M before the first step
    init_from: str | None = None  # weights of another run (.ckpt, .nemo or a megatron checkpoint folder)
    # with init_from: also continue its optimizer state (AdamW moments and step counts; Stage II of the paper), with
    # this run's schedule, step count and data. False: weights only, with fresh moments (the only choice for a .nemo)
    init_optimizer: bool = True
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    trainer: dict[str, Any] = field(default_factory=dict)  # pl.Trainer keyword arguments
    exp_manager: dict[str, Any] | None = None  # NeMo's exp_manager
    report: dict[str, Any] | None = None  # callbacks/run_report.py (checked by run_report_callback)
    megatron: MegatronConfig | None = None  # type: ignore[valid-type]
    active_selection: ActiveSelectionConfig | None = None


def register_schema(name: str = "salad_training") -> None:
    """Register :class:`TrainingConfig` in Hydra's ConfigStore as ``name``: a config whose defaults list names it is
    typed at compose time. Call it before composing such a config (the shipped configs do not name it: ``build``
    types them with :func:`typed_training_config`)."""
    ConfigStore.instance().store(name=name, node=TrainingConfig)


def typed_training_config(cfg: Any, source: str = "training config") -> DictConfig:
    """``cfg`` merged into :class:`TrainingConfig`: missing keys take their defaults, values their types.

    Args:
        cfg (DictConfig | Mapping): a composed training config.
        source (str): what the config is, for the message. Default: "training config".

    Returns:
        DictConfig: typed (a value of the wrong type cannot be set later either).

    Raises:
        ConfigSchemaError: (a ``ValueError``) for a value of the wrong type or an unknown key, naming the full key.

    >>> typed_training_config({"model": {"optim": {"adapter_lr": "abc"}}})
    Traceback (most recent call last):
    ...
    nemo_salad.parts.schema.ConfigSchemaError: training config: model.optim.adapter_lr: Value 'abc' of type 'str' \
could not be converted to Float. Fix the key or its value in the YAML or the command-line override (the schema: \
nemo_salad.recipes.schema.TrainingConfig)
    """
    model = cfg.get("model") if isinstance(cfg, Mapping) else None
    old = [k for k in OLD_MODEL_KEYS if isinstance(model, Mapping) and k in model]
    if old:  # removed settings: every bad sample is now skipped (and counted) by the dataset
        from nemo.utils import logging

        logging.warning(f"{source}: model.{', model.'.join(old)} no longer exist(s) and are ignored: the data pipeline "
                        "skips and counts every unusable sample")
        cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False) if isinstance(cfg, DictConfig) else cfg)
        for k in old:
            del cfg.model[k]
    return typed_section(TrainingConfig, cfg, source)

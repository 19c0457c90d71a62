"""Check the values of a training config before anything is built.

:func:`validate_training_config` runs first in :func:`nemo_salad.recipes.train.build`: learning rates, weight
decay, Adam betas and eps, the schedule's fractions, loss settings, batch sizes and durations, source weights, the
skip threshold, the trainer's step counts and its strategy, and an ``init_from`` that cannot give the optimizer state
``init_optimizer`` asks for (a ``.nemo``). Every problem names the full config key, the value
received and the allowed range, and all of them are reported at once, so a bad command-line override fails in a
second instead of training (torch checks only an optimizer's default ``lr``, not the per-part rates set here).
Required values still marked ``???`` are left to the code that reads them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf

__all__ = ["STRATEGIES", "ConfigValueError", "training_config_problems", "validate_training_config"]

_INF = math.inf


class ConfigValueError(ValueError):
    """A training config holds values outside their allowed ranges.

    Attributes:
        problems (list[str]): one line per bad value (key, value received, allowed range).
    """

    def __init__(self, problems: Sequence[str], source: str = "training config") -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{source}: {len(self.problems)} invalid value(s):\n{lines}\nSet each to a value in its "
                         "range (in the YAML or as a command-line override, e.g. model.optim.adapter_lr=1e-3).")


def _range_text(lo: float, hi: float, lo_open: bool, hi_open: bool, integer: bool) -> str:
    kind = "an integer" if integer else "a number"
    if hi == _INF:
        return f"{kind} {'>' if lo_open else '>='} {lo:g}"
    return f"{kind} in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"


class _Checker:
    """Collects problems; each ``number`` call checks one key of ``cfg`` if it is set."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def number(self, section: Mapping[str, Any] | None, key: str, prefix: str, lo: float = -_INF, hi: float = _INF,
               *, lo_open: bool = False, hi_open: bool = False, integer: bool = False,
               nullable: bool = False) -> None:
        if not isinstance(section, Mapping) or key not in section:
            return
        self.value(section[key], f"{prefix}{key}", lo, hi, lo_open=lo_open, hi_open=hi_open, integer=integer,
                   nullable=nullable)

    def value(self, value: Any, name: str, lo: float = -_INF, hi: float = _INF, *, lo_open: bool = False,
              hi_open: bool = False, integer: bool = False, nullable: bool = False) -> None:
        if value == "???" or (value is None and nullable):
            return
        expected = _range_text(lo, hi, lo_open, hi_open, integer) + (" or null" if nullable else "")
        try:
            if isinstance(value, bool) or value is None:
                raise TypeError
            number = float(value)
            if integer and (not math.isfinite(number) or number != int(number)):
                raise TypeError
        except (TypeError, ValueError):
            self.problems.append(f"{name}={value!r}: expected {expected}")
            return
        ok = math.isfinite(number) and (lo < number if lo_open else lo <= number) and (
            number < hi if hi_open else number <= hi)
        if not ok:
            self.problems.append(f"{name}={value!r}: expected {expected}")

    def choice(self, section: Mapping[str, Any] | None, key: str, prefix: str, allowed: Sequence[str]) -> None:
        if isinstance(section, Mapping) and key in section and section[key] not in allowed:
            self.problems.append(f"{prefix}{key}={section[key]!r}: expected one of {list(allowed)}")


def _section(cfg: Mapping[str, Any], *keys: str) -> Mapping[str, Any]:
    for key in keys:
        cfg = cfg.get(key) if isinstance(cfg, Mapping) else None
    return cfg if isinstance(cfg, Mapping) else {}


def _check_optim(c: _Checker, optim: Mapping[str, Any]) -> None:
    p = "model.optim."
    for key in ("adapter_lr", "llm_lr"):
        c.number(optim, key, p, 0.0)
    for key in ("encoder_lr", "lora_lr"):  # null: the adapter's rate
        c.number(optim, key, p, 0.0, nullable=True)
    c.number(optim, "weight_decay", p, 0.0)
    c.number(optim, "eps", p, 0.0, lo_open=True)
    c.number(optim, "warmup_steps", p, 0, integer=True)
    c.number(optim, "decay_fraction", p, 0.0, 1.0)
    c.number(optim, "min_lr_ratio", p, 0.0, 1.0)
    if "betas" in optim:
        betas = optim["betas"]
        if isinstance(betas, str) or not isinstance(betas, Sequence) or len(betas) != 2:
            c.problems.append(f"{p}betas={betas!r}: expected two numbers, each in [0, 1)")
        else:
            for i, beta in enumerate(betas):
                c.value(beta, f"{p}betas.{i}", 0.0, 1.0, hi_open=True)


def _check_loss(c: _Checker, loss: Mapping[str, Any]) -> None:
    p = "model.loss."
    c.number(loss, "alpha", p, 0.0, 1.0)
    c.number(loss, "temperature", p, 0.0, lo_open=True)
    c.number(loss, "chunk_size", p, 1, integer=True)
    c.choice(loss, "direction", p, ("forward", "reverse", "js"))


def _check_data(c: _Checker, data: Mapping[str, Any]) -> None:
    p = "data."
    for key in ("batch_duration", "max_duration"):
        c.number(data, key, p, 0.0, lo_open=True)
    for key in ("num_buckets", "buffer_size", "bins_estimate_cuts", "max_text_tokens", "skip_check_items"):
        c.number(data, key, p, 1, integer=True)
    c.number(data, "num_workers", p, 0, integer=True)
    c.number(data, "batch_tokens", p, 1, integer=True, nullable=True)
    c.number(data, "max_skip_fraction", p, 0.0, 1.0)
    c.number(_section(data, "validation"), "max_cuts", "data.validation.", 1, integer=True, nullable=True)
    sources = data.get("sources")
    if sources is not None and sources != "???":
        if isinstance(sources, str) or not isinstance(sources, Sequence):
            c.problems.append(f"data.sources={sources!r}: expected a list of sources ({{name, weight, one of shar, "
                              "manifest, texts, demo}})")
            sources = []
        names: list[Any] = []
        for i, entry in enumerate(sources):
            if not isinstance(entry, Mapping):
                c.problems.append(f"data.sources.{i}={entry!r}: expected a mapping with name, weight and one of "
                                  "shar, manifest, texts, demo")
                continue
            if not entry.get("name"):
                c.problems.append(f"data.sources.{i}.name={entry.get('name')!r}: expected a non-empty name")
            elif entry["name"] in names:
                c.problems.append(f"data.sources.{i}.name={entry['name']!r}: expected a unique name (used twice)")
            names.append(entry.get("name"))
            c.number(entry, "weight", f"data.sources.{i}.", 0.0, lo_open=True)
    layout = _section(data, "layout")
    c.number(layout, "prefix_prob", "data.layout.", 0.0, 1.0)
    c.number(layout, "min_words", "data.layout.", 1, integer=True)
    c.number(layout, "max_words", "data.layout.", 1, integer=True)
    lo, hi = layout.get("min_words"), layout.get("max_words")
    if isinstance(lo, int) and isinstance(hi, int) and 1 <= hi < lo:
        c.problems.append(f"data.layout.max_words={hi}: expected >= data.layout.min_words={lo}")
    if layout:
        from nemo_salad.data.layout import LayoutConfig

        pairs = ("text_words", "speech_words", "prefix_speech_fraction")
        try:  # its own checks: kinds, word ranges, fractions
            LayoutConfig(**{k: tuple(v) if k in pairs and isinstance(v, Sequence) else v for k, v in layout.items()})
        except (TypeError, ValueError) as exc:
            c.problems.append(f"data.{exc}" if str(exc).startswith("layout.") else f"data.layout: {exc}")


#: ``trainer.strategy`` values ``nemo_salad.recipes.train.build`` supports (each with ``SafeCheckpointIO``)
STRATEGIES = ("auto", "single_device", "ddp", "megatron")


def _check_trainer(c: _Checker, trainer: Mapping[str, Any]) -> None:
    p = "trainer."
    strategy = trainer.get("strategy", "auto")
    if strategy == "ddp_spawn":
        c.problems.append(f"{p}strategy='ddp_spawn': not supported (spawning pickles the model, and NeMo wraps its "
                          "training_step in an object that cannot be pickled); use ddp, which starts the other "
                          "processes by running the script again")
    elif strategy not in STRATEGIES:  # anything else would train and resume without SafeCheckpointIO
        c.problems.append(f"{p}strategy={strategy!r}: expected one of {list(STRATEGIES)} (megatron: NeMo-2's "
                          "MegatronStrategy, tensor parallelism and a distributed optimizer; ddp: plain data "
                          "parallelism; other Lightning strategies are not supported)")
    c.number(trainer, "max_steps", p, 1, integer=True)
    c.number(trainer, "gradient_clip_val", p, 0.0, nullable=True)
    c.number(trainer, "accumulate_grad_batches", p, 1, integer=True)
    c.number(trainer, "log_every_n_steps", p, 1, integer=True)
    interval = trainer.get("val_check_interval")
    if isinstance(interval, float) and not isinstance(interval, bool):
        c.value(interval, f"{p}val_check_interval", 0.0, 1.0, lo_open=True)  # a fraction of an epoch
    else:
        c.number(trainer, "val_check_interval", p, 1, integer=True, nullable=True)


def training_config_problems(cfg: DictConfig | Mapping[str, Any]) -> list[str]:
    """Every value of a training config outside its allowed range, one line each (empty when all are valid).

    Args:
        cfg (DictConfig | Mapping): the whole training config (``model``, ``data``, ``trainer``, ...);
            interpolations are resolved first.

    Returns:
        list[str]: ``"<key>=<value>: expected <range>"`` lines.

    >>> training_config_problems({"model": {"optim": {"llm_lr": -1e-5, "betas": [0.9, 1.0]}},
    ...                           "data": {"batch_duration": 0}})
    ['model.optim.llm_lr=-1e-05: expected a number >= 0', 'model.optim.betas.1=1.0: expected a number in [0, 1)', \
'data.batch_duration=0: expected a number > 0']
    """
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    c = _Checker()
    c.number(cfg, "threads", "", 1, integer=True, nullable=True)
    c.number(cfg, "seed", "", 0, integer=True)
    _check_optim(c, _section(cfg, "model", "optim"))
    _check_loss(c, _section(cfg, "model", "loss"))
    _check_data(c, _section(cfg, "data"))
    _check_trainer(c, _section(cfg, "trainer"))
    c.number(_section(cfg, "active_selection"), "weight", "active_selection.", 0.0, lo_open=True)
    _check_init(c, cfg)
    _check_report(c, _section(cfg, "report"), _section(cfg, "model", "teacher").get("mode"))
    return c.problems


def _check_init(c: _Checker, cfg: Mapping[str, Any]) -> None:
    """``init_from`` with ``init_optimizer`` (default true) needs a checkpoint that holds an optimizer state.

    >>> c = _Checker(); _check_init(c, {"init_from": "/runs/s1.nemo"}); c.problems
    ["init_optimizer=True with init_from='/runs/s1.nemo': a .nemo holds weights only, no optimizer state; set \
init_optimizer=false to start from its weights with fresh AdamW moments, or init_from the Lightning or megatron \
checkpoint of that run (Stage II: Stage I's <name>-pre-decay.ckpt)"]
    """
    path, wanted = cfg.get("init_from"), cfg.get("init_optimizer", True)
    if wanted not in (True, False):
        c.problems.append(f"init_optimizer={wanted!r}: expected true or false")
    elif wanted and isinstance(path, str) and path.endswith(".nemo"):
        c.problems.append(f"init_optimizer=True with init_from={path!r}: a .nemo holds weights only, no optimizer "
                          "state; set init_optimizer=false to start from its weights with fresh AdamW moments, or "
                          "init_from the Lightning or megatron checkpoint of that run (Stage II: Stage I's "
                          "<name>-pre-decay.ckpt)")


def _check_report(c: _Checker, report: Mapping[str, Any], teacher_mode: Any) -> None:
    p = "report."
    if not report:
        return
    from nemo_salad.evaluation.benchmarks import BENCHMARKS

    if teacher_mode == "none":
        c.problems.append("report is set but model.teacher.mode=none: the report's text topline is the original LLM "
                          "(use mode copy or shared, or report=null)")
    names = report.get("benchmarks")
    if names is not None and (isinstance(names, str) or not names):
        c.problems.append(f"report.benchmarks={names!r}: expected a non-empty list of names")
    for name in [] if names is None or isinstance(names, str) else names:
        if name not in BENCHMARKS:
            c.problems.append(f"report.benchmarks: {name!r}: expected one of {sorted(BENCHMARKS)}")
    c.number(report, "n_items", p, 1, integer=True)
    c.number(report, "every_n_val", p, 0, integer=True)
    c.number(report, "seed", p, 0, integer=True)
    scoring = report.get("scoring") if isinstance(report, Mapping) else None
    c.number(scoring, "max_shots", p + "scoring.", 0, integer=True)
    c.number(scoring, "shots", p + "scoring.", 0, integer=True, nullable=True)
    c.number(scoring, "max_tokens", p + "scoring.", 1, integer=True)
    c.choice(scoring, "shots_modality", p + "scoring.", ("speech", "text"))
    c.choice(scoring, "primary", p + "scoring.", ("sum", "per_token", "per_char"))


def validate_training_config(cfg: DictConfig | Mapping[str, Any], source: str = "training config") -> None:
    """Refuse a training config with any value outside its range, listing all of them.

    Args:
        cfg (DictConfig | Mapping): the whole training config.
        source (str): what the config is, for the message. Default: "training config".

    Raises:
        ConfigValueError: (a ``ValueError``) naming every bad key, its value and the allowed range.

    >>> validate_training_config({"data": {"batch_duration": 40, "sources": [{"name": "speech", "weight": 2}]}})
    """
    problems = training_config_problems(cfg)
    if problems:
        raise ConfigValueError(problems, source)

"""The study's steps as :class:`Step` records: what each runs, what it needs, and the fingerprint that names its
directory, so that a rerun reuses every finished step whose inputs did not change.

Steps, in order: ``data`` (the spoken corpora), ``clusters`` (the selection corpus clustered, probes spoken),
``base`` (the models at step 0: the text topline and the untrained speech model), one ``s1_alpha<α>`` per α, and
the Stage II arms ``s2_gamma<γ>`` and ``s2_no_synthetic`` from the ``s1_alpha<from_alpha>`` pre-decay checkpoint.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nemo_salad.study.config import StudyConfig

__all__ = ["Step", "broad_sources", "cluster_settings", "demo_settings", "eval_fingerprint", "eval_key",
           "exported_model", "plan_steps", "pre_decay_checkpoint", "selection_settings", "used_passages"]

_VERSION = 2  # bump when a step's meaning changes, so that older results are not reused
_NOT_IN_KEY = ("workers",)  # data.demo settings that do not change the corpus (nor any model)


@dataclass
class Step:
    """One step of the study.

    Attributes:
        name (str): ``data``, ``clusters``, ``base``, ``s1_alpha1.0``, ``s2_gamma5.0``, ``s2_no_synthetic``.
        kind (str): what the worker does: ``data``, ``clusters``, ``base`` or ``train``.
        group (str): ``prep``, ``stage1`` or ``stage2`` (``base`` counts as ``stage1`` at step 0).
        config_name (str | None): the training config composed for it.
        settings (dict): merged over the composed config (the run's own values).
        needs (list[str]): steps that must be finished first.
        key (dict): what defines the trained model (fingerprinted); the evaluation is keyed separately.
        fingerprint (str): 10 hex digits of ``key`` and of the steps it needs.
        dir (str): its directory (``<out_dir>/runs/<name>-<fingerprint>``).
    """

    name: str
    kind: str
    group: str
    config_name: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    needs: list[str] = field(default_factory=list)
    key: dict[str, Any] = field(default_factory=dict)
    fingerprint: str = ""
    dir: str = ""
    alpha: float | None = None
    gamma: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _fingerprint(payload: Any) -> str:
    return hashlib.sha1(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:10]


def broad_sources(cfg: StudyConfig) -> list[str]:
    """The broad sources: as configured, or every offline text source that is not narrow.

    >>> cfg = StudyConfig(); cfg.corpus.narrow_sources = ["lambada"]
    >>> "lambada" in broad_sources(cfg), "sciq" in broad_sources(cfg)
    (False, True)
    """
    if cfg.corpus.broad_sources is not None:
        return list(cfg.corpus.broad_sources)
    from nemo_salad.data.olmo_text import TEXT_SOURCES

    return [s for s in TEXT_SOURCES if s not in cfg.corpus.narrow_sources]


def demo_settings(cfg: StudyConfig) -> dict[str, Any]:
    """The ``data.demo`` section of every run."""
    c = cfg.corpus
    return {"backend": dict(c.backend), "word_aligner": c.word_aligner, "sources": list(c.narrow_sources),
            "val_sources": broad_sources(cfg), "replay_sources": broad_sources(cfg), "workers": c.workers,
            "n_train": c.n_train, "n_val": c.n_val, "n_replay": c.n_replay, "min_words": c.min_words,
            "max_words": c.max_words, "seed": c.seed}


def _demo_key(demo: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in demo.items() if k not in _NOT_IN_KEY}


def _without_workers(settings: dict[str, Any]) -> dict[str, Any]:
    """A run's settings as fingerprinted: ``data.demo`` without the settings that change no result."""
    data = settings.get("data") or {}
    if not data.get("demo"):
        return settings
    return {**settings, "data": {**data, "demo": _demo_key(data["demo"])}}


def _selection_corpus(cfg: StudyConfig, used: str) -> dict[str, Any]:
    c = cfg.corpus
    return {"jsonl": None, "sources": broad_sources(cfg), "min_words": c.min_words, "max_words": c.max_words,
            "limit": c.n_select, "seed": c.seed, "exclude": [used]}


def cluster_settings(cfg: StudyConfig) -> dict[str, Any]:
    """The clustering and probes every Stage II arm's round shares (the ``clusters`` step makes them once)."""
    s = cfg.stage2
    out: dict[str, Any] = {"probe_size": s.probe_size, "cluster": {"k": s.k}, "seed": 0}
    if s.embed is not None:
        out["embed"] = dict(s.embed)
    return out


def selection_settings(cfg: StudyConfig, gamma: float) -> dict[str, Any]:
    """``active_selection.selection`` of a Stage II arm."""
    return {"budget": cfg.stage2.budget_hours, "budget_unit": "hours", "gamma": float(gamma),
            **cluster_settings(cfg)}


def plan_steps(cfg: StudyConfig) -> list[Step]:
    """Every step of the study with its fingerprint and directory.

    >>> [s.name for s in plan_steps(StudyConfig())]  # doctest: +NORMALIZE_WHITESPACE
    ['data', 'clusters', 'base', 's1_alpha0.0', 's1_alpha0.5', 's1_alpha1.0', 's2_gamma5.0', 's2_gamma0.0',
     's2_no_synthetic']
    """
    out = Path(cfg.out_dir)
    demo = demo_settings(cfg)
    data = Step("data", "data", "prep", key={"demo": _demo_key(demo)})
    data.fingerprint = _fingerprint([_VERSION, data.kind, data.key, []])
    data.dir = str(out / "runs" / f"data-{data.fingerprint}")
    used = used_passages(data)
    common = {"seed": cfg.seed, "report": None, "data": {"demo": demo}, **({"threads": cfg.threads}
                                                                          if cfg.threads else {})}
    steps = [data, Step("clusters", "clusters", "prep", needs=["data"],
                        key={"corpus": _selection_corpus(cfg, used), "selection": cluster_settings(cfg),
                             "tts": cfg.stage2.tts})]
    s1 = {"trainer": {"max_steps": cfg.stage1.max_steps, "val_check_interval": cfg.stage1.val_check_interval}}
    first = cfg.stage1.alphas[-1] if cfg.stage2.from_alpha not in cfg.stage1.alphas else cfg.stage2.from_alpha
    steps.append(Step("base", "base", "stage1", cfg.stage1_config, {**common, **s1, "name": "base",
                                                                    "model": {"loss": {"alpha": float(first)}}},
                      needs=["data"], alpha=None))
    for alpha in cfg.stage1.alphas:
        steps.append(Step(f"s1_alpha{float(alpha)}", "train", "stage1", cfg.stage1_config,
                          {**common, **s1, "name": f"s1_alpha{float(alpha)}",
                           "model": {"loss": {"alpha": float(alpha)}}}, needs=["data"], alpha=alpha))
    source = f"s1_alpha{float(cfg.stage2.from_alpha)}"
    s2 = {"trainer": {"max_steps": cfg.stage2.max_steps, "val_check_interval": cfg.stage2.val_check_interval}}
    arms: list[tuple[str, float | None]] = [(f"s2_gamma{float(g)}", float(g)) for g in cfg.stage2.gammas]
    if cfg.stage2.no_synthetic:
        arms.append(("s2_no_synthetic", None))
    for name, gamma in arms:
        selection = None if gamma is None else {
            "tts": dict(cfg.stage2.tts), "corpus": _selection_corpus(cfg, used),
            "selection": selection_settings(cfg, gamma)}
        steps.append(Step(name, "train", "stage2", cfg.stage2_config,
                          {**common, **s2, "name": name, "model": {"loss": {"alpha": float(cfg.stage2.from_alpha)}},
                           "active_selection": selection}, needs=["data", source],
                          alpha=cfg.stage2.from_alpha, gamma=gamma))
    by_name: dict[str, Step] = {"data": data}
    for step in steps[1:]:
        if step.config_name:
            step.key = {"config": step.config_name, "settings": _without_workers(step.settings),
                        "overrides": cfg.train_overrides}
        upstream = [by_name[n].fingerprint for n in step.needs]
        step.fingerprint = _fingerprint([_VERSION, step.kind, step.key, upstream])
        step.dir = str(out / "runs" / f"{step.name}-{step.fingerprint}")
        by_name[step.name] = step
    return steps


def used_passages(data: Step) -> str:
    """The passages the study trains or measures on (``<data dir>/used_passages.jsonl``), which the selection
    corpus excludes."""
    return str(Path(data.dir) / "used_passages.jsonl")


def pre_decay_checkpoint(step: Step) -> str:
    """Where a training step's pre-decay checkpoint is written (``<dir>/<name>/checkpoints/<name>-pre-decay.ckpt``)."""
    name = step.settings["name"]
    return str(Path(step.dir) / name / "checkpoints" / f"{name}-pre-decay.ckpt")


def exported_model(step: Step) -> str:
    """Where a training step's ``.nemo`` is written at its end."""
    name = step.settings["name"]
    return str(Path(step.dir) / name / "checkpoints" / f"{name}.nemo")


def eval_key(cfg: StudyConfig) -> dict[str, Any]:
    """What defines a step's measurements (its own fingerprint, so changing them re-measures without retraining)."""
    e = cfg.eval
    return {"v": _VERSION, "benchmarks": list(e.benchmarks), "n_items": e.n_items, "seed": e.seed, "tts": e.tts,
            "scoring": e.scoring}


def eval_fingerprint(cfg: StudyConfig) -> str:
    return _fingerprint(eval_key(cfg))

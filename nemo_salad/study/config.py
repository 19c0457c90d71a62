"""Schema of ``conf/study.yaml`` (:class:`StudyConfig`): every key typed, unknown keys refused."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

__all__ = ["CorpusSettings", "EvalSettings", "Stage1Settings", "Stage2Settings", "StudyConfig", "load_study_config"]


@dataclass
class CorpusSettings:
    """The study's data (``data.demo`` of every run): narrow training speech, broad held-out speech and replay.

    ``narrow_sources`` are spoken for Stage I (paper: LibriHeavy audiobooks; here book passages); the held-out set
    on which F and M are measured, the text replay and the Stage II selection corpus (``n_select`` passages) come
    from ``broad_sources`` (null: every other offline source; paper: FineWeb-Edu), disjoint from each other and
    from any passage sharing a 13-word n-gram with the training speech. Every source is decontaminated against the
    benchmarks by the offline corpus itself.
    """

    narrow_sources: list[str] = field(default_factory=lambda: ["lambada"])
    broad_sources: list[str] | None = None
    n_train: int = 300
    n_val: int = 32
    n_replay: int = 2000
    n_select: int = 2000
    min_words: int = 12
    max_words: int = 30
    seed: int = 0
    workers: int = 2
    backend: dict[str, Any] = field(default_factory=lambda: {"name": "piper"})
    word_aligner: str | None = "whisper"


@dataclass
class Stage1Settings:
    """Stage I runs: one per α, the same data, steps and seed."""

    alphas: list[float] = field(default_factory=lambda: [0.0, 0.5, 1.0])
    max_steps: int = 60
    val_check_interval: int = 15


@dataclass
class Stage2Settings:
    """Stage II arms from the ``from_alpha`` run's pre-decay checkpoint: one per γ at the same synthetic budget,
    and (``no_synthetic``) one with no synthetic speech; all at ``max_steps``."""

    from_alpha: float = 1.0
    gammas: list[float] = field(default_factory=lambda: [5.0, 0.0])
    no_synthetic: bool = True
    max_steps: int = 30
    val_check_interval: int = 15
    budget_hours: float = 0.05
    k: int = 8
    probe_size: int = 4
    tts: dict[str, Any] = field(default_factory=lambda: {"name": "piper"})
    embed: dict[str, Any] | None = None   # selection.embed (null: the round's default, MiniLM)


@dataclass
class EvalSettings:
    """Spoken and text accuracy per item (``scoring``: :class:`~nemo_salad.evaluation.harness.ScoringSettings`)."""

    benchmarks: list[str] = field(default_factory=lambda: ["arc_easy", "arc_challenge", "openbookqa", "piqa"])
    n_items: int = 200
    seed: int = 0
    tts: dict[str, Any] = field(default_factory=lambda: {"name": "piper"})
    scoring: dict[str, Any] = field(default_factory=lambda: {"max_tokens": 2048, "max_shots": 0,
                                                             "primary": "per_char"})
    bootstrap: int = 2000
    level: float = 0.95


@dataclass
class StudyConfig:
    """The study (see ``conf/study.yaml``)."""

    out_dir: str = "nemo_experiments/study"
    findings: str = "docs/findings.md"
    command: str = "python examples/salad_study.py"
    stage1_config: str = "stage1"
    stage2_config: str = "stage2"
    conf_dir: str | None = None
    seed: int = 1234
    threads: int | None = None
    train_overrides: list[str] = field(default_factory=list)
    corpus: CorpusSettings = field(default_factory=CorpusSettings)
    stage1: Stage1Settings = field(default_factory=Stage1Settings)
    stage2: Stage2Settings = field(default_factory=Stage2Settings)
    eval: EvalSettings = field(default_factory=EvalSettings)


def load_study_config(cfg: DictConfig | dict[str, Any]) -> StudyConfig:
    """Validate ``cfg`` against :class:`StudyConfig` (Hydra's own section dropped).

    Raises:
        omegaconf.errors.ConfigKeyError / ValidationError: an unknown key or a wrong type, named.
        ValueError: values outside their ranges, all listed.

    >>> load_study_config({"stage1": {"alphas": [1.0]}, "stage2": {"from_alpha": 1.0}}).eval.n_items
    200
    """
    plain = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    plain.pop("hydra", None)
    out = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(StudyConfig), plain))
    assert isinstance(out, StudyConfig)
    errors = []
    if not out.stage1.alphas or any(not 0.0 <= a <= 1.0 for a in out.stage1.alphas):
        errors.append(f"stage1.alphas={out.stage1.alphas}: expected a non-empty list in [0, 1]")
    if out.stage2.from_alpha not in out.stage1.alphas:
        errors.append(f"stage2.from_alpha={out.stage2.from_alpha}: expected one of stage1.alphas {out.stage1.alphas}")
    if any(g < 0 for g in out.stage2.gammas):
        errors.append(f"stage2.gammas={out.stage2.gammas}: expected values >= 0")
    for key, value in (("stage1.max_steps", out.stage1.max_steps), ("stage2.max_steps", out.stage2.max_steps),
                       ("eval.n_items", out.eval.n_items), ("eval.bootstrap", out.eval.bootstrap),
                       ("corpus.n_val", out.corpus.n_val), ("stage2.k", out.stage2.k)):
        if value < 1:
            errors.append(f"{key}={value}: expected >= 1")
    if not 0.5 < out.eval.level < 1:
        errors.append(f"eval.level={out.eval.level}: expected a confidence level in (0.5, 1)")
    if not out.eval.benchmarks:
        errors.append("eval.benchmarks: expected at least one benchmark")
    if errors:
        raise ValueError("study config: " + "; ".join(errors))
    return out

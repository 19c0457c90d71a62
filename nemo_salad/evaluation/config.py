"""The evaluation run from a config: the schema of ``conf/eval.yaml`` and the builder the CLI calls.

``examples/salad_eval.py`` (Hydra) → :func:`run_evaluation` → builds the text LLM, the speech model, the ASR
model and the speaking conditions (the main ``tts`` and each extra voice) from :class:`EvalConfig`, loads the
benchmarks, runs the selected protocols (:mod:`~nemo_salad.evaluation.runner`) — the log-likelihood harness once
per few-shot seed, generate-then-extract, spoken StoryCloze — summarises every cell with bootstrap intervals
(:mod:`~nemo_salad.evaluation.summary`) and writes ``results.json`` / ``results.md`` / ``results.png`` into
``output_dir`` (:mod:`~nemo_salad.evaluation.run_report`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from nemo_salad.evaluation.asr import build_transcriber
from nemo_salad.evaluation.conditions import DEFAULT_CONDITION, NoisySpeech, Voice
from nemo_salad.evaluation.generate import GenerationSettings
from nemo_salad.evaluation.harness import ScoringSettings
from nemo_salad.evaluation.loaders import Benchmark, load_benchmark
from nemo_salad.evaluation.recorded import RecordedSpeech
from nemo_salad.evaluation.runner import PROTOCOLS, Condition, RunResults, run_protocols
from nemo_salad.evaluation.spoken import SynthesizedSpeech, TranscriptOnlySpeech
from nemo_salad.evaluation.storycloze_pairs import KINDS, MODES
from nemo_salad.evaluation.systems import IdentitySpeechEncoder, standard_systems

__all__ = ["BenchmarkData", "EvalConfig", "StoryClozeSpoken", "build_speech_model", "load_config", "run_evaluation",
           "speech_source"]

log = logging.getLogger(__name__)

#: the paper's six benchmarks with their offline stand-ins (COPA for StoryCloze, MMLU for MMSU)
OFFLINE_SIX = ["copa", "mmlu", "openbookqa", "hellaswag", "arc_challenge", "piqa"]


@dataclass
class BenchmarkData:
    """Local data of one benchmark (all optional: the offline copy is used when ``path`` is None)."""

    path: str | None = None
    split: str | None = None
    shot_path: str | None = None
    shot_split: str | None = None


@dataclass
class StoryClozeSpoken:
    """Spoken StoryCloze (sSC / tSC), scored beside the benchmarks when ``path`` is set.

    Attributes:
        path (str | None): the official StoryCloze CSV (both kinds are built from it) or a pair manifest (JSONL,
            with recordings; then list one kind, its name). Default: None (not run).
        kinds (list[str]): "sSC" and/or "tSC". modes (list[str]): "continuation" and/or "full_story".
    """

    path: str | None = None
    kinds: list[str] = field(default_factory=lambda: list(KINDS))
    modes: list[str] = field(default_factory=lambda: list(MODES))

    def __post_init__(self) -> None:
        for key, got, allowed in (("kinds", self.kinds, KINDS), ("modes", self.modes, MODES)):
            if not got or any(v not in allowed for v in got) or len(set(got)) != len(got):
                raise ValueError(f"storycloze_spoken.{key}={list(got)}; expected distinct values from {list(allowed)}")
        if self.path is not None and str(self.path).endswith(".jsonl") and len(self.kinds) > 1:
            raise ValueError(f"storycloze_spoken.path={self.path} is a pair manifest (one set); list one kind, the "
                             f"name its results get (e.g. kinds: [sSC]), got kinds={list(self.kinds)}")


@dataclass
class EvalConfig:
    """Schema of ``conf/eval.yaml``.

    Attributes:
        benchmarks (list[str]): names from ``BENCHMARKS``.
        n_items (int | None): items per benchmark (seeded subset); None = all.
        seed (int): subset seed.
        data (dict[str, BenchmarkData]): local files per benchmark (StoryCloze CSV, MMSU JSONL, ...).
        scoring (ScoringSettings): budget, shots, metric, batching.
        llm_hf_dir (str | None): the text LLM as a Hugging Face directory; None = embedded SmolLM2-135M.
        speech_model (Any): None (no speech rows), ``"identity"`` (the identity path: a harness check), or a
            ``{_target_: ...}`` node that builds an object implementing ``SpeechContextEncoder``.
        asr (Any): cascade ASR: ``{name: whisper}`` (offline tiny.en), ``{name: nemo, model: <.nemo or name>}``,
            ``{name: reference}`` (perfect ASR, a plumbing check) or None (no cascade row).
        tts (Any): how the spoken versions are made: a synthesis backend config (``{name: piper}``, ...) for
            ``nemo_salad.synthesis.build_backend``, or ``{name: transcript}`` for text-only cuts (identity /
            reference only).
        speech_cache (str | None): Shar cache of the spoken versions; None = ``<cache_root>/eval-speech``.
        output_dir (str): where results go.
        device (str): device of the text LLM ("cpu", "cuda").
        protocols (list[str]): any of "loglik" (few-shot log-likelihood) and "generate" (generate-then-extract).
        generation (GenerationSettings): the generate protocol's settings (max_new_tokens, temperature, seed,
            options_spoken, ...).
        seeds (list[int] | None): few-shot draw seeds of "loglik"; cells report mean ± std over them. None:
            ``[scoring.seed]``.
        voices (list[Voice] | None): extra speaking conditions of the rows that hear audio (``{name, tts,
            snr_db}``; ``tts`` defaults to the main ``tts``); None: the main condition only.
        bootstrap (int): bootstrap resamples of the intervals (0: none). level (float): their coverage.
        mmsu_voicebench (str | None): a local copy of VoiceBench's mmsu; benchmark ``mmsu`` is then read from it and
            heard from its recordings (other texts are synthesized). None: ``mmsu`` as in ``data``.
        storycloze_spoken (StoryClozeSpoken): spoken StoryCloze sets and modes (run when its ``path`` is set).
    """

    benchmarks: list[str] = field(default_factory=lambda: list(OFFLINE_SIX))
    n_items: int | None = 100
    seed: int = 0
    data: dict[str, BenchmarkData] = field(default_factory=dict)
    scoring: ScoringSettings = field(default_factory=ScoringSettings)
    llm_hf_dir: str | None = None
    speech_model: Any = None
    asr: Any = None
    tts: Any = None
    speech_cache: str | None = None
    output_dir: str = "salad_eval"
    device: str = "cpu"
    protocols: list[str] = field(default_factory=lambda: ["loglik"])
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    seeds: list[int] | None = None
    voices: list[Voice] | None = None
    bootstrap: int = 1000
    level: float = 0.95
    mmsu_voicebench: str | None = None
    storycloze_spoken: StoryClozeSpoken = field(default_factory=StoryClozeSpoken)

    def __post_init__(self) -> None:
        bad = [p for p in self.protocols if p not in PROTOCOLS]
        if bad or len(set(self.protocols)) != len(self.protocols):
            raise ValueError(f"protocols={list(self.protocols)}; expected distinct values from {list(PROTOCOLS)}")
        if self.seeds is not None and (not self.seeds or len(set(self.seeds)) != len(self.seeds)):
            raise ValueError(f"seeds={self.seeds}; expected null (scoring.seed) or a non-empty list of distinct ints")
        if self.bootstrap < 0 or not 0 < self.level < 1:
            raise ValueError(f"need bootstrap >= 0 (0: no intervals) and 0 < level < 1, got bootstrap="
                             f"{self.bootstrap}, level={self.level}")
        names = [v.name for v in self.voices or []]
        if len(set(names)) != len(names):
            raise ValueError(f"voice names must be unique, got {names}")


def load_config(cfg: DictConfig | dict[str, Any] | str | Path) -> EvalConfig:
    """Validate ``cfg`` (a YAML path, dict or DictConfig) against :class:`EvalConfig`.

    Raises:
        omegaconf.errors.ConfigKeyError / ValidationError: for unknown keys or wrong types, naming the key.

    >>> load_config({"benchmarks": ["copa"], "n_items": 5}).scoring.max_tokens
    2048
    """
    if isinstance(cfg, (str, Path)):
        cfg = OmegaConf.load(cfg)
    cfg = OmegaConf.create(_plain(cfg) if OmegaConf.is_config(cfg) else cfg)
    cfg.pop("hydra", None)  # Hydra's own section of the YAML
    merged = OmegaConf.merge(OmegaConf.structured(EvalConfig), cfg)
    out = OmegaConf.to_object(merged)
    if not isinstance(out, EvalConfig):  # pragma: no cover - OmegaConf returns the schema's type
        raise TypeError(f"expected an EvalConfig, got {type(out).__name__}")
    return out


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def build_speech_model(spec: Any, llm: Any, tokenizer: Any) -> Any:
    """The speech model named by ``spec`` (see :attr:`EvalConfig.speech_model`), or None.

    >>> build_speech_model(None, None, None) is None
    True
    """
    spec = _plain(spec)
    if spec in (None, "none"):
        return None
    if spec == "identity":
        return IdentitySpeechEncoder(llm, tokenizer)
    if isinstance(spec, dict) and spec.get("nemo"):
        from nemo_salad.models.salad import SaladModel

        return SaladModel.restore_from(str(spec["nemo"]), map_location="cpu")
    if isinstance(spec, dict) and "_target_" in spec:
        from nemo_salad.parts.safe_config import safe_instantiate

        return safe_instantiate(spec, source="speech_model")
    raise ValueError(f"speech_model={spec!r}; expected null, 'identity', {{nemo: <path.nemo>}} or a node with a "
                     "_target_")


def speech_source(tts: Any, root: str | Path | None = None, progress: bool = False) -> Any:
    """The spoken versions of benchmark texts: ``{name: transcript}`` (no audio) or a synthesis backend config.

    >>> type(speech_source({"name": "transcript"})).__name__
    'TranscriptOnlySpeech'
    """
    tts = _plain(tts)
    if not tts or tts.get("name") in (None, "none"):
        raise ValueError("a speech model or an ASR cascade needs spoken versions: set tts (e.g. {name: piper}), "
                         "or tts={name: transcript} for the identity / reference checks")
    if tts["name"] == "transcript":
        return TranscriptOnlySpeech()
    from nemo_salad.synthesis import build_backend

    return SynthesizedSpeech(build_backend(tts), root=root, progress=progress)


def _text_llm(cfg: EvalConfig) -> tuple[Any, Any]:
    if cfg.llm_hf_dir is None:
        from nemo_salad.llm.smollm2 import load_smollm2

        llm, tokenizer = load_smollm2()
    else:
        from transformers import AutoTokenizer

        from nemo_salad.llm.hf_convert import load_hf

        llm, tokenizer = load_hf(cfg.llm_hf_dir), AutoTokenizer.from_pretrained(cfg.llm_hf_dir)
    return llm.to(cfg.device).eval(), tokenizer


def _benchmarks(cfg: EvalConfig) -> tuple[list[Benchmark], dict[str, Any]]:
    """The benchmarks, and the recordings of VoiceBench MMSU (``text -> audio``) when it is read locally."""
    benches, recordings = [], {}
    if cfg.mmsu_voicebench is not None and "mmsu" not in cfg.benchmarks:
        log.warning("mmsu_voicebench=%s is not used: 'mmsu' is not among benchmarks=%s", cfg.mmsu_voicebench,
                    cfg.benchmarks)
    for name in cfg.benchmarks:
        if name == "mmsu" and cfg.mmsu_voicebench is not None:
            if name in cfg.data:
                raise ValueError("mmsu is configured twice: data.mmsu and mmsu_voicebench; keep one")
            from nemo_salad.evaluation.voicebench import load_mmsu

            load = load_mmsu(cfg.mmsu_voicebench, n_items=cfg.n_items, seed=cfg.seed)
            benches.append(load.benchmark)
            recordings = dict(load.speech.recordings) if load.speech is not None else {}
            continue
        benches.append(load_benchmark(name, n_items=cfg.n_items, seed=cfg.seed,
                                      **vars(cfg.data.get(name, BenchmarkData()))))
    return benches, recordings


def _conditions(cfg: EvalConfig, make_systems: Callable[[], list[Any]], recordings: dict[str, Any]
                ) -> list[Condition]:
    """The main condition (every system) and one per extra voice (fresh instances of the systems that hear audio,
    so that no cache, e.g. a cascade's transcripts, is shared between voices)."""
    def source(tts: Any, snr_db: float | None, noise_seed: int) -> Any:
        out = speech_source(tts, root=cfg.speech_cache)
        if recordings:
            out = RecordedSpeech(recordings, fallback=out)
        return out if snr_db is None else NoisySpeech(out, snr_db, noise_seed)

    systems = make_systems()
    hears = any(s.needs_audio for s in systems)
    main = Condition(DEFAULT_CONDITION, _plain(cfg.tts) if hears else None, None, systems,
                     source(cfg.tts, None, 0) if hears else None)
    if cfg.voices and not hears:
        log.warning("voices=%s do nothing: no system hears audio (set speech_model or asr)",
                    [v.name for v in cfg.voices])
        return [main]
    out = [main]
    for v in cfg.voices or []:
        tts = _plain(v.tts) if v.tts is not None else _plain(cfg.tts)
        out.append(Condition(v.name, tts, v.snr_db, [s for s in make_systems() if s.needs_audio],
                             source(tts, v.snr_db, v.noise_seed)))
    return out


def run_evaluation(cfg: DictConfig | dict[str, Any] | EvalConfig) -> tuple[RunResults, dict[str, Path]]:
    """Build everything from ``cfg``, run the selected protocols in every condition, and write the report.

    Returns:
        tuple[RunResults, dict[str, Path]]: results (``.primary`` is the first seed's log-likelihood run in the
        main condition, the paper's Table 3) and the paths of ``json``, ``md``, ``png``.

    Raises:
        UnsafeTargetError: if a ``_target_`` anywhere in the config (e.g. ``speech_model``) is not a class or
            function of the allowed packages; checked before anything is built.
        ValueError: when nothing is to be run (no protocol and no spoken StoryCloze path).

    >>> results, paths = run_evaluation({"benchmarks": ["copa"], "n_items": 20, "asr": None})  # doctest: +SKIP
    """
    from nemo_salad.parts.safe_config import check_targets

    cfg = cfg if isinstance(cfg, EvalConfig) else load_config(cfg)
    if not cfg.protocols and cfg.storycloze_spoken.path is None:
        raise ValueError("nothing to run: protocols is empty and storycloze_spoken.path is not set")
    check_targets(OmegaConf.structured(cfg), source="evaluation config")
    llm, tokenizer = _text_llm(cfg)
    speech_model = build_speech_model(cfg.speech_model, llm, tokenizer)
    transcriber = build_transcriber(_plain(cfg.asr))

    def make_systems() -> list[Any]:
        return standard_systems(llm, tokenizer, speech_model, transcriber)

    benches, recordings = _benchmarks(cfg) if cfg.protocols else ([], {})
    conditions = _conditions(cfg, make_systems, recordings)
    story_sets = []
    if cfg.storycloze_spoken.path is not None:
        from nemo_salad.evaluation.storycloze_pairs import load_spoken_storycloze

        story_sets = [load_spoken_storycloze(cfg.storycloze_spoken.path, kind, cfg.seed, cfg.n_items)
                      for kind in cfg.storycloze_spoken.kinds]
    results = run_protocols(benches, conditions, cfg.protocols, cfg.scoring, cfg.seeds or [cfg.scoring.seed],
                            cfg.generation, story_sets, cfg.storycloze_spoken.modes, cfg.bootstrap, cfg.level,
                            cfg.seed, options_in_question={"mmsu"} if recordings else set())
    results.config = _plain(OmegaConf.structured(cfg))
    from nemo_salad.evaluation.run_report import write_run_report

    paths = write_run_report(results, cfg.output_dir)
    log.info("results written to %s", ", ".join(str(p) for p in paths.values()))
    return results, paths

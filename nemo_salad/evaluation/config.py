"""The evaluation run from a config: the schema of ``conf/eval.yaml`` and the builder the CLI calls.

``examples/salad_eval.py`` (Hydra) → :func:`run_evaluation` → builds the text LLM, the speech model, the ASR
model and the speech source from :class:`EvalConfig`, loads the benchmarks, scores every system and writes
``results.json`` / ``results.md`` / ``results.png`` into ``output_dir``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from nemo_salad.evaluation.asr import build_transcriber
from nemo_salad.evaluation.harness import ScoringSettings, evaluate
from nemo_salad.evaluation.loaders import load_benchmark
from nemo_salad.evaluation.report import write_report
from nemo_salad.evaluation.results import EvalResults
from nemo_salad.evaluation.spoken import SynthesizedSpeech, TranscriptOnlySpeech
from nemo_salad.evaluation.systems import IdentitySpeechEncoder, standard_systems

__all__ = ["BenchmarkData", "EvalConfig", "build_speech_model", "load_config", "run_evaluation", "speech_source"]

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


def _speech_source(cfg: EvalConfig) -> Any:
    return speech_source(cfg.tts, root=cfg.speech_cache)


def _text_llm(cfg: EvalConfig) -> tuple[Any, Any]:
    if cfg.llm_hf_dir is None:
        from nemo_salad.llm.smollm2 import load_smollm2

        llm, tokenizer = load_smollm2()
    else:
        from transformers import AutoTokenizer

        from nemo_salad.llm.hf_convert import load_hf

        llm, tokenizer = load_hf(cfg.llm_hf_dir), AutoTokenizer.from_pretrained(cfg.llm_hf_dir)
    return llm.to(cfg.device).eval(), tokenizer


def run_evaluation(cfg: DictConfig | dict[str, Any] | EvalConfig) -> tuple[EvalResults, dict[str, Path]]:
    """Build everything from ``cfg``, evaluate, and write the report.

    Returns:
        tuple[EvalResults, dict[str, Path]]: results and the paths of ``json``, ``md``, ``png``.

    Raises:
        UnsafeTargetError: if a ``_target_`` anywhere in the config (e.g. ``speech_model``) is not a class or
            function of the allowed packages; checked before anything is built.

    >>> results, paths = run_evaluation({"benchmarks": ["copa"], "n_items": 20, "asr": None})  # doctest: +SKIP
    """
    from nemo_salad.parts.safe_config import check_targets

    cfg = cfg if isinstance(cfg, EvalConfig) else load_config(cfg)
    check_targets(OmegaConf.structured(cfg), source="evaluation config")
    llm, tokenizer = _text_llm(cfg)
    speech_model = build_speech_model(cfg.speech_model, llm, tokenizer)
    transcriber = build_transcriber(_plain(cfg.asr))
    systems = standard_systems(llm, tokenizer, speech_model, transcriber)
    source = _speech_source(cfg) if any(s.needs_audio for s in systems) else None
    benches = [load_benchmark(name, n_items=cfg.n_items, seed=cfg.seed,
                              **vars(cfg.data.get(name, BenchmarkData()))) for name in cfg.benchmarks]
    results = evaluate(benches, systems, cfg.scoring, source)
    paths = write_report(results, cfg.output_dir)
    log.info("results written to %s", ", ".join(str(p) for p in paths.values()))
    return results, paths

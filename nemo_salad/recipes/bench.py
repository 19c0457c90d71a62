"""Helpers shared by the scripts in ``benchmarks/``: compose a shipped config, a fixed synthetic batch, timing."""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from nemo_salad.data.batch import Segment

__all__ = ["compose_config", "fixed_batch", "median_time", "peak_rss_mb"]

CONF = Path(__file__).resolve().parents[2] / "conf"


def compose_config(name: str, overrides: list[str]) -> Any:
    """A Hydra config from ``conf/`` (the repository's, not an installed copy)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        return compose(config_name=name, overrides=overrides)


def fixed_batch(model: Any, samples: int = 4, speech_seconds: float = 3.0, seed: int = 0,
                pack_length: int | None = None) -> Any:
    """``samples`` interleaved samples ``[text, speech, text]`` of real English words and random audio, laid out for
    ``model`` as a :class:`~nemo_salad.data.batch.SaladBatch` (packed into rows of ``pack_length`` if set)."""
    from nemo_salad.data.batch import collate, make_document

    g = torch.Generator().manual_seed(seed)
    words = ("the distillation objective aligns the speech model with the original text model so that spoken "
             "questions are understood as well as written ones across many domains and topics").split()
    encode = lambda text: model.tokenizer(text, add_special_tokens=False).input_ids  # noqa: E731
    n = int(16000 * speech_seconds)
    clips = [0.1 * torch.randn(n, generator=g) for _ in range(samples)]
    frames = model.frame_counter(max_seconds=speech_seconds)
    docs = [make_document(f"b{i}", [Segment("text", encode(" ".join(words[i:i + 12]))),
                                    Segment("speech", encode(" " + " ".join(words[i + 12:i + 20])), clip=i),
                                    Segment("text", encode(" " + " ".join(words[i + 4:i + 16])))],
                          [n] * samples, frames, model.pad_id) for i in range(samples)]
    return collate(docs, clips, model.pad_id, pack_length)


def median_time(fn: Callable[[], Any], reps: int) -> float:
    """Median wall time of ``fn`` over ``reps`` calls (after one warm-up)."""
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

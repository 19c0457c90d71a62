"""TTS backends behind one small interface, and :func:`build_backend` to make one from a plain config."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping
from typing import Any

from nemo_salad.synthesis.backends.base import TTSBackend
from nemo_salad.synthesis.backends.espeak import EspeakBackend
from nemo_salad.synthesis.backends.nemo_tts import NeMoTTSBackend
from nemo_salad.synthesis.backends.piper import PiperBackend
from nemo_salad.synthesis.backends.sine import SineBackend

__all__ = ["BACKENDS", "EspeakBackend", "NeMoTTSBackend", "PiperBackend", "SineBackend", "TTSBackend",
           "build_backend"]

log = logging.getLogger(__name__)

BACKENDS: dict[str, Callable[..., Any]] = {
    "piper": PiperBackend,
    "nemo": NeMoTTSBackend,
    "espeak": EspeakBackend,
    "sine": SineBackend,
}


def _random_nemo_models(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``spec_generator: random`` / ``vocoder: random`` -> tiny random-weight NeMo models (tests, dry runs)."""
    from nemo_salad.synthesis.backends.nemo_configs import random_fastpitch, random_hifigan

    for key, build in (("spec_generator", random_fastpitch), ("vocoder", random_hifigan)):
        if kwargs.get(key) == "random":
            log.warning("NeMo TTS %s is a tiny random-weight model: it produces noise, not speech", key)
            kwargs[key] = build()
    return kwargs


def build_backend(cfg: Mapping[str, Any]) -> TTSBackend:
    """Build a backend from ``{"name": <backend>, **constructor keyword arguments}`` (no ``_target_``).

    Args:
        cfg (Mapping | DictConfig): ``name`` is one of ``piper``, ``nemo``, ``espeak``, ``sine``; the other keys are
            passed to that backend's constructor (``None`` values are dropped so that YAML ``null`` means "default").
            For ``nemo``, ``spec_generator: random`` / ``vocoder: random`` build tiny random-weight models.

    Returns:
        TTSBackend: the backend.

    Raises:
        ValueError: for a missing or unknown name, or keys the backend does not accept (listing the valid ones).

    >>> build_backend({"name": "sine", "seconds_per_char": 0.05}).synthesize(["abcd"])[0].shape
    (3200,)
    """
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            cfg = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        pass
    kwargs = {k: v for k, v in dict(cfg).items() if v is not None}
    name = kwargs.pop("name", None)
    if name not in BACKENDS:
        raise ValueError(f"TTS backend config needs 'name' in {sorted(BACKENDS)}, got name={name!r} in {dict(cfg)}")
    factory = BACKENDS[name]
    accepted = [p for p in inspect.signature(factory).parameters if p != "self"]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(f"TTS backend {name!r} does not accept {unknown}; its options are {accepted}")
    if name == "nemo":
        kwargs = _random_nemo_models(kwargs)
    return factory(**kwargs)

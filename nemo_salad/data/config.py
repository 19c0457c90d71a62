"""The ``data`` section's schema (:class:`~nemo_salad.data.SaladDataModule`): each key, its type and its one default.

``layout`` reuses :class:`~nemo_salad.data.layout.LayoutConfig` and ``demo`` the demo corpus's settings
(:mod:`nemo_salad.data.demo`).
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from nemo_salad.data.demo import _DEFAULTS as _DEMO_DEFAULTS
from nemo_salad.data.layout import LayoutConfig
from nemo_salad.parts.schema import default_field, omegaconf_type

__all__ = ["DataConfig", "DemoConfig", "LayoutSchema", "SourceConfig", "ValidationConfig"]


#: ``data.layout``: :class:`~nemo_salad.data.layout.LayoutConfig`'s fields and defaults, ``Literal`` types as ``str``
LayoutSchema = dataclasses.make_dataclass(
    "LayoutSchema", [(f.name, omegaconf_type(typing.get_type_hints(LayoutConfig)[f.name]),
                      default_field(f.default if f.default is not dataclasses.MISSING else f.default_factory()))
                     for f in dataclasses.fields(LayoutConfig)])

_DEMO_TYPES: dict[str, Any] = {"backend": dict[str, Any], "word_aligner": str | None,
                               "sources": list[str] | None, "val_sources": list[str] | None,
                               "replay_sources": list[str] | None, "workers": int, "n_train": int, "n_val": int,
                               "n_replay": int, "min_words": int, "max_words": int, "seed": int}

#: ``data.demo``: the embedded demo corpus's settings and defaults (:mod:`nemo_salad.data.demo`)
DemoConfig = dataclasses.make_dataclass(
    "DemoConfig", [(key, _DEMO_TYPES[key], default_field(value)) for key, value in _DEMO_DEFAULTS.items()])


@dataclass
class SourceConfig:
    """One ``data.sources`` entry: a name, a mixture weight and exactly one of shar, manifest, texts, demo."""

    name: str = MISSING
    weight: float = 1.0
    shar: str | None = None
    manifest: str | None = None
    texts: str | None = None
    demo: str | None = None


@dataclass
class ValidationConfig:
    """``data.validation``: one of shar, manifest, texts, demo, and at most ``max_cuts`` cuts (null: all)."""

    shar: str | None = None
    manifest: str | None = None
    texts: str | None = None
    demo: str | None = None
    max_cuts: int | None = None


@dataclass
class DataConfig:
    """``data``: the training mixture, validation data and batching (:class:`~nemo_salad.data.SaladDataModule`)."""

    demo: DemoConfig | None = None  # type: ignore[valid-type]
    sources: list[SourceConfig] = field(default_factory=list)
    validation: ValidationConfig | None = None
    layout: LayoutSchema = field(default_factory=LayoutSchema)  # type: ignore[valid-type]
    batch_duration: float = 60.0  # seconds of audio (or reading time) per batch (validation always; training without
    # batch_tokens)
    batch_tokens: int | None = None  # training batches bounded by this many LLM (student) positions instead
    num_buckets: int = 4
    buffer_size: int = 2000
    bins_estimate_cuts: int = 2000
    max_duration: float = 40.0  # longer utterances are skipped and counted
    max_text_tokens: int = 512
    pack_length: int | None = None  # null: one sample per row
    max_skip_fraction: float = 0.5  # a source skipping more than this fraction stops the run
    skip_check_items: int = 100  # items per source the fraction is measured over
    num_workers: int = 1
    seed: int = 0

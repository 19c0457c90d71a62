"""Schema and body of ``examples/salad_measure.py``: F and M of a ``.nemo`` model on held-out paired data."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

__all__ = ["MeasureConfig", "run_measure"]


@dataclass
class MeasureConfig:
    """Settings of a measurement run (``conf/measure.yaml`` holds the defaults).

    Attributes:
        checkpoint: a ``.nemo`` written by training.
        data: one data source entry (``shar``, ``manifest`` or ``demo``; see :mod:`nemo_salad.data.sources`).
        demo: the ``data.demo`` section when ``data`` names a demo part.
        layout: speech/text layout (see :class:`~nemo_salad.data.layout.LayoutConfig`).
        output: JSON file to write.
    """

    checkpoint: str = "???"
    data: dict[str, Any] = field(default_factory=dict)
    demo: dict[str, Any] | None = None
    layout: dict[str, Any] = field(default_factory=lambda: {"kind": "interleaved"})
    batch_duration: float = 60.0
    max_cuts: int | None = None
    seed: int = 0
    output: str = "gap.json"


def run_measure(cfg: Any) -> dict[str, Any]:
    """Measure and write ``cfg.output``; returns the result."""
    from nemo_salad.data.layout import LayoutConfig
    from nemo_salad.data.sources import load_source
    from nemo_salad.metrics import measure_gap
    from nemo_salad.models.salad import SaladModel

    cfg = OmegaConf.merge(OmegaConf.structured(MeasureConfig), cfg)
    model = SaladModel.restore_from(cfg.checkpoint, map_location="cpu")
    cuts = load_source(OmegaConf.to_container(cfg.data, resolve=True), cfg.demo)
    if cfg.max_cuts:
        cuts = cuts.subset(first=int(cfg.max_cuts))
    layout = OmegaConf.to_container(cfg.layout, resolve=True)
    layout = LayoutConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in layout.items()})
    result = {"checkpoint": cfg.checkpoint, **measure_gap(model, cuts, layout, cfg.batch_duration, cfg.seed)}
    Path(cfg.output).parent.mkdir(parents=True, exist_ok=True)
    Path(cfg.output).write_text(json.dumps(result, indent=2) + "\n")
    return result

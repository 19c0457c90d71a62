"""Lightning DataModule: weighted training sources, a validation set of paired speech/text, resumable.

Config (``data`` section; its keys, types and defaults: :class:`nemo_salad.data.config.DataConfig`)::

    sources:                 # training mixture; each batch comes from one source, drawn ∝ weight
      - {name: speech, shar: /data/speech_shar, weight: 2}
      - {name: text_replay, texts: /data/replay.jsonl, weight: 1}
    validation: {shar: /data/val_shar, max_cuts: 200}
    layout: {kind: interleaved, text_words: [10, 30], speech_words: [5, 15]}
    batch_duration: 60       # seconds of audio (or reading time) per batch
    batch_tokens: null       # or: training batches of this many LLM positions (nemo_salad.data.positions)
    num_buckets: 4
    max_duration: 30         # longer utterances are skipped and counted
    pack_length: 2048        # pack samples into rows of at most this many positions (null: one sample per row)
    max_skip_fraction: 0.5   # a source whose skipped fraction exceeds this stops the run (nemo_salad.data.skips)
    skip_check_items: 100    # items per source that fraction is measured over
    num_workers: 1
    seed: 0
"""

from __future__ import annotations

import math
from typing import Any

import lightning.pytorch as pl
from lhotse import CutSet
from lhotse.dataset import DynamicBucketingSampler, SimpleCutSampler
from nemo.utils import logging
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from nemo_salad.data.batch import FrameCounter
from nemo_salad.data.dataset import SaladDataset
from nemo_salad.data.layout import LayoutConfig
from nemo_salad.data.positions import PositionConstraint
from nemo_salad.data.sampler import MixtureSampler
from nemo_salad.data.skips import SkipMonitor
from nemo_salad.data.sources import load_source

__all__ = ["SaladDataModule"]


def data_parallel_shard() -> dict[str, int]:
    """lhotse sampler arguments that shard the data over megatron's data-parallel ranks, once megatron's parallel
    state exists (``MegatronStrategy``): the tensor-parallel ranks of one model replica must read the same batches.
    Empty otherwise (lhotse then shards over all ``torch.distributed`` ranks, as plain DDP needs)."""
    from megatron.core import parallel_state

    if not parallel_state.model_parallel_is_initialized():
        return {}
    return {"rank": parallel_state.get_data_parallel_rank(),
            "world_size": parallel_state.get_data_parallel_world_size()}


def _plain(cfg: Any) -> dict:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg or {})


def _with_defaults(cfg: dict) -> dict:
    """``cfg`` with every default of the training config's schema filled in and its types checked (the one place
    the ``data`` defaults are written: :class:`nemo_salad.data.config.DataConfig`)."""
    from nemo_salad.data.config import DataConfig
    from nemo_salad.parts.schema import typed_section

    return OmegaConf.to_container(typed_section(DataConfig, cfg, "data", "data."))


def _check_sizes(cfg: dict) -> None:
    """Batch and duration settings that lhotse would otherwise refuse with a bare assertion."""
    for key, integer in (("batch_duration", False), ("max_duration", False), ("num_buckets", True),
                         ("pack_length", True), ("batch_tokens", True)):
        value = cfg.get(key)
        if value is None:
            continue
        try:
            number = float(value) if not isinstance(value, bool) else math.nan
        except (TypeError, ValueError):
            number = math.nan
        if not (math.isfinite(number) and number > 0 and (not integer or number == int(number))):
            expected = "an integer >= 1" if integer else "a number of seconds > 0"
            raise ValueError(f"data.{key}={value!r}: expected {expected}")


class SaladDataModule(pl.LightningDataModule):
    """Training mixture + validation data for :class:`~nemo_salad.models.SaladModel`.

    Args:
        cfg: the ``data`` section.
        tokenizer: the model's tokenizer.
        frames (FrameCounter): adapter frames per clip length (``SaladModel.frame_counter``).
        pad_id (int): token id of padding and speech slots (``SaladModel.pad_id``).
        max_len (int | None): the LLM context (``max_position_embeddings``). Default: None.

    Attributes:
        skip_monitor (SkipMonitor): per-source skip counts of the training stream, updated by the model.

    Raises:
        ValueError: for a non-positive ``batch_duration`` / ``max_duration``, fewer than one bucket, or a skip
            threshold outside [0, 1], naming the key.
    """

    def __init__(self, cfg: Any, tokenizer: Any, frames: FrameCounter, pad_id: int, max_len: int | None = None
                 ) -> None:
        super().__init__()
        self.cfg = _plain(cfg)
        _check_sizes(self.cfg)
        self.cfg = _with_defaults(self.cfg)
        self.skip_monitor = SkipMonitor(self.cfg["max_skip_fraction"], self.cfg["skip_check_items"])
        self.layout = LayoutConfig.from_section(self.cfg["layout"])
        self.tokenizer, self.frames, self.pad_id, self.max_len = tokenizer, frames, int(pad_id), max_len
        self.seed = self.cfg["seed"]
        self.mixture = MixtureSampler(self._make_sampler, seed=self.seed)
        self._resume_state: dict[str, Any] | None = None
        self._prepared = False

    # ------------------------------------------------------------------ construction
    def _make_sampler(self, cuts: CutSet, seed: int) -> DynamicBucketingSampler:
        bound: dict[str, Any] = {"max_duration": self.cfg["batch_duration"]}
        if self.cfg["batch_tokens"]:
            bound = {"constraint": PositionConstraint(self.cfg["batch_tokens"], self.tokenizer, self.frames,
                                                      self.layout.speech_share())}
        return DynamicBucketingSampler(cuts, **bound,
                                       num_buckets=self.cfg["num_buckets"], shuffle=True, seed=seed,
                                       buffer_size=self.cfg["buffer_size"],
                                       num_cuts_for_bins_estimate=self.cfg["bins_estimate_cuts"],
                                       **data_parallel_shard())

    def dataset(self, seed_offset: int = 0, source: str | None = None) -> SaladDataset:
        return SaladDataset(self.tokenizer, self.layout, frames=self.frames, pad_id=self.pad_id, max_len=self.max_len,
                            max_duration=self.cfg["max_duration"], max_text_tokens=self.cfg["max_text_tokens"],
                            pack_length=self.cfg["pack_length"], seed=self.seed + seed_offset, source=source)

    def prepare_data(self) -> None:
        """Build cached corpora (the embedded demo) once, before any source is read."""
        demo = self.cfg["demo"]
        if demo:
            from nemo_salad.data.demo import prepare_demo

            prepare_demo(demo)

    def setup(self, stage: str | None = None) -> None:
        if self._prepared:
            return
        self.prepare_data()
        for entry in self.cfg["sources"]:
            cuts = load_source(entry, self.cfg["demo"])
            self.mixture.add_source(entry["name"], cuts, entry["weight"],
                                    origin={k: v for k, v in entry.items() if k != "weight" and v is not None})
        if self._resume_state is not None:
            self._resume(self._resume_state)
        self._prepared = True

    def add_training_source(self, name: str, cuts: CutSet, weight: float, origin: Any = None) -> None:
        """Add data to the training mixture while training runs (next batch on). ``origin`` (e.g.
        ``{"shar": dir}``) lets a resumed run rebuild the source; without it the source is not resumable."""
        self.mixture.add_source(name, cuts, weight, origin=origin)

    # ------------------------------------------------------------------ loaders
    def train_dataloader(self) -> DataLoader:
        self.setup("fit")
        workers = self.cfg["num_workers"]
        return DataLoader(self.dataset(), sampler=self.mixture, batch_size=None, num_workers=workers,
                          persistent_workers=False, prefetch_factor=2 if workers else None)

    def val_dataloader(self) -> DataLoader | list:
        val = self.cfg["validation"]
        if not val:
            return []
        cuts = load_source(val, self.cfg["demo"])
        if val.get("max_cuts"):
            cuts = cuts.subset(first=int(val["max_cuts"]))
        sampler = SimpleCutSampler(cuts, max_duration=self.cfg["batch_duration"], shuffle=False,
                                   **data_parallel_shard())
        origin = ", ".join(f"{k}={val[k]}" for k in ("shar", "manifest", "texts", "demo") if val.get(k))
        return DataLoader(self.dataset(seed_offset=1, source=f"data.validation ({origin})"), sampler=sampler,
                          batch_size=None, num_workers=0)

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        consumed = 0
        if self.trainer is not None:  # Lightning counts steps; a megatron step pulls num_microbatches batches
            sampler = getattr(self.trainer.strategy, "data_sampler", None)
            per_step = int(getattr(sampler, "num_microbatches", 1) or 1)
            consumed = int(self.trainer.fit_loop.epoch_loop.batch_progress.total.processed) * per_step
        return {"mixture": self.mixture.state_dict(consumed)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._resume_state = state["mixture"]
        if self._prepared:
            self._resume(self._resume_state)

    def _resume(self, state: dict[str, Any]) -> None:
        self._restore_added_sources(state)
        self.mixture.resume(state)
        logging.info(f"data: resuming the training stream after {state['consumed']} consumed batches "
                     f"(sources {[s['name'] for s in state['sources']]})")

    def _restore_added_sources(self, state: dict[str, Any]) -> None:
        have = {s.name for s in self.mixture.sources}
        for saved in state["sources"]:
            if saved["name"] in have:
                continue
            if not saved.get("origin"):
                raise ValueError(f"cannot resume: training source {saved['name']!r} was added during the run without "
                                 "an origin to rebuild it from")
            entry = {**saved["origin"], "name": saved["name"]}
            self.mixture.add_source(saved["name"], load_source(entry, self.cfg["demo"]), float(saved["weight"]),
                                    origin=saved["origin"])

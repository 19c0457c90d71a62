"""A Lightning callback that runs the spoken evaluation on a small subset at the end of validation."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from nemo_salad.evaluation.harness import ScoringSettings, evaluate
from nemo_salad.evaluation.loaders import Benchmark, load_benchmark
from nemo_salad.evaluation.results import EvalResults
from nemo_salad.evaluation.spoken import SpokenSource
from nemo_salad.evaluation.systems import CascadeSystem, SpeechSystem, TextSystem

__all__ = ["SpokenEvalCallback"]

log = logging.getLogger(__name__)


class SpokenEvalCallback(Callback):
    """Every ``every_n_val``-th validation (not the sanity check), score the model being trained on a small
    subset of spoken benchmarks and log ``eval/<benchmark>/<system>_acc`` (primary metric) and
    ``eval/<benchmark>/<system>_gap`` when a topline is given.

    The LightningModule must implement :class:`~nemo_salad.evaluation.systems.SpeechContextEncoder`
    (``llm``, ``tokenizer``, ``encode_cuts``). Systems: ``speech_model`` (the module on speech),
    ``speech_model_text`` (its LLM on text, for forgetting), and optionally ``text_llm`` (the topline) and
    ``cascade``. Every rank runs the same evaluation (tensor-parallel collectives stay matched), so the
    ``sync_dist`` mean of the logged values is the value itself.

    Args:
        speech (SpokenSource): voices the spoken texts (e.g. ``SynthesizedSpeech(PiperBackend())``; cached, so
            synthesis happens once).
        benchmarks (Sequence[str]): Default: ("arc_easy",).
        n_items (int): items per benchmark (seeded subset). Default: 16.
        every_n_val (int): run at every n-th validation epoch. Default: 1.
        settings (ScoringSettings | None): Default: ``ScoringSettings(max_tokens=1024, max_shots=2)``.
        data (Mapping[str, Mapping[str, Any]] | None): ``load_benchmark`` keyword arguments per benchmark.
        topline (tuple[Any, Any] | None): ``(llm, tokenizer)`` of the original text LLM. Default: None.
        transcriber (Transcriber | None): adds the cascade (with ``topline``). Default: None.
        text_condition (bool): also score the module's LLM on text. Default: True.
        seed (int): subset seed. Default: 0.

    >>> cb = SpokenEvalCallback(TranscriptOnlySpeech(), benchmarks=["copa"], n_items=8)  # doctest: +SKIP
    >>> Trainer(callbacks=[cb]).fit(model)  # doctest: +SKIP
    """

    def __init__(self, speech: SpokenSource, benchmarks: Sequence[str] = ("arc_easy",), n_items: int = 16,
                 every_n_val: int = 1, settings: ScoringSettings | None = None,
                 data: Mapping[str, Mapping[str, Any]] | None = None, topline: tuple[Any, Any] | None = None,
                 transcriber: Any = None, text_condition: bool = True, seed: int = 0) -> None:
        if every_n_val < 1:
            raise ValueError(f"every_n_val must be >= 1, got {every_n_val}")
        if transcriber is not None and topline is None:
            raise ValueError("the cascade needs the text LLM: pass topline=(llm, tokenizer) with transcriber")
        self.speech, self.benchmark_names, self.n_items = speech, list(benchmarks), n_items
        self.every_n_val, self.settings = every_n_val, settings or ScoringSettings(max_tokens=1024, max_shots=2)
        self.data, self.topline, self.transcriber = dict(data or {}), topline, transcriber
        self.text_condition, self.seed = text_condition, seed
        self.n_val = 0
        self.last_results: EvalResults | None = None
        self._benchmarks: list[Benchmark] | None = None

    def _systems(self, pl_module: Any) -> list[Any]:
        systems: list[Any] = []
        if self.topline is not None:
            systems.append(TextSystem(*self.topline))
            if self.transcriber is not None:
                systems.append(CascadeSystem(*self.topline, self.transcriber))
        systems.append(SpeechSystem(pl_module))
        if self.text_condition:
            systems.append(TextSystem(pl_module.llm, pl_module.tokenizer, name="speech_model_text", role="speech_text"))
        return systems

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self.n_val += 1
        if self.n_val % self.every_n_val:
            return
        if self._benchmarks is None:
            self._benchmarks = [load_benchmark(name, n_items=self.n_items, seed=self.seed, **self.data.get(name, {}))
                                for name in self.benchmark_names]
        was_training = pl_module.training
        pl_module.eval()
        try:
            with torch.no_grad():
                results = evaluate(self._benchmarks, self._systems(pl_module), self.settings, self.speech)
        finally:
            pl_module.train(was_training)
        self.last_results = results
        for bench in results.benchmarks:
            for name, scores in bench.systems.items():
                pl_module.log(f"eval/{bench.name}/{name}_acc", scores.primary, on_epoch=True, sync_dist=True)
                gap = results.gap(bench.name, name)
                if gap is not None and name != results.topline:
                    pl_module.log(f"eval/{bench.name}/{name}_gap", gap, on_epoch=True, sync_dist=True)

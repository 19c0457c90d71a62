"""One evaluation run over protocols, speaking conditions and few-shot seeds, and its per-item score tables.

Protocols:

* ``loglik`` — the few-shot log-likelihood harness (:func:`~nemo_salad.evaluation.harness.evaluate`), once per
  few-shot draw seed (``ScoringSettings.seed``);
* ``generate`` — generate-then-extract (:func:`~nemo_salad.evaluation.generate.generate_and_extract`), zero-shot,
  its own seed for sampling and the fallback letter;
* spoken StoryCloze (:func:`~nemo_salad.evaluation.storycloze_spoken.evaluate_story_cloze`) per set and mode.

Conditions (:class:`Condition`): the main one scores every system; each extra voice scores only the systems that
hear audio (speech model, cascade) — fresh instances, so that a cascade's transcripts of one voice are not reused
for another — since the text rows do not depend on the voice. Spoken StoryCloze runs in the main condition.
Within a condition the benchmarks run one at a time, every seed and protocol on it together, through a
:class:`~nemo_salad.evaluation.conditions.MemoSpeech`: each of its spoken texts is voiced once.

The tables (:func:`loglik_table`, :func:`generate_table`, :func:`storycloze_table`) give every
``(condition, system, benchmark)``'s per-item values per seed for :func:`~nemo_salad.evaluation.summary.summarise`.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from nemo_salad.evaluation.conditions import MemoSpeech
from nemo_salad.evaluation.generate import GenerationSettings, generate_and_extract
from nemo_salad.evaluation.harness import ScoringSettings, evaluate_benchmark
from nemo_salad.evaluation.loaders import Benchmark
from nemo_salad.evaluation.results import EvalResults
from nemo_salad.evaluation.spoken import SpokenSource
from nemo_salad.evaluation.storycloze_spoken import StoryClozeResult, StoryClozeSet, evaluate_story_cloze
from nemo_salad.evaluation.summary import ItemTable, Summary, summarise
from nemo_salad.evaluation.systems import ROLE_LABELS

__all__ = ["PROTOCOLS", "Condition", "GenerateRun", "LoglikRun", "RunResults", "generate_table", "loglik_table",
           "run_condition", "run_protocols", "run_storycloze", "storycloze_table", "system_meta"]

log = logging.getLogger(__name__)

PROTOCOLS = ("loglik", "generate")


@dataclass
class Condition:
    """A speaking condition as run.

    Args:
        name (str): its label. tts (Any): the synthesis config that voices it (for the report).
        snr_db (float | None): white noise SNR, or None.
        systems (list[System]): scored in it (the main condition: all; the others: those that hear audio).
        source (SpokenSource | None): its spoken versions (None when no system hears audio).

    >>> Condition("piper-snr10", {"name": "piper"}, 10.0, []).describe()
    'tts piper, white noise at 10 dB SNR'
    """

    name: str
    tts: Any
    snr_db: float | None
    systems: list[Any]
    source: SpokenSource | None = None

    def describe(self) -> str:
        """The condition in words: the TTS config and the noise."""
        if not self.tts:
            return "no audio: no system hears speech"
        tts = dict(self.tts)
        name = tts.pop("name", None)
        text = f"tts {name}" + (f" ({', '.join(f'{k}={v}' for k, v in tts.items())})" if tts else "")
        return text + (f", white noise at {self.snr_db:g} dB SNR" if self.snr_db is not None else "")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "tts": self.tts, "snr_db": self.snr_db, "describe": self.describe(),
                "systems": [s.name for s in self.systems]}


@dataclass
class LoglikRun:
    """The log-likelihood harness under one few-shot seed in one condition."""

    seed: int
    condition: str
    results: EvalResults


@dataclass
class GenerateRun:
    """The generate protocol in one condition: benchmark -> system -> ``generate_and_extract`` output."""

    condition: str
    benchmarks: dict[str, dict[str, dict[str, Any]]]


def system_meta(systems: Sequence[Any]) -> list[dict[str, str]]:
    """``name, role, label`` of each system."""
    return [{"name": s.name, "role": s.role, "label": ROLE_LABELS.get(s.role, s.role)} for s in systems]


def _bench_meta(b: Benchmark) -> dict[str, Any]:
    return {"name": b.name, "title": b.title, "split": b.split, "source": b.source, "n_rows": b.n_rows,
            "n_selected": len(b.items), "chance": b.chance, "skipped": dict(b.skipped)}


def run_protocols(benches: Sequence[Benchmark], conditions: Sequence[Condition], protocols: Sequence[str],
                  scoring: ScoringSettings, seeds: Sequence[int], generation: GenerationSettings,
                  story_sets: Sequence[StoryClozeSet] = (), story_modes: Sequence[str] = (), bootstrap: int = 1000,
                  level: float = 0.95, seed: int = 0, options_in_question: Collection[str] = ()) -> RunResults:
    """Run ``protocols`` (and spoken StoryCloze when ``story_sets``) and summarise every cell.

    Args:
        benches (Sequence[Benchmark]): the benchmarks of both protocols.
        conditions (Sequence[Condition]): the main condition first.
        protocols (Sequence[str]): from :data:`PROTOCOLS`.
        scoring (ScoringSettings): log-likelihood settings (its ``seed`` is replaced by each of ``seeds``).
        seeds (Sequence[int]): few-shot draw seeds.
        generation (GenerationSettings): generate settings.
        story_sets (Sequence[StoryClozeSet]): spoken StoryCloze sets, scored in the main condition. Default: ().
        story_modes (Sequence[str]): their modes. Default: ().
        bootstrap (int): resamples (0: no intervals). level (float): coverage. seed (int): bootstrap seed.
        options_in_question (Collection[str]): see :func:`run_condition`. Default: ().

    Returns:
        RunResults

    >>> settings = ScoringSettings(), GenerationSettings()  # doctest: +SKIP
    >>> run = run_protocols(benches, [main], ["loglik"], settings[0], [0, 1], settings[1])  # doctest: +SKIP
    >>> run.summaries["loglik"].cell("default", "text_llm", "copa").std  # doctest: +SKIP
    0.05
    """
    bad = [p for p in protocols if p not in PROTOCOLS]
    if bad:
        raise ValueError(f"unknown protocols {bad}; expected some of {list(PROTOCOLS)}")
    main = conditions[0]
    names = [s.name for s in main.systems]
    run = RunResults(list(protocols), list(conditions), system_meta(main.systems), [_bench_meta(b) for b in benches],
                     replace(scoring, seed=seeds[0]), list(seeds), generation,
                     intervals={"bootstrap": bootstrap, "level": level, "seed": seed})
    top = run.topline
    stats = {"reps": bootstrap, "level": level, "seed": seed}
    bench_names = [b.name for b in benches]
    for cond in conditions if benches else []:
        loglik, generated = run_condition(benches, cond, protocols, scoring, seeds, generation, options_in_question)
        run.loglik += loglik
        run.generate += [generated] if generated is not None else []
    if "loglik" in protocols:
        run.summaries["loglik"] = summarise(loglik_table(run.loglik), bench_names, names, top, main.name, **stats)
    if "generate" in protocols:
        run.summaries["generate"] = summarise(generate_table(run.generate, generation.seed), bench_names, names, top,
                                              main.name, **stats)
    if story_sets:
        run.storycloze = run_storycloze(story_sets, story_modes, main.systems, main.source, scoring.batch_tokens)
        keys = [f"{r.name}/{r.mode}" for r in run.storycloze]
        run.summaries["storycloze"] = summarise(storycloze_table(run.storycloze, main.name), keys, names, top,
                                                main.name, **stats, average=False)
    return run


def run_condition(benches: Sequence[Benchmark], cond: Condition, protocols: Sequence[str], scoring: ScoringSettings,
                  seeds: Sequence[int], generation: GenerationSettings, options_in_question: Collection[str] = ()
                  ) -> tuple[list[LoglikRun], GenerateRun | None]:
    """Every protocol on every benchmark in one condition: the harness per few-shot seed, then generate.

    Benchmarks are run one at a time, all seeds and protocols together, through a :class:`MemoSpeech` of the
    condition's source, so each spoken text of a benchmark is voiced once.

    Args:
        benches (Sequence[Benchmark]): the benchmarks.
        cond (Condition): the condition (its systems and source).
        protocols (Sequence[str]): from :data:`PROTOCOLS`.
        scoring (ScoringSettings): log-likelihood settings (``seed`` replaced by each of ``seeds``).
        seeds (Sequence[int]): few-shot draw seeds.
        generation (GenerationSettings): generate settings.
        options_in_question (Collection[str]): benchmarks whose spoken question already reads the lettered
            options (VoiceBench MMSU recordings): the generate prompt does not list them again. Default: ().

    Returns:
        tuple[list[LoglikRun], GenerateRun | None]: one harness run per seed (empty without ``loglik``), and the
        generate run (None without ``generate``).

    >>> settings = ScoringSettings(), GenerationSettings()  # doctest: +SKIP
    >>> loglik, gen = run_condition(benches, main, ["loglik"], settings[0], [0, 1], settings[1])  # doctest: +SKIP
    >>> [(r.seed, r.condition) for r in loglik], gen  # doctest: +SKIP
    ([(0, 'default'), (1, 'default')], None)
    """
    speech = MemoSpeech(cond.source) if cond.source is not None else None
    per_seed: dict[int, list[Any]] = {seed: [] for seed in seeds}
    generated: dict[str, dict[str, dict[str, Any]]] = {}
    for bench in benches:
        if "loglik" in protocols:
            for seed in seeds:
                res = evaluate_benchmark(bench, cond.systems, replace(scoring, seed=seed), speech)
                log.info("loglik %s, seed %d, %s: %s", cond.name, seed, bench.name,
                         {n: round(s.primary, 4) for n, s in res.systems.items()})
                per_seed[seed].append(res)
        if "generate" in protocols:
            s = replace(generation, list_options=False, options_spoken=False) if bench.name in options_in_question \
                else generation
            generated[bench.name] = generate_and_extract(bench, cond.systems, speech, s)
            log.info("generate %s, %s: %s", cond.name, bench.name,
                     {n: round(o["accuracy"], 4) for n, o in generated[bench.name].items()})
        if speech is not None:
            speech.clear()
    meta = system_meta(cond.systems)
    loglik = [LoglikRun(seed, cond.name, EvalResults(per_seed[seed], meta, asdict(replace(scoring, seed=seed))))
              for seed in seeds] if "loglik" in protocols else []
    return loglik, (GenerateRun(cond.name, generated) if "generate" in protocols else None)


def run_storycloze(sets: Sequence[StoryClozeSet], modes: Sequence[str], systems: Sequence[Any],
                   source: SpokenSource | None, batch_tokens: int | None = None) -> list[StoryClozeResult]:
    """Spoken StoryCloze for every set and mode, in one condition.

    >>> sets = [load_spoken_storycloze("cloze.csv", "sSC")]  # doctest: +SKIP
    >>> [r.mode for r in run_storycloze(sets, ["continuation"], systems, source)]  # doctest: +SKIP
    ['continuation']
    """
    return [evaluate_story_cloze(data, systems, mode, source, batch_tokens) for data in sets for mode in modes]


def loglik_table(runs: Sequence[LoglikRun]) -> ItemTable:
    """``(condition, system, benchmark) -> seed -> item id -> 1.0 / 0.0`` (primary metric) of the harness runs."""
    table: ItemTable = {}
    for run in runs:
        for b in run.results.benchmarks:
            for name in b.systems:
                cell = table.setdefault((run.condition, name, b.name), {}).setdefault(run.seed, {})
                cell.update({rec["id"]: float(rec["systems"][name]["correct"]) for rec in b.items})
    return table


def generate_table(runs: Sequence[GenerateRun], seed: int) -> ItemTable:
    """The same for the generate protocol (one seed: ``seed``, the generation seed)."""
    table: ItemTable = {}
    for run in runs:
        for bench, systems in run.benchmarks.items():
            for name, out in systems.items():
                table[(run.condition, name, bench)] = {seed: {r["id"]: float(r["correct"]) for r in out["records"]}}
    return table


def storycloze_table(results: Sequence[StoryClozeResult], condition: str) -> ItemTable:
    """The same for spoken StoryCloze (benchmark ``<set>/<mode>``, pair outcomes 1 / 0.5 / 0; seed 0)."""
    table: ItemTable = {}
    for res in results:
        for name, scores in res.systems.items():
            if scores.applicable:
                table[(condition, name, f"{res.name}/{res.mode}")] = {
                    0: {rec["id"]: float(rec["systems"][name]["outcome"]) for rec in res.records}}
    return table


@dataclass
class RunResults:
    """Everything one evaluation run produced.

    Attributes:
        protocols (list[str]): the protocols run. conditions (list[Condition]): main first.
        systems (list[dict]): ``name, role, label`` of every system (main condition).
        benchmarks (list[dict]): ``name, title, split, source, n_rows, n_selected, chance`` per benchmark.
        scoring (ScoringSettings): log-likelihood settings (``seed`` = the first seed). seeds (list[int]).
        generation (GenerationSettings): generate settings.
        loglik (list[LoglikRun]), generate (list[GenerateRun]), storycloze (list[StoryClozeResult]).
        summaries (dict[str, Summary]): per protocol (``loglik``, ``generate``, ``storycloze``).
        intervals (dict): ``bootstrap`` (resamples), ``level``, ``seed``.
        config (dict): the run's configuration.
    """

    protocols: list[str]
    conditions: list[Condition]
    systems: list[dict[str, str]]
    benchmarks: list[dict[str, Any]]
    scoring: ScoringSettings
    seeds: list[int]
    generation: GenerationSettings
    loglik: list[LoglikRun] = field(default_factory=list)
    generate: list[GenerateRun] = field(default_factory=list)
    storycloze: list[StoryClozeResult] = field(default_factory=list)
    summaries: dict[str, Summary] = field(default_factory=dict)
    intervals: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def main(self) -> str:
        """Name of the main condition."""
        return self.conditions[0].name

    @property
    def primary(self) -> EvalResults | None:
        """The log-likelihood results of the first seed in the main condition (the paper's Table 3), if run."""
        return next((r.results for r in self.loglik if r.condition == self.main and r.seed == self.seeds[0]), None)

    @property
    def topline(self) -> str | None:
        return next((s["name"] for s in self.systems if s["role"] == "topline"), None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready. The primary log-likelihood run is at the top level (``settings``, ``systems``,
        ``benchmarks`` with per-item records, ``average_gap``: the layout of a single harness run); every other
        seed and condition is under ``loglik.runs``."""
        out: dict[str, Any] = {"protocols": self.protocols, "config": self.config, "intervals": self.intervals,
                               "conditions": [c.to_dict() for c in self.conditions], "systems": self.systems}
        primary = self.primary
        if primary is not None:
            out.update({k: v for k, v in primary.to_dict().items() if k != "systems"})
        if "loglik" in self.protocols:
            out["loglik"] = {"settings": asdict(self.scoring), "seeds": self.seeds,
                             "summary": self.summaries["loglik"].to_dict(),
                             "runs": [{"seed": r.seed, "condition": r.condition, **r.results.to_dict()}
                                      for r in self.loglik if r.results is not primary]}
        if "generate" in self.protocols:
            out["generate"] = {"settings": asdict(self.generation), "summary": self.summaries["generate"].to_dict(),
                               "runs": [asdict(r) for r in self.generate]}
        if self.storycloze:
            out["storycloze_spoken"] = {"summary": self.summaries["storycloze"].to_dict(),
                                        "results": [r.to_dict() for r in self.storycloze]}
        return out

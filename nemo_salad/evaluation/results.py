"""Result containers: per-item predictions, per-benchmark accuracies per system, and the text–speech gap.

Gap (paper Eq. 1): ``gap = acc(text LLM on text, the topline) - acc(system)``, per benchmark, on the primary
metric; positive means the system is worse than the topline.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["METRICS", "BenchmarkResult", "EvalResults", "SystemScores", "accuracy"]

#: the three option scores: unnormalised sum, per token, per character (acc, acc_per_token, acc_per_char)
METRICS = ("sum", "per_token", "per_char")
_ACC_KEY = {"sum": "acc", "per_token": "acc_per_token", "per_char": "acc_per_char"}


def accuracy(preds: list[int], golds: list[int]) -> float:
    """Fraction of ``preds`` equal to ``golds`` (0.0 for no items).

    >>> accuracy([0, 1, 1], [0, 1, 0])
    0.6666666666666666
    """
    return sum(p == g for p, g in zip(preds, golds, strict=True)) / len(golds) if golds else 0.0


@dataclass
class SystemScores:
    """Accuracies of one system on one benchmark.

    Attributes:
        acc, acc_per_token, acc_per_char (float): accuracy with the unnormalised, per-token and per-character
            normalised log-likelihood. primary (float): the configured one of these.
        n (int): scored items. seconds (float): wall time of this system (speech encoding / ASR + scoring).
        items_per_s (float): ``n / seconds``. empty_context (int): items with no context left (e.g. an empty
            transcript), counted wrong.
        shots_mean, shots_min, shots_max (float, int, int): few-shot examples per item in this system's prompts
            (each system fits its own; equal for all when ``ScoringSettings.shots`` fixes the count).

    >>> SystemScores("text_llm", "topline", 4, .5, .5, .5, .5, 1.0, 4.0, 0, 2.5, 1, 5).shots_range
    '2.5 (1–5)'
    """

    name: str
    role: str
    n: int
    acc: float
    acc_per_token: float
    acc_per_char: float
    primary: float
    seconds: float
    items_per_s: float
    empty_context: int = 0
    shots_mean: float = 0.0
    shots_min: int = 0
    shots_max: int = 0

    def metric(self, metric: str) -> float:
        return getattr(self, _ACC_KEY[metric])

    @property
    def shots_range(self) -> str:
        """Shots per item as ``"mean (min–max)"``, or just the count when every item had the same."""
        if self.shots_min == self.shots_max:
            return str(self.shots_min)
        return f"{self.shots_mean:.1f} ({self.shots_min}–{self.shots_max})"


@dataclass
class BenchmarkResult:
    """One benchmark: where it came from, what was skipped, accuracies per system, per-item predictions."""

    name: str
    title: str
    split: str
    source: str
    shot_source: str
    n_rows: int
    n_items: int
    chance: float
    skipped: dict[str, int]
    systems: dict[str, SystemScores]
    items: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class EvalResults:
    """Everything one run produced.

    >>> s = lambda name, role, acc: SystemScores(name, role, 10, acc, acc, acc, acc, 1.0, 10.0)
    >>> scores = {"text_llm": s("text_llm", "topline", 0.7), "speech_model": s("speech_model", "speech", 0.6)}
    >>> b = BenchmarkResult("copa", "COPA", "validation", "x", "y", 100, 10, 0.5, {}, scores)
    >>> r = EvalResults([b], [{"name": "text_llm", "role": "topline"}, {"name": "speech_model", "role": "speech"}], {})
    >>> round(r.gap("copa", "speech_model"), 6), round(r.average_gap("speech_model"), 6)
    (0.1, 0.1)
    """

    benchmarks: list[BenchmarkResult]
    systems: list[dict[str, str]]
    settings: dict[str, Any]

    @property
    def topline(self) -> str | None:
        """Name of the topline system (role ``topline``), if any."""
        return next((s["name"] for s in self.systems if s["role"] == "topline"), None)

    def benchmark(self, name: str) -> BenchmarkResult:
        return next(b for b in self.benchmarks if b.name == name)

    def gap(self, benchmark: str, system: str) -> float | None:
        """Topline accuracy minus ``system`` accuracy on ``benchmark`` (primary metric); None without topline."""
        top = self.topline
        if top is None:
            return None
        scores = self.benchmark(benchmark).systems
        return scores[top].primary - scores[system].primary

    def average_gap(self, system: str) -> float | None:
        gaps = [self.gap(b.name, system) for b in self.benchmarks]
        return None if not gaps or any(g is None for g in gaps) else sum(gaps) / len(gaps)  # type: ignore[misc]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: settings, systems, and per benchmark the accuracies, gaps and per-item predictions."""
        out: dict[str, Any] = {"settings": self.settings, "systems": self.systems, "benchmarks": {}}
        for b in self.benchmarks:
            entry = {k: v for k, v in asdict(b).items() if k not in ("systems", "items")}
            entry["systems"] = {n: {**asdict(s), "gap": self.gap(b.name, n)} for n, s in b.systems.items()}
            entry["items"] = b.items
            out["benchmarks"][b.name] = entry
        out["average_gap"] = {s["name"]: self.average_gap(s["name"]) for s in self.systems}
        return out

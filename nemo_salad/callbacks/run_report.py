"""The run's own account of the text–speech gap: held-out F and M and spoken-benchmark accuracy, start vs end.

At the start of training (step 0), optionally at every ``every_n_val``-th validation, and at the end, the
:class:`RunReport` callback scores the seeded benchmark items (the same items every time) with

* the original text LLM on the text (the topline: the frozen teacher copy, or the student with LoRA switched off),
* the model being trained on the spoken version (``SpeechSystem``),

and takes the held-out distillation loss, forgetting F and misalignment M from :class:`GapReport`. Every point is
printed as a table and written to ``<log_dir>/run_report.{json,md,png}``; each point's full evaluation (per-item
predictions) goes to ``<log_dir>/run_report/step_<n>/``. A resumed run keeps the points already written; the end
point is taken in ``on_fit_end``, after the last checkpoint and the ``.nemo`` are saved.

The training text of the embedded demo is decontaminated against these benchmarks (``EVAL_BENCHMARKS`` in
``nemo_salad.data.olmo_text``: n-gram overlap with any item of ARC, OpenBookQA, HellaSwag, PIQA, COPA or MMLU drops
the passage), so the reported items were never trained on; the report says so only for such runs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from nemo.utils import logging

from nemo_salad.callbacks.gap_report import GapReport
from nemo_salad.evaluation.report import _pct
from nemo_salad.modules.lora import lora_disabled

__all__ = ["OriginalLLM", "RunReport", "report_table"]


class OriginalLLM:
    """The student LLM seen with its LoRA switched off: the original LLM of a shared-weights teacher.

    Every method call runs under :func:`~nemo_salad.modules.lora.lora_disabled`; attributes pass through.

    >>> from nemo_salad.llm import LLMConfig, MegatronLLM
    >>> from nemo_salad.modules.lora import apply_lora, lora_parameters
    >>> llm = MegatronLLM(LLMConfig.preset("tiny-llama")).eval(); ids = torch.tensor([[1, 2, 3]])
    >>> before = llm(input_ids=ids); _ = apply_lora(llm, rank=2)
    >>> _ = [torch.nn.init.normal_(p) for p in lora_parameters(llm)]
    >>> torch.equal(OriginalLLM(llm)(input_ids=ids), before), torch.equal(llm(input_ids=ids), before)
    (True, False)
    """

    def __init__(self, llm: torch.nn.Module) -> None:
        self._llm = llm

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with lora_disabled(self._llm):
            return self._llm(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._llm, name)
        if not callable(attr) or isinstance(attr, torch.nn.Module):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            with lora_disabled(self._llm):
                return attr(*args, **kwargs)

        return call


def report_table(points: Sequence[Mapping[str, Any]], benchmarks: Sequence[Mapping[str, Any]]) -> str:
    """Markdown table: one row per point (step, minutes, F, M, and per benchmark text / speech / gap in %).

    >>> pts = [{"label": "start", "step": 0, "minutes": 0.0, "forgetting": 0.0, "misalignment": 1.9,
    ...         "accuracy": {"copa": {"text": 0.63, "speech": 0.5}}}]
    >>> print(report_table(pts, [{"name": "copa", "title": "COPA", "chance": 0.5, "n_items": 100}]).splitlines()[2])
    | start | 0 | 0.0 | 0.0000 | 1.9000 | 63.0 | 50.0 | 13.0 |
    """
    titles = [b["title"] for b in benchmarks]
    head = "| point | step | min | F | M | " + " | ".join(f"{t} text | {t} speech | {t} gap" for t in titles) + " |"
    lines = [head, "|---" * (5 + 3 * len(titles)) + "|"]
    for p in points:
        cells = [p["label"], str(p["step"]), f"{p['minutes']:.1f}", f"{p['forgetting']:.4f}",
                 f"{p['misalignment']:.4f}"]
        for b in benchmarks:
            acc = p["accuracy"].get(b["name"], {})
            text, speech = acc.get("text"), acc.get("speech")
            gap = None if text is None or speech is None else text - speech
            cells += [_pct(text), _pct(speech), _pct(gap)]
        lines.append("| " + " | ".join(cells) + " |")
    shots = points[-1].get("shots") if points else None
    if shots:  # each system takes as many few-shot examples as fit its own context
        lines.append("\nFew-shot examples per item (mean, last point): " + "; ".join(
            f"{b['title']} text {shots[b['name']]['text']:.2f}, speech {shots[b['name']]['speech']:.2f}"
            for b in benchmarks if b["name"] in shots))
    return "\n".join(lines) + "\n"


def _plot(points: Sequence[Mapping[str, Any]], benchmarks: Sequence[Mapping[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(benchmarks) + 1, figsize=(4.2 * (len(benchmarks) + 1), 3.4), squeeze=False)
    steps = [p["step"] for p in points]
    for ax, b in zip(axes[0], benchmarks):
        text = [100 * p["accuracy"][b["name"]]["text"] for p in points]
        speech = [100 * p["accuracy"][b["name"]]["speech"] for p in points]
        ax.plot(steps, text, "s--", color="tab:blue", label="text LLM on text")
        ax.plot(steps, speech, "o-", color="tab:orange", label="speech model on speech")
        ax.axhline(100 * b["chance"], color="grey", lw=0.8, ls=":", label="chance")
        ax.set_title(f"{b['title']} ({b['n_items']} items)")
        ax.set_xlabel("training step")
        ax.set_ylabel("accuracy (%)")
    axes[0][0].legend(fontsize=7)
    ax = axes[0][-1]
    ax.plot(steps, [p["misalignment"] for p in points], "o-", label="M (misalignment)")
    ax.plot(steps, [p["forgetting"] for p in points], "s-", label="F (forgetting)")
    ax.set_title("held-out gap factors")
    ax.set_xlabel("training step")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


class RunReport(pl.Callback):
    """Score the spoken benchmarks and collect F and M at the start and the end of training (see the module
    docstring).

    Args:
        gap (GapReport): the run's held-out gap callback (its history gives F and M; it measures when a point has
            none yet).
        speech (SpokenSource): voices the benchmark texts (cached).
        benchmarks (Sequence[str]): Default: ("arc_easy", "copa").
        n_items (int): seeded items per benchmark. Default: 100.
        settings (ScoringSettings | None): prompt and scoring settings. Default: ``ScoringSettings()``.
        every_n_val (int): also report at every n-th validation; 0: start and end only. Default: 0.
        seed (int): item subset seed. Default: 0.
        data (Mapping | None): ``load_benchmark`` keyword arguments per benchmark. Default: None.
        out_dir (str | Path | None): where the report goes. Default: the trainer's log directory.
        decontaminated (str | None): how the training text was kept apart from the benchmark items (written into
            the report); None: not checked. Default: None.
        reuse_topline (bool): score the topline once and reuse it at later points. The original LLM does not
            change, and neither do its prompts (its shots are chosen for its own context, item by item): a later
            point whose items differ from the first point's scores the topline again. Default: True.
    """

    def __init__(self, gap: GapReport, speech: Any, benchmarks: Sequence[str] = ("arc_easy", "copa"),
                 n_items: int = 100, settings: Any = None, every_n_val: int = 0, seed: int = 0,
                 data: Mapping[str, Mapping[str, Any]] | None = None, out_dir: str | Path | None = None,
                 decontaminated: str | None = None, reuse_topline: bool = True) -> None:
        from nemo_salad.evaluation.harness import ScoringSettings

        if every_n_val < 0 or n_items < 1 or not benchmarks:
            raise ValueError(f"report: need every_n_val >= 0, n_items >= 1 and a benchmark; got {every_n_val}, "
                             f"{n_items}, {list(benchmarks)}")
        self.gap, self.speech, self.benchmark_names = gap, speech, list(benchmarks)
        self.n_items, self.settings = int(n_items), settings or ScoringSettings()
        self.every_n_val, self.seed, self.data = int(every_n_val), int(seed), dict(data or {})
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.points: list[dict[str, Any]] = []
        self.benchmarks_meta: list[dict[str, Any]] = []
        self._benchmarks: list[Any] | None = None
        self.reuse_topline, self.decontaminated = bool(reuse_topline), decontaminated
        # benchmark -> (accuracy, scored item ids, mean shots per item)
        self._topline: dict[str, tuple[float, list[str], float]] = {}
        self._n_val, self._t0, self._minutes_before = 0, time.monotonic(), 0.0

    # ------------------------------------------------------------------ files
    def _dir(self, trainer: pl.Trainer) -> Path:
        return self.out_dir or Path(trainer.log_dir or ".")

    def _load(self, trainer: pl.Trainer) -> None:
        path = self._dir(trainer) / "run_report.json"
        if path.is_file():
            saved = json.loads(path.read_text())
            self.points = list(saved.get("points", []))
            self._minutes_before = float(self.points[-1]["minutes"]) if self.points else 0.0

    def _write(self, trainer: pl.Trainer) -> None:
        if not trainer.is_global_zero:
            return
        out = self._dir(trainer)
        out.mkdir(parents=True, exist_ok=True)
        body = {"points": self.points, "benchmarks": self.benchmarks_meta,
                "settings": {"n_items": self.n_items, "seed": self.seed, **vars(self.settings)},
                "topline": "the original text LLM on the text of each item",
                "speech": "the model being trained on the spoken version of each item",
                "decontaminated": self.decontaminated or "not checked (training data from user sources)"}
        tmp = out / "run_report.json.tmp"
        tmp.write_text(json.dumps(body, indent=2))
        tmp.replace(out / "run_report.json")
        (out / "run_report.md").write_text(report_table(self.points, self.benchmarks_meta))
        _plot(self.points, self.benchmarks_meta, out / "run_report.png")

    # ------------------------------------------------------------------ measuring
    def _systems(self, model: Any) -> list[Any]:
        from nemo_salad.evaluation.systems import SpeechSystem, TextSystem

        if getattr(model, "teacher_mode", "none") == "none":
            raise ValueError("report: the text topline needs the original LLM (model.teacher.mode copy or shared)")
        original = model.teacher if model.teacher is not None else OriginalLLM(model.llm)
        return [TextSystem(original, model.tokenizer, name="text_llm", role="topline"), SpeechSystem(model)]

    def _evaluate(self, model: Any) -> Any:
        """Both systems, or the speech model alone when the stored topline's prompts are still those scored."""
        from nemo_salad.evaluation.harness import evaluate

        plan = lambda bench: [it["id"] for it in bench.items]  # noqa: E731  (the topline's shots are its own)
        systems = self._systems(model)
        if self.reuse_topline and len(self._topline) == len(self._benchmarks or []):
            results = evaluate(self._benchmarks, systems[1:], self.settings, self.speech)
            if all(plan(b) == self._topline[b.name][1] for b in results.benchmarks):
                return results
            logging.warning("[report] the prompts changed since the first point: scoring the topline again")
        results = evaluate(self._benchmarks, systems, self.settings, self.speech)
        self._topline = {b.name: (b.systems["text_llm"].primary, plan(b), b.systems["text_llm"].shots_mean)
                         for b in results.benchmarks}
        return results

    def _gap_values(self, trainer: pl.Trainer, model: Any) -> dict[str, float]:
        step = trainer.global_step
        for entry in reversed(self.gap.history):
            if entry["step"] == step:
                return {k: float(v) for k, v in entry.items() if k != "step"}
        values = self.gap.measure(trainer, model)
        self.gap.history.append({"step": step, **values})
        return values

    def measure(self, trainer: pl.Trainer, model: Any, label: str) -> dict[str, Any]:
        """Score every benchmark and take F and M now; append the point, print the table and write the files."""
        from nemo_salad.evaluation.loaders import load_benchmark
        from nemo_salad.evaluation.report import write_report

        if self._benchmarks is None:
            self._benchmarks = [load_benchmark(name, n_items=self.n_items, seed=self.seed, **self.data.get(name, {}))
                                for name in self.benchmark_names]
        minutes = self._minutes_before + (time.monotonic() - self._t0) / 60
        gap = self._gap_values(trainer, model)
        was_training, started = model.training, time.monotonic()
        model.eval()
        try:
            with torch.no_grad():
                results = self._evaluate(model)
        finally:
            model.train(was_training)
        self.benchmarks_meta = [{"name": b.name, "title": b.title, "chance": b.chance, "n_items": b.n_items,
                                 "source": b.source, "skipped": dict(b.skipped)} for b in results.benchmarks]
        point = {"label": label, "step": trainer.global_step, "minutes": round(minutes, 2),
                 "eval_minutes": round((time.monotonic() - started) / 60, 2),
                 "kd": gap.get("kd"), "forgetting": gap["forgetting"], "misalignment": gap["misalignment"],
                 "accuracy": {b.name: {"text": self._topline[b.name][0], "speech": b.systems["speech_model"].primary}
                              for b in results.benchmarks},
                 "shots": {b.name: {"text": self._topline[b.name][2], "speech": b.systems["speech_model"].shots_mean}
                           for b in results.benchmarks}}
        self.points = [p for p in self.points if p["step"] != point["step"]] + [point]
        if trainer.is_global_zero:
            write_report(results, self._dir(trainer) / "run_report" / f"step_{trainer.global_step}")
        self._write(trainer)
        logging.info(f"[report] spoken benchmarks and held-out gap ({self.n_items} items per benchmark, "
                     f"{self.settings.primary} accuracy in %):\n{report_table(self.points, self.benchmarks_meta)}")
        for logger in trainer.loggers:
            logger.log_metrics({f"report/{b}/{k}": v for b, acc in point["accuracy"].items() for k, v in acc.items()},
                               step=trainer.global_step)
        return point

    # ------------------------------------------------------------------ hooks
    def on_fit_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self._t0 = time.monotonic()
        if trainer.ckpt_path:  # a resumed run keeps its points; a fresh run in the same folder starts anew
            self._load(trainer)

    def on_train_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self._t0 = time.monotonic()
        if trainer.global_step == 0 and not any(p["step"] == 0 for p in self.points):
            self.measure(trainer, pl_module, "start")

    def on_validation_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        if trainer.sanity_checking or not self.every_n_val:
            return
        self._n_val += 1
        if self._n_val % self.every_n_val == 0 and (trainer.max_steps < 0 or trainer.global_step < trainer.max_steps):
            self.measure(trainer, pl_module, "validation")

    def on_fit_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        """After the checkpoint callbacks have written the last checkpoint and the ``.nemo``; also on a rerun
        whose fit loop had nothing left to do (e.g. killed during the end report)."""
        if trainer.global_step == 0 or trainer.sanity_checking:
            return
        if not any(p["step"] == trainer.global_step and p["label"] == "end" for p in self.points):
            self.measure(trainer, pl_module, "end")

"""From the finished steps' files to the study's numbers and verdicts (:func:`analyse`).

Every interval is a percentile bootstrap (``eval.bootstrap`` draws, ``eval.level``): accuracies over the benchmark
items, F and M over the held-out utterances; runs share the draws, so a difference between two runs is paired.
A finding reads *reproduced* when its intervals exclude the null in the paper's direction, *not reproduced* when
they exclude it in the other direction (or the relation is absent), and *inconclusive* otherwise.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nemo_salad.study.config import StudyConfig
from nemo_salad.study.plan import Step
from nemo_salad.study.stats import Interval, draws, interval, loo_r2, ols, ratio_draws

__all__ = ["RunData", "analyse", "load_runs"]

#: the paper's Stage II gains of active over uniform selection (3B, Table 4), in accuracy points
PAPER_STAGE2_GAIN = {"mmsu": 3.0, "openbookqa": 4.8, "arc_challenge": 1.0}
REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"
#: Finding 4: a text gap (points) still "about 0"
TEXT_GAP_TOLERANCE = 1.0


@dataclass
class RunData:
    """One measured model: the step, held-out sums per utterance, per-item correctness, M(c), training history."""

    step: Step
    heldout: dict[str, tuple[float, int, float, int]]
    correct: dict[str, dict[str, dict[str, bool]]]  # benchmark -> system -> item id -> correct
    clusters: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    selection: dict[str, Any] | None = None
    config: dict[str, Any] | None = None
    minutes: float = 0.0


def _history(path: Path) -> list[dict[str, float]]:
    if not path.is_file():
        return []
    by_step: dict[int, dict[str, float]] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            by_step[int(row["step"])] = row  # a resumed run repeats a step: the last line counts
    return [by_step[s] for s in sorted(by_step)]


def load_runs(steps: list[Step], eval_fp: str) -> dict[str, RunData]:
    """The measured models among ``steps`` whose ``result-<eval_fp>.json`` exists."""
    from omegaconf import OmegaConf

    runs: dict[str, RunData] = {}
    for step in steps:
        out = Path(step.dir)
        result = out / f"result-{eval_fp}.json"
        if step.kind not in ("base", "train") or not result.is_file():
            continue
        res = json.loads(result.read_text())
        held = {r["id"]: (r["forgetting_sum"], r["forgetting_tokens"], r["misalignment_sum"], r["misalignment_tokens"])
                for r in json.loads((out / res["heldout"]).read_text())}
        correct: dict[str, dict[str, dict[str, bool]]] = {}
        for name, bench in json.loads((out / res["eval"]).read_text())["benchmarks"].items():
            per = correct.setdefault(name, {})
            for item in bench["items"]:
                for system, entry in item["systems"].items():
                    per.setdefault(system, {})[str(item["id"])] = bool(entry["correct"])
        report = next(iter(sorted((out / "selection").glob("round_*/report.json"))), out / "no-round")
        cfg_path = out / "config.yaml"
        runs[step.name] = RunData(
            step, held, correct, json.loads((out / res["clusters"]).read_text()) if res.get("clusters") else {},
            _history(out / "gap.jsonl"),
            json.loads(report.read_text()) if report.is_file() and step.gamma is not None else None,
            OmegaConf.to_container(OmegaConf.load(cfg_path), resolve=False) if cfg_path.is_file() else None,
            float(res.get("minutes", 0.0)))
    return runs


class _Sampler:
    """Shared bootstrap draws over the items of each benchmark and over the held-out utterances."""

    def __init__(self, runs: dict[str, RunData], benchmarks: list[str], reps: int, level: float) -> None:
        self.level = level
        self.benchmarks = [b for b in benchmarks if all(b in r.correct for r in runs.values())]
        self.items: dict[str, list[str]] = {}
        for b in self.benchmarks:
            ids = None
            for r in runs.values():
                for system in r.correct[b].values():
                    ids = set(system) if ids is None else ids & set(system)
            self.items[b] = sorted(ids or [])
        self.item_draws = {b: draws(len(ids), reps, 100 + i) for i, (b, ids) in enumerate(self.items.items())
                           if ids}
        utt = None
        for r in runs.values():
            utt = set(r.heldout) if utt is None else utt & set(r.heldout)
        self.utterances = sorted(utt or [])
        self.utt_draws = draws(len(self.utterances), reps, 1) if self.utterances else None

    def correct(self, run: RunData, system: str, bench: str) -> np.ndarray:
        per = run.correct[bench][system]
        return np.array([per[i] for i in self.items[bench]], np.float64)

    def accuracy(self, run: RunData, system: str
                 ) -> tuple[dict[str, tuple[float, np.ndarray]], tuple[float, np.ndarray]]:
        """Per benchmark and averaged over benchmarks: (point, draws) in %."""
        per = {}
        for b in self.benchmarks:
            if b not in self.item_draws:
                continue
            c = self.correct(run, system, b)
            per[b] = (100 * c.mean(), 100 * c[self.item_draws[b]].mean(axis=1))
        avg = (float(np.mean([p for p, _ in per.values()])), np.mean([d for _, d in per.values()], axis=0))
        return per, avg

    def gap(self, run: RunData) -> dict[str, tuple[float, np.ndarray]]:
        """Held-out F and M: (point, draws) over utterances."""
        arr = np.array([run.heldout[u] for u in self.utterances], np.float64)
        out = {}
        for name, (s, c) in {"F": (0, 1), "M": (2, 3)}.items():
            total = arr[:, c].sum()
            point = arr[:, s].sum() / total if total else math.nan
            out[name] = (float(point), ratio_draws(arr[:, s], arr[:, c], self.utt_draws))
        return out

    def iv(self, point: float, samples: np.ndarray) -> Interval:
        return interval(point, samples, self.level)


def _text_system(run: RunData) -> str:
    return "text_llm" if run.step.kind == "base" else "speech_model_text"


def _verdict_lower(diff: Interval) -> str:
    """The paper says this difference is below 0."""
    if diff.high < 0:
        return REPRODUCED
    if diff.low > 0:
        return NOT_REPRODUCED
    return INCONCLUSIVE


def analyse(cfg: StudyConfig, steps: list[Step], eval_fp: str) -> dict[str, Any]:
    """Tables, regressions and the four findings' verdicts from whatever steps have finished."""
    runs = load_runs(steps, eval_fp)
    out: dict[str, Any] = {"runs": {}, "findings": {}, "missing": [s.name for s in steps if s.kind in ("base", "train")
                                                                  and s.name not in runs]}
    if not runs:
        return out
    sampler = _Sampler(runs, list(cfg.eval.benchmarks), cfg.eval.bootstrap, cfg.eval.level)
    out["benchmarks"], out["n_items"] = sampler.benchmarks, {b: len(v) for b, v in sampler.items.items()}
    out["n_utterances"] = len(sampler.utterances)
    raw: dict[str, dict[str, Any]] = {}
    for name, run in runs.items():
        speech_b, speech = sampler.accuracy(run, "speech_model")
        text_b, text = sampler.accuracy(run, _text_system(run))
        gap = sampler.gap(run)
        raw[name] = {"speech": speech, "text": text, "speech_b": speech_b, "text_b": text_b, **gap}
        mc = [v for v in run.clusters.values() if math.isfinite(v)]
        out["runs"][name] = {
            "group": run.step.group, "alpha": run.step.alpha, "gamma": run.step.gamma, "minutes": run.minutes,
            "F": sampler.iv(*gap["F"]), "M": sampler.iv(*gap["M"]), "speech": sampler.iv(*speech),
            "text": sampler.iv(*text), "speech_b": {b: sampler.iv(*v) for b, v in speech_b.items()},
            "text_b": {b: sampler.iv(*v) for b, v in text_b.items()}, "mc": run.clusters,
            "mc_mean": float(np.mean(mc)) if mc else math.nan, "history": run.history}
    topline = next((r for r in runs.values() if r.step.kind == "base"), None)
    if topline is not None:
        top = raw[topline.step.name]
        out["topline"] = {"average": sampler.iv(*top["text"]), **{b: sampler.iv(*v) for b, v in top["text_b"].items()}}
        for name in runs:  # the paper's gap (Eq. 1): the original LLM on text minus the model on speech / on text
            for kind in ("speech", "text"):
                per = {b: sampler.iv(top["text_b"][b][0] - raw[name][f"{kind}_b"][b][0],
                                     top["text_b"][b][1] - raw[name][f"{kind}_b"][b][1]) for b in top["text_b"]}
                per["average"] = sampler.iv(top["text"][0] - raw[name][kind][0], top["text"][1] - raw[name][kind][1])
                out["runs"][name][f"{kind}_gap"] = per

    def diff(a: str, b: str, key: str) -> Interval:
        return sampler.iv(raw[a][key][0] - raw[b][key][0], raw[a][key][1] - raw[b][key][1])

    rounds = {n: r.selection for n, r in runs.items() if r.selection}
    if rounds:  # every γ arm measured the same pre-decay model on the same probes before its round
        first = next(iter(rounds.values()))
        out["mc_before"] = {f"c{c['cluster']:04d}": c["misalignment"] for c in first["clusters"]
                            if c["misalignment"] is not None}
        out["drawn"] = {n: {f"c{c['cluster']:04d}": c["drawn"] for c in r["clusters"]} for n, r in rounds.items()}
    out["findings"]["f1"] = _finding1(cfg, runs, diff)
    out["findings"]["f2"] = _finding2(cfg, runs, raw, sampler)
    out["findings"]["f3"] = _finding3(runs, raw, sampler)
    out["findings"]["f4"] = _finding4(cfg, runs, raw, sampler)
    out["scale"] = scale_needed(out)
    return out


def _n_for(n: int, iv: Interval, effect: float) -> float:
    """Sample size at which the 95 % interval's half-width would be ``effect / 2`` (it then excludes 0 with a
    margin if the effect holds), from the half-width at ``n`` (half-width ∝ 1/√n)."""
    half = (iv.high - iv.low) / 2
    if half <= 0:
        return math.nan  # no spread at all (a handful of items): nothing to extrapolate from
    return math.inf if effect == 0 else n * (half / (abs(effect) / 2)) ** 2


def scale_needed(a: dict[str, Any]) -> dict[str, Any]:
    """For each inconclusive finding, what more data its interval would need, extrapolated from this run's own
    variance: held-out utterances for F1 (ΔM at its measured size), benchmark items for F2 (the paper's mean
    Stage II gain) and the spread of the models' spoken accuracy against their intervals for F3."""
    f, out = a.get("findings", {}), {}
    f1 = f.get("f1", {})
    if f1.get("verdict") == INCONCLUSIVE and "dM" in f1:
        n = a["n_utterances"]
        out["f1"] = {"n": n, "dM": f1["dM"], "dF": f1["dF"], "n_needed": _n_for(n, f1["dM"], f1["dM"].point)}
    f2 = f.get("f2", {})
    if f2.get("verdict") == INCONCLUSIVE and "vs_uniform" in f2:
        n = sum(a["n_items"].values())
        paper = float(np.mean(list(PAPER_STAGE2_GAIN.values())))
        out["f2"] = {"n": n, "paper_mean": paper, "diff": f2["vs_uniform"],
                     "n_needed": _n_for(n, f2["vs_uniform"], paper)}
    f3 = f.get("f3", {})
    reg = f3.get("speech", {})
    if f3.get("verdict") == INCONCLUSIVE and reg.get("n", 0) >= 3:
        runs = [a["runs"][n] for n in reg["names"]]  # the trained models of the regression
        acc = [r["speech"].point for r in runs]
        half = float(np.mean([(r["speech"].high - r["speech"].low) / 2 for r in runs]))
        spread = max(acc) - min(acc)
        n = sum(a["n_items"].values())
        out["f3"] = {"models": len(runs), "spread": spread, "half_width": half, "n": n,
                     "n_needed": _n_for(n, Interval((0.0, -half, half)), spread / 1.5)}
    return out


def _finding1(cfg: StudyConfig, runs: dict[str, RunData], diff: Any) -> dict[str, Any]:
    lo, hi = f"s1_alpha{float(min(cfg.stage1.alphas))}", f"s1_alpha{float(max(cfg.stage1.alphas))}"
    if lo == hi or lo not in runs or hi not in runs:
        return {"verdict": INCONCLUSIVE, "reason": f"needs the runs {lo} and {hi}"}
    dm, df = diff(hi, lo, "M"), diff(hi, lo, "F")
    verdicts = {_verdict_lower(dm), _verdict_lower(df)}
    verdict = (REPRODUCED if verdicts == {REPRODUCED} else NOT_REPRODUCED if NOT_REPRODUCED in verdicts
               else INCONCLUSIVE)
    hist = [(h["step"], h["misalignment"]) for h in runs[lo].history if math.isfinite(h.get("misalignment", math.nan))]
    # "M grows with more narrow data under NLL" compares models trained on more or less narrow data; one run's
    # trajectory mixes the untrained adapter's early fall and the learning-rate decay, so it is shown, not judged
    trend: dict[str, Any] = {"history": hist, "verdict": INCONCLUSIVE}
    return {"low": lo, "high": hi, "dM": dm, "dF": df, "verdict": verdict, "nll_trend": trend}


def _finding2(cfg: StudyConfig, runs: dict[str, RunData], raw: dict[str, Any], sampler: _Sampler) -> dict[str, Any]:
    gammas = sorted(cfg.stage2.gammas)
    if not gammas:
        return {"verdict": INCONCLUSIVE, "reason": "no Stage II arm"}
    active, uniform = f"s2_gamma{float(gammas[-1])}", f"s2_gamma{float(gammas[0])}"
    if active == uniform or active not in runs or uniform not in runs:
        return {"verdict": INCONCLUSIVE, "reason": f"needs the runs {active} and {uniform}"}

    def d(a: str, b: str) -> tuple[Interval, dict[str, Interval]]:
        avg = sampler.iv(raw[a]["speech"][0] - raw[b]["speech"][0], raw[a]["speech"][1] - raw[b]["speech"][1])
        per = {k: sampler.iv(raw[a]["speech_b"][k][0] - raw[b]["speech_b"][k][0],
                             raw[a]["speech_b"][k][1] - raw[b]["speech_b"][k][1]) for k in raw[a]["speech_b"]}
        return avg, per

    vs_uniform, vs_uniform_b = d(active, uniform)
    out: dict[str, Any] = {"active": active, "uniform": uniform, "vs_uniform": vs_uniform,
                           "vs_uniform_b": vs_uniform_b, "paper": PAPER_STAGE2_GAIN}
    none = "s2_no_synthetic"
    checks = [vs_uniform]
    if none in runs:
        out["vs_none"], out["vs_none_b"] = d(active, none)
        checks.append(out["vs_none"])
    if all(c.low > 0 for c in checks) and none in runs:
        out["verdict"] = REPRODUCED
    elif any(c.high < 0 for c in checks):  # uniform, or the same steps without synthetic speech, did better
        out["verdict"] = NOT_REPRODUCED
    else:
        out["verdict"] = INCONCLUSIVE
    out["budgets"] = {n: {"seconds": r.selection["summary"]["selected_total"],
                          "items": r.selection["summary"]["selected_items"],
                          "budget_seconds": r.selection["summary"]["budget"] * 3600}
                      for n, r in runs.items() if r.selection and n in (active, uniform)}
    return out


def _regression(points: list[tuple[str, float, float, np.ndarray]]) -> dict[str, Any]:
    """Line and LOO R² of y on x over the models, with intervals from the items' bootstrap draws of y."""
    names = [p[0] for p in points]
    x = np.array([p[1] for p in points])
    y = np.array([p[2] for p in points])
    if len(points) < 3 or not np.isfinite(x).all():
        return {"names": names, "x": x.tolist(), "y": y.tolist(), "n": len(points), "loo_r2": None}
    ys = np.stack([p[3] for p in points], axis=1)  # (reps, n)
    a, b, r2 = ols(x, y)
    reps = min(len(ys), 500)
    loo = [loo_r2(x, ys[i]) for i in range(reps)]
    slopes = [ols(x, ys[i])[1] for i in range(reps)]
    return {"names": names, "x": x.tolist(), "y": y.tolist(), "n": len(points), "intercept": a,
            "slope": interval(b, np.array(slopes)), "r2": r2, "loo_r2": interval(loo_r2(x, y), np.array(loo))}


def _regression_verdict(reg: dict[str, Any]) -> str:
    if reg.get("loo_r2") is None or not math.isfinite(reg["loo_r2"].point):
        return INCONCLUSIVE  # fewer than 3 models, or no spread in x or y: nothing to explain
    if reg["slope"].high < 0 and reg["loo_r2"].low > 0:
        return REPRODUCED
    if reg["slope"].low > 0 or reg["loo_r2"].high <= 0:
        return NOT_REPRODUCED
    return INCONCLUSIVE


def _finding3(runs: dict[str, RunData], raw: dict[str, Any], sampler: _Sampler) -> dict[str, Any]:
    """The verdict uses the trained models (as the paper's sweep); the fit with the step-0 model is shown too."""
    def log_m(n: str) -> float:
        return math.log(raw[n]["M"][0]) if raw[n]["M"][0] > 0 else math.nan

    trained = [n for n, r in runs.items() if r.step.kind == "train"]
    speech = _regression([(n, log_m(n), *raw[n]["speech"]) for n in trained])
    text = _regression([(n, raw[n]["F"][0], *raw[n]["text"]) for n in trained])
    speech["verdict"], text["verdict"] = _regression_verdict(speech), _regression_verdict(text)
    speech["with_base"] = _regression([(n, log_m(n), *raw[n]["speech"]) for n in runs])
    verdict = (speech["verdict"] if speech["verdict"] == text["verdict"]
               else NOT_REPRODUCED if NOT_REPRODUCED in (speech["verdict"], text["verdict"]) else INCONCLUSIVE)
    return {"speech": speech, "text": text, "verdict": verdict}


def _finding4(cfg: StudyConfig, runs: dict[str, RunData], raw: dict[str, Any], sampler: _Sampler) -> dict[str, Any]:
    base = next((n for n, r in runs.items() if r.step.kind == "base"), None)
    if base is None:
        return {"verdict": INCONCLUSIVE, "reason": "needs the base step (the text topline)"}
    gaps = {n: sampler.iv(raw[base]["text"][0] - raw[n]["text"][0], raw[base]["text"][1] - raw[n]["text"][1])
            for n, r in runs.items() if r.step.kind == "train"}
    # SALAD = Stage I (alpha = from_alpha) then Stage II with active selection; both points are judged
    salad = [n for n in (f"s1_alpha{float(cfg.stage2.from_alpha)}",
                         f"s2_gamma{float(max(cfg.stage2.gammas))}" if cfg.stage2.gammas else None) if n in gaps]
    # "about 0 or negative": reproduced when the whole interval is at most TEXT_GAP_TOLERANCE points, not reproduced
    # when all of it is above (a loss of text ability beyond the tolerance)
    verdicts = [REPRODUCED if gaps[n].high <= TEXT_GAP_TOLERANCE else NOT_REPRODUCED
                if gaps[n].low > TEXT_GAP_TOLERANCE else INCONCLUSIVE for n in salad]
    verdict = (INCONCLUSIVE if not verdicts else NOT_REPRODUCED if NOT_REPRODUCED in verdicts
               else REPRODUCED if set(verdicts) == {REPRODUCED} else INCONCLUSIVE)
    return {"gaps": gaps, "salad": salad, "verdict": verdict, "tolerance": TEXT_GAP_TOLERANCE}

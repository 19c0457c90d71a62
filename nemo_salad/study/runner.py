"""Run (or resume) the whole study and write its report (:func:`run_study`).

Each step runs in its own process (``python -m nemo_salad.study.worker``), its output in ``<step dir>/run.log``; the
study's own log is ``<out_dir>/study.log``. A step whose result file exists is reused; a failed step is logged and
its dependants are skipped, the other steps still run, and the report says what is missing.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from nemo_salad.study.config import StudyConfig
from nemo_salad.study.plan import (
    Step,
    eval_fingerprint,
    exported_model,
    plan_steps,
    pre_decay_checkpoint,
    used_passages,
)
from nemo_salad.study.worker import mc_name, result_name

__all__ = ["run_study", "study_wall_minutes"]

log = logging.getLogger("nemo_salad.study")


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _say(out: Path, message: str) -> None:
    line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}"
    tqdm.write(line)
    with open(out / "study.log", "a", encoding="utf-8") as f:
        f.write(line + "\n")


def _spec(cfg: StudyConfig, step: Step, by_name: dict[str, Step], conf_dir: str, e: str,
          clusters_done: bool) -> dict[str, Any]:
    data, clusters = by_name["data"], by_name["clusters"]
    spec: dict[str, Any] = {"step": step.to_dict(), "conf_dir": conf_dir, "train_overrides": list(cfg.train_overrides),
                            "eval_fp": e, "threads": cfg.threads, "demo": by_name["base"].settings["data"]["demo"],
                            "used_passages": used_passages(data), "clusters_dir": clusters.dir,
                            "clusters_fp": clusters.fingerprint, "clusters_done": clusters_done,
                            "eval": {"benchmarks": list(cfg.eval.benchmarks), "n_items": cfg.eval.n_items,
                                     "seed": cfg.eval.seed, "tts": dict(cfg.eval.tts),
                                     "scoring": dict(cfg.eval.scoring)}}
    if step.config_name:
        spec["exported"] = exported_model(step)
    if step.group == "stage2":
        spec["init_from"] = pre_decay_checkpoint(by_name[step.needs[-1]])
    return spec


def _run_step(spec_path: Path, log_path: Path) -> int:
    env = {**os.environ, "PYTHONWARNINGS": os.environ.get("PYTHONWARNINGS", "ignore")}
    with open(log_path, "a", encoding="utf-8") as out:
        out.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} start\n")
        out.flush()
        proc = subprocess.Popen([sys.executable, "-m", "nemo_salad.study.worker", str(spec_path)], stdout=out,
                                stderr=subprocess.STDOUT, env=env, preexec_fn=_die_with_parent)
        return proc.wait()


def run_study(cfg: StudyConfig, conf_dir: str | Path) -> dict[str, Any]:
    """Run every step not yet done, then analyse and write ``cfg.findings`` with its plots.

    Args:
        cfg (StudyConfig): the study.
        conf_dir (str | Path): the folder of the training configs (``conf/``).

    Returns:
        dict: ``status`` per step, the ``analysis`` and the report's ``path``.
    """
    from nemo_salad.study.analysis import analyse
    from nemo_salad.study.report import plot_findings, write_findings

    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    steps, e = plan_steps(cfg), eval_fingerprint(cfg)
    by_name = {s.name: s for s in steps}
    status: dict[str, str] = {}
    _say(out, f"study: {len(steps)} steps in {out} (measurements {e})")
    bar = tqdm(steps, desc="study", unit="step")
    for step in bar:
        bar.set_postfix_str(step.name)
        blocked = [n for n in step.needs if status.get(n) != "done"]
        if blocked:
            status[step.name] = f"skipped: {', '.join(blocked)} not done"
            _say(out, f"{step.name}: {status[step.name]}")
            continue
        run_dir = Path(step.dir)
        if _finished(step, e, by_name["clusters"], status):
            status[step.name] = "done"
            _say(out, f"{step.name}: done before, reused ({run_dir})")
            continue
        run_dir.mkdir(parents=True, exist_ok=True)
        spec_path = run_dir / "spec.json"
        spec_path.write_text(json.dumps(_spec(cfg, step, by_name, str(conf_dir), e,
                                              status.get("clusters") == "done"), indent=1))
        t0 = time.monotonic()
        _say(out, f"{step.name}: running (log {run_dir / 'run.log'})")
        rc = _run_step(spec_path, run_dir / "run.log")
        minutes = (time.monotonic() - t0) / 60
        if rc == 0 and (run_dir / result_name(step.kind, e)).is_file():
            status[step.name] = "done"
            _say(out, f"{step.name}: done in {minutes:.1f} min")
        else:
            status[step.name] = f"failed (exit {rc}; log {run_dir / 'run.log'})"
            _say(out, f"{step.name}: {status[step.name]}")
    bar.close()
    analysis = analyse(cfg, steps, e)
    findings = Path(cfg.findings)
    meta = _meta(cfg, steps, e, status)
    meta["plots"] = {k: f"{findings.stem}/{v}" for k, v in plot_findings(
        analysis, findings.parent / findings.stem, _pre_decay_step(cfg, steps)).items()}
    path = write_findings(analysis, cfg, findings, meta)
    _say(out, f"report written: {path}")
    return {"status": status, "analysis": analysis, "path": path}


def _finished(step: Step, e: str, clusters: Step, status: dict[str, str]) -> bool:
    """Its result exists, and a model also has M(c) on the shared probes once the ``clusters`` step is done."""
    if not (Path(step.dir) / result_name(step.kind, e)).is_file():
        return False
    needs_mc = step.kind in ("base", "train") and status.get("clusters") == "done"
    return not needs_mc or (Path(step.dir) / mc_name(clusters.fingerprint)).is_file()


def _meta(cfg: StudyConfig, steps: list[Step], e: str, status: dict[str, str]) -> dict[str, Any]:
    total = 0.0
    results: dict[str, dict[str, Any]] = {}
    for step in steps:
        res = Path(step.dir) / result_name(step.kind, e)
        if res.is_file():
            results[step.name] = json.loads(res.read_text())
            total += float(results[step.name].get("minutes", 0.0))
    wall, runs = study_wall_minutes(Path(cfg.out_dir) / "study.log")
    return {"command": cfg.command, "minutes_total": total, "minutes_wall": wall, "invocations": runs,
            "failed": [n for n, s in status.items() if s != "done"], "data": results.get("data", {}),
            "clusters": results.get("clusters", {}), "machine": f"{os.cpu_count()} CPU cores"}


def study_wall_minutes(log_path: Path) -> tuple[float, int]:
    """Wall time of the invocations that ran steps, from ``study.log``'s timestamps (each invocation from its first
    line to its last), and how many there were.

    >>> import tempfile; p = Path(tempfile.mkdtemp()) / "study.log"
    >>> _ = p.write_text("2026-01-01 10:00:00 study: 9 steps in x\\n2026-01-01 10:00:01 data: running (log a)\\n"
    ...                  "2026-01-01 10:30:00 report written: f\\n2026-01-01 11:00:00 study: 9 steps in x\\n"
    ...                  "2026-01-01 11:00:30 report written: f\\n")
    >>> study_wall_minutes(p)
    (30.0, 1)
    """
    if not log_path.is_file():
        return 0.0, 0
    spans: list[list[Any]] = []  # [first time, last time, ran a step]
    for line in log_path.read_text().splitlines():
        try:
            stamp = time.mktime(time.strptime(line[:19], "%Y-%m-%d %H:%M:%S"))
        except ValueError:
            continue
        if " steps in " in line and line[20:].startswith("study: "):
            spans.append([stamp, stamp, False])
        elif spans:
            spans[-1][1] = stamp
            spans[-1][2] |= ": running (log " in line
    ran = [s for s in spans if s[2]]
    return sum(s[1] - s[0] for s in ran) / 60, len(ran)


def _pre_decay_step(cfg: StudyConfig, steps: list[Step]) -> int | None:
    from omegaconf import OmegaConf

    from nemo_salad.callbacks.pre_decay import decay_start_step

    for step in steps:
        path = Path(step.dir) / "config.yaml"
        if step.group == "stage1" and step.kind == "train" and path.is_file():
            fraction = float(OmegaConf.load(path).model.optim.decay_fraction)
            return decay_start_step(cfg.stage1.max_steps, fraction)
    return None

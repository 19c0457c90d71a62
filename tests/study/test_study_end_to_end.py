"""The whole findings study on tiny models and a handful of items, end to end through its command: killed while
a run trains, then rerun, it reuses every finished step, finishes the rest, and writes the report with a verdict
per finding and its plots."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.tiny import CONF, make_tokenizer

ROOT = CONF.parent
TRAIN = ["model/llm=tiny", "model/encoder=fastconformer_tiny", "model/adapter=causal_tiny", "model/teacher=copy",
         "model.llm.lora=null", "model.llm.arch={preset: tiny-llama, init_method_std: 0.25}",
         "data.batch_duration=20", "data.num_workers=0", "trainer.enable_progress_bar=false",
         "model.optim.warmup_steps=1", "exp_manager.checkpoint_callback_params.every_n_train_steps=2"]


def _command(tmp: Path) -> list[str]:
    train = ",".join(f'"{o}"' for o in [*TRAIN, f"model.tokenizer.dir={tmp / 'tok'}"])
    return [sys.executable, str(ROOT / "examples" / "salad_study.py"), f"out_dir={tmp / 'study'}",
            f"findings={tmp / 'docs' / 'findings.md'}", "threads=1", f"train_overrides=[{train}]",
            "corpus={narrow_sources: [mrpc], broad_sources: [rte, sciq], n_train: 12, n_val: 4, n_replay: 30, "
            "n_select: 40, workers: 1, backend: {name: sine}, word_aligner: null}",
            "stage1={alphas: [0.0, 1.0], max_steps: 6, val_check_interval: 3}",
            "stage2={gammas: [5.0, 0.0], max_steps: 2, val_check_interval: 1, budget_hours: 0.01, k: 2, "
            "probe_size: 2, tts: {name: sine}, embed: {encoder: hashing}}",
            "eval={benchmarks: [arc_easy, piqa], n_items: 4, tts: {name: sine}, bootstrap: 50}"]


def _step_dir(study: Path, name: str) -> Path:
    found = [d for d in (study / "runs").glob(f"{name}-*") if d.is_dir()]
    assert len(found) == 1, (name, found)
    return found[0]


@pytest.mark.timeout(900)
def test_a_killed_study_resumes_and_writes_the_findings(tmp_path):
    make_tokenizer(tmp_path / "tok")
    env = {**os.environ, "SALAD_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    study = tmp_path / "study"
    first = subprocess.Popen(_command(tmp_path), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:  # kill it while the first Stage I run trains (its checkpoints appear)
        runs = list((study / "runs").glob("s1_alpha0.0-*/s1_alpha0.0/checkpoints/*last.ckpt")) if study.is_dir() else []
        if runs or first.poll() is not None:
            break
        time.sleep(0.2)
    assert first.poll() is None, "the study ended before it could be killed"
    first.send_signal(signal.SIGKILL)
    first.wait()
    time.sleep(2)  # the worker dies with its parent (PR_SET_PDEATHSIG)
    alive = subprocess.run(["pgrep", "-f", str(study / "runs")], capture_output=True, text=True).stdout.split()
    assert not alive, "a step's worker outlived the killed study"
    assert not list(study.glob("runs/s1_alpha0.0-*/result-*.json"))

    second = subprocess.run(_command(tmp_path), cwd=ROOT, env=env, capture_output=True, text=True, timeout=800)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    log = (study / "study.log").read_text()
    for name in ("data", "clusters", "base"):  # finished before the kill: reused, not run again
        assert f"{name}: done before, reused" in log
        assert len(json.loads((_step_dir(study, name) / "minutes.json").read_text())) == 1
    resumed = _step_dir(study, "s1_alpha0.0")
    assert (resumed / "run.log").read_text().count("===== ") == 2  # started, killed, started again
    assert "resum" in (resumed / "run.log").read_text().lower()  # from its last checkpoint
    for name in ("s1_alpha1.0", "s2_gamma5.0", "s2_gamma0.0", "s2_no_synthetic"):
        assert list(_step_dir(study, name).glob("result-*.json")), name
    # the Stage II arms start from the alpha = 1 run's pre-decay checkpoint; the gamma arms ran a selection round
    for name in ("s2_gamma5.0", "s2_gamma0.0", "s2_no_synthetic"):
        spec = json.loads((_step_dir(study, name) / "spec.json").read_text())
        assert spec["init_from"].endswith("s1_alpha1.0/checkpoints/s1_alpha1.0-pre-decay.ckpt")
    for name in ("s2_gamma5.0", "s2_gamma0.0"):
        report = json.loads(next(_step_dir(study, name).glob("selection/round_*/report.json")).read_text())
        assert report["summary"]["gamma"] == float(name.removeprefix("s2_gamma"))
        assert report["summary"]["selected_items"] >= 1  # the arm trained on synthetic speech
    assert not list(_step_dir(study, "s2_no_synthetic").glob("selection"))

    findings = (tmp_path / "docs" / "findings.md").read_text()
    verdicts = re.findall(r"^## Finding (\d): .* — \*\*(reproduced|not reproduced|inconclusive)\*\*$", findings, re.M)
    assert [n for n, _ in verdicts] == ["1", "2", "3", "4"], findings
    assert "Incomplete" not in findings and "| Stage II, no synthetic |" in findings
    for png in ("m_f_steps.png", "clusters_m.png", "accuracy_vs_gap.png"):
        assert (tmp_path / "docs" / "findings" / png).stat().st_size > 1000

    third = subprocess.run(_command(tmp_path), cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert third.returncode == 0
    assert (study / "study.log").read_text().count("done before, reused") == 3 + 8  # nothing reruns

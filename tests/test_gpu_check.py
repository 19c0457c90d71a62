"""``benchmarks/gpu_check.py``: its CPU dry run runs every part and every check passes; a part that raises is
reported as a failed row while the later parts still run."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
PARTS = ["parity", "bf16_fit", "resume", "speed_default", "speed_3b", "tts_batched", "scoring"]


def _script(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The script as a module (its top level imports only the standard library)."""
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "gpu_check", module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_dry_run_runs_every_part_and_the_checks_pass(tmp_path):
    out = tmp_path / "x.json"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--out", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    report = json.loads(out.read_text())
    parts = report["parts"]
    assert list(parts) == PARTS
    assert {name: row["status"] for name, row in parts.items()} == dict.fromkeys(PARTS, "ok")
    assert report["dry_run"] and report["all_good"] and report["torch"] and report["date"] and report["device"]

    parity = parts["parity"]["metrics"]
    assert parts["parity"]["check"] == "pass" and parity["tensors_moved"] > 0
    assert parity["rel_loss_diff"] <= parity["loss_rtol"] and parity["max_rel_param_diff"] <= parity["param_rtol"]
    fit = parts["bf16_fit"]["metrics"]
    assert parts["bf16_fit"]["check"] == "pass" and fit["last_k_mean"] < fit["first_k_mean"]
    resume = parts["resume"]["metrics"]
    assert parts["resume"]["check"] == "pass" and resume["exact"]
    assert resume["losses_resumed"] == resume["losses_straight"] and len(resume["losses_resumed"]) == resume["m"]
    for name in ("speed_default", "speed_3b"):
        speed = parts[name]["metrics"]
        assert speed["strategy"] == "megatron" and speed["tokens_s"] > 0 and speed["flops_step"] > 0, name
        assert speed["mfu"] is None and "MFU n/a" in parts[name]["summary"]  # no peak for a CPU
        assert speed["peak_mem_gib"] > 0
    assert parts["tts_batched"]["metrics"]["speedup"] > 0
    assert parts["scoring"]["check"] == "pass"

    table = proc.stdout.strip().splitlines()  # stdout holds the table only
    assert table[0].startswith("GPU check: CPU") and report["torch"] in table[0]
    assert table[2] == "| part | status | check | result | s |" and len(table) == 4 + len(PARTS)
    assert table[4].startswith("| parity | ok | pass |")


def test_a_failing_part_is_a_failed_row_and_the_next_parts_run(monkeypatch):
    check = _script(monkeypatch)
    ran = []

    def good(name: str):
        def part(setup):
            ran.append(name)
            return check.Result(f"{name} fine", {"n": 1}, passed=True)
        return part

    def broken(setup):
        ran.append("broken")
        raise ValueError("no such kernel | for this device\nsecond line")

    rows = check.run_parts({"first": good("first"), "broken": broken, "injected": good("injected"),
                         "last": good("last")}, setup=None, fail={"injected"})
    assert ran == ["first", "broken", "last"]  # the injected failure raises before the part starts
    assert rows["first"]["status"] == "ok" and rows["first"]["check"] == "pass"
    assert rows["broken"]["status"] == "failed: ValueError: no such kernel | for this device"
    assert rows["injected"]["status"] == "failed: RuntimeError: injected failure (--fail-part injected)"
    assert rows["last"]["status"] == "ok" and not check.all_good(rows)
    header = {"device": "CPU", "torch": "x", "date": "today", "dry_run": True}
    assert "| broken | failed: ValueError: no such kernel \\| for this device | - |  |" in check.table(header, rows)

    rows = check.run_parts({"fails_check": lambda setup: check.Result("off", {}, passed=False)}, setup=None)
    assert rows["fails_check"]["status"] == "ok" and rows["fails_check"]["check"] == "FAIL" and not check.all_good(rows)
    with pytest.raises(SystemExit):
        check.parse_args(["--parts", "parity,nonesuch"])
    assert check.parse_args(["--dry-run", "--fail-part", "resume"]).parts == PARTS

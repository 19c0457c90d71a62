"""Resuming a MegatronStrategy run reads its checkpoint without running code stored in it: a last checkpoint whose
``.metadata`` was replaced by a pickle that would create a folder is refused, naming the file, and nothing runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU variant of the MegatronStrategy run")


def test_resume_refuses_a_crafted_checkpoint(tone_corpus, tmp_path):
    marker = tmp_path / "ran"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "tests.helpers.crafted_resume", str(tone_corpus), str(tmp_path / "exp"),
               str(marker)]
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    assert "REFUSED UnsafeCheckpointError: " in proc.stdout and "weights/.metadata: refusing to unpickle os.makedirs" \
        in proc.stdout, proc.stdout[-3000:]
    assert not marker.exists()

"""``trainer.strategy: ddp`` (plain Lightning DDP) trains SaladModel: 2 gloo processes reach the weights of one
process that accumulates the same batches.

Each rank reads speech, then text replay, then speech, then (rank 0) text and (rank 1) speech
(:data:`tests.helpers.ddp_fit.PLAN`); the one-process reference reads ``r0b0, r1b0, r0b1, r1b1, ...`` with
``accumulate_grad_batches=2``. What it catches:

* a text-replay batch leaves the encoder and adapter without gradients: without ``find_unused_parameters`` DDP
  refuses the next step ("Expected to have finished reduction in the prior iteration");
* exact-zero gradients instead of none (the Megatron path's way) make AdamW move those weights on the all-text
  step (moment decay, weight decay) where the one process does not;
* a model built before Lightning's process group creates a one-process group for its megatron layers, which DDP
  then reuses: each rank trains alone;
* NeMo's Conformer all-reduces its input length in every forward: with one rank on text, that collective meets the
  other rank's gradient reduction.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.helpers.tiny import make_tokenizer
from tests.helpers.tone_speech import random_sentences, tone_cuts

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU/gloo variant")]


def _corpus(root: Path) -> Path:
    tone_cuts(random_sentences(10, seed=0), root / "audio").to_file(root / "train.jsonl.gz")
    with open(root / "replay.jsonl", "w") as f:
        for i, text in enumerate(random_sentences(6, seed=2)):
            f.write(json.dumps({"id": f"r{i}", "text": text}) + "\n")
    make_tokenizer(root / "tok")
    return root


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(corpus: Path, out: Path, devices: int, env: dict[str, str]) -> tuple[subprocess.Popen, Path]:
    out.mkdir(exist_ok=True)
    log = out / f"log{env.get('RANK', '')}.txt"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", **env)
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "tests.helpers.ddp_fit", str(corpus), str(out), "--devices",
                                 str(devices)], cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)
    return proc, log


def _wait(procs: list[tuple[subprocess.Popen, Path]], timeout: float = 400.0) -> None:
    """Wait for all; on the first failure (or the timeout) stop the others and show the failed one's log."""
    deadline = time.monotonic() + timeout
    try:
        while any(p.poll() is None for p, _ in procs):
            failed = [(p, log) for p, log in procs if p.poll() not in (None, 0)]
            if failed or time.monotonic() > deadline:
                p, log = failed[0] if failed else procs[0]
                pytest.fail(f"{'exit code ' + str(p.returncode) if failed else 'timed out'}: {log}\n"
                            + log.read_text()[-6000:])
            time.sleep(0.2)
        for p, log in procs:
            assert p.returncode == 0, f"{log}\n" + log.read_text()[-6000:]
    finally:
        for p, _ in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def test_two_ddp_processes_equal_one_process_accumulating_their_batches(tmp_path):
    corpus = _corpus(tmp_path / "corpus")
    port = str(_free_port())
    ranks = [_start(corpus, tmp_path / "ddp", 2, {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port,
                                                  "WORLD_SIZE": "2", "NODE_RANK": "0", "RANK": str(r),
                                                  "LOCAL_RANK": str(r)}) for r in range(2)]
    _wait(ranks + [_start(corpus, tmp_path / "one", 1, {})])

    r0, r1 = (torch.load(tmp_path / "ddp" / f"rank{r}.pt", weights_only=True) for r in range(2))
    one = torch.load(tmp_path / "one" / "rank0.pt", weights_only=True)
    assert r0["init"].keys() == r0["final"].keys() == one["init"].keys() == one["final"].keys()
    for k, v in one["init"].items():  # the same start
        assert torch.equal(r0["init"][k], v) and torch.equal(r1["init"][k], v), k
    for k, v in r0["final"].items():  # the replicas stay identical
        assert torch.equal(r1["final"][k], v), k

    trained = one["trainable"]
    assert r0["trainable"] == trained
    for part in ("encoder", "adapter", "llm"):
        assert any(f".{part}." in f".{k}" for k in trained), part
    for k in trained:  # every trained parameter moved: the comparison below is not vacuous
        assert not torch.equal(one["final"][k], one["init"][k]), k
    for k, want in one["final"].items():
        got = r0["final"][k]
        err, scale = float((got - want).abs().max()), float(want.abs().max())
        assert err <= 1e-6 * max(scale, 1e-3), f"{k}: max |ddp - one process| = {err:.3g} (scale {scale:.3g})"

"""Stage I and II under NeMo-2's MegatronStrategy, end to end on CPU: ``trainer.fit`` through megatron's DDP,
distributed optimizer and bf16 ``Float16Module`` (the GPU path's code, with CUDA allocations mapped to the CPU),
validation with the gap report, megatron distributed checkpoints, resume from them, a ``.nemo`` holding the trained
weights, and Stage II from the pre-decay megatron checkpoint with a selection round."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from nemo_salad.checkpoint.distributed import is_distributed_checkpoint, load_distributed
from nemo_salad.checkpoint.init_weights import load_trained
from nemo_salad.models.salad import SaladModel
from nemo_salad.recipes.export import export_llm_to_hf
from nemo_salad.selection.measures import misalignment_from_checkpoint
from nemo_salad.synthesis import load_synthesized

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU variant of the MegatronStrategy run")


def _fit(corpus: Path, exp: Path, max_steps: int, *extra: str) -> str:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "tests.helpers.megatron_fit", str(corpus), str(exp), str(max_steps),
                           *extra], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return proc.stdout + proc.stderr


def _gap(log: str) -> dict[int, float]:
    """step -> held-out misalignment from the gap report's log lines."""
    return {int(s): float(m) for s, m in re.findall(r"\[gap\] step (\d+):.*misalignment M ([0-9.]+)", log)}


def _assert_nemo_holds_checkpoint(nemo: Path, checkpoint: Path, tokenizer_dir: Path) -> None:
    """The ``.nemo`` restores in this (one-process) run and holds the weights of the megatron checkpoint."""
    exported = SaladModel.restore_from(str(nemo), map_location="cpu")
    cfg = OmegaConf.to_container(exported.cfg, resolve=True)
    cfg["tokenizer"] = {"dir": str(tokenizer_dir)}
    from_ckpt = SaladModel(cfg)  # same architecture, its own random initialisation
    assert any(not torch.equal(a, b) for a, b in zip(exported.state_dict().values(),
                                                      from_ckpt.state_dict().values()))
    load_distributed(from_ckpt, checkpoint)  # the megatron checkpoint NeMo's strategy wrote (weights only)
    for (key, a), b in zip(exported.state_dict().items(), from_ckpt.state_dict().values()):
        if isinstance(a, torch.Tensor):
            assert torch.equal(a, b.to(a.dtype)), key


def test_stage1_fits_checkpoints_resumes_and_exports_under_megatron_strategy(tone_corpus, tmp_path):
    exp = tmp_path / "exp"
    log = _fit(tone_corpus, exp, 6, "--", "+megatron.num_microbatches=2")  # each step pulls 2 batches
    assert "MegatronStrategy" in log or "megatron" in log.lower()
    gap = _gap(log)
    assert sorted(gap) == [0, 3, 6] and gap[6] < gap[0]  # trained: held-out misalignment fell
    ckpts = exp / "salad_stage1" / "checkpoints"
    last = sorted(ckpts.glob("*-last"))
    assert len(last) == 1 and is_distributed_checkpoint(last[0] / "weights"), sorted(p.name for p in ckpts.iterdir())
    nemo = Path(re.search(r"EXPORTED (\S+?\.nemo)", log).group(1))
    assert nemo.suffix == ".nemo" and nemo.is_file()

    _assert_nemo_holds_checkpoint(nemo, last[0], tone_corpus / "tok")

    log = _fit(tone_corpus, exp, 9, "--", "+megatron.num_microbatches=2")  # resumes from the step-6 checkpoint
    assert "resuming the training stream after 12 consumed batches" in log  # 6 steps of 2 micro-batches
    assert "Restored all states from the checkpoint" in log
    assert "Loading distributed optimizer sharded state" in log  # Adam's moments and fp32 master weights too
    resumed = _gap(log)
    assert sorted(resumed) == [6, 9] and resumed[6] == gap[6]  # validated on resume: the step-6 weights
    assert sorted(ckpts.glob("*-last")) != last  # a new last checkpoint, at step 9


def test_two_process_tensor_parallel_fit_exports_a_nemo_that_restores_in_one_process_then_stage2_selects(
        tone_corpus, tmp_path):
    """Lightning launches the second process; student, teacher and adapter are split over 2 tensor-parallel ranks.
    The .nemo export (each rank writes its shards into the archive's distributed checkpoint) restores at TP=1. Then
    Stage II from the pre-decay megatron checkpoint at TP=2, with a selection round at its start: rank 0 runs the
    round, and both ranks run each probe measurement of the split model together."""
    exp = tmp_path / "exp"
    log = _fit(tone_corpus, exp, 6, "--devices", "2", "--tp", "2")
    assert "All tensor model parallel group ranks: [[0, 1]]" in log
    gap = _gap(log)
    assert sorted(gap) == [0, 3, 6] and gap[6] < gap[0]
    ckpts = exp / "salad_stage1" / "checkpoints"
    nemo = Path(re.search(r"EXPORTED (\S+?\.nemo)", log).group(1))
    (last,) = ckpts.glob("*-last")
    _assert_nemo_holds_checkpoint(nemo, last, tone_corpus / "tok")
    assert not list(ckpts.glob(".*"))  # the export's staging folder is gone
    # the LLM of the TP=2 checkpoint (rebuilt from the hyper-parameters stored with it) as a Hugging Face model:
    # export_llm_to_hf checks transformers' logits against the megatron model's
    assert export_llm_to_hf(load_trained(str(last), SaladModel), tmp_path / "hf")["max_abs_logit_diff"] < 1e-4

    # Stage II from the pre-decay megatron checkpoint, with a selection round at its start
    pre_decay = ckpts / "salad_stage1-pre-decay"
    assert is_distributed_checkpoint(pre_decay)
    texts = [json.loads(line)["text"] for line in (tone_corpus / "replay.jsonl").read_text().splitlines()[:60]]
    corpus = tmp_path / "web.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"w{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
    # stage2's own init_from (<exp_dir>/salad_stage1/checkpoints/salad_stage1-pre-decay.ckpt) finds the folder
    log = _fit(tone_corpus, exp, 4, "--devices", "2", "--tp", "2", "--config", "stage2", "--",
               "active_selection.tts={name: sine}", f"active_selection.corpus.jsonl={corpus}",
               "active_selection.corpus.min_words=4", "active_selection.corpus.limit=null",
               "+active_selection.selection.embed={encoder: hashing}", "active_selection.selection.cluster={k: 3}",
               "active_selection.selection.probe_size=2", "active_selection.selection.budget=0.004")
    assert re.search(r"initialised weights from the distributed checkpoint \S+salad_stage1-pre-decay\n", log)
    report = json.loads(next((exp / "selection").glob("round_*/report.json")).read_text())
    assert len(report["clusters"]) == 3 and sum(c["drawn"] for c in report["clusters"]) >= 1
    assert "`max_steps=4` reached" in log and (exp / "salad_stage2" / "checkpoints").is_dir()
    # M(c) measured by the TP=2 run (bf16) = the same weights measured in one process (fp32) by the offline
    # selection CLI's loader (the folder from its .ckpt path, the model from the hyper-parameters stored with it)
    measure = misalignment_from_checkpoint(f"{pre_decay}.ckpt")
    alone = {int(d.name[1:]): measure(load_synthesized(d))
             for d in sorted(next((exp / "selection").glob("round_*/probes")).glob("c*"))}
    assert {c["cluster"]: c["misalignment"] for c in report["clusters"]} == pytest.approx(alone, rel=0.02)

"""Launch scripts: the nemo_run Slurm job and the plain sbatch script carry the right node/device counts and
the training command (rendered, never submitted)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from nemo_salad.launch import LaunchConfig, render_slurm_script

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def real_stdin(monkeypatch):
    """nemo_run's local tunnel runs shell commands through `invoke`, which reads stdin (pytest replaces it)."""
    with open(os.devnull) as null:
        monkeypatch.setattr("sys.stdin", null)
        yield


def test_nemo_run_slurm_script(tmp_path):
    cfg = LaunchConfig(executor="slurm", account="speech", partition="batch", nodes=2, devices=8,
                       container_image="nvcr.io/example/salad:1", job_dir=str(tmp_path),
                       config_name="stage1_qwen2.5_3b", overrides=["trainer.max_steps=100"])
    script = render_slurm_script(cfg)
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=8", "#SBATCH --gpus-per-node=8",
                 "#SBATCH --account=speech", "#SBATCH --partition=batch"):
        assert line in script, line
    assert ("python /workspace/nemo_salad/examples/salad_train.py --config-name=stage1_qwen2.5_3b "
            "trainer.num_nodes=2 trainer.devices=8 trainer.max_steps=100") in script
    assert "--container-image nvcr.io/example/salad:1" in script
    assert "export TORCH_NCCL_ASYNC_ERROR_HANDLING=1" in script


def test_slurm_launch_needs_an_account(tmp_path):
    with pytest.raises(ValueError, match="needs `account`"):
        render_slurm_script(LaunchConfig(executor="slurm", job_dir=str(tmp_path)))


def test_plain_sbatch_script_runs_the_training_command(tmp_path):
    sbatch = ROOT / "scripts" / "slurm" / "salad.sbatch"
    assert subprocess.run(["bash", "-n", str(sbatch)]).returncode == 0
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "srun").write_text('#!/bin/bash\necho "SRUN $*"\necho "MASTER=$MASTER_ADDR:$MASTER_PORT"\n')
    (fake / "scontrol").write_text('#!/bin/bash\nprintf "node-a\\nnode-b\\nnode-c\\n"\n')
    for f in fake.iterdir():
        f.chmod(0o755)
    env = dict(os.environ, PATH=f"{fake}:{os.environ['PATH']}", SLURM_JOB_NUM_NODES="3", SLURM_NTASKS_PER_NODE="4",
               SLURM_JOB_NODELIST="node-[a-c]", SLURM_JOB_ID="1234")
    out = subprocess.run(["bash", str(sbatch), "stage2", "init_from=/runs/s1.ckpt"], env=env, cwd=tmp_path,
                         capture_output=True, text=True, check=True).stdout
    assert ("python examples/salad_train.py --config-name=stage2 trainer.num_nodes=3 trainer.devices=4 "
            "init_from=/runs/s1.ckpt") in out
    assert "--kill-on-bad-exit=1" in out and "MASTER=node-a:21234" in out

"""Run ``examples/salad_train.py`` (or any entry script) through nemo_run, locally or on Slurm.

Locally, ``torchrun`` starts one process per device. On Slurm, nemo_run writes and submits an sbatch script
with one task per GPU (through an SSH tunnel or on the login node); the code is expected in the container
image (the project's Dockerfile installs it), so nothing is packaged. ``dryrun`` renders the job without
submitting it — :func:`render_slurm_script` returns that script.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["LaunchConfig", "build_experiment", "launch", "render_slurm_script"]


@dataclass
class LaunchConfig:
    """What to run and where (``conf/launch.yaml``)."""

    script: str = "examples/salad_train.py"
    config_name: str = "stage1"
    overrides: list[str] = field(default_factory=list)
    executor: str = "local"  # local | slurm
    nodes: int = 1
    devices: int = 1
    account: str | None = None
    partition: str | None = None
    time: str = "04:00:00"
    container_image: str | None = None
    container_mounts: list[str] = field(default_factory=list)
    code_dir: str | None = "/workspace/nemo_salad"  # the repository inside the image (Dockerfile WORKDIR)
    job_dir: str = "nemo_run_jobs"
    host: str | None = None  # Slurm login node for an SSH tunnel; None: submit from this machine
    user: str | None = None
    env: dict[str, str] = field(default_factory=lambda: {"TORCH_NCCL_ASYNC_ERROR_HANDLING": "1",
                                                         "NCCL_DEBUG": "WARN", "CUDA_DEVICE_MAX_CONNECTIONS": "1"})

    def command_args(self) -> list[str]:
        """Arguments of the entry script: the config, then the node/device counts, then user overrides."""
        return [f"--config-name={self.config_name}", f"trainer.num_nodes={self.nodes}",
                f"trainer.devices={self.devices}", *self.overrides]


def _executor(cfg: LaunchConfig) -> Any:
    import nemo_run as run

    if cfg.executor == "local":
        return run.LocalExecutor(ntasks_per_node=cfg.devices, launcher="torchrun" if cfg.devices > 1 else None,
                                 env_vars=dict(cfg.env))
    if cfg.executor != "slurm":
        raise ValueError(f"executor={cfg.executor!r}; expected 'local' or 'slurm'")
    if not cfg.account:
        raise ValueError("executor=slurm needs `account` (the Slurm account to charge)")
    tunnel = (run.SSHTunnel(host=cfg.host, user=cfg.user or "", job_dir=cfg.job_dir) if cfg.host
              else run.LocalTunnel(job_dir=cfg.job_dir))
    return run.SlurmExecutor(account=cfg.account, partition=cfg.partition, nodes=cfg.nodes,
                             ntasks_per_node=cfg.devices, gpus_per_node=cfg.devices, time=cfg.time,
                             container_image=cfg.container_image, container_mounts=list(cfg.container_mounts),
                             env_vars=dict(cfg.env), tunnel=tunnel, packager=run.Packager())


def build_experiment(cfg: LaunchConfig, name: str = "salad") -> Any:
    """A nemo_run Experiment (enter it with ``with``) and its one task ``python <script> <command_args>``.

    Returns:
        tuple: ``(experiment, add)`` where ``add()`` must be called inside the ``with`` block.
    """
    import nemo_run as run

    path = cfg.script
    if cfg.executor == "slurm" and cfg.container_image and cfg.code_dir:
        path = f"{cfg.code_dir.rstrip('/')}/{cfg.script}"
    script = run.Script(path=path, args=cfg.command_args(), entrypoint="python")
    exp = run.Experiment(name, executor=_executor(cfg), log_level="WARN")
    return exp, lambda: exp.add(script, name=cfg.config_name.replace(".", "_"))


def launch(cfg: LaunchConfig, dryrun: bool = False) -> None:
    """Submit (or, with ``dryrun``, print) the job."""
    exp, add = build_experiment(cfg)
    with exp:
        add()
        if dryrun:
            exp.dryrun()
        else:
            exp.run(detach=cfg.executor == "slurm")


def render_slurm_script(cfg: LaunchConfig) -> str:
    """The sbatch script nemo_run would submit for ``cfg`` (a dry run; nothing is submitted).

    Raises:
        ValueError: unless ``cfg.executor == "slurm"``.
    """
    if cfg.executor != "slurm":
        raise ValueError("render_slurm_script needs executor=slurm")
    exp, add = build_experiment(cfg)
    with exp:
        add()
        exp.dryrun(log=False)
        return exp.jobs[0]._dryrun_info.request.materialize()

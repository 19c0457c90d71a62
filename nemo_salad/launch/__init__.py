"""Launching training and selection jobs: nemo_run executors (local, Slurm) and the plain sbatch script."""

from nemo_salad.launch.nemo_run_launch import LaunchConfig, build_experiment, launch, render_slurm_script

__all__ = ["LaunchConfig", "build_experiment", "launch", "render_slurm_script"]

"""Reproduce the paper's findings on offline parts and write docs/findings.md (resumable; see conf/study.yaml).

    python examples/salad_study.py                          # CPU: every step from nothing, then the report
    python examples/salad_study.py --config-name=study_gpu  # the larger study for one GPU
"""

from pathlib import Path

import hydra
from omegaconf import DictConfig

CONF = Path(__file__).resolve().parents[1] / "conf"


@hydra.main(version_base=None, config_path="../conf", config_name="study")
def main(cfg: DictConfig) -> None:
    from nemo_salad.llm.cpu import guard_unified_memory_import

    guard_unified_memory_import()  # before NeMo first imports megatron-core (see its docstring)

    from nemo_salad.study import load_study_config
    from nemo_salad.study.runner import run_study

    study = load_study_config(cfg)
    result = run_study(study, study.conf_dir or CONF)
    print(f"written: {result['path']}")


if __name__ == "__main__":
    main()

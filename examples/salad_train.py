"""Train a SALAD speech-adapted LLM (Stage I or Stage II) from a Hydra config in ``conf/``.

    python examples/salad_train.py --config-name=stage1                     # embedded CPU default
    python examples/salad_train.py --config-name=stage1 trainer.max_steps=20
    python examples/salad_train.py --config-name=stage1_qwen2.5_3b data.sources.0.manifest=/data/libriheavy.jsonl.gz
"""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base=None, config_path="../conf", config_name="stage1")
def main(cfg: DictConfig) -> None:
    from nemo_salad.llm.cpu import guard_unified_memory_import

    guard_unified_memory_import()  # before NeMo first imports megatron-core (see its docstring)

    from nemo_salad.recipes.train import train

    train(cfg)


if __name__ == "__main__":
    main()

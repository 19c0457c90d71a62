"""Measure forgetting F and misalignment M of a trained SALAD model on held-out paired speech/text.

    python examples/salad_measure.py checkpoint=path/to/model.nemo output=gap.json
    python examples/salad_measure.py checkpoint=m.nemo data.demo=null +data.manifest=/data/dev_cuts.jsonl.gz
"""

import json

import hydra
from omegaconf import DictConfig


@hydra.main(version_base=None, config_path="../conf", config_name="measure")
def main(cfg: DictConfig) -> None:
    from nemo_salad.llm.cpu import guard_unified_memory_import

    guard_unified_memory_import()  # before NeMo first imports megatron-core (see its docstring)

    from nemo_salad.recipes.measure import run_measure

    result = run_measure(cfg)
    print(json.dumps({k: v for k, v in result.items() if k != "skipped"}, indent=2))


if __name__ == "__main__":
    main()

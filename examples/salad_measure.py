"""Measure forgetting F and misalignment M of a trained SALAD model on held-out paired speech/text.

    python examples/salad_measure.py checkpoint=path/to/model.nemo output=gap.json
    python examples/salad_measure.py checkpoint=m.nemo data.demo=null +data.manifest=/data/dev_cuts.jsonl.gz
"""

import json

import hydra
from omegaconf import DictConfig

from nemo_salad.recipes.measure import run_measure


@hydra.main(version_base=None, config_path="../conf", config_name="measure")
def main(cfg: DictConfig) -> None:
    result = run_measure(cfg)
    print(json.dumps({k: v for k, v in result.items() if k != "skipped"}, indent=2))


if __name__ == "__main__":
    main()

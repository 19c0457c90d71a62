"""Export the LLM of a trained SALAD model to a Hugging Face directory, checking logit parity.

    python examples/salad_export.py model=nemo_experiments/salad_stage1/checkpoints/salad_stage1.nemo hf_dir=out/hf

``model``: a .nemo, a MegatronStrategy checkpoint folder (any tensor-parallel size) or a Lightning .ckpt.
"""

import json
from dataclasses import dataclass

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig


@dataclass
class ExportConfig:
    model: str = "???"
    hf_dir: str = "???"
    tolerance: float = 1e-4


ConfigStore.instance().store(name="export", node=ExportConfig)


@hydra.main(version_base=None, config_name="export")
def main(cfg: DictConfig) -> None:
    from nemo_salad.llm.cpu import guard_unified_memory_import

    guard_unified_memory_import()  # before NeMo first imports megatron-core (see its docstring)

    from nemo_salad.checkpoint import load_trained
    from nemo_salad.models import SaladModel
    from nemo_salad.recipes.export import export_llm_to_hf

    model = load_trained(cfg.model, SaladModel)
    print(json.dumps(export_llm_to_hf(model, cfg.hf_dir, cfg.tolerance)))


if __name__ == "__main__":
    main()

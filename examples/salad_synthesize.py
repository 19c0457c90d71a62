"""Synthesize speech for a JSONL of texts (or a lhotse cuts manifest) into lhotse Shar shards.

    python examples/salad_synthesize.py input=texts.jsonl out_dir=data/speech
    python examples/salad_synthesize.py input=texts.jsonl out_dir=data/speech backend.name=sine  # dry run

Config: conf/synthesize.yaml (schema: nemo_salad.synthesis.config.SynthesizeConfig). Rerun the same command to
resume an interrupted run; the report is printed and saved to <out_dir>/report.json.
"""

import json

import hydra
from omegaconf import DictConfig


@hydra.main(config_path="../conf", config_name="synthesize", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from nemo_salad.llm.cpu import guard_unified_memory_import

    guard_unified_memory_import()  # before NeMo first imports megatron-core (see its docstring)

    from nemo_salad.synthesis.config import run_synthesis

    report = run_synthesis(cfg)
    print(json.dumps(report.to_dict(), indent=2, sort_keys=True))


if __name__ == "__main__":
    main()

"""Evaluate the text LLM (topline), a speech model (on speech and on text) and an ASR cascade on spoken
benchmarks with the configured protocols (log-likelihood, generate-then-extract), few-shot seeds and voices; write
results.json, results.md (the paper's Table 3 layout, then every table with its intervals) and results.png to
``output_dir``.

    python examples/salad_eval.py speech_model='{_target_: <YourSpeechModel>.restore_from, restore_path: m.nemo}'
    python examples/salad_eval.py benchmarks=[copa] n_items=20 speech_model=identity \
        tts='{name: transcript}' asr='{name: reference}'     # harness check: every gap is exactly 0

Config: conf/eval.yaml (schema: nemo_salad.evaluation.config.EvalConfig).
"""

import hydra
from omegaconf import DictConfig


@hydra.main(config_path="../conf", config_name="eval", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from nemo_salad.llm.cpu import guard_unified_memory_import

    guard_unified_memory_import()  # before NeMo first imports megatron-core (see its docstring)

    from nemo_salad.evaluation.config import run_evaluation

    _, paths = run_evaluation(cfg)
    print(paths["md"].read_text())
    print("written:", ", ".join(str(p) for p in paths.values()))


if __name__ == "__main__":
    main()

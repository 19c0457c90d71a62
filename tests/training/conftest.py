"""A tiny Stage I setup: tone-speech corpus, tiny tokenizer, and the shipped stage1.yaml composed with tiny parts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers.tiny import CONF, make_tokenizer
from tests.helpers.tone_speech import random_sentences, tone_cuts


@pytest.fixture(scope="session")
def tone_corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tone")
    tone_cuts(random_sentences(80, seed=0), root / "train").to_file(root / "train.jsonl.gz")
    tone_cuts(random_sentences(16, seed=1), root / "val", prefix="val").to_file(root / "val.jsonl.gz")
    with open(root / "replay.jsonl", "w") as f:
        for i, text in enumerate(random_sentences(200, seed=2)):
            f.write(json.dumps({"id": f"r{i}", "text": text}) + "\n")
    make_tokenizer(root / "tok")
    return root


def tiny_overrides(corpus: Path, exp_dir: Path, max_steps: int = 40) -> list[str]:
    """Command-line overrides that turn the shipped stage1 config into a seconds-long tiny run."""
    return [
        "model/llm=tiny", "model/encoder=fastconformer_tiny", "model/adapter=causal_tiny", "model/teacher=copy",
        "model.llm.lora=null", "model.llm.arch={preset: tiny-llama, init_method_std: 0.25}",
        f"model.tokenizer.dir={corpus / 'tok'}", "~data.demo",
        f"data.sources=[{{name: speech, manifest: {corpus / 'train.jsonl.gz'}, weight: 2}}, "
        f"{{name: text_replay, texts: {corpus / 'replay.jsonl'}, weight: 1}}]",
        "data.validation.demo=null", f"data.validation.manifest={corpus / 'val.jsonl.gz'}",
        "data.batch_duration=20", "data.num_workers=0", f"trainer.max_steps={max_steps}",
        "trainer.val_check_interval=30", "trainer.enable_progress_bar=false", f"exp_manager.exp_dir={exp_dir}",
        "model.optim.warmup_steps=5", "model.optim.adapter_lr=3e-3", "model.optim.llm_lr=3e-4", "report=null",
    ]


def compose(overrides: list[str], name: str = "stage1"):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        return hydra_compose(config_name=name, overrides=overrides)

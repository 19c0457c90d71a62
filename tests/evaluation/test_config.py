"""conf/eval.yaml against its schema, the in-process run it describes, and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nemo_salad.evaluation import BENCHMARKS
from nemo_salad.evaluation.config import EvalConfig, build_speech_model, load_config, run_evaluation

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf" / "eval.yaml"


@pytest.fixture(scope="module")
def tiny_hf_dir(tmp_path_factory):
    """A tiny random Llama in Hugging Face format with the byte tokenizer saved next to it."""
    from tests.helpers.hf_models import save_hf_model
    from tests.helpers.tokenizers import byte_tokenizer

    out = tmp_path_factory.mktemp("tiny_llama")
    save_hf_model("llama-gqa-untied", out)
    byte_tokenizer().save_pretrained(str(out))
    return out


def test_shipped_yaml_matches_the_schema_and_builds():
    cfg = load_config(CONF)
    assert isinstance(cfg, EvalConfig)
    assert all(name in BENCHMARKS for name in cfg.benchmarks)
    assert cfg.scoring.max_tokens == 2048 and cfg.scoring.max_shots == 5 and cfg.scoring.primary == "per_char"
    assert cfg.scoring.shots is None  # the paper: each system as many shots as fit its own context, up to 5
    assert cfg.asr == {"name": "whisper"} and cfg.tts == {"name": "piper"}
    assert build_speech_model(cfg.speech_model, None, None) is None
    from nemo_salad.evaluation.asr import CutTranscriber, build_transcriber
    from nemo_salad.synthesis import PiperBackend, WhisperTranscriber, build_backend

    asr = build_transcriber(cfg.asr)
    assert isinstance(asr, CutTranscriber) and isinstance(asr.asr, WhisperTranscriber)  # offline tiny.en
    assert isinstance(build_backend(cfg.tts), PiperBackend)


def test_unknown_keys_and_bad_values_are_rejected():
    from omegaconf.errors import ConfigKeyError, ValidationError

    with pytest.raises(ConfigKeyError, match="n_itemz"):
        load_config({"n_itemz": 5})
    with pytest.raises(ValueError, match="shots_modality"):
        load_config({"scoring": {"shots_modality": "audio"}})
    with pytest.raises(ValidationError):
        load_config({"n_items": "many"})
    assert load_config({"scoring": {"shots": 3}}).scoring.shots == 3
    with pytest.raises(ValueError, match="shots=-1"):
        load_config({"scoring": {"shots": -1}})
    with pytest.raises(ValidationError):
        load_config({"scoring": {"shots": "all"}})


def _overrides(tiny_hf_dir, out) -> list[str]:
    return [f"llm_hf_dir={tiny_hf_dir}", "benchmarks=[copa,arc_easy]", "n_items=6", "speech_model=identity",
            "tts={name:transcript}", "asr={name:reference}", "scoring.max_tokens=300", "scoring.max_shots=2",
            f"output_dir={out}"]


def test_identity_run_from_the_config_has_zero_gaps(tiny_hf_dir, tmp_path):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF.parent), version_base="1.3"):
        cfg = compose(config_name="eval", overrides=_overrides(tiny_hf_dir, tmp_path))
    results, paths = run_evaluation(cfg)
    assert {s["role"] for s in results.systems} == {"topline", "cascade", "speech", "speech_text"}
    for b in results.benchmarks:
        assert b.n_items == 6
        for s in results.systems:
            assert results.gap(b.name, s["name"]) == 0.0
    assert all(p.is_file() for p in paths.values())
    assert json.loads(paths["json"].read_text())["average_gap"]["speech_model"] == 0.0


def test_cli(tiny_hf_dir, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "salad_eval.py"),
                           *_overrides(tiny_hf_dir, tmp_path)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| Speech model on speech | " in proc.stdout and "/ 0.0 |" in proc.stdout
    assert (tmp_path / "results.json").is_file() and (tmp_path / "results.png").is_file()

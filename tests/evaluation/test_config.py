"""conf/eval.yaml against its schema, the in-process run it describes, and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from nemo_salad.evaluation import BENCHMARKS
from nemo_salad.evaluation.config import EvalConfig, build_speech_model, load_config, run_evaluation

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf" / "eval.yaml"


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
    # new keys default to the single-protocol, single-seed, single-voice run
    assert cfg.protocols == ["loglik"] and cfg.seeds is None and cfg.voices is None
    assert (cfg.bootstrap, cfg.level, cfg.mmsu_voicebench, cfg.storycloze_spoken.path) == (1000, 0.95, None, None)
    # the commented example of voices is a valid value whose backend configs build
    text = CONF.read_text()
    block = text[text.index("# voices:\n"):text.index("\nbootstrap:")]
    example = yaml.safe_load("\n".join(line[2:] for line in block.splitlines()))
    voices = load_config(example).voices
    assert [(v.name, v.tts, v.snr_db) for v in voices] == [
        ("piper-slow", {"name": "piper", "length_scale": 1.3}, None),
        ("piper-fast", {"name": "piper", "length_scale": 0.8}, None), ("piper-snr10", None, 10.0)]
    assert isinstance(build_backend(voices[0].tts), PiperBackend)


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
    for bad, match in (({"protocols": ["loglik", "chat"]}, "protocols"), ({"seeds": [1, 1]}, "seeds"),
                       ({"seeds": []}, "seeds"), ({"level": 1.0}, "level"), ({"bootstrap": -1}, "bootstrap"),
                       ({"voices": [{"name": "a"}, {"name": "a", "snr_db": 5}]}, "unique"),
                       ({"voices": [{"name": "default"}]}, "main condition"),
                       ({"storycloze_spoken": {"kinds": ["xSC"]}}, "kinds"),
                       ({"storycloze_spoken": {"path": "pairs.jsonl"}}, "one kind"),
                       ({"generation": {"temperature": -1.0}}, "temperature")):
        with pytest.raises(ValueError, match=match):
            load_config(bad)
    with pytest.raises(ConfigKeyError, match="snr"):
        load_config({"voices": [{"name": "a", "snr": 5}]})
    from omegaconf.errors import MissingMandatoryValue

    with pytest.raises(MissingMandatoryValue, match="voices.0..name"):  # a voice needs a name
        load_config({"voices": [{"snr_db": 5}]})


def _overrides(tiny_hf_dir, out) -> list[str]:
    return [f"llm_hf_dir={tiny_hf_dir}", "benchmarks=[copa,arc_easy]", "n_items=6", "speech_model=identity",
            "tts={name:transcript}", "asr={name:reference}", "scoring.max_tokens=300", "scoring.max_shots=2",
            f"output_dir={out}"]


def test_identity_run_from_the_config_has_zero_gaps(tiny_hf_dir, tmp_path):
    """The shipped defaults: the log-likelihood protocol only, one few-shot seed, the main condition only."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF.parent), version_base="1.3"):
        cfg = compose(config_name="eval", overrides=_overrides(tiny_hf_dir, tmp_path))
    run, paths = run_evaluation(cfg)
    results = run.primary
    assert {s["role"] for s in results.systems} == {"topline", "cascade", "speech", "speech_text"}
    for b in results.benchmarks:
        assert b.n_items == 6
        for s in results.systems:
            assert results.gap(b.name, s["name"]) == 0.0
    assert all(p.is_file() for p in paths.values())
    data = json.loads(paths["json"].read_text())
    assert data["average_gap"]["speech_model"] == 0.0
    assert data["protocols"] == ["loglik"] and "generate" not in data and "storycloze_spoken" not in data
    assert [c["name"] for c in data["conditions"]] == ["default"] and data["loglik"]["seeds"] == [0]
    assert data["loglik"]["runs"] == []  # the one run is the top level
    assert data["intervals"] == {"bootstrap": 1000, "level": 0.95, "seed": 0}
    md = paths["md"].read_text()
    assert "seeds 0 · conditions: default · intervals: 95% bootstrap, 1000 resamples · items: COPA 6, ARC-E 6" in md
    assert "## Generate-then-extract" not in md and " ± " not in md  # one seed: no std


def test_cli(tiny_hf_dir, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "salad_eval.py"),
                           *_overrides(tiny_hf_dir, tmp_path)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| Speech model on speech | " in proc.stdout and "/ 0.0 |" in proc.stdout
    assert (tmp_path / "results.json").is_file() and (tmp_path / "results.png").is_file()

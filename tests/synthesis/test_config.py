"""conf/synthesize.yaml loads into its schema, builds its parts, and the CLI runs end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, MissingMandatoryValue

from nemo_salad.synthesis import SineBackend, build_backend, load_synthesized
from nemo_salad.synthesis.config import SynthesizeConfig, build_asr_filter, load_input, run_synthesis

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf" / "synthesize.yaml"


def test_shipped_config_binds_to_schema_and_builds():
    cfg = OmegaConf.merge(OmegaConf.structured(SynthesizeConfig), OmegaConf.load(CONF))
    assert cfg.backend.name == "piper" and cfg.sample_rate == 16000 and cfg.asr_filter.enabled is False
    with pytest.raises(MissingMandatoryValue):
        _ = cfg.input
    assert build_asr_filter(cfg.asr_filter) is None
    cfg.backend = {"name": "sine"}
    assert isinstance(build_backend(cfg.backend), SineBackend)
    with pytest.raises(ConfigKeyError):
        OmegaConf.merge(OmegaConf.structured(SynthesizeConfig), {"batchsize": 3})
    with pytest.raises(ValueError, match="needs 'name' in"):
        build_backend({"name": "festival"})


def test_run_synthesis_from_jsonl_and_from_cut_manifest(tmp_path):
    texts = tmp_path / "texts.jsonl"
    texts.write_text("\n".join(json.dumps(x) for x in [{"id": "a", "text": "Hello there."},
                                                       {"id": "b", "text": "!!!"}]) + "\n")
    report = run_synthesis({"input": str(texts), "out_dir": str(tmp_path / "o1"), "source": "demo",
                            "backend": {"name": "sine"}, "progress": False})
    assert (report.n_written, report.n_skipped) == (1, {"punctuation_only": 1})
    cut = next(iter(load_synthesized(tmp_path / "o1")))
    assert cut.custom["source"] == "demo"
    manifest = tmp_path / "cuts.jsonl.gz"
    load_input(texts).to_file(manifest)  # text-only lhotse cuts are accepted as input too
    again = run_synthesis({"input": str(manifest), "out_dir": str(tmp_path / "o2"), "backend": {"name": "sine"},
                           "progress": False})
    assert again.n_written == 1
    with pytest.raises(FileNotFoundError, match="nope.jsonl does not exist"):
        load_input(tmp_path / "nope.jsonl")


def test_cli_runs(tmp_path):
    texts = tmp_path / "texts.jsonl"
    texts.write_text('{"id": "q1", "text": "What is two plus two?"}\n')
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "salad_synthesize.py"), f"input={texts}",
                           f"out_dir={out}", "backend.name=sine", "progress=false", f"hydra.run.dir={tmp_path}/h"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((out / "report.json").read_text())["n_written"] == 1
    assert [c.id for c in load_synthesized(out)] == ["q1"]

"""Stage I → Stage II on a tiny model with the shipped configs: the pre-decay checkpoint is written, Stage II
starts from it, runs a selection round at train start (real embedding-free clustering, tone-speech TTS stand-in),
adds the selected speech to the mixture, and reports M(c) per cluster before and after."""

from __future__ import annotations

import json

import torch

from nemo_salad.recipes.train import build
from tests.training.conftest import compose, tiny_overrides


def test_stage1_then_stage2_with_a_selection_round(tone_corpus, tmp_path):
    exp = tmp_path / "exp"
    stage1 = compose(tiny_overrides(tone_corpus, exp, max_steps=20))
    trainer, model, data = build(stage1)
    trainer.fit(model, datamodule=data)
    pre_decay = exp / "salad_stage1" / "checkpoints" / "salad_stage1-pre-decay.ckpt"
    assert torch.load(pre_decay, map_location="cpu", weights_only=True)["global_step"] == 16  # 20 - 20% decay

    texts = [json.loads(line)["text"] for line in (tone_corpus / "replay.jsonl").read_text().splitlines()[:60]]
    corpus = tmp_path / "web.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"w{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
    overrides = tiny_overrides(tone_corpus, exp, max_steps=6) + [
        f"init_from={pre_decay}", "active_selection.tts={name: sine}", f"active_selection.corpus.jsonl={corpus}",
        "active_selection.corpus.min_words=4", "active_selection.corpus.limit=null",
        "+active_selection.selection.embed={encoder: hashing}", "active_selection.selection.cluster={k: 3}",
        "active_selection.selection.probe_size=2", "active_selection.selection.budget=0.004"]
    trainer, model, data = build(compose(overrides, name="stage2"))
    start = {k: v.clone() for k, v in model.adapter.state_dict().items() if isinstance(v, torch.Tensor)}
    saved = torch.load(pre_decay, map_location="cpu", weights_only=True)["state_dict"]
    assert all(torch.equal(v, saved[f"module.adapter.{k}"]) for k, v in start.items())  # initialised from Stage I
    trainer.fit(model, datamodule=data)
    assert trainer.global_step == 6
    assert [s.name for s in data.mixture.sources][-1].startswith("active")  # the selection joined the mixture
    report = json.loads(next((exp / "selection").rglob("report.json")).read_text())
    clusters = report["clusters"]
    assert len(clusters) == 3 and sum(c["drawn"] for c in clusters) >= 1
    assert all("misalignment" in c and "misalignment_after" in c for c in clusters)

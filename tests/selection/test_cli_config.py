"""conf/select.yaml against its schema, the offline CLI end to end, and the checkpoint-based measure."""

from __future__ import annotations

import inspect
import json
import runpy
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from omegaconf import OmegaConf

from nemo_salad.selection.cli import SelectRunConfig, merge_overrides, run_select
from nemo_salad.selection.config import SelectionConfig
from nemo_salad.selection.measures import import_object, misalignment_from_checkpoint
from tests.selection.helpers import topic_corpus, topic_of

ROOT = Path(__file__).resolve().parents[2]


def test_select_yaml_matches_schema_and_targets_bind():
    raw = OmegaConf.load(ROOT / "conf" / "select.yaml")
    conf = OmegaConf.merge(OmegaConf.structured(SelectRunConfig), raw)  # unknown keys / wrong types raise here
    selection = SelectionConfig(**OmegaConf.to_container(conf.selection))
    assert selection.cluster.k == 128 and selection.gamma == 5.0  # the paper's values
    measure = OmegaConf.to_container(raw.measure)
    target = import_object(measure.pop("_target_"))
    inspect.signature(target).bind(**measure)  # every key is a parameter of the factory
    assert OmegaConf.is_missing(raw.measure, "checkpoint") and OmegaConf.is_missing(raw, "workdir")


def test_cli_runs_a_round_on_a_jsonl_corpus(tmp_path, caplog, monkeypatch):
    main = runpy.run_path(str(ROOT / "examples" / "salad_select.py"), run_name="salad_select")["main"]

    corpus = tmp_path / "web.jsonl"
    lines = [json.dumps({"id": d.id, "text": d.text}) for d in topic_corpus(60)] + ["{not json"]
    corpus.write_text("\n".join(lines) + "\n")
    from nemo_salad.parts import safe_config

    monkeypatch.setattr(safe_config, "_EXTRA_PREFIXES", ["tests.selection."])  # the test's stub measure
    main(["--config", str(ROOT / "conf" / "select.yaml"), f"workdir={tmp_path / 'round'}", f"corpus.jsonl={corpus}",
          "corpus.min_words=5", "tts.name=sine", "selection.embed.encoder=hashing", "selection.cluster.k=6",
          "selection.probe_size=4", "selection.budget=0.03", "measure._target_=tests.selection.helpers.TopicMeasure",
          "measure.topic=music"])
    report = json.loads((tmp_path / "round" / "report.json").read_text())
    assert report["summary"]["selected_items"] > 0 and (tmp_path / "round" / "report.png").is_file()
    assert report["summary"]["config"]["cluster"]["k"] == 6
    assert "web.jsonl:361: skipped, invalid JSON" in caplog.text
    selection = json.loads((tmp_path / "round" / report["summary"]["selection_dir"] / "selection.json").read_text())
    texts = {d.id: d.text for d in topic_corpus(60)}
    music = sum(topic_of(texts[i.split("#")[0]]) == "music" for i in selection["ids"])
    assert music / len(selection["ids"]) > 0.8
    with pytest.raises(ValueError, match="measure needs a _target_"):
        run_select(OmegaConf.create({"workdir": str(tmp_path), "measure": {}}))


class HParamModule(pl.LightningModule):
    def __init__(self, width: int = 3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.layer = torch.nn.Linear(width, 1)


def weight_measure(model, scale: float = 1.0):
    """A 'metric' that depends on the loaded weights: scale * |W| * number of cuts."""
    norm = float(model.layer.weight.detach().norm())
    return lambda cuts: scale * norm * len(list(cuts)) * (0 if model.training else 1)


def test_measure_from_checkpoint_loads_the_weights(tmp_path, monkeypatch):
    from nemo_salad.parts import safe_config

    monkeypatch.setattr(safe_config, "_EXTRA_PREFIXES", ["tests.selection."])  # the test's model and metric
    module = HParamModule(width=5)
    trainer = pl.Trainer(max_steps=0, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.strategy.connect(module)
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    measure = misalignment_from_checkpoint(str(tmp_path / "m.ckpt"), model_class=f"{__name__}.HParamModule",
                                           metric=f"{__name__}.weight_measure", scale=2.0)
    assert measure([1, 2, 3]) == pytest.approx(2.0 * float(module.layer.weight.detach().norm()) * 3)
    with pytest.raises(FileNotFoundError, match="measure.checkpoint"):
        misalignment_from_checkpoint(str(tmp_path / "none.ckpt"))
    with pytest.raises(safe_config.UnsafeTargetError, match="no_such_module.Model'.*outside the allowlist"):
        misalignment_from_checkpoint(str(tmp_path / "m.ckpt"), model_class="no_such_module.Model")
    with pytest.raises(ImportError, match="tests.selection.no_such_module"):
        misalignment_from_checkpoint(str(tmp_path / "m.ckpt"), model_class="tests.selection.no_such_module.Model")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="not a Lightning checkpoint"):
        misalignment_from_checkpoint(str(tmp_path / "plain.pt"), model_class=f"{__name__}.HParamModule",
                                     metric=f"{__name__}.weight_measure")
    assert merge_overrides(OmegaConf.create({"measure": {"a": 1}}), ["measure.b=2"]).measure == {"a": 1, "b": 2}


def first_weight_measure(model):
    """A 'metric' that reads the loaded weights: the sum of the model's first parameter."""
    value = float(next(model.parameters()).detach().double().sum())
    return lambda cuts: value


def test_measure_from_a_nemo_and_a_weights_only_folder(tmp_path, monkeypatch):
    from nemo_salad.models import SaladModel
    from nemo_salad.parts import safe_config

    monkeypatch.setattr(safe_config, "_EXTRA_PREFIXES", ["tests.selection."])  # the test's metric
    from nemo_salad.checkpoint.distributed import save_distributed
    from tests.helpers.tiny import make_tokenizer, model_cfg

    model = SaladModel(model_cfg(make_tokenizer(tmp_path / "tok")))
    model.save_to(str(tmp_path / "m.nemo"))
    measure = misalignment_from_checkpoint(str(tmp_path / "m.nemo"), metric=f"{__name__}.first_weight_measure")
    assert measure(None) == float(next(model.parameters()).detach().double().sum())
    save_distributed(model, tmp_path / "weights_only")  # weights without the run's hyper-parameters
    with pytest.raises(ValueError, match="no hyper_parameters"):
        misalignment_from_checkpoint(str(tmp_path / "weights_only"))

"""Loading untrusted configs and checkpoints runs no code from them.

Every entry point that builds from a config (training, ``.nemo`` restore, checkpoint hyper-parameters, evaluation,
selection, NeMo TTS) refuses a ``_target_`` that reaches a function of another module through an allowlisted one,
checking the whole tree before anything is built; every entry point that reads a distributed checkpoint (``init_from``,
``.nemo`` with distributed weights, export) refuses a checkpoint whose pickles would build anything but checkpoint
data. The attack used throughout is ``nemo_salad.checkpoint.init_weights.os.makedirs`` (``init_weights`` imports
``os``), which passes a prefix check and creates a marker folder if it ever runs.
"""

from __future__ import annotations

import copy
import os
import pickle
import shutil
import tarfile
from pathlib import Path

import pytest
import torch
import yaml
from omegaconf import OmegaConf

from nemo_salad.checkpoint.distributed import save_distributed
from nemo_salad.checkpoint.init_weights import load_trained, load_weights
from nemo_salad.checkpoint.safe_checkpoint import UnsafeCheckpointError
from nemo_salad.models.salad import SaladModel
from nemo_salad.parts import safe_config
from nemo_salad.parts.safe_config import UnsafeTargetError, check_targets, safe_instantiate
from tests.helpers.tiny import make_tokenizer, model_cfg

ATTACK = "nemo_salad.checkpoint.init_weights.os.makedirs"
REFUSED = r"reaches the module 'os' through 'nemo_salad\.checkpoint\.init_weights'"


def attack(marker: Path) -> dict:
    """A config node that creates ``marker`` when Hydra builds it."""
    return {"_target_": ATTACK, "name": str(marker)}


class MakesFolder:
    """Unpickling this object creates a folder (what a crafted checkpoint pickle would do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return os.makedirs, (self.marker,)


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return make_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def cfg(tok) -> dict:
    return model_cfg(tok, adapter="mlp")


@pytest.fixture(scope="module")
def model(cfg) -> SaladModel:
    torch.manual_seed(0)
    return SaladModel(cfg).eval()


@pytest.fixture(scope="module")
def genuine_dist(model, tmp_path_factory) -> Path:
    return save_distributed(model, tmp_path_factory.mktemp("dist") / "ck")


def _with_attack(cfg: dict, marker: Path) -> dict:
    """``cfg`` with an attack node nested in the adapter: Hydra builds it before the adapter's constructor fails."""
    bad = copy.deepcopy(cfg)
    bad["adapter"]["extra"] = attack(marker)
    return bad


# ------------------------------------------------------------------------------------------------ the resolver rule
@pytest.mark.parametrize("target", [
    ATTACK,  # a module imported into an allowlisted one
    "nemo_salad.parts.safe_config.OmegaConf",  # a class of another package, imported into an allowlisted module
    "nemo_salad.parts.safe_config.OmegaConf.create",  # ... and a method of it
    "nemo_salad.models.SaladModel.load_from_checkpoint",  # a classmethod SaladModel inherits from outside
    "nemo_salad.models.SaladModel.__init__",  # private / dunder components
    "nemo_salad.parts.safe_config.ALLOWED_TARGET_PREFIXES",  # not a class or function
    "nemo_salad.models",  # a module
])
def test_attribute_paths_out_of_the_allowlist_are_refused(target):
    with pytest.raises(UnsafeTargetError, match="refusing to instantiate x._target_"):
        check_targets({"x": {"_target_": target}})


@pytest.mark.parametrize("target", ["nemo_salad.models.SaladModel", "nemo_salad.models.salad.SaladModel.restore_from",
                                    "torch.nn.Linear", "nemo.collections.asr.modules.ConformerEncoder"])
def test_classes_functions_and_their_classmethods_resolve_to_what_hydra_builds(target):
    from hydra.utils import get_object

    from nemo_salad.parts.safe_config import resolve_target

    assert resolve_target(target) == get_object(target)
    check_targets({"x": {"_target_": target}})


def test_interpolated_targets_are_checked_as_resolved():
    with pytest.raises(UnsafeTargetError, match=REFUSED):
        check_targets({"a": {"_target_": "${x}"}, "x": ATTACK})
    with pytest.raises(UnsafeTargetError, match=REFUSED):  # a node made by a resolver
        check_targets(OmegaConf.create({"a": "${oc.create:'{_target_: " + ATTACK + "}'}"}))
    with pytest.raises(UnsafeTargetError, match=r"a\._target_='\$\{nope\}': the interpolation .* cannot be resolved"):
        check_targets({"a": {"_target_": "${nope}"}})
    problems = safe_config.target_problems({"a": {"_target_": ATTACK}, "b": [{"cls": ATTACK}]})
    assert len(problems) == 2 and all("reaches the module 'os'" in p for p in problems)  # all at once, with paths


class Recorder:
    built: list = []

    def __init__(self, child=None) -> None:
        Recorder.built.append(child)


def test_nested_targets_are_checked_before_the_outer_constructor_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(safe_config, "_EXTRA_PREFIXES", ["tests."])  # Recorder may be built
    monkeypatch.setattr(Recorder, "built", [])
    marker = tmp_path / "ran"
    with pytest.raises(UnsafeTargetError, match=r"child\._target_='" + ATTACK):
        safe_instantiate({"_target_": f"{__name__}.Recorder", "child": attack(marker)})
    assert not marker.exists() and Recorder.built == []
    assert isinstance(safe_instantiate({"_target_": f"{__name__}.Recorder"}), Recorder)


# ------------------------------------------------------------------------------------------- entry points: configs
def test_training_refuses_a_command_line_override(tok, tmp_path):
    from nemo_salad.recipes.train import build
    from tests.training.conftest import compose, tiny_overrides

    marker = tmp_path / "ran"
    overrides = tiny_overrides(tmp_path / "corpus", tmp_path / "exp") + [
        f"model.tokenizer.dir={tok}", "model/adapter=mlp",
        f"+model.adapter.extra={{_target_: {ATTACK}, name: '{marker}'}}"]  # as typed after salad_train.py
    with pytest.raises(UnsafeTargetError, match=r"training config: refusing to instantiate model\.adapter\.extra"):
        build(compose(overrides))
    assert not marker.exists()


def _repack(nemo: Path, out: Path, edit) -> Path:
    """``nemo`` unpacked, changed by ``edit(folder)``, packed again as ``out``."""
    folder = out.parent / f"{out.stem}_unpacked"
    with tarfile.open(nemo) as tar:
        tar.extractall(folder, filter="data")
    edit(folder)
    with tarfile.open(out, "w") as tar:
        for f in sorted(folder.rglob("*")):
            tar.add(f, arcname=str(f.relative_to(folder)), recursive=False)
    return out


def test_nemo_restore_refuses_a_nested_attack(model, tmp_path):
    marker = tmp_path / "ran"
    good = tmp_path / "good.nemo"
    model.save_to(str(good))

    def edit(folder: Path) -> None:
        cfg_file = next(folder.rglob("model_config.yaml"))
        cfg_file.write_text(yaml.safe_dump(_with_attack(yaml.safe_load(cfg_file.read_text()), marker)))

    bad = _repack(good, tmp_path / "bad.nemo", edit)
    with pytest.raises(UnsafeTargetError, match=r"bad\.nemo: refusing to instantiate adapter\.extra\._target_"):
        SaladModel.restore_from(str(bad), map_location="cpu")
    assert not marker.exists()


def test_export_refuses_hyper_parameters_of_a_lightning_checkpoint(model, cfg, tmp_path):
    marker = tmp_path / "ran"
    ckpt = tmp_path / "run.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": {"cfg": _with_attack(cfg, marker)}}, ckpt)
    with pytest.raises(UnsafeTargetError, match=r"run\.ckpt \(stored hyper_parameters\): refusing to instantiate "
                                                r"cfg\.adapter\.extra\._target_"):
        load_trained(str(ckpt), SaladModel)  # what examples/salad_export.py model=run.ckpt calls
    assert not marker.exists()


def test_export_refuses_hyper_parameters_of_a_megatron_checkpoint(cfg, genuine_dist, tmp_path):
    marker = tmp_path / "ran"
    folder = shutil.copytree(genuine_dist, tmp_path / "megatron_ckpt")
    torch.save({"hyper_parameters": {"cfg": _with_attack(cfg, marker)}}, folder / "common.pt")  # as NeMo stores them
    with pytest.raises(UnsafeTargetError, match=r"refusing to instantiate cfg\.adapter\.extra\._target_"):
        load_trained(str(folder), SaladModel)
    assert not marker.exists()


def test_evaluation_refuses_a_speech_model_target(tmp_path):
    from nemo_salad.evaluation.config import run_evaluation

    marker = tmp_path / "ran"
    with pytest.raises(UnsafeTargetError, match=r"evaluation config: refusing to instantiate speech_model\._target_"):
        run_evaluation({"speech_model": attack(marker), "benchmarks": ["copa"], "n_items": 2,
                        "output_dir": str(tmp_path / "out")})  # salad_eval.py speech_model='{_target_: ...}'
    assert not marker.exists()
    check_targets({"speech_model": {"_target_": "nemo_salad.models.salad.SaladModel.restore_from",
                                    "restore_path": "m.nemo"}})  # the documented form stays allowed


def test_selection_refuses_a_measure_target_and_its_dotted_paths(tmp_path):
    from nemo_salad.selection.cli import run_select

    marker = tmp_path / "ran"
    base = {"workdir": str(tmp_path / "round"), "tts": {"name": "sine"}, "corpus": {"limit": 10}}
    with pytest.raises(UnsafeTargetError, match=r"selection config: refusing to instantiate measure\._target_"):
        run_select({**base, "measure": attack(marker)})
    ckpt = tmp_path / "m.ckpt"  # the "model class" gets the stored hyper-parameters as keyword arguments
    torch.save({"state_dict": {}, "hyper_parameters": {"name": str(marker)}}, ckpt)
    with pytest.raises(UnsafeTargetError, match=r"measure\.model_class\._target_='" + ATTACK):
        run_select({**base, "measure": {"_target_": "nemo_salad.selection.measures.misalignment_from_checkpoint",
                                        "checkpoint": str(ckpt), "model_class": ATTACK}})
    assert not marker.exists()


def test_nemo_tts_restore_refuses_an_attack_in_the_archived_config(tmp_path):
    from nemo.collections.tts.models import FastPitchModel

    from nemo_salad.synthesis.backends.nemo_configs import random_fastpitch
    from nemo_salad.synthesis.backends.nemo_tts import load_nemo_model

    marker = tmp_path / "ran"
    good = tmp_path / "fastpitch.nemo"
    random_fastpitch(seed=0).save_to(str(good))

    def edit(folder: Path) -> None:
        cfg_file = next(folder.rglob("model_config.yaml"))
        cfg = yaml.safe_load(cfg_file.read_text())
        cfg["preprocessor"]["extra"] = attack(marker)
        cfg_file.write_text(yaml.safe_dump(cfg))

    bad = _repack(good, tmp_path / "bad_fastpitch.nemo", edit)
    with pytest.raises(UnsafeTargetError, match=r"refusing to instantiate preprocessor\.extra\._target_"):
        load_nemo_model(FastPitchModel, str(bad))
    assert not marker.exists()


# --------------------------------------------------------------------------------- entry points: distributed weights
def _crafted_metadata(genuine: Path, out: Path, marker: Path) -> Path:
    folder = shutil.copytree(genuine, out)
    metadata = pickle.loads((folder / ".metadata").read_bytes())  # our own, genuine file
    metadata.storage_meta = MakesFolder(marker)
    (folder / ".metadata").write_bytes(pickle.dumps(metadata))
    return folder


def test_init_from_refuses_crafted_metadata_and_loads_a_genuine_checkpoint(model, cfg, genuine_dist, tmp_path):
    marker = tmp_path / "ran"
    bad = _crafted_metadata(genuine_dist, tmp_path / "bad", marker)
    target = SaladModel(cfg)
    with pytest.raises(UnsafeCheckpointError, match=r"bad/\.metadata: refusing to unpickle os\.makedirs"):
        load_weights(target, str(bad))  # init_from=<folder>
    assert not marker.exists()
    assert os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD") is None  # the reader is restored afterwards
    load_weights(target, str(genuine_dist))
    for (key, want), got in zip(model.state_dict().items(), target.state_dict().values()):
        if isinstance(want, torch.Tensor):
            assert torch.equal(want, got), key


def test_export_refuses_crafted_metadata(cfg, genuine_dist, tmp_path):
    marker = tmp_path / "ran"
    bad = _crafted_metadata(genuine_dist, tmp_path / "bad", marker)
    torch.save({"hyper_parameters": {"cfg": cfg}}, bad / "common.pt")  # a MegatronStrategy checkpoint's hparams
    with pytest.raises(UnsafeCheckpointError, match=r"\.metadata: refusing to unpickle os\.makedirs"):
        load_trained(str(bad), SaladModel)  # examples/salad_export.py model=<folder>
    assert not marker.exists()


def test_selection_cli_refuses_crafted_metadata(cfg, genuine_dist, tmp_path):
    from nemo_salad.selection.cli import run_select

    marker = tmp_path / "ran"
    bad = _crafted_metadata(genuine_dist, tmp_path / "bad", marker)
    torch.save({"hyper_parameters": {"cfg": cfg}}, bad / "common.pt")  # a MegatronStrategy checkpoint's hparams
    conf = {"workdir": str(tmp_path / "round"), "tts": {"name": "sine"}, "corpus": {"limit": 10},
            "measure": {"_target_": "nemo_salad.selection.measures.misalignment_from_checkpoint",
                        "checkpoint": str(bad)}}
    with pytest.raises(UnsafeCheckpointError, match=r"\.metadata: refusing to unpickle os\.makedirs"):
        run_select(conf)  # examples/salad_select.py measure.checkpoint=<folder>
    assert not marker.exists()


def test_nemo_with_distributed_weights_refuses_crafted_metadata(model, genuine_dist, tmp_path):
    from nemo_salad.checkpoint.nemo_io import DIST_WEIGHTS

    marker = tmp_path / "ran"
    bad_weights = _crafted_metadata(genuine_dist, tmp_path / "bad", marker)
    good = tmp_path / "good.nemo"
    model.save_to(str(good))

    def edit(folder: Path) -> None:
        next(folder.rglob("model_weights.ckpt")).unlink()
        shutil.copytree(bad_weights, folder / DIST_WEIGHTS)

    bad = _repack(good, tmp_path / "dist.nemo", edit)
    with pytest.raises(UnsafeCheckpointError, match=rf"{DIST_WEIGHTS}/\.metadata: refusing to unpickle os\.makedirs"):
        SaladModel.restore_from(str(bad), map_location="cpu")
    assert not marker.exists()


def test_a_crafted_non_tensor_item_is_refused(cfg, genuine_dist, tmp_path):
    """megatron stores ``_extra_state`` as byte items, which torch reads with ``torch.load(weights_only=False)``."""
    import io

    marker = tmp_path / "ran"
    folder = shutil.copytree(genuine_dist, tmp_path / "bad")
    metadata = pickle.loads((folder / ".metadata").read_bytes())
    index = next(i for i in metadata.storage_data if "_extra_state" in i.fqn)
    payload = io.BytesIO()
    torch.save(MakesFolder(marker), payload)
    info = metadata.storage_data[index]
    with open(folder / info.relative_path, "ab") as f:  # appended, and the metadata pointed at it
        info.offset, info.length = f.tell(), len(payload.getvalue())
        f.write(payload.getvalue())
    (folder / ".metadata").write_bytes(pickle.dumps(metadata))
    with pytest.raises(UnsafeCheckpointError, match=rf"item '{index.fqn}': refusing to unpickle os\.makedirs"):
        load_weights(SaladModel(cfg), str(folder))
    assert not marker.exists()


def test_common_state_is_read_weights_only_even_when_the_environment_says_otherwise(cfg, genuine_dist, tmp_path,
                                                                                    monkeypatch):
    marker = tmp_path / "ran"
    folder = shutil.copytree(genuine_dist, tmp_path / "bad")
    torch.save({"payload": MakesFolder(marker)}, folder / "common.pt")  # megatron reads it with a plain torch.load
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(UnsafeCheckpointError, match=r"bad: refusing to unpickle os\.makedirs"):
        load_weights(SaladModel(cfg), str(folder))
    assert not marker.exists()
    assert os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] == "1"  # restored

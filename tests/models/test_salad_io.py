"""SaladModel persistence and teacher modes: .nemo round trip without the original checkpoints, the real
user path with tiny stand-ins (HF LLM directory + pretrained FastConformer .nemo), LoRA with a shared
teacher, and refusal of unsafe config targets."""

from __future__ import annotations

import shutil
import tarfile

import pytest
import torch
import yaml

from nemo_salad.models.salad import SaladModel
from nemo_salad.parts.safe_config import UnsafeTargetError
from tests.helpers.asr import save_tiny_asr_nemo
from tests.helpers.batches import make_batch
from tests.helpers.hf_models import save_hf_model
from tests.helpers.tiny import make_tokenizer, model_cfg


def _logits(model, batch):
    with torch.no_grad():
        sb = batch
        return model.llm.logits(model.student_hidden(sb)), model.teacher_logits(model.teacher_hidden(sb))


@pytest.fixture(scope="module")
def real_path_sources(tmp_path_factory):
    """A tiny Qwen2 HF directory (with tokenizer files) and a tiny FastConformer CTC .nemo."""
    root = tmp_path_factory.mktemp("sources")
    hf_dir = root / "qwen2"
    save_hf_model("qwen2-bias-tied", hf_dir)
    make_tokenizer(root / "tok")
    for f in (root / "tok").iterdir():
        shutil.copy(f, hf_dir / f.name)
    return hf_dir, save_tiny_asr_nemo(root / "asr.nemo")


def test_real_user_path_with_stand_ins_round_trips_without_sources(real_path_sources, tmp_path):
    hf_dir, asr = real_path_sources
    src = tmp_path / "src"
    shutil.copytree(hf_dir, src / "qwen2")
    shutil.copy(asr, src / "asr.nemo")
    cfg = model_cfg(None, llm="qwen2.5_3b", encoder="fastconformer_pretrained", adapter="mlp",
                    **{"llm.pretrained": str(src / "qwen2"), "llm.arch": None,
                       "encoder.pretrained": str(src / "asr.nemo")})
    torch.manual_seed(0)
    model = SaladModel(cfg).eval()
    assert model.llm.cfg.family == "qwen2" and model.llm.cfg.qkv_bias and model.encoder.output_dim == 48
    assert model.encoder.frozen and all(not p.requires_grad for p in model.encoder.parameters())
    batch = make_batch(model, "interleaved")
    before = _logits(model, batch)
    model.save_to(str(tmp_path / "salad.nemo"))
    shutil.rmtree(src)  # restoring must not need the original checkpoints
    restored = SaladModel.restore_from(str(tmp_path / "salad.nemo"), map_location="cpu").eval()
    after = _logits(restored, batch)
    assert torch.equal(before[0], after[0]) and torch.equal(before[1], after[1])
    assert restored.tokenizer("the cat").input_ids == model.tokenizer("the cat").input_ids
    assert restored.cfg.llm.pretrained is None and restored.cfg.encoder.pretrained is None


def test_pretrained_llm_weights_are_the_hf_weights(real_path_sources):
    """The student and the teacher copy start from the Hugging Face model: same logits as transformers."""
    from transformers import AutoModelForCausalLM

    hf_dir, _ = real_path_sources
    model = SaladModel(model_cfg(None, llm="qwen2.5_3b", **{"llm.pretrained": str(hf_dir), "llm.arch": None})).eval()
    ref = AutoModelForCausalLM.from_pretrained(str(hf_dir)).eval()
    ids = torch.randint(0, 120, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for llm in (model.llm, model.teacher):
            assert (llm(input_ids=ids) - ref(ids).logits).abs().max() < 1e-4


def test_recipe_architecture_is_checked_against_the_checkpoint(real_path_sources):
    hf_dir, _ = real_path_sources
    with pytest.raises(ValueError, match=r"config\.json does not describe the architecture model\.llm\.arch names: "
                                         r".*hidden_size: found 64, expected 2048"):
        SaladModel(model_cfg(None, llm="qwen2.5_3b", **{"llm.pretrained": str(hf_dir)}))


def test_lora_with_shared_teacher(tiny_tokenizer_dir):
    torch.manual_seed(2)
    shared = SaladModel(model_cfg(tiny_tokenizer_dir, teacher="shared", **{"llm.lora": {"rank": 4, "alpha": 8}}))
    copy = SaladModel(model_cfg(tiny_tokenizer_dir, teacher="copy"))
    assert shared.teacher is None
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(copy) - n(shared) > 0.9 * n(copy.llm)  # no second LLM in memory
    batch = make_batch(shared, "prefix")
    _, teacher_before = _logits(shared, batch)
    trainable = [name for name, p in shared.llm.named_parameters() if p.requires_grad]
    assert trainable and all(".lora." in name for name in trainable)
    sb = batch
    student = shared.llm.logits(shared.student_hidden(sb).flatten(0, 1)[sb.student_pos])
    torch.nn.functional.cross_entropy(student, sb.targets).backward()
    torch.optim.SGD([p for p in shared.parameters() if p.requires_grad], lr=1.0).step()
    _, teacher_after = _logits(shared, batch)
    assert torch.equal(teacher_before, teacher_after)  # teacher = original weights, LoRA off
    with torch.no_grad():
        changed = shared.llm.logits(shared.student_hidden(sb).flatten(0, 1)[sb.student_pos])
    assert not torch.allclose(changed, student)  # while the student moved


def test_shared_teacher_needs_frozen_llm_or_lora(tiny_tokenizer_dir):
    with pytest.raises(ValueError, match="teacher.mode=shared needs a frozen student LLM"):
        SaladModel(model_cfg(tiny_tokenizer_dir, teacher="shared"))


@pytest.mark.parametrize("adapter", ["mlp", "conformer", "causal_tiny"])
def test_every_adapter_config_trains(tiny_tokenizer_dir, adapter):
    extra = {"adapter.d_model": 32, "adapter.n_heads": 2, "adapter.num_layers": 1} if adapter == "conformer" else {}
    model = SaladModel(model_cfg(tiny_tokenizer_dir, adapter=adapter, **extra))
    sb = make_batch(model, "interleaved")
    loss = torch.nn.functional.cross_entropy(model.llm.logits(model.student_hidden(sb).flatten(0, 1)[sb.student_pos]),
                                             sb.targets)
    loss.backward()
    assert all(p.grad is not None for p in model.adapter.parameters())


def _nemo_with_edited_config(model: SaladModel, tmp_path, name: str, edit) -> str:
    """``model`` saved as ``<name>.nemo`` with ``edit(config dict)`` applied to the config stored inside."""
    good = tmp_path / "good.nemo"
    model.save_to(str(good))
    unpacked = tmp_path / "unpacked"
    with tarfile.open(good) as tar:
        tar.extractall(unpacked, filter="data")
    cfg_file = next(unpacked.rglob("model_config.yaml"))
    cfg = yaml.safe_load(cfg_file.read_text())
    edit(cfg)
    cfg_file.write_text(yaml.safe_dump(cfg))
    edited = tmp_path / f"{name}.nemo"
    with tarfile.open(edited, "w") as tar:
        for f in unpacked.rglob("*"):
            tar.add(f, arcname=str(f.relative_to(unpacked)))
    return str(edited)


def test_restore_refuses_unsafe_targets(tiny_tokenizer_dir, tmp_path):
    model = SaladModel(model_cfg(tiny_tokenizer_dir, adapter="mlp"))
    bad = _nemo_with_edited_config(model, tmp_path, "bad", lambda cfg: cfg["adapter"].update(_target_="os.system"))
    with pytest.raises(UnsafeTargetError, match=r"bad\.nemo: refusing to instantiate adapter\._target_='os\.system'"):
        SaladModel.restore_from(bad, map_location="cpu")


def test_restore_of_an_older_nemo_fills_defaults_and_ignores_old_keys(tiny_tokenizer_dir, tmp_path):
    """A ``.nemo`` saved by an earlier version: no loss/optim/teacher sections, the old ``splice`` and
    ``on_bad_sample`` keys. It restores with the schema's defaults (nemo_salad.models.config.ModelConfig)."""
    def make_old(cfg: dict) -> None:
        for key in ("loss", "optim", "teacher"):
            cfg.pop(key, None)
        cfg.update(splice={"mode": "replace"}, on_bad_sample="skip")

    model = SaladModel(model_cfg(tiny_tokenizer_dir, adapter="mlp"))
    restored = SaladModel.restore_from(_nemo_with_edited_config(model, tmp_path, "old", make_old), map_location="cpu")
    assert "splice" not in restored.cfg and "on_bad_sample" not in restored.cfg
    assert (restored.cfg.teacher.mode, restored.loss.alpha, restored.cfg.optim.warmup_steps) == ("copy", 1.0, 500)


def test_llm_export_with_merged_lora_matches_the_student(tiny_tokenizer_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from nemo_salad.recipes.export import export_llm_to_hf

    torch.manual_seed(3)
    model = SaladModel(model_cfg(tiny_tokenizer_dir, teacher="shared", **{"llm.lora": {"rank": 4, "alpha": 8}}))
    with torch.no_grad():
        for m in model.llm.modules():
            if hasattr(m, "lora"):
                m.lora.b.weight.normal_(std=0.05)  # a trained-looking LoRA update
    result = export_llm_to_hf(model, tmp_path / "hf")
    assert result["max_abs_logit_diff"] < 1e-4
    hf = AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf")).eval()
    ids = torch.randint(0, 120, (1, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        with_lora = model.llm(input_ids=ids)
        from nemo_salad.modules.lora import lora_disabled

        with lora_disabled(model.llm):
            without = model.llm(input_ids=ids)
        assert (hf(ids).logits - with_lora).abs().max() < 1e-4  # the export carries the LoRA update
        assert (with_lora - without).abs().max() > 1e-3
    assert any(".lora." in k for k in model.llm.state_dict())  # the model itself still has its adapters


def test_megatron_parallel_step_equals_the_plain_step(tiny_tokenizer_dir):
    """The forward-step function that NeMo-2's MegatronParallel (driven by MegatronStrategy) builds from the model's
    own data_step / training_step / training_loss_reduction gives the same loss and gradients as the plain
    Lightning step. (megatron-core's schedule around it allocates on CUDA, so it runs on GPUs only.)"""
    from nemo.lightning.megatron_parallel import MegatronParallel, _ModuleStepFunction

    torch.manual_seed(5)
    model = SaladModel(model_cfg(tiny_tokenizer_dir)).train()
    batch = make_batch(model, "interleaved")
    reference = model.compute_loss(batch)
    reference.loss.backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)

    wrapped = MegatronParallel(model, cpu=True)
    step_fn = wrapped.wrapped_forward_step(
        forward_step=_ModuleStepFunction.from_forward_step(model, "training"),
        data_step=_ModuleStepFunction.from_data_step(model, "training"),
        loss_reduction=_ModuleStepFunction.from_loss_reduction(model, "training"), context={"step": None})
    output, loss_fn = step_fn(iter([(batch, 0, 0)]), model)  # what megatron's schedule calls per micro-batch
    loss, reduced = loss_fn(output)
    loss.backward()
    assert torch.allclose(loss.detach(), reference.loss.detach(), atol=1e-6)
    assert torch.allclose(loss_fn.reduce([reduced]), reference.loss.detach(), atol=1e-6)
    got = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert got.keys() == expected.keys() and len(got) > 10
    for name, grad in expected.items():
        assert torch.allclose(got[name], grad, atol=1e-6, rtol=1e-5), name


def _save_tiny_codec(kind: str, path) -> None:
    """A random tiny Whisper (WhisperForConditionalGeneration) or Mimi saved as a Hugging Face folder."""
    from transformers import MimiConfig, MimiModel, WhisperConfig, WhisperForConditionalGeneration

    from tests.helpers.tiny import TINY_ENCODERS

    arch = TINY_ENCODERS[f"{kind}_tiny"]["config"]
    if kind == "whisper":
        model = WhisperForConditionalGeneration(WhisperConfig(
            **arch, decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=32, vocab_size=64,
            max_target_positions=32, decoder_start_token_id=1, pad_token_id=0, eos_token_id=2, bos_token_id=1))
    else:
        model = MimiModel(MimiConfig(**arch))
    model.save_pretrained(str(path))


@pytest.mark.parametrize("kind", ["whisper", "mimi"])
def test_pretrained_whisper_or_mimi_folder_round_trips_without_it(tiny_tokenizer_dir, tmp_path, kind):
    """An encoder from a Hugging Face folder: its weights are the folder's, and the .nemo restores without it."""
    from safetensors.torch import load_file

    torch.manual_seed(0)
    _save_tiny_codec(kind, tmp_path / "codec")
    cfg = model_cfg(tiny_tokenizer_dir, encoder=f"{kind}_tiny",
                    **{"encoder.pretrained": str(tmp_path / "codec"), "encoder.config": None, "encoder.freeze": True})
    model = SaladModel(cfg).eval()
    stored = load_file(str(tmp_path / "codec" / "model.safetensors"))
    rename = (lambda k: "model." + k) if kind == "whisper" else (lambda k: k)  # ours: encoder.* / encoder_*.*
    ours = model.encoder.state_dict()
    assert ours and all(torch.equal(v, stored[rename(k)]) for k, v in ours.items())
    assert model.encoder.frozen and not any(p.requires_grad for p in model.encoder.parameters())
    batch = make_batch(model, "interleaved")
    before = _logits(model, batch)
    model.save_to(str(tmp_path / "salad.nemo"))
    shutil.rmtree(tmp_path / "codec")
    restored = SaladModel.restore_from(str(tmp_path / "salad.nemo"), map_location="cpu").eval()
    after = _logits(restored, batch)
    assert torch.equal(before[0], after[0]) and torch.equal(before[1], after[1])
    assert restored.cfg.encoder.pretrained is None and restored.cfg.encoder.kind == kind

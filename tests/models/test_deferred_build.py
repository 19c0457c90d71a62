"""Building SaladModel in ``configure_model`` (what NeMo-2's MegatronStrategy needs): the same model as an eager
build, trained by Lightning, with the precision settings given before the build reaching every megatron block."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch

from nemo_salad.models import SaladModel
from tests.helpers.batches import make_batch
from tests.helpers.tiny import model_cfg


def _cfg(tok):
    return model_cfg(tok, teacher="copy", **{"llm.lora": {"rank": 4, "alpha": 8.0}})


def test_deferred_build_equals_eager_build(tiny_tokenizer_dir):
    from nemo_salad.llm.parallel import init_model_parallel

    init_model_parallel()  # (the first creation of the parallel state reseeds torch)
    torch.manual_seed(3)
    eager = SaladModel(_cfg(tiny_tokenizer_dir)).eval()
    deferred = SaladModel(_cfg(tiny_tokenizer_dir), defer_build=True)
    assert not hasattr(deferred, "llm") and not list(deferred.parameters())
    torch.manual_seed(3)
    deferred.configure_model()
    deferred.configure_model()  # idempotent: a second call (Lightning's) builds nothing new
    deferred.eval()
    assert eager.state_dict().keys() == deferred.state_dict().keys()
    for name, value in eager.state_dict().items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, deferred.state_dict()[name]), name
    batch = make_batch(eager, "interleaved")
    assert torch.equal(eager.compute_loss(batch).loss, deferred.compute_loss(batch).loss)


def test_settings_given_before_the_build_reach_every_megatron_block(tiny_tokenizer_dir):
    model = SaladModel(_cfg(tiny_tokenizer_dir), defer_build=True)
    pending = model.config  # what MegatronStrategy.connect sees before configure_model
    pending.timers = timers = object()
    pending.params_dtype = torch.float32
    model.configure_model()
    configs = model.megatron_configs()
    assert len(configs) == 3  # student, teacher, adapter layers
    assert all(c.timers is timers for c in configs)
    assert model.config is model.llm.gpt.config
    model.config = type(pending)(bf16=False, timers=None)  # set after the build: applied to every block too
    assert all(c.timers is None for c in configs)


class _Batches(torch.utils.data.Dataset):
    def __init__(self, model, n: int) -> None:
        self.batches = [make_batch(model, layout, seed=i) for i, layout in
                        zip(range(n), ["interleaved", "prefix"] * n)]

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int):
        return self.batches[i]


def test_lightning_builds_and_trains_a_deferred_model(tiny_tokenizer_dir, tmp_path):
    model = SaladModel(_cfg(tiny_tokenizer_dir), defer_build=True)
    from omegaconf import open_dict

    with open_dict(model._cfg):
        model._cfg.optim = {"adapter_lr": 1e-2, "llm_lr": 1e-3, "lora_lr": 1e-2, "warmup_steps": 0}
    data = torch.utils.data.DataLoader(_Batches(model, 4), batch_size=None)  # laid out before the build
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=4, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(model, train_dataloaders=data)
    assert model._built
    batch = make_batch(model, "interleaved", seed=0)
    after = model.eval().compute_loss(batch).loss.item()
    torch.manual_seed(0)
    assert after == pytest.approx(model.compute_loss(batch).loss.item())  # deterministic in eval
    lora_b = [p for n, p in model.named_parameters() if n.endswith("lora.b.weight")]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b)  # LoRA b starts at zero: it was trained


def test_pipeline_parallel_is_refused_with_a_clear_error(tiny_tokenizer_dir, monkeypatch):
    from megatron.core import parallel_state

    from nemo_salad.llm.parallel import init_model_parallel

    init_model_parallel()
    model = SaladModel(_cfg(tiny_tokenizer_dir), defer_build=True)
    monkeypatch.setattr(parallel_state, "get_pipeline_model_parallel_world_size", lambda: 2)
    with pytest.raises(ValueError, match="pipeline parallelism"):
        model.configure_model()

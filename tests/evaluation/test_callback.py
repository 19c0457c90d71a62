"""SpokenEvalCallback inside real Lightning validation / fit loops."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from torch.utils.data import DataLoader, TensorDataset

from nemo_salad.evaluation import (
    IdentitySpeechEncoder,
    ScoringSettings,
    SpeechSystem,
    TextSystem,
    TranscriptOnlySpeech,
    evaluate,
    load_benchmark,
)
from nemo_salad.evaluation.callback import SpokenEvalCallback


class TinySpeechModule(LightningModule):
    """Implements the SpeechContextEncoder protocol with the identity speech path."""

    def __init__(self, tokenizer):
        super().__init__()
        from nemo_salad.llm import LLMConfig, MegatronLLM

        torch.manual_seed(0)
        self.llm = MegatronLLM(LLMConfig.preset("tiny-llama"))
        self.tokenizer = tokenizer
        self.w = torch.nn.Parameter(torch.zeros(1))

    def encode_cuts(self, cuts):
        assert not self.training  # the callback evaluates in eval mode
        return IdentitySpeechEncoder(self.llm, self.tokenizer).encode_cuts(cuts)

    def training_step(self, batch, idx):
        return (self.w - 1).pow(2).sum()

    def validation_step(self, batch, idx):
        self.log("val_loss", (self.w - 1).pow(2).sum())

    def configure_optimizers(self):
        return torch.optim.SGD([self.w], lr=0.1)

    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.zeros(2, 1)), batch_size=1)

    def val_dataloader(self):
        return DataLoader(TensorDataset(torch.zeros(1, 1)), batch_size=1)


def _trainer(cb, **kw):
    return Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                   enable_model_summary=False, callbacks=[cb], **kw)


SETTINGS = ScoringSettings(max_tokens=300, max_shots=2)


def test_logs_accuracy_every_n_validations(byte_tok):
    module = TinySpeechModule(byte_tok)
    cb = SpokenEvalCallback(TranscriptOnlySpeech(), benchmarks=["copa", "piqa"], n_items=8, every_n_val=2,
                            settings=SETTINGS, topline=(module.llm, byte_tok))
    trainer = _trainer(cb)
    trainer.validate(module)
    assert cb.last_results is None and not any(k.startswith("eval/") for k in trainer.callback_metrics)
    trainer.validate(module)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("eval/")}
    # the same subset scored directly gives the logged numbers; identity path: speech acc == text acc
    module.eval()
    direct = evaluate([load_benchmark("copa", n_items=8), load_benchmark("piqa", n_items=8)],
                      [TextSystem(module.llm, byte_tok), SpeechSystem(module)], SETTINGS, TranscriptOnlySpeech())
    for b in direct.benchmarks:
        assert metrics[f"eval/{b.name}/speech_model_acc"] == pytest.approx(b.systems["speech_model"].primary)
        assert metrics[f"eval/{b.name}/text_llm_acc"] == pytest.approx(b.systems["text_llm"].primary)
        assert metrics[f"eval/{b.name}/speech_model_text_acc"] == metrics[f"eval/{b.name}/text_llm_acc"]
        assert metrics[f"eval/{b.name}/speech_model_gap"] == 0.0


def test_runs_after_validation_in_fit_but_not_in_the_sanity_check(byte_tok):
    module = TinySpeechModule(byte_tok)
    cb = SpokenEvalCallback(TranscriptOnlySpeech(), benchmarks=["copa"], n_items=4, settings=SETTINGS)
    trainer = _trainer(cb, max_epochs=1, num_sanity_val_steps=1)
    trainer.fit(module)
    assert cb.n_val == 1 and cb.last_results is not None
    assert "eval/copa/speech_model_acc" in trainer.callback_metrics
    assert "eval/copa/text_llm_acc" not in trainer.callback_metrics  # no topline given
    assert module.training  # training mode restored after the evaluation


def test_bad_arguments():
    with pytest.raises(ValueError, match="every_n_val"):
        SpokenEvalCallback(TranscriptOnlySpeech(), every_n_val=0)
    with pytest.raises(ValueError, match="cascade needs the text LLM"):
        SpokenEvalCallback(TranscriptOnlySpeech(), transcriber=object())

"""A tiny NeMo FastConformer CTC model saved as .nemo: a stand-in for a pretrained ASR checkpoint."""

from __future__ import annotations

from pathlib import Path

from nemo_salad.modules.encoder import SpeechEncoder


def save_tiny_asr_nemo(path: Path) -> Path:
    from nemo.collections.asr.models import EncDecCTCModel
    from omegaconf import OmegaConf

    pre, enc = SpeechEncoder.tiny_configs(d_model=48, n_layers=1, n_heads=2)
    labels = list(" abcdefghijklmnopqrstuvwxyz'")
    cfg = OmegaConf.create({
        "sample_rate": 16000, "labels": labels, "preprocessor": pre, "encoder": enc,
        "decoder": {"_target_": "nemo.collections.asr.modules.ConvASRDecoder", "feat_in": 48,
                    "num_classes": len(labels), "vocabulary": labels},
    })
    EncDecCTCModel(cfg=cfg).save_to(str(path))
    return path

"""What the Hugging Face speech encoders (Whisper, Mimi) share: freezing and the config a ``.nemo`` stores."""

from __future__ import annotations

from typing import Any

from torch import nn

__all__ = ["HFSpeechEncoder"]


class HFSpeechEncoder(nn.Module):
    """Base of :class:`~nemo_salad.modules.whisper_encoder.WhisperSpeechEncoder` and
    :class:`~nemo_salad.modules.mimi_encoder.MimiSpeechEncoder`: 16 kHz input, an architecture ``config`` dict
    written out in full, and an optional freeze that also keeps the encoder in eval mode.

    Subclasses set ``kind`` (the ``model.encoder.kind`` they are built from) and ``self.config``, and call
    :meth:`set_frozen` at the end of ``__init__``.

    >>> class Toy(HFSpeechEncoder):
    ...     kind = "toy"
    >>> enc = Toy(); enc.config = {"d": 2}; enc.lin = nn.Linear(2, 2); enc.set_frozen(True)
    >>> enc.train().training, enc.lin.weight.requires_grad, enc.resolved_config({"pretrained": "x"})
    (False, False, {'pretrained': None, 'kind': 'toy', 'config': {'d': 2}})
    """

    kind = ""
    sample_rate = 16000

    def set_frozen(self, freeze: bool) -> None:
        """Freeze (no gradients, eval mode for good) or leave trainable."""
        self.frozen = bool(freeze)
        if self.frozen:
            self.requires_grad_(False)
            self.eval()

    def train(self, mode: bool = True) -> HFSpeechEncoder:
        """A frozen encoder stays in eval mode."""
        return super().train(mode and not getattr(self, "frozen", False))

    def resolved_config(self, cfg: dict[str, Any]) -> dict[str, Any]:
        """``model.encoder`` with the architecture written out and ``pretrained`` cleared (for a ``.nemo``)."""
        return {**cfg, "kind": self.kind, "pretrained": None, "config": dict(self.config)}

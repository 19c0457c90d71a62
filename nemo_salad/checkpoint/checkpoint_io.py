"""Lightning checkpoint I/O that never unpickles arbitrary objects.

Lightning 2.4 reads checkpoints with ``torch.load(weights_only=False)``, which runs whatever code a crafted
checkpoint contains. :class:`SafeCheckpointIO` loads with ``weights_only=True``; SaladModel writes checkpoints
that satisfy it (tensors and plain containers only).
"""

from __future__ import annotations

from typing import Any

from lightning.fabric.utilities.cloud_io import _load as pl_load
from lightning.pytorch.plugins.io import TorchCheckpointIO

__all__ = ["SafeCheckpointIO"]


class SafeCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose ``load_checkpoint`` uses ``torch.load(weights_only=True)``."""

    def load_checkpoint(self, path: Any, map_location: Any = lambda storage, loc: storage) -> dict[str, Any]:
        from pathlib import Path

        if not Path(path).is_file():
            raise FileNotFoundError(f"Checkpoint file not found: {path}")
        return pl_load(path, map_location=map_location, weights_only=True)

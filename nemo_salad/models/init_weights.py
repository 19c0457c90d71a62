"""Initialise a built :class:`~nemo_salad.models.SaladModel` from another run's weights (``init_from``)."""

from __future__ import annotations

from nemo.utils import logging

from nemo_salad.models.dist_checkpoint import is_distributed_checkpoint, load_distributed, resolve_checkpoint
from nemo_salad.models.salad import SaladModel
from nemo_salad.parts.checkpoint_io import SafeCheckpointIO

__all__ = ["load_weights"]


def load_weights(model: SaladModel, path: str) -> None:
    """Initialise from another run's weights (a Lightning ``.ckpt``, a ``.nemo`` or a megatron distributed
    checkpoint directory, which loads at any tensor-parallel size), not its optimizer state.

    A ``<name>.ckpt`` that a ``MegatronStrategy`` run saved is the folder ``<name>`` (NeMo's checkpoint IO drops the
    suffix), so one ``init_from`` works after either strategy."""
    path = resolve_checkpoint(path)
    if is_distributed_checkpoint(path):
        load_distributed(model, path)
        logging.info(f"initialised weights from the distributed checkpoint {path}")
        return
    if path.endswith(".nemo"):
        state = SaladModel.restore_from(path, map_location="cpu").state_dict()
    else:
        state = SafeCheckpointIO().load_checkpoint(path, map_location="cpu")["state_dict"]
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("_extra_state")]
    if missing or unexpected:
        raise ValueError(f"init_from={path}: weights do not fit the model (missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]})")
    logging.info(f"initialised weights from {path}")

"""Initialise a built model from another run's weights (``init_from``), or rebuild a trained model from its
checkpoint.

Nothing here knows the model class: :func:`load_weights` takes the built model, :func:`load_trained` the class to
rebuild (e.g. :class:`~nemo_salad.models.SaladModel`), so checkpoint I/O sits below ``models`` in the layering.
"""

from __future__ import annotations

import os
from typing import Any, Protocol

from nemo.utils import logging
from torch import nn

from nemo_salad.checkpoint.checkpoint_io import SafeCheckpointIO
from nemo_salad.checkpoint.distributed import (
    is_distributed_checkpoint,
    load_distributed,
    resolve_checkpoint,
    strategy_hyper_parameters,
)
from nemo_salad.checkpoint.nemo_io import safe_restore_from
from nemo_salad.parts.safe_config import check_targets

__all__ = ["RestorableModel", "load_trained", "load_weights"]


class RestorableModel(Protocol):
    """What checkpoint loading needs of a model class: built from its hyper-parameters (``cls(**hparams)``) and
    restored from a ``.nemo`` by NeMo's ``restore_from`` (any ``ModelPT``, e.g. ``SaladModel``)."""

    def __call__(self, *args: Any, **kwargs: Any) -> nn.Module: ...

    def restore_from(self, restore_path: str, *args: Any, **kwargs: Any) -> nn.Module: ...


def load_weights(model: nn.Module, path: str) -> None:
    """Initialise from another run's weights (a Lightning ``.ckpt``, a ``.nemo`` or a megatron distributed
    checkpoint directory, which loads at any tensor-parallel size), not its optimizer state.

    A ``<name>.ckpt`` that a ``MegatronStrategy`` run saved is the folder ``<name>`` (NeMo's checkpoint IO drops the
    suffix), so one ``init_from`` works after either strategy.

    Args:
        model (nn.Module): the built model; a ``.nemo`` is restored with its class's ``restore_from`` (read through
            :class:`~nemo_salad.checkpoint.nemo_io.SafeSaveRestoreConnector`).
        path (str): the checkpoint.

    Raises:
        ValueError: if the weights do not fit ``model`` (naming missing and unexpected keys).

    >>> load_weights(nn.Linear(1, 1), "/no/such/run.ckpt")
    Traceback (most recent call last):
    ...
    FileNotFoundError: Checkpoint file not found: /no/such/run.ckpt
    """
    path = resolve_checkpoint(path)
    if is_distributed_checkpoint(path):
        load_distributed(model, path)
        logging.info(f"initialised weights from the distributed checkpoint {path}")
        return
    if path.endswith(".nemo"):
        state = safe_restore_from(type(model), path, map_location="cpu").state_dict()
    else:
        state = _lightning_checkpoint(path, "cpu")["state_dict"]
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("_extra_state")]
    if missing or unexpected:
        raise ValueError(f"init_from={path}: weights do not fit the model (missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]})")
    logging.info(f"initialised weights from {path}")


def load_trained(path: str, model_class: RestorableModel, map_location: str = "cpu") -> Any:
    """A trained model, rebuilt from what its checkpoint stores (weights only, read safely).

    Args:
        path (str): a ``.nemo``; the folder of a ``MegatronStrategy`` checkpoint or its ``<name>.ckpt`` path (the
            model from the hyper-parameters stored beside the weights, loaded at this process's tensor-parallel
            size); or a Lightning ``.ckpt`` (``torch.load(weights_only=True)``, state dict loaded strictly).
        model_class (RestorableModel): the LightningModule class to rebuild, e.g.
            :class:`~nemo_salad.models.SaladModel`.
        map_location (str): device of the weights. Default: "cpu".

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: for a file that is not a Lightning checkpoint, or a folder without hyper-parameters.
        UnsafeTargetError: if the stored hyper-parameters (or the ``.nemo``'s config) name anything but classes and
            functions of the allowed packages; checked before the model is built.
        UnsafeCheckpointError: if a distributed checkpoint holds a pickle of anything but checkpoint data.
    """
    path = resolve_checkpoint(str(path))
    if is_distributed_checkpoint(path):
        hparams = strategy_hyper_parameters(path)
        check_targets(hparams, source=f"{path} (stored hyper_parameters)")
        model = model_class(**hparams)
        load_distributed(model, path)
        return model
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.endswith(".nemo"):
        return safe_restore_from(model_class, path, map_location=map_location)
    state = _lightning_checkpoint(path, map_location)
    hparams = dict(state.get("hyper_parameters") or {})
    check_targets(hparams, source=f"{path} (stored hyper_parameters)")
    model = model_class(**hparams)
    model.load_state_dict(state["state_dict"])
    return model


def _lightning_checkpoint(path: str, map_location: str) -> dict[str, Any]:
    """A Lightning checkpoint read with ``weights_only=True``.

    Raises:
        FileNotFoundError: if ``path`` does not exist. ValueError: if it holds no ``state_dict``.
    """
    state = SafeCheckpointIO().load_checkpoint(path, map_location=map_location)
    if not isinstance(state, dict) or "state_dict" not in state:
        raise ValueError(f"{path} is not a Lightning checkpoint (no 'state_dict'; keys: "
                         f"{sorted(state)[:8] if isinstance(state, dict) else type(state).__name__})")
    return state

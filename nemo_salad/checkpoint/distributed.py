"""Megatron distributed checkpoints of a :class:`~nemo_salad.models.SaladModel` (or any module mixing
megatron-core and plain torch modules).

Every rank writes only its own shards (``megatron.core.dist_checkpointing``, ``torch_dist`` format), and the
checkpoint records each tensor's global shape, so it loads at another tensor-parallel size: train at TP=2, then
evaluate or continue at TP=1 (or the other way round). This is the format NeMo-2's ``MegatronStrategy`` writes for
resume — it collects the same :func:`sharded_state_dict` through ``SaladModel.sharded_state_dict``.

Which tensors are split:

* megatron-core modules (the student and teacher ``GPTModel``, the adapter's transformer block) describe their own
  sharding (column/row-parallel weights, the vocabulary-parallel embedding, ``[gate; up]`` of SwiGLU ``fc1``);
* LoRA factors on parallel linears are split like their layer (see :mod:`nemo_salad.modules.lora`);
* everything else (FastConformer encoder, adapter projections) is replicated over tensor- and data-parallel ranks.

Loading unpickles nothing but checkpoint data (:func:`~nemo_salad.checkpoint.safe_checkpoint.safe_checkpoint_reading`):
a crafted ``.metadata`` or non-tensor item is refused before anything in it is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from nemo_salad.checkpoint.safe_checkpoint import UnsafeCheckpointError, safe_checkpoint_reading
from nemo_salad.llm.cpu import cpu_dist_checkpointing

__all__ = ["is_distributed_checkpoint", "load_distributed", "resolve_checkpoint", "save_distributed",
           "sharded_state_dict", "strategy_hyper_parameters"]


def _own_state(module: nn.Module) -> dict[str, Any]:
    """``module``'s own parameters, persistent buffers and extra state, without its children's."""
    out: dict[str, Any] = {}
    module._save_to_state_dict(out, "", keep_vars=True)
    return out


def sharded_state_dict(module: nn.Module, prefix: str = "", sharded_offsets: tuple = (),
                       metadata: dict | None = None, replace: dict[str, nn.Module] | None = None) -> dict[str, Any]:
    """Sharded state dict of a module tree whose megatron-core parts may sit below plain torch modules.

    megatron-core's own fallback (``sharded_state_dict_default``) treats a plain module's whole subtree as
    replicated, which would keep one rank's shard of any megatron layer inside it. Here each module that knows its
    sharding (has ``sharded_state_dict``) describes itself; a plain module's own tensors are replicated and its
    children are visited the same way.

    Args:
        replace (dict | None): child name → the module to describe under that name instead (a wrapped child's
            inner module, whose keys ``state_dict()`` uses).

    Returns:
        dict: the keys of ``module.state_dict()`` (with ``prefix``) mapped to ``ShardedTensor`` / ``ShardedObject``.
    """
    from megatron.core.transformer.utils import make_sharded_tensors_for_checkpoint

    out = make_sharded_tensors_for_checkpoint(_own_state(module), prefix, None, sharded_offsets)
    for name, child in module.named_children():
        child = (replace or {}).get(name, child)
        child_prefix = f"{prefix}{name}."
        if hasattr(child, "sharded_state_dict"):
            out.update(child.sharded_state_dict(prefix=child_prefix, sharded_offsets=sharded_offsets,
                                                metadata=metadata))
        else:
            out.update(sharded_state_dict(child, child_prefix, sharded_offsets, metadata))
    return out


def _check_covers(model: nn.Module, sharded: dict[str, Any]) -> None:
    """Every tensor of ``model.state_dict()`` must be in the sharded dict (none silently left out)."""
    expected = {k for k in model.state_dict() if not k.endswith("_extra_state")}
    have = {k for k in sharded if not k.endswith("_extra_state")}
    if expected - have or have - expected:
        raise RuntimeError(f"sharded state dict of {type(model).__name__} does not match its state_dict: "
                           f"missing {sorted(expected - have)[:5]}, unexpected {sorted(have - expected)[:5]}")


def _is_dist(path: Path) -> bool:
    from megatron.core import dist_checkpointing

    return path.is_dir() and dist_checkpointing.check_is_distributed_checkpoint(str(path))


def _weights_dir(path: str | Path) -> Path:
    """``path``, or its ``weights`` folder for a checkpoint written by NeMo's ``MegatronStrategy``."""
    path = Path(path)
    return path / "weights" if not _is_dist(path) and _is_dist(path / "weights") else path


def is_distributed_checkpoint(path: str | Path) -> bool:
    """True if ``path`` is a megatron-core distributed checkpoint directory (or a ``MegatronStrategy`` checkpoint
    holding one in ``weights/``)."""
    return _is_dist(_weights_dir(path))


def resolve_checkpoint(path: str) -> str:
    """``path``, or the folder ``<name>`` when ``path`` is ``<name>.ckpt`` and a ``MegatronStrategy`` run wrote it
    (NeMo's checkpoint IO drops the suffix), so one path works after either strategy.

    >>> resolve_checkpoint("/nonexistent/run-pre-decay.ckpt")
    '/nonexistent/run-pre-decay.ckpt'
    """
    folder = path[: -len(".ckpt")] if path.endswith(".ckpt") else None
    if folder and not Path(path).exists() and is_distributed_checkpoint(folder):
        return folder
    return path


def strategy_hyper_parameters(path: str | Path) -> dict[str, Any]:
    """The LightningModule hyper-parameters a ``MegatronStrategy`` checkpoint stores beside its weights (read with
    ``weights_only=True``).

    Raises:
        ValueError: if the checkpoint holds none (e.g. one written by :func:`save_distributed`).
    """
    common = _weights_dir(path) / "common.pt"
    state = torch.load(common, map_location="cpu", weights_only=True) if common.is_file() else {}
    hparams = state.get("hyper_parameters") if isinstance(state, dict) else None
    if not isinstance(hparams, dict):
        raise ValueError(f"{path}: no hyper_parameters in {common} (not a checkpoint of a MegatronStrategy run); "
                         "build the model from its config and use load_distributed")
    return hparams


def _ensure_parallel_state() -> None:
    from nemo_salad.llm.parallel import init_model_parallel, model_parallel_ready

    if not model_parallel_ready():
        init_model_parallel()


def save_distributed(model: nn.Module, directory: str | Path) -> Path:
    """Write ``model``'s weights as a megatron-core distributed checkpoint; call on every rank.

    Args:
        model (nn.Module): a SaladModel (or any module, see :func:`sharded_state_dict`).
        directory (str | Path): created if missing; must be empty.

    Returns:
        Path: ``directory``.

    Raises:
        FileExistsError: if ``directory`` is not empty (a checkpoint is never overwritten in place).
    """
    from megatron.core import dist_checkpointing

    _ensure_parallel_state()
    directory = Path(directory)
    if directory.is_dir() and any(directory.iterdir()):
        raise FileExistsError(f"{directory}: distributed checkpoint directory is not empty")
    if not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0:
        directory.mkdir(parents=True, exist_ok=True)
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
    sharded = _model_sharded_state_dict(model)
    _check_covers(model, sharded)
    with cpu_dist_checkpointing():
        dist_checkpointing.save(sharded, str(directory))
    return directory


def load_distributed(model: nn.Module, directory: str | Path, strict: bool = True) -> None:
    """Load a distributed checkpoint into ``model`` (this rank's shards, at this run's tensor-parallel size).

    Args:
        model (nn.Module): built with the architecture the checkpoint was saved from (any tensor-parallel size).
        directory (str | Path): the checkpoint (or a ``MegatronStrategy`` checkpoint folder with ``weights/``).
        strict (bool): every tensor of ``model`` must be in the checkpoint. Default: True.

    Raises:
        FileNotFoundError: if ``directory`` is not a distributed checkpoint.
        ValueError: if a tensor is missing from the checkpoint or its global shape differs.
        UnsafeCheckpointError: if a pickle in the checkpoint would build anything but checkpoint data (read with
            :func:`~nemo_salad.checkpoint.safe_checkpoint.safe_checkpoint_reading`; nothing of it is built).
    """
    from megatron.core import dist_checkpointing
    from megatron.core.dist_checkpointing.validation import StrictHandling
    from torch.distributed.checkpoint.api import CheckpointException

    _ensure_parallel_state()
    if not is_distributed_checkpoint(directory):
        raise FileNotFoundError(f"{directory}: not a megatron-core distributed checkpoint (no metadata.json)")
    directory = _weights_dir(directory)
    sharded = _model_sharded_state_dict(model)
    _check_covers(model, sharded)
    try:
        with cpu_dist_checkpointing(), safe_checkpoint_reading(directory):
            state = dist_checkpointing.load(sharded, str(directory),
                                            strict=StrictHandling.RAISE_UNEXPECTED if strict else
                                            StrictHandling.LOG_UNEXPECTED)
    except UnsafeCheckpointError:
        raise
    except (Exception, CheckpointException) as err:  # torch's CheckpointException is a BaseException
        raise ValueError(f"{directory}: distributed checkpoint does not fit {type(model).__name__}: {err}") from err
    # a MegatronStrategy checkpoint also holds the trainer's state (step, loops) and the optimizer's: weights only
    missing, unexpected = model.load_state_dict({k: v for k, v in state.items() if k in sharded}, strict=False)
    missing = [k for k in missing if not k.endswith("_extra_state")]
    if strict and (missing or unexpected):
        raise ValueError(f"{directory}: missing {missing[:5]}, unexpected {unexpected[:5]}")


def _model_sharded_state_dict(model: nn.Module) -> dict[str, Any]:
    own = getattr(model, "sharded_state_dict", None)
    return own(prefix="") if callable(own) else sharded_state_dict(model)

"""Reading megatron / torch distributed checkpoints without running code stored in them.

``torch.distributed.checkpoint``'s ``FileSystemReader`` unpickles a checkpoint folder's ``.metadata`` with plain
``pickle``, and its ``DefaultLoadPlanner`` reads every non-tensor item (megatron ``ShardedObject`` s such as
``_extra_state``) with ``torch.load(weights_only=False)``: a crafted checkpoint folder runs code as it loads, and
``weights_only=True`` elsewhere does not cover either. Inside :func:`safe_checkpoint_reading`:

* ``.metadata`` is read by :class:`RestrictedUnpickler`, which builds only the checkpoint-metadata types of
  :data:`METADATA_GLOBALS` (plus torch dtypes) and must yield a ``Metadata``;
* non-tensor items are read with ``torch.load(weights_only=True)`` (tensors, plain containers, ``io.BytesIO``);
* every other ``torch.load`` (megatron's ``common.pt`` and sharded-object files, NeMo's resume) runs with
  ``weights_only=True`` forced (``TORCH_FORCE_WEIGHTS_ONLY_LOAD=1``, ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` unset).

Anything else is refused with :class:`UnsafeCheckpointError`, naming the file (or item) and the refused global,
before the object is built. Tensor data itself is read by torch with ``weights_only=True`` already.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import torch

__all__ = ["METADATA_GLOBALS", "RestrictedUnpickler", "UnsafeCheckpointError", "restricted_load",
           "safe_checkpoint_reading"]

_DCP = "torch.distributed.checkpoint"
_MCORE = "megatron.core.dist_checkpointing.strategies.torch"
#: ``(module, name)`` of every global a distributed checkpoint's ``.metadata`` may name (besides torch dtypes):
#: dataclasses, enums and named tuples whose construction runs no user code.
METADATA_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {(f"{_DCP}.metadata", name) for name in ("Metadata", "BytesStorageMetadata", "ChunkStorageMetadata",
                                              "MetadataIndex", "StorageMeta", "TensorProperties",
                                              "TensorStorageMetadata", "_MEM_FORMAT_ENCODING")}
    | {(f"{_DCP}.planner", name) for name in ("SavePlan", "WriteItem", "WriteItemType", "TensorWriteData",
                                               "BytesIOWriteData")}
    | {(f"{_DCP}.filesystem", "_StorageInfo"), ("torch.serialization", "_get_layout"), ("torch", "Size"),
       (_MCORE, "MCoreMetadata"), (_MCORE, "MCoreSavePlan"), ("collections", "OrderedDict"),
       ("pathlib", "PosixPath"), ("pathlib", "PurePosixPath")})


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint file names a Python global that loading it safely does not allow."""


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that builds only the types of :data:`METADATA_GLOBALS` and torch dtypes.

    Args:
        file: a binary file object.
        source (str): the file's name, for the error message.

    >>> import pickle, io
    >>> RestrictedUnpickler(io.BytesIO(pickle.dumps(torch.Size([2, 3]))), "x").load()
    torch.Size([2, 3])
    >>> RestrictedUnpickler(io.BytesIO(pickle.dumps(print)), "x/.metadata").load()
    Traceback (most recent call last):
    ...
    nemo_salad.checkpoint.safe_checkpoint.UnsafeCheckpointError: x/.metadata: refusing to unpickle builtins.print...
    """

    def __init__(self, file: IO[bytes], source: str) -> None:
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in METADATA_GLOBALS or (module == "torch" and isinstance(getattr(torch, name, None),
                                                                                  torch.dtype)):
            return super().find_class(module, name)
        raise _refusal(f"{self.source}: refusing to unpickle {module}.{name}: a checkpoint's metadata may only hold "
                       "torch.distributed.checkpoint / megatron metadata types (see "
                       "nemo_salad.checkpoint.safe_checkpoint.METADATA_GLOBALS); the file was crafted or comes from an "
                       "unsupported torch/megatron version")

    def persistent_load(self, pid: Any) -> Any:
        raise _refusal(f"{self.source}: refusing a persistent id in checkpoint metadata")


def restricted_load(file: IO[bytes], source: str) -> Any:
    """The object pickled in ``file``, built by :class:`RestrictedUnpickler`.

    Raises:
        UnsafeCheckpointError: for a global outside :data:`METADATA_GLOBALS`.
        ValueError: for a file that is not a pickle (truncated, corrupt), naming ``source``.

    >>> restricted_load(io.BytesIO(pickle.dumps({"shape": torch.Size([1])})), "m")
    {'shape': torch.Size([1])}
    """
    try:
        return RestrictedUnpickler(file, source).load()
    except UnsafeCheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged file: say which
        raise ValueError(f"{source}: cannot read checkpoint metadata ({type(exc).__name__}: {exc})") from exc


# ---------------------------------------------------------------------------------------------- the patched readers
_lock = threading.RLock()
_state: dict[str, Any] = {"depth": 0, "saved": None, "sources": [], "refused": []}


def _refusal(message: str) -> UnsafeCheckpointError:
    err = UnsafeCheckpointError(message)
    if _state["depth"]:
        _state["refused"].append(err)  # torch's distributed load may wrap it; the context re-raises it
    return err


def _read_metadata(self: Any, *args: Any, **kwargs: Any) -> Any:
    """``FileSystemReader.read_metadata`` (torch 2.13) with :func:`restricted_load` instead of ``pickle.load``."""
    from torch.distributed.checkpoint.metadata import Metadata, StorageMeta

    path = self._get_metadata_path(kwargs.get("rank"))
    with self.fs.create_stream(path, "rb") as metadata_file:
        metadata = restricted_load(metadata_file, str(path))
    if not isinstance(metadata, Metadata):
        raise _refusal(f"{path}: holds a {type(metadata).__name__}, not torch.distributed.checkpoint Metadata")
    if getattr(metadata, "storage_meta", None) is None:
        metadata.storage_meta = StorageMeta()
    metadata.storage_meta.load_id = self.load_id
    return metadata


def _refused_global(exc: BaseException) -> str | None:
    """The global a ``torch.load(weights_only=True)`` refused, from its message (torch 2.x wordings)."""
    found = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)", str(exc))
    return found.group(1) if found else None


def _load_bytes(self: Any, read_item: Any, value: io.BytesIO) -> None:
    """``DefaultLoadPlanner.load_bytes`` with ``torch.load(weights_only=True)``."""
    from torch.distributed.checkpoint._traverse import set_element

    fqn = read_item.dest_index.fqn
    where = f"{_state['sources'][-1] if _state['sources'] else 'checkpoint'}: item {fqn!r}"
    try:
        with torch.serialization.safe_globals([io.BytesIO]):
            obj = torch.load(value, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = _refused_global(exc)
        what = found or f"its content ({str(exc).splitlines()[0]})"
        raise _refusal(f"{where}: refusing to unpickle {what} (non-tensor checkpoint items are read with "
                       "torch.load(weights_only=True))") from exc
    if self.flatten_state_dict:
        set_element(self.original_state_dict, self.mappings[fqn], obj)
    else:
        self.state_dict[fqn] = obj


def _install() -> None:
    from torch.distributed.checkpoint import default_planner, filesystem

    _state["saved"] = (filesystem.FileSystemReader.read_metadata, default_planner.DefaultLoadPlanner.load_bytes,
                       {k: os.environ.get(k) for k in ("TORCH_FORCE_WEIGHTS_ONLY_LOAD",
                                                       "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")})
    filesystem.FileSystemReader.read_metadata = _read_metadata  # type: ignore[method-assign]
    default_planner.DefaultLoadPlanner.load_bytes = _load_bytes  # type: ignore[method-assign]
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    os.environ.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)


def _uninstall() -> None:
    from torch.distributed.checkpoint import default_planner, filesystem

    read_metadata, load_bytes, env = _state["saved"]
    filesystem.FileSystemReader.read_metadata = read_metadata  # type: ignore[method-assign]
    default_planner.DefaultLoadPlanner.load_bytes = load_bytes  # type: ignore[method-assign]
    for key, value in env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    _state["saved"] = None


@contextmanager
def safe_checkpoint_reading(source: str | Path = "checkpoint") -> Iterator[None]:
    """Inside the block, distributed-checkpoint loads unpickle nothing but checkpoint data (see the module doc).

    Re-entrant; restores torch's readers and the environment on exit. If torch wraps a refusal in its own
    exception (a distributed load collects per-rank failures), the refusal is raised instead.

    Args:
        source (str | Path): the checkpoint being read, named in errors. Default: "checkpoint".

    Raises:
        UnsafeCheckpointError: if the checkpoint holds a pickle that would build anything else.

    >>> with safe_checkpoint_reading("ckpt"):
    ...     os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"]
    '1'
    """
    with _lock:
        if _state["depth"] == 0:
            _state["refused"].clear()
            _install()
        _state["depth"] += 1
        _state["sources"].append(str(source))
    try:
        yield
    except UnsafeCheckpointError:
        raise
    except BaseException as exc:
        if _state["refused"]:
            raise _state["refused"][0] from exc
        found = _refused_global(exc) if isinstance(exc, pickle.UnpicklingError) else None
        if found:  # a torch.load forced to weights_only (megatron's common.pt, sharded objects, NeMo's files)
            raise UnsafeCheckpointError(f"{source}: refusing to unpickle {found} (the checkpoint's files are read "
                                        "with torch.load(weights_only=True))") from exc
        raise
    finally:
        with _lock:
            _state["sources"].pop()
            _state["depth"] -= 1
            if _state["depth"] == 0:
                _uninstall()

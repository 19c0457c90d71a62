"""Saving and restoring ``.nemo`` archives safely, also from a tensor-parallel run.

NeMo 2.7's ``SaveRestoreConnector`` already reads weights with ``torch.load(weights_only=True)``, but it
instantiates whatever ``_target_`` / ``target`` the archived config names. :class:`SafeSaveRestoreConnector`
reads the config first and refuses it unless every target resolves to a class or function defined in an allowed
package (:func:`~nemo_salad.parts.safe_config.check_targets`); distributed weights are read with
:func:`~nemo_salad.checkpoint.safe_checkpoint.safe_checkpoint_reading`.

NeMo's default connector refuses to save under model parallelism. Here a model split over tensor-parallel ranks
is saved as a megatron distributed checkpoint inside the archive (``model_weights_dist/``, every rank writing its
shards), and restoring reads it at the restoring process's tensor-parallel size — one process included.
"""

from __future__ import annotations

import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from nemo.core.connectors.save_restore_connector import SaveRestoreConnector
from omegaconf import OmegaConf

from nemo_salad.parts.safe_config import allowed_prefixes, check_targets

#: the archive folder holding a distributed checkpoint of the weights (instead of ``model_weights.ckpt``)
DIST_WEIGHTS = "model_weights_dist"


def _tensor_parallel() -> bool:
    from megatron.core import parallel_state

    return parallel_state.model_parallel_is_initialized() and parallel_state.get_tensor_model_parallel_world_size() > 1


def _has_dist_weights(path: str | Path) -> bool:
    path = Path(path)
    if path.is_dir():
        return (path / DIST_WEIGHTS).is_dir()
    with tarfile.open(path, "r:*") as tar:  # stops at the first match instead of indexing the whole archive
        return any(Path(m.name).parts[-2:] == (DIST_WEIGHTS, "metadata.json") for m in tar)

__all__ = ["DIST_WEIGHTS", "SafeSaveRestoreConnector", "UnsafeArchiveError", "check_archive_members",
           "safe_restore_from"]


class UnsafeArchiveError(ValueError):
    """A ``.nemo`` archive holds a member that would be written outside its folder, or a link or device."""


def check_archive_members(path: str | Path) -> None:
    """Refuse a ``.nemo`` archive before anything is unpacked if a member is not a plain file or folder under a
    relative path (NeMo would skip such members and then fail on what is missing).

    Args:
        path (str | Path): the archive; a folder or a path that is not a local file is left to NeMo.

    Raises:
        UnsafeArchiveError: naming the archive and each bad member (absolute path, ``..``, link, device).
        ValueError: if the file is not a tar archive.

    >>> import io, tarfile, tempfile
    >>> path = tempfile.mkdtemp() + "/model.nemo"
    >>> with tarfile.open(path, "w") as tar:
    ...     tar.addfile(tarfile.TarInfo("../outside.txt"), io.BytesIO())
    >>> check_archive_members(path)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    nemo_salad.checkpoint.nemo_io.UnsafeArchiveError: ...model.nemo: refusing to unpack 1 unsafe member(s): \
'../outside.txt' points outside the archive folder ('..'). ...
    """
    path = Path(path)
    if not path.is_file():
        return
    try:
        tar = tarfile.open(path, "r:*")
    except tarfile.TarError as exc:
        raise ValueError(f"{path} is not a .nemo archive (expected a tar file): {str(exc).splitlines()[0]}") from exc
    problems = []
    with tar:
        for member in tar:
            name = member.name
            if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
                problems.append(f"{name!r} has an absolute path")
            elif ".." in name.replace("\\", "/").split("/"):
                problems.append(f"{name!r} points outside the archive folder ('..')")
            elif member.issym() or member.islnk():
                problems.append(f"{name!r} is a {'symbolic' if member.issym() else 'hard'} link to {member.linkname!r}")
            elif not (member.isfile() or member.isdir()):
                problems.append(f"{name!r} is not a regular file or folder")
    if problems:
        raise UnsafeArchiveError(f"{path}: refusing to unpack {len(problems)} unsafe member(s): {'; '.join(problems)}. "
                                 "A .nemo archive holds only plain files and folders under relative paths; use an "
                                 "archive written by save_to.")


class SafeSaveRestoreConnector(SaveRestoreConnector):
    """A ``SaveRestoreConnector`` that checks the archived config's targets before building anything.

    Args:
        extra_target_prefixes (tuple[str, ...]): packages this restore may instantiate besides
            :func:`~nemo_salad.parts.safe_config.allowed_prefixes` (e.g. ``"nemo_text_processing."`` for the text
            normaliser of a NeMo TTS model). Default: ().
    """

    def __init__(self, extra_target_prefixes: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.extra_target_prefixes = tuple(extra_target_prefixes)

    def _check_targets(self, config: Any, restore_path: Any) -> None:
        check_targets(config, source=str(restore_path), allowed=allowed_prefixes() + self.extra_target_prefixes)

    def load_config_and_state_dict(self, calling_cls: Any, restore_path: str, override_config_path: Any = None,
                                   map_location: Any = None, strict: bool = True, return_config: bool = False,
                                   trainer: Any = None, validate_access_integrity: bool = True):
        check_archive_members(restore_path)
        config = override_config_path
        if config is None:
            config = super().load_config_and_state_dict(calling_cls, restore_path, return_config=True)
        self._check_targets(config, restore_path)
        return super().load_config_and_state_dict(calling_cls, restore_path, override_config_path, map_location,
                                                  strict, return_config, trainer, validate_access_integrity)

    def save_to(self, model: Any, save_path: str) -> Any:
        """NeMo's archive; under tensor parallelism with the weights as a distributed checkpoint (call on every
        rank: each writes its shards to a staging folder next to ``save_path``, global rank 0 packs the archive)."""
        if not _tensor_parallel():
            return super().save_to(model, save_path)
        import torch.distributed as dist
        from nemo.utils.get_rank import is_global_rank_zero

        from nemo_salad.checkpoint.distributed import save_distributed

        staging = Path(save_path).parent / f".{Path(save_path).name}.{DIST_WEIGHTS}"
        if is_global_rank_zero():
            shutil.rmtree(staging, ignore_errors=True)
        dist.barrier()
        save_distributed(model, staging)
        if is_global_rank_zero():
            with tempfile.TemporaryDirectory() as tmpdir:
                config_yaml = str(Path(tmpdir) / self.model_config_yaml)
                model.to_config_file(path2yaml_file=config_yaml)
                if model.has_native_or_submodules_artifacts():
                    self._handle_artifacts(model, nemo_file_folder=tmpdir)
                    self._update_artifact_paths(model, path2yaml_file=config_yaml)
                shutil.copytree(staging, Path(tmpdir) / DIST_WEIGHTS)
                self._make_nemo_file_from_folder(filename=save_path, source_dir=tmpdir)
            shutil.rmtree(staging, ignore_errors=True)
        dist.barrier()
        return save_path if is_global_rank_zero() else None

    def restore_from(self, calling_cls: Any, restore_path: str, override_config_path: Any = None,
                     map_location: Any = None, strict: bool = True, return_config: bool = False, trainer: Any = None,
                     validate_access_integrity: bool = True) -> Any:
        """NeMo's restore, or, for an archive saved under tensor parallelism, the model built from the archived
        config at this process's tensor-parallel size with the distributed checkpoint's weights."""
        if return_config or not _has_dist_weights(restore_path):  # NeMo's restore checks the members (see above)
            return super().restore_from(calling_cls, restore_path, override_config_path, map_location, strict,
                                        return_config, trainer, validate_access_integrity)
        from nemo_salad.checkpoint.distributed import load_distributed

        check_archive_members(restore_path)
        with tempfile.TemporaryDirectory() as tmpdir:
            self._unpack_nemo_file(path2file=str(restore_path), out_folder=tmpdir)
            conf = override_config_path if override_config_path is not None else Path(tmpdir) / self.model_config_yaml
            conf = OmegaConf.load(conf) if isinstance(conf, str | Path) else conf
            conf = conf.model if "model" in conf else conf
            self._check_targets(conf, restore_path)
            calling_cls._set_model_restore_state(is_being_restored=True, folder=tmpdir)
            try:
                instance = calling_cls.from_config_dict(config=conf, trainer=trainer)
                load_distributed(instance, Path(tmpdir) / DIST_WEIGHTS, strict=strict)
            finally:
                calling_cls._set_model_restore_state(is_being_restored=False)
        return instance.to(map_location) if map_location is not None else instance


def safe_restore_from(cls: Any, restore_path: str, map_location: Any = "cpu",
                      extra_target_prefixes: tuple[str, ...] = (), **kwargs: Any) -> Any:
    """``cls.restore_from`` with :class:`SafeSaveRestoreConnector`.

    Raises:
        UnsafeTargetError: if the archived config names anything but classes and functions of the allowed packages
            (plus ``extra_target_prefixes``).
    """
    return cls.restore_from(restore_path, map_location=map_location,
                            save_restore_connector=SafeSaveRestoreConnector(extra_target_prefixes), **kwargs)

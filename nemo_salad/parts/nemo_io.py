"""Saving and restoring ``.nemo`` archives safely, also from a tensor-parallel run.

NeMo 2.7's ``SaveRestoreConnector`` already reads weights with ``torch.load(weights_only=True)``, but it
instantiates whatever ``_target_`` / ``target`` the archived config names. :class:`SafeSaveRestoreConnector`
reads the config first and refuses targets outside :data:`~nemo_salad.parts.safe_config.ALLOWED_TARGET_PREFIXES`.

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

from nemo_salad.parts.safe_config import check_targets

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

__all__ = ["DIST_WEIGHTS", "SafeSaveRestoreConnector", "safe_restore_from"]


class SafeSaveRestoreConnector(SaveRestoreConnector):
    """A ``SaveRestoreConnector`` that checks the archived config's targets before building anything."""

    def load_config_and_state_dict(self, calling_cls: Any, restore_path: str, override_config_path: Any = None,
                                   map_location: Any = None, strict: bool = True, return_config: bool = False,
                                   trainer: Any = None, validate_access_integrity: bool = True):
        config = override_config_path
        if config is None:
            config = super().load_config_and_state_dict(calling_cls, restore_path, return_config=True)
        check_targets(config, source=str(restore_path))
        return super().load_config_and_state_dict(calling_cls, restore_path, override_config_path, map_location,
                                                  strict, return_config, trainer, validate_access_integrity)

    def save_to(self, model: Any, save_path: str) -> Any:
        """NeMo's archive; under tensor parallelism with the weights as a distributed checkpoint (call on every
        rank: each writes its shards to a staging folder next to ``save_path``, global rank 0 packs the archive)."""
        if not _tensor_parallel():
            return super().save_to(model, save_path)
        import torch.distributed as dist
        from nemo.utils.get_rank import is_global_rank_zero

        from nemo_salad.models.dist_checkpoint import save_distributed

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
        if return_config or not _has_dist_weights(restore_path):
            return super().restore_from(calling_cls, restore_path, override_config_path, map_location, strict,
                                        return_config, trainer, validate_access_integrity)
        from nemo_salad.models.dist_checkpoint import load_distributed

        with tempfile.TemporaryDirectory() as tmpdir:
            self._unpack_nemo_file(path2file=str(restore_path), out_folder=tmpdir)
            conf = override_config_path if override_config_path is not None else Path(tmpdir) / self.model_config_yaml
            conf = OmegaConf.load(conf) if isinstance(conf, str | Path) else conf
            conf = conf.model if "model" in conf else conf
            check_targets(conf, source=str(restore_path))
            calling_cls._set_model_restore_state(is_being_restored=True, folder=tmpdir)
            try:
                instance = calling_cls.from_config_dict(config=conf, trainer=trainer)
                load_distributed(instance, Path(tmpdir) / DIST_WEIGHTS, strict=strict)
            finally:
                calling_cls._set_model_restore_state(is_being_restored=False)
        return instance.to(map_location) if map_location is not None else instance


def safe_restore_from(cls: Any, restore_path: str, map_location: Any = "cpu", **kwargs: Any) -> Any:
    """``cls.restore_from`` with :class:`SafeSaveRestoreConnector`.

    Raises:
        UnsafeTargetError: if the archived config names a class outside the allowlist.
    """
    return cls.restore_from(restore_path, map_location=map_location,
                            save_restore_connector=SafeSaveRestoreConnector(), **kwargs)

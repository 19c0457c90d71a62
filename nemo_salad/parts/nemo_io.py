"""Restoring ``.nemo`` archives safely.

NeMo 2.7's ``SaveRestoreConnector`` already reads weights with ``torch.load(weights_only=True)``, but it
instantiates whatever ``_target_`` / ``target`` the archived config names. :class:`SafeSaveRestoreConnector`
reads the config first and refuses targets outside :data:`~nemo_salad.parts.safe_config.ALLOWED_TARGET_PREFIXES`.
"""

from __future__ import annotations

from typing import Any

from nemo.core.connectors.save_restore_connector import SaveRestoreConnector

from nemo_salad.parts.safe_config import check_targets

__all__ = ["SafeSaveRestoreConnector", "safe_restore_from"]


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


def safe_restore_from(cls: Any, restore_path: str, map_location: Any = "cpu", **kwargs: Any) -> Any:
    """``cls.restore_from`` with :class:`SafeSaveRestoreConnector`.

    Raises:
        UnsafeTargetError: if the archived config names a class outside the allowlist.
    """
    return cls.restore_from(restore_path, map_location=map_location,
                            save_restore_connector=SafeSaveRestoreConnector(), **kwargs)

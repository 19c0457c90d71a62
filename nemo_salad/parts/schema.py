"""Typed config sections: a dataclass schema merged with a config, each problem named by its full key.

Each package owns the schema of the config section it reads (``nemo_salad.models.config``, ``nemo_salad.data.config``,
``nemo_salad.parts.optim``); :mod:`nemo_salad.recipes.schema` composes them into the whole training config.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import field
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

__all__ = ["ConfigSchemaError", "default_field", "omegaconf_type", "typed_section"]


class ConfigSchemaError(ValueError):
    """A config value of the wrong type, or a key the schema does not know."""


def default_field(value: Any) -> Any:
    """A dataclass field default; mutable values get a factory."""
    if isinstance(value, (dict, list)):
        return field(default_factory=lambda: type(value)(value))
    return field(default=value)


def omegaconf_type(hint: Any) -> Any:
    """``Literal[...]`` (not an OmegaConf type) as ``str``; everything else unchanged."""
    return str if typing.get_origin(hint) is typing.Literal else hint


def typed_section(schema: type, cfg: Any, source: str, prefix: str = "") -> DictConfig:
    """``cfg`` (a mapping or None) merged into the dataclass ``schema``: defaults filled in, types checked.

    Args:
        schema (type): a config dataclass.
        cfg (DictConfig | Mapping | None): the section.
        source (str): what the config is, for the message.
        prefix (str): the section's key in the whole config, e.g. ``"active_selection."``. Default: "".

    Raises:
        ConfigSchemaError: (a ``ValueError``) for a value of the wrong type or an unknown key, naming the full key.

    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Teacher:
    ...     mode: str = "copy"
    >>> typed_section(Teacher, None, "model.teacher").mode
    'copy'
    """
    try:
        return OmegaConf.merge(OmegaConf.structured(schema), cfg if cfg is not None else {})
    except OmegaConfBaseException as err:
        key, reason = _list_entry_problem(schema, cfg, prefix) or (prefix + str(getattr(err, "full_key", "") or ""),
                                                                  str(err).splitlines()[0])
        raise ConfigSchemaError(f"{source}: {key or '<root>'}: {reason}. Fix the key or its value in the YAML or "
                                f"the command-line override (the schema: {schema.__module__}."
                                f"{schema.__qualname__})") from err


def _list_entry_problem(schema: type, cfg: Any, prefix: str) -> tuple[str, str] | None:
    """The full key and reason of the first bad entry of a list of dataclasses (``data.sources``) under ``schema``:
    OmegaConf names such an entry's key without its path."""
    if not isinstance(cfg, Mapping):
        return None
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        hint, value = hints[f.name], cfg.get(f.name)
        if typing.get_origin(hint) in (typing.Union, types.UnionType):  # X | None
            hint = next(a for a in typing.get_args(hint) if a is not type(None))
        if typing.get_origin(hint) is list and isinstance(value, Sequence) and not isinstance(value, str):
            item = (typing.get_args(hint) or (Any,))[0]
            for i, entry in enumerate(value if dataclasses.is_dataclass(item) else []):
                try:
                    OmegaConf.merge(OmegaConf.structured(item), entry)
                except OmegaConfBaseException as err:
                    return f"{prefix}{f.name}.{i}.{err.full_key}", str(err).splitlines()[0]
        elif dataclasses.is_dataclass(hint):
            found = _list_entry_problem(hint, value, f"{prefix}{f.name}.")
            if found:
                return found
    return None

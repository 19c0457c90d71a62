"""Safe instantiation of configs: a ``_target_`` may only name a class or function defined in an allowlisted package.

A config restored from a ``.nemo`` archive, a checkpoint's hyper-parameters or the command line can name any
importable callable in ``_target_`` (Hydra) or ``target`` / ``cls`` (NeMo's ``Serialization.from_config_dict``);
building it runs that code. Hydra resolves a dotted path by importing its first module and then walking attributes,
so checking the string's prefix is not enough: ``nemo_salad.checkpoint.init_weights.os.system`` starts with an
allowlisted package and ends at ``os.system``. :func:`resolve_target` walks the path the way Hydra does, calling
nothing, and accepts only

* modules reached under their own name (never a module imported into another one, like ``init_weights.os``);
* as the final object, a class or function whose own ``__module__`` is in an allowlisted package, or a classmethod
  of such a class whose function is defined there too (``nemo_salad.models.SaladModel.restore_from``);
* public names: no path component may start with ``_``.

:func:`check_targets` resolves every target of a config tree (interpolations resolved, the whole tree before
anything is built) and reports every problem at once, with its path; :func:`safe_instantiate` builds only after it.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

__all__ = ["ALLOWED_TARGET_PREFIXES", "UnsafeTargetError", "allow_target_prefix", "allowed_prefixes", "check_targets",
           "resolve_target", "safe_instantiate", "target_problems"]

#: Packages whose classes and functions a config may instantiate (a module matches ``p`` or ``p[:-1]``).
ALLOWED_TARGET_PREFIXES: tuple[str, ...] = ("nemo_salad.", "nemo.collections.", "megatron.core.", "torch.nn.",
                                            "torch.optim.", "lhotse.")
_TARGET_KEYS = ("_target_", "target", "cls")
_EXTRA_PREFIXES: list[str] = []
_MAX_DEPTH = 64  # deeper config trees are refused (a self-referencing interpolation would never end)


def allow_target_prefix(prefix: str) -> None:
    """Allow configs to instantiate classes under ``prefix`` too (e.g. your own package's adapters).

    Only code can extend the allowlist — a config cannot. ``prefix`` must end with a dot.

    Args:
        prefix (str): a package path ending with ``.``, e.g. ``"mylab.speech."``.

    Raises:
        ValueError: if ``prefix`` is not a package path ending with ``.``.

    >>> allow_target_prefix("mylab.speech.")
    >>> "mylab.speech." in allowed_prefixes()
    True
    >>> _EXTRA_PREFIXES.remove("mylab.speech.")
    """
    if not prefix.endswith(".") or len(prefix) < 3 or any(not part for part in prefix[:-1].split(".")):
        raise ValueError(f"target prefix {prefix!r} must be a module path ending with '.', e.g. 'mypackage.'")
    if prefix not in _EXTRA_PREFIXES:
        _EXTRA_PREFIXES.append(prefix)


def allowed_prefixes() -> tuple[str, ...]:
    """The built-in allowlist plus the prefixes added with :func:`allow_target_prefix`.

    >>> allowed_prefixes()[0]
    'nemo_salad.'
    """
    return ALLOWED_TARGET_PREFIXES + tuple(_EXTRA_PREFIXES)


class UnsafeTargetError(ValueError):
    """A config names something that is not a class or function defined in an allowlisted package."""


def _allowed_module(name: Any, allowed: tuple[str, ...]) -> bool:
    return isinstance(name, str) and any(name == p[:-1] or name.startswith(p) for p in allowed)


def _import(name: str, target: str) -> ModuleType:
    try:
        module = importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001 - any import failure means: cannot be resolved
        raise ImportError(f"cannot import module {name!r} of {target!r} ({type(exc).__name__}: {exc})") from exc
    if module.__name__ != name:
        raise UnsafeTargetError(f"importing {name!r} gives the module {module.__name__!r}")
    return module


def _check_final(obj: Any, allowed: tuple[str, ...]) -> Any:
    """``obj`` if it is a class, function or classmethod defined in an allowed package, else raise."""
    if isinstance(obj, ModuleType):
        raise UnsafeTargetError(f"names the module {obj.__name__!r}, not a class or function")
    if isinstance(obj, type) or inspect.isfunction(obj) or inspect.isbuiltin(obj):
        module, name = getattr(obj, "__module__", None), getattr(obj, "__qualname__", getattr(obj, "__name__", "?"))
    elif inspect.ismethod(obj) and isinstance(obj.__self__, type):  # a classmethod, reached through its class
        if not _allowed_module(obj.__self__.__module__, allowed):
            raise UnsafeTargetError(f"is a method of {obj.__self__.__module__}.{obj.__self__.__qualname__}, a class "
                                    "defined outside the allowed packages")
        module, name = obj.__func__.__module__, obj.__func__.__qualname__
    else:
        raise UnsafeTargetError(f"is a {type(obj).__name__} object, not a class or function")
    if not _allowed_module(module, allowed):
        raise UnsafeTargetError(f"resolves to {module}.{name}, defined outside the allowed packages")
    return obj


def resolve_target(target: str, allowed: tuple[str, ...] | None = None) -> Any:
    """The class or function a dotted ``_target_`` names, resolved as Hydra does — if it is safe to build.

    Nothing is called or instantiated; only modules under the allowed packages (and their parent packages) are
    imported, and only after the string passed the prefix check.

    Args:
        target (str): a dotted path, e.g. ``"nemo_salad.modules.adapters.MLPAdapter"``.
        allowed (tuple[str, ...] | None): allowed package prefixes. Default: :func:`allowed_prefixes`.

    Returns:
        the class, function or classmethod.

    Raises:
        UnsafeTargetError: if the path is outside the allowlist, has a private component, walks through a module
            imported into another one or through an object that is not a class, or ends at anything but a class or
            function defined in an allowed package.
        ImportError: if a module on the path cannot be imported or an attribute does not exist.

    >>> resolve_target("torch.nn.Linear").__name__
    'Linear'
    >>> resolve_target("nemo_salad.checkpoint.init_weights.os.system")
    Traceback (most recent call last):
    ...
    nemo_salad.parts.safe_config.UnsafeTargetError: reaches the module 'os' through 'nemo_salad.checkpoint...' ...
    """
    allowed = allowed or allowed_prefixes()
    parts = target.split(".") if isinstance(target, str) else []
    if not parts or any(not part for part in parts):
        raise UnsafeTargetError(f"{target!r} is not a dotted path such as 'package.module.Class'")
    private = [part for part in parts if part.startswith("_")]
    if private:
        raise UnsafeTargetError(f"has the private component {private[0]!r}: only public names may be instantiated")
    if not target.startswith(allowed):
        raise UnsafeTargetError("is outside the allowlist")
    obj: Any = _import(parts[0], target)
    for m in range(1, len(parts)):
        here, parent = ".".join(parts[: m + 1]), ".".join(parts[:m])
        if isinstance(obj, ModuleType):
            try:
                obj = getattr(obj, parts[m])
            except AttributeError:
                obj = _import(here, target)
            if isinstance(obj, ModuleType) and obj.__name__ != here:
                raise UnsafeTargetError(f"reaches the module {obj.__name__!r} through {parent!r} (a module imported "
                                        "into another one)")
        elif isinstance(obj, type):
            if not _allowed_module(obj.__module__, allowed):
                raise UnsafeTargetError(f"walks through {obj.__module__}.{obj.__qualname__}, a class defined outside "
                                        "the allowed packages")
            try:
                obj = getattr(obj, parts[m])
            except AttributeError as exc:
                raise ImportError(f"{parent!r} has no attribute {parts[m]!r}") from exc
        else:
            raise UnsafeTargetError(f"walks into {parent!r}, a {type(obj).__name__} object (only modules and classes "
                                    "may be on the path)")
    return _check_final(obj, allowed)


def _resolve_nemo_style(target: str, allowed: tuple[str, ...]) -> None:
    """NeMo's ``import_class_by_path`` imports everything before the last dot as a module: check that object too."""
    module_name, _, name = target.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except Exception:  # noqa: BLE001 - NeMo cannot use this path either
        return
    if hasattr(module, name):
        _check_final(getattr(module, name), allowed)


@dataclass
class _Target:
    path: str  # where in the config, e.g. "model.adapter._target_"
    value: Any  # the resolved value (the raw text if it could not be resolved)
    node: Any  # the mapping holding it
    error: str | None = None


_MISSING = object()


def _as_config(cfg: Any) -> Any:
    """``cfg`` as OmegaConf (as Hydra's ``instantiate`` sees a dict: interpolations then resolve), else as is."""
    if isinstance(cfg, (dict, list, tuple)) and not OmegaConf.is_config(cfg):
        try:
            return OmegaConf.create(list(cfg) if isinstance(cfg, tuple) else cfg, flags={"allow_objects": True})
        except Exception:  # noqa: BLE001 - not representable: walked as plain containers
            return cfg
    return cfg


def _child(node: Any, key: Any) -> tuple[Any, str | None]:
    """``node[key]`` with interpolations resolved; ``(_MISSING, None)`` for ``???``; ``(raw, error)`` on failure."""
    if not OmegaConf.is_config(node):
        return node[key], None
    if OmegaConf.is_missing(node, key):
        return _MISSING, None
    try:
        return node[key], None
    except Exception as exc:  # noqa: BLE001 - reported (for a target) with the reason
        raw = node._get_node(key)._value()
        return raw, f"the interpolation {raw!r} cannot be resolved ({type(exc).__name__}: {exc})"


def _walk(node: Any, path: str, found: list[_Target], seen: dict[int, Any], depth: int = 0) -> None:
    if id(node) in seen:
        return
    seen[id(node)] = node  # kept alive, so an id is never reused during the walk
    if depth > _MAX_DEPTH:
        found.append(_Target(path, None, node, f"nested deeper than {_MAX_DEPTH} levels"))
        return
    if isinstance(node, (DictConfig, dict)):
        keys: Any = list(node.keys())
    elif isinstance(node, (ListConfig, list, tuple)):
        keys = range(len(node))
    else:
        return
    for key in keys:
        here = f"{path}[{key}]" if isinstance(keys, range) else (f"{path}.{key}" if path else str(key))
        value, error = _child(node, key)
        if value is _MISSING:
            continue
        if not isinstance(keys, range) and key in _TARGET_KEYS and (error or isinstance(value, str)):
            found.append(_Target(here, value, node, error))
        elif error is None:
            _walk(value, here, found, seen, depth + 1)


def _targets(cfg: Any) -> list[_Target]:
    found: list[_Target] = []
    _walk(_as_config(cfg), "", found, {})
    return found


def _problem(target: _Target, allowed: tuple[str, ...]) -> tuple[Any, str | None]:
    """``(resolved object or None, problem or None)`` of one target."""
    if target.error:
        return None, target.error
    try:
        obj = resolve_target(target.value, allowed)
        if not target.path.endswith("_target_"):
            _resolve_nemo_style(target.value, allowed)
    except UnsafeTargetError as exc:
        return None, str(exc)
    except ImportError as exc:
        return None, f"cannot import ({exc})"
    return obj, None


def check_targets(cfg: Any, source: str = "config", allowed: tuple[str, ...] | None = None) -> None:
    """Raise unless every ``_target_`` / ``target`` / ``cls`` in ``cfg`` resolves to an allowed class or function.

    The whole tree is checked (interpolations resolved) before the caller builds anything, and every offending
    entry is reported at once, with its path in the config. See :func:`resolve_target` for the rule.

    Args:
        cfg: a DictConfig, dict or list (nested).
        source (str): where the config came from (file name), for the message. Default: "config".
        allowed (tuple[str, ...] | None): allowed package prefixes. Default: :func:`allowed_prefixes`.

    Raises:
        UnsafeTargetError: listing each ``path='target': reason``.

    >>> check_targets({"adapter": {"_target_": "nemo_salad.modules.adapters.MLPAdapter"}})
    >>> check_targets({"x": {"_target_": "os.system"}}, source="m.nemo")
    Traceback (most recent call last):
    ...
    nemo_salad.parts.safe_config.UnsafeTargetError: m.nemo: refusing to instantiate x._target_='os.system': ...
    """
    allowed = allowed or allowed_prefixes()
    bad = [(t, problem) for t in _targets(cfg) for _, problem in [_problem(t, allowed)] if problem]
    if bad:
        listing = "; ".join(f"{t.path}={t.value!r}: {problem}" for t, problem in bad)
        raise UnsafeTargetError(f"{source}: refusing to instantiate {listing}. A target must be a public class or "
                                f"function defined in one of the allowed packages ({', '.join(allowed)}); code can "
                                "add a package with nemo_salad.parts.safe_config.allow_target_prefix")


def safe_instantiate(cfg: Any, source: str = "config", **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` after :func:`check_targets` of the whole config (and of ``kwargs``).

    Args:
        cfg: the config node to build (DictConfig or dict with a ``_target_``).
        source (str): where the config came from, for error messages. Default: "config".
        **kwargs: passed to ``instantiate`` (Hydra merges them into the config).

    Returns:
        the built object.

    Raises:
        UnsafeTargetError: see :func:`check_targets`; nothing is built then.
        pickle.UnpicklingError: a refusal of the safe checkpoint readers while building (e.g. a measure that loads
            a crafted checkpoint), raised as it is rather than wrapped in Hydra's ``InstantiationException``.

    >>> safe_instantiate({"_target_": "torch.nn.Linear", "in_features": 2, "out_features": 3}).out_features
    3
    """
    import pickle

    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    check_targets(cfg, source)
    if kwargs:
        check_targets(kwargs, f"{source} (keyword arguments)")
    if isinstance(cfg, dict):
        cfg = OmegaConf.create(cfg)
    try:
        return instantiate(cfg, **kwargs)
    except InstantiationException as exc:
        cause = exc.__cause__
        while isinstance(cause, InstantiationException):
            cause = cause.__cause__
        if isinstance(cause, (UnsafeTargetError, pickle.UnpicklingError)):  # a safety refusal: say it plainly
            raise cause from exc
        raise


def target_problems(cfg: Any, source: str = "config", injected: tuple[str, ...] = ("in_dim", "out_dim")) -> list[str]:
    """Every problem with the targets of ``cfg``, without building anything.

    Checks each target with the rule of :func:`check_targets`, and that the sibling keys of a ``_target_`` bind to
    its signature (names in ``injected`` are supplied by the code at build time and may be missing).

    Args:
        cfg: a DictConfig, dict or list (nested).
        source (str): where the config came from, for the messages. Default: "config".
        injected (tuple[str, ...]): arguments the code passes itself. Default: ("in_dim", "out_dim").

    Returns:
        list[str]: one message per problem (empty when the config is sound).

    >>> target_problems({"a": {"_target_": "torch.nn.Linear", "in_features": 2, "bias": True, "outs": 3}})
    ["config: a._target_='torch.nn.Linear': got an unexpected keyword argument 'outs'"]
    """
    problems: list[str] = []
    allowed = allowed_prefixes()
    for target in _targets(cfg):
        where = f"{source}: {target.path}={target.value!r}"
        obj, problem = _problem(target, allowed)
        if problem:
            problems.append(f"{where}: {problem}")
            continue
        if not target.path.endswith("_target_"):
            continue
        names = [k for k in target.node.keys() if k != "_target_" and not str(k).startswith("_")]
        try:
            signature = inspect.signature(obj)
            signature.bind_partial(**{str(k): None for k in names})
        except (TypeError, ValueError) as exc:
            problems.append(f"{where}: {exc}")
            continue
        required = [p.name for p in signature.parameters.values() if p.default is inspect.Parameter.empty
                    and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        missing = [name for name in required if name not in names and name not in injected]
        if missing:
            problems.append(f"{where}: missing required argument(s) {missing}")
    return problems

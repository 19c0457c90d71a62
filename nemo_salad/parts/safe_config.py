"""Safe instantiation of configs: only ``_target_`` classes under an allowlist may be built.

A config restored from a ``.nemo`` archive or given on the command line can name any importable callable in
``_target_`` (Hydra) or ``target`` / ``cls`` (NeMo's ``Serialization.from_config_dict``); building it runs
that code. NeMo 3 refuses targets outside ``ALLOWED_TARGET_PREFIXES``; NeMo 2.7 does not, so nemo_salad
checks every config before anything in it is instantiated.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

__all__ = ["ALLOWED_TARGET_PREFIXES", "UnsafeTargetError", "allow_target_prefix", "allowed_prefixes", "check_targets",
           "safe_instantiate", "target_problems"]

#: Module prefixes whose classes and functions a config may instantiate.
ALLOWED_TARGET_PREFIXES: tuple[str, ...] = ("nemo_salad.", "nemo.collections.", "megatron.core.", "torch.nn.",
                                            "torch.optim.", "lhotse.")
_TARGET_KEYS = ("_target_", "target", "cls")
_EXTRA_PREFIXES: list[str] = []


def allow_target_prefix(prefix: str) -> None:
    """Allow configs to instantiate classes under ``prefix`` too (e.g. your own package's adapters).

    Only code can extend the allowlist — a config cannot. ``prefix`` must end with a dot.

    >>> allow_target_prefix("mylab.speech.")
    >>> "mylab.speech." in allowed_prefixes()
    True
    >>> _EXTRA_PREFIXES.remove("mylab.speech.")
    """
    if not prefix.endswith(".") or prefix.count(".") < 1 or len(prefix) < 3:
        raise ValueError(f"target prefix {prefix!r} must be a module path ending with '.', e.g. 'mypackage.'")
    if prefix not in _EXTRA_PREFIXES:
        _EXTRA_PREFIXES.append(prefix)


def allowed_prefixes() -> tuple[str, ...]:
    """The built-in allowlist plus the prefixes added with :func:`allow_target_prefix`."""
    return ALLOWED_TARGET_PREFIXES + tuple(_EXTRA_PREFIXES)


class UnsafeTargetError(ValueError):
    """A config names a class outside the allowlist."""


def _walk(node: Any, path: str, found: list[tuple[str, str, Any]]) -> None:
    """Collect ``(path, target, owning mapping)`` for every target key below ``node``."""
    if isinstance(node, (DictConfig, dict)):
        items = node.items_ex(resolve=False) if isinstance(node, DictConfig) else node.items()
        for key, value in items:
            here = f"{path}.{key}" if path else str(key)
            if key in _TARGET_KEYS and isinstance(value, str):
                found.append((here, value, node))
            else:
                _walk(value, here, found)
    elif isinstance(node, (ListConfig, list, tuple)):
        for i, value in enumerate(node):
            _walk(value, f"{path}[{i}]", found)


def check_targets(cfg: Any, source: str = "config", allowed: tuple[str, ...] | None = None) -> None:
    """Raise if any ``_target_`` / ``target`` / ``cls`` string in ``cfg`` is outside ``allowed``.

    Every offending entry is reported at once, with its path in the config.

    Args:
        cfg: a DictConfig, dict or list (nested).
        source (str): where the config came from (file name), for the message.
        allowed (tuple[str, ...] | None): allowed module prefixes. Default: :func:`allowed_prefixes`.

    Raises:
        UnsafeTargetError: listing each ``path: target``.

    >>> check_targets({"adapter": {"_target_": "nemo_salad.modules.adapters.MLPAdapter"}})
    >>> check_targets({"x": {"_target_": "os.system"}}, source="m.nemo")
    Traceback (most recent call last):
    ...
    nemo_salad.parts.safe_config.UnsafeTargetError: m.nemo: refusing to instantiate x._target_='os.system' ...
    """
    allowed = allowed or allowed_prefixes()
    found: list[tuple[str, str, Any]] = []
    _walk(cfg, "", found)
    bad = [(path, target) for path, target, _ in found if not target.startswith(allowed)]
    if bad:
        listing = "; ".join(f"{path}={target!r}" for path, target in bad)
        raise UnsafeTargetError(f"{source}: refusing to instantiate {listing} (allowed module prefixes: "
                                f"{', '.join(allowed)})")


def safe_instantiate(cfg: Any, source: str = "config", **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` after :func:`check_targets`.

    >>> safe_instantiate({"_target_": "torch.nn.Linear", "in_features": 2, "out_features": 3}).out_features
    3
    """
    from hydra.utils import instantiate

    check_targets(cfg, source)
    if isinstance(cfg, dict):
        cfg = OmegaConf.create(cfg)
    return instantiate(cfg, **kwargs)


def target_problems(cfg: Any, source: str = "config", injected: tuple[str, ...] = ("in_dim", "out_dim")) -> list[str]:
    """Every problem with the ``_target_`` entries of ``cfg``, without building anything.

    Checks that each target is allowed, imports, and that the sibling keys bind to its signature (names
    in ``injected`` are supplied by the code at build time and may be missing).

    Returns:
        list[str]: one message per problem (empty when the config is sound).

    >>> target_problems({"a": {"_target_": "torch.nn.Linear", "in_features": 2, "bias": True, "outs": 3}})
    ["config: a._target_='torch.nn.Linear': got an unexpected keyword argument 'outs'"]
    """
    import importlib
    import inspect

    problems: list[str] = []
    found: list[tuple[str, str, Any]] = []
    _walk(cfg, "", found)
    for path, target, node in found:
        if not path.endswith("_target_"):
            continue
        where = f"{source}: {path}={target!r}"
        if not target.startswith(allowed_prefixes()):
            problems.append(f"{where}: outside the allowlist {allowed_prefixes()}")
            continue
        module_name, _, attr = target.rpartition(".")
        try:
            obj = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            problems.append(f"{where}: cannot import ({exc})")
            continue
        kwargs = {k: v for k, v in node.items() if k != "_target_" and not str(k).startswith("_")}
        try:
            inspect.signature(obj).bind_partial(**kwargs)
        except TypeError as exc:
            problems.append(f"{where}: {exc}")
            continue
        params = inspect.signature(obj).parameters.values()
        required = [p.name for p in params if p.default is inspect.Parameter.empty
                    and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        missing = [name for name in required if name not in kwargs and name not in injected]
        if missing:
            problems.append(f"{where}: missing required argument(s) {missing}")
    return problems

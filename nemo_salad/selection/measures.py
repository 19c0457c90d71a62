"""Build the misalignment measure of a selection round from a trained checkpoint (for the offline CLI)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["PATH_ARGUMENTS", "ConstantMeasure", "import_object", "misalignment_from_checkpoint"]

#: arguments of :func:`misalignment_from_checkpoint` that name a class or function by dotted path
PATH_ARGUMENTS = ("model_class", "metric")


def import_object(path: str) -> Any:
    """The class or function at a dotted path ``package.module.name``, under the rule of config ``_target_`` s
    (:func:`nemo_salad.parts.safe_config.resolve_target`: defined in an allowed package, reached without passing
    through another module).

    Raises:
        UnsafeTargetError: naming the path when it is outside the allowed packages or not a class or function.
        ImportError: naming the path when the module or attribute does not exist.

    >>> import_object("nemo_salad.selection.measures.ConstantMeasure")(0.5)(None)
    0.5
    """
    from nemo_salad.parts.safe_config import UnsafeTargetError, resolve_target

    try:
        return resolve_target(path)
    except UnsafeTargetError as err:
        raise UnsafeTargetError(f"{path!r}: {err}") from err
    except ImportError as err:
        raise ImportError(f"cannot import {path!r}: {err}") from err


def misalignment_from_checkpoint(
    checkpoint: str,
    model_class: str = "nemo_salad.models.SaladModel",
    metric: str = "nemo_salad.metrics.misalignment_fn",
    map_location: str = "cpu",
    **metric_kwargs: Any,
) -> Callable[[Any], float]:
    """Load a trained model and wrap it in the Stage I misalignment metric.

    Args:
        checkpoint (str): a Lightning ``.ckpt`` file (loaded with ``torch.load(weights_only=True)``; the model is
            rebuilt as ``model_class(**hyper_parameters)`` and its ``state_dict`` loaded strictly), the folder of
            a ``MegatronStrategy`` checkpoint (or its ``<name>.ckpt`` path; rebuilt from the hyper-parameters stored
            with it, weights loaded at this process's tensor-parallel size) or a ``.nemo``.
        model_class (str): dotted path of the LightningModule class. Default: "nemo_salad.models.SaladModel".
        metric (str): dotted path of ``metric(model, **metric_kwargs) -> Callable[[CutSet], float]``.
            Default: "nemo_salad.metrics.misalignment_fn".
        map_location (str): device for the weights. Default: "cpu".
        **metric_kwargs: passed to the metric factory.

    Returns:
        Callable[[CutSet], float]: M of a probe CutSet, computed with the model in eval mode.

    Raises:
        FileNotFoundError: if the checkpoint does not exist.
        ImportError: if the class or metric cannot be imported.
        UnsafeTargetError: if ``model_class`` or ``metric`` is not a class or function of the allowed packages.

    >>> measure = misalignment_from_checkpoint("out/stage1/last.ckpt")  # doctest: +SKIP
    >>> measure(probe_cuts)  # doctest: +SKIP
    0.131
    """
    from nemo_salad.checkpoint.init_weights import load_trained

    cls, factory = import_object(model_class), import_object(metric)
    try:
        model = load_trained(checkpoint, cls, map_location)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{err} (set measure.checkpoint)") from err
    return factory(model.eval(), **metric_kwargs)


class ConstantMeasure:
    """Every probe set gets the same M: for dry runs of the pipeline without a model (the target distribution
    then equals the cluster shares, whatever γ).

    >>> ConstantMeasure(0.5)(None)
    0.5
    """

    def __init__(self, value: float = 1.0) -> None:
        if value <= 0:
            raise ValueError(f"value must be > 0, got {value}")
        self.value = float(value)

    def __call__(self, cuts: Any) -> float:
        return self.value

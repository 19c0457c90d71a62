"""LightningModules that wire the parts together."""

from nemo_salad.models.salad import SaladModel

__all__ = ["SaladModel"]

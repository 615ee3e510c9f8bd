"""The network's command-line face: :class:`NetworkFlags`, generated from :class:`~cwdm.model.unet.UNetConfig`.

The network core (:mod:`cwdm.model.unet`) knows nothing of flags; the commands that build or load a
network (``cwdm train``, ``sample``, ``auto``, ``export``, ``demo``) inherit these fields in their
configs (:class:`cwdm.training.config.TrainConfig`, :class:`cwdm.inference.flags.ModelFlags`), so a
new :class:`UNetConfig` field becomes a flag of every one of them, with the same default and help.
"""

from __future__ import annotations

from dataclasses import field, fields, make_dataclass
from typing import get_type_hints

from .unet import UNetConfig, in_channels_for

NOT_FLAGS = ("in_channels", "out_channels", "dropout")
""":class:`UNetConfig` fields that are not command-line flags: ``in_channels`` follows from the
task (:func:`~cwdm.model.unet.in_channels_for`), ``out_channels`` is always the 8 subbands,
``dropout`` stays 0 as in the released training."""


def _unet_config(self, num_conditions: int) -> UNetConfig:
    """The :class:`UNetConfig` of these flags for a network taking ``num_conditions`` condition volumes."""
    chosen = {f.name: getattr(self, f.name) for f in fields(NetworkFlags)}
    return UNetConfig(**chosen, in_channels=in_channels_for(num_conditions))


def _network_flags() -> type:
    """``NetworkFlags``: the fields of :class:`UNetConfig` but :data:`NOT_FLAGS`, same defaults and help."""
    hints = get_type_hints(UNetConfig)
    chosen = [(f.name, hints[f.name], field(default=f.default, metadata=f.metadata))
              for f in fields(UNetConfig) if f.name not in NOT_FLAGS]
    doc = ("Network flags shared by the commands (defaults: the released network); generated from "
           ":class:`UNetConfig` without " + ", ".join(NOT_FLAGS) + ".")
    namespace = {"unet_config": _unet_config, "__doc__": doc, "__module__": __name__}
    return make_dataclass("NetworkFlags", chosen, namespace=namespace)


NetworkFlags = _network_flags()

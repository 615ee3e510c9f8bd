"""Flags shared by the synthesis commands (``cwdm sample``, ``cwdm auto``) and the Python API.

:class:`SamplingFlags` holds how volumes are sampled and written,
:class:`ModelFlags` the network of a bare released state_dict. The commands'
configs derive from both; :mod:`cwdm.api` builds them directly.

The sampling flags are generated from :class:`cwdm.inference.synthesis.SamplingOptions` (its fields,
defaults and help; one flag per sampler option of :data:`cwdm.model.samplers.SAMPLERS`), as the
network flags are from :class:`cwdm.model.unet.UNetConfig`: a setting is declared once.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, make_dataclass
from typing import Any, FrozenSet, List, Optional, Tuple, get_type_hints

from ..config import given_field
from ..model.samplers import registry_options
from .synthesis import OPTIONS_FIELD, SamplingOptions
from ..model.flags import NetworkFlags


@dataclass
class ModelFlags(NetworkFlags):
    """Network configuration of a bare released state_dict (cwdm checkpoints carry their own).

    ``flags_given``: the flags typed on the command line (:func:`cwdm.config.given_field`); those of
    the network are checked against a bare state_dict. None (the Python API): none.
    """

    flags_given: Optional[FrozenSet[str]] = given_field()


@dataclass
class _RunFlags:
    """What a synthesis run sets besides the sampling: reading, writing, device, progress.

    A field's ``after`` metadata places its flag after that sampling flag (in ``--help``); the
    fields without it follow the one before them.
    """

    num_samples: int = field(default=1, metadata={"help": "accepted for compatibility with the reference; unused",
                                                   "after": "ensemble"})
    batch_size: int = field(default=1, metadata={"help": "cases per network call (same-shape cases)", "after": "seed"})
    postprocess: bool = field(default=True, metadata={"help": "clamp and zero outside the brain (reference)",
                                                       "after": "clip_denoised"})
    ema: bool = field(default=True, metadata={"help": "use EMA weights of a cwdm checkpoint"})
    overwrite: bool = field(default=False, metadata={"help": "redo cases whose output exists"})
    continue_anyway: bool = field(default=False, metadata={
        "help": "add results to a folder whose recorded results were made with other settings "
                "(cwdm_provenance.json then lists both)"})
    num_workers: int = field(default=1, metadata={"help": "DataLoader workers reading cases"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda or cuda:N"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar", "after": "ensemble_batch"})


def _flag_fields() -> Tuple[List[tuple], List[Tuple[str, str]]]:
    """The flag fields (``make_dataclass`` triples) and ``(flag, SamplingOptions field)`` pairs.

    Each :class:`SamplingOptions` field is one flag named as its ``flag`` metadata says (else as the
    field), with its default and help; its ``sampler_options`` field is one flag per registered
    sampler option (that option's type, default and help); the :class:`_RunFlags` are placed among
    them as their ``after`` metadata says.
    """
    chosen, sources = [], []
    hints = get_type_hints(SamplingOptions)
    for f in fields(SamplingOptions):
        if f.name == OPTIONS_FIELD:
            for opt in registry_options().values():
                chosen.append((opt.name, type(opt.default), field(default=opt.default, metadata={"help": opt.help})))
            continue
        name = f.metadata.get("flag", f.name)
        metadata = {k: v for k, v in f.metadata.items() if k != "flag"}
        chosen.append((name, hints[f.name], field(default=f.default, metadata=metadata)))
        sources.append((name, f.name))
    hints, previous = get_type_hints(_RunFlags), None
    for f in fields(_RunFlags):
        anchor = f.metadata.get("after", previous)
        at = [name for name, _, _ in chosen].index(anchor) + 1 if anchor else len(chosen)
        metadata = {k: v for k, v in f.metadata.items() if k != "after"}
        chosen.insert(at, (f.name, hints[f.name], field(default=f.default, metadata=metadata)))
        previous = f.name
    return chosen, sources


def _sampling_flags() -> type:
    """``SamplingFlags``: the fields of :class:`SamplingOptions` (sampler options one by one), then
    those of :class:`_RunFlags`; ``options()`` gives the :class:`SamplingOptions` they choose."""
    chosen, sources = _flag_fields()
    option_flags = tuple(registry_options())

    def options(self) -> SamplingOptions:
        """The sampler settings these flags choose (a :class:`SamplingOptions`, not yet validated)."""
        values: dict[str, Any] = {name: getattr(self, flag) for flag, name in sources}
        return SamplingOptions(**values, **{OPTIONS_FIELD: {name: getattr(self, name) for name in option_flags}})

    doc = ("Sampler, ensemble, post-processing, device and progress settings of a synthesis run; generated "
           "from :class:`SamplingOptions` (one flag per sampler option) and :class:`_RunFlags`.")
    return make_dataclass("SamplingFlags", chosen, namespace={"options": options, "__doc__": doc,
                                                              "__module__": __name__})


SamplingFlags = _sampling_flags()

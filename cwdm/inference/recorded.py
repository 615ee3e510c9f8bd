"""The sampler a checkpoint records: a distilled student's (``cwdm distill``), used when none is chosen.

A student checkpoint says which sampler, with how many steps, it was trained for
(:func:`cwdm.model.checkpoint.stored_sampler`). ``cwdm sample``, ``cwdm auto`` and the API sample
with it when the user gives neither ``--sampler`` nor ``--sampling_steps`` (the API: neither
``sampler=`` nor ``steps=``), and say so in one line; a sampler the user chooses always wins. One run
uses one sampler (it is one setting of the provenance record), so checkpoints of one run that
record different samplers (or some none) need the user's choice.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Mapping, Optional, Tuple

from ..errors import CwdmError, option
from ..model.samplers import network_calls
from .synthesis import SamplingOptions

SAMPLER_FLAGS = ("sampler", "sampling_steps")
"""The flags that choose the sampler (the sampler's own options, e.g. ``--eta``, do not)."""


def sampler_chosen(flags) -> bool:
    """Whether the user chose the sampler: ``--sampler`` or ``--sampling_steps`` typed (the config's
    ``flags_given``); for a config built without a command line (``flags_given`` None), either of
    them differing from its default."""
    given = getattr(flags, "flags_given", None)
    if given is not None:
        return bool(set(SAMPLER_FLAGS) & set(given))
    defaults = SamplingOptions()
    return flags.sampler != defaults.sampler or flags.sampling_steps != defaults.steps


def recorded_options(asked: SamplingOptions, models: Mapping[Path, object]
                     ) -> Tuple[SamplingOptions, Optional[str]]:
    """The options of a run whose user chose no sampler, and the line that says a recorded one is used.

    Args:
        asked: the options as given (their sampler and steps are the defaults).
        models: checkpoint path -> :class:`cwdm.model.checkpoint.LoadedModel` of every checkpoint the run uses.

    Returns:
        ``(asked, None)`` when no checkpoint records a sampler; else ``asked`` with the recorded sampler and
        steps (validated) and the line ``note: <paths>: sampling with the sampler the checkpoint records ...``.

    Raises:
        CwdmError: the checkpoints record different samplers, or some record one and others none.
    """
    records = {Path(p): loaded.meta.get("sampler") for p, loaded in models.items()}
    found = {p: r for p, r in records.items() if r is not None}
    if not found:
        return asked, None
    kinds = {(r["name"], r["steps"]) if r is not None else None for r in records.values()}
    if len(kinds) > 1:
        shown = "; ".join(f"{p.name}: {r['name']} {r['steps']}" if r is not None
                          else f"{p.name}: none (the default {asked.sampler} {asked.steps})" for p, r in records.items())
        raise CwdmError(f"the checkpoints record different samplers ({shown}); choose one for all with "
                        f"{option('sampler')} and {option('sampling_steps')}")
    name, steps = next(iter(kinds))
    options = replace(asked, sampler=name, steps=steps)
    options.validate()
    calls = network_calls(name, steps)
    line = (f"note: {', '.join(map(str, found))}: sampling with the sampler the checkpoint records, {name} with "
            f"{steps} steps ({calls} network call{'' if calls == 1 else 's'} per case); {option('sampler')} or "
            f"{option('sampling_steps')} chooses another")
    return options, line

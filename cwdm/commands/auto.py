"""``cwdm auto``: complete case folders that miss a modality (the BraSyn use).

For each case folder the missing modality is detected, the checkpoint for it
is chosen (``--model t1n=PATH``, ``--model_t1n PATH`` ... or one file per
contrast in ``--models_dir``; a unified ``--model any=PATH`` for whatever has no
checkpoint of its own), the modality is synthesized from the present ones and
written as ``<case>-<modality>.nii.gz`` into the case folder (or
``--output_dir/<case>/``) with the header and affine of a present modality.
Existing files are never touched; files cwdm synthesized earlier (their header
says so) are kept but never used as inputs, so a rerun after an interruption
writes what an uninterrupted run would. Cases with nothing missing are skipped;
cases missing two or more modalities (unless a unified checkpoint trained with
dropped conditions is given: :mod:`cwdm.inference.completion`), lacking a checkpoint or
with bad files are reported and skipped. Exit status 0 only if every case ends
up complete.
"""

from __future__ import annotations

import sys
from shlex import quote
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Tuple

from ..naming import ANY, MODALITIES
from ..inference.flags import ModelFlags, SamplingFlags
from ..errors import CwdmError
from ..inference.completion import find_checkpoints, parse_model_entries
from ..inference.pipeline import Pipeline
from ..inference.recorded import sampler_chosen
from ..inference.steps import check_output_dir
from ..runtime import dist_from_env, select_device
from ..inference.synthesis import AUTO_THRESHOLD

HELP = "complete case folders that miss a modality (BraSyn use)"


@dataclass
class AutoConfig(SamplingFlags, ModelFlags):
    """``cwdm auto``'s flags: the shared sampling and network flags plus folders and checkpoints."""

    data_dir: Path = field(default=Path("data/pseudo_validation"), metadata={"help": "folder of case folders"})
    output_dir: Optional[Path] = field(default=None, metadata={"help": "write here instead of into the case folders"})
    models_dir: Optional[Path] = field(default=None, metadata={"help": "folder with one checkpoint per contrast, "
                                                    "named as published (t1_gen.pt, t1ce_gen.pt, t2_gen.pt, "
                                                    "flair_gen.pt) or brats_<contrast>_*.pt"})
    model_t1n: Optional[Path] = field(default=None, metadata={"help": "checkpoint that synthesizes t1n"})
    model_t1c: Optional[Path] = field(default=None, metadata={"help": "checkpoint that synthesizes t1c"})
    model_t2w: Optional[Path] = field(default=None, metadata={"help": "checkpoint that synthesizes t2w"})
    model_t2f: Optional[Path] = field(default=None, metadata={"help": "checkpoint that synthesizes t2f"})
    model: Tuple[str, ...] = field(default=(), metadata={
        "help": "checkpoint as MODALITY=PATH, or PATH (modality read from the checkpoint or its name); "
                "repeatable", "repeatable": True})
    modalities: Tuple[str, ...] = field(default=MODALITIES, metadata={"help": "modality names"})
    threshold: float = field(default=AUTO_THRESHOLD, metadata={"help": "zero values at or below this (reference)"})


CONFIG = AutoConfig
# what it writes (checked before it starts): (config field, "dir" or "file")
DESTINATIONS = [("output_dir", "dir")]
ALIASES = {"model_channels": ["num_channels"]}


def checkpoints_of(cfg: AutoConfig) -> Dict[str, Path]:
    """Modality -> checkpoint, from ``--model`` and the ``--model_<m>`` flags first, then ``--models_dir``.

    Args:
        cfg: the command's settings.

    Returns:
        What :func:`cwdm.inference.steps.find_checkpoints` finds.
    """
    explicit = parse_model_entries(cfg.model, cfg.modalities)
    for mod in cfg.modalities:
        flag = getattr(cfg, f"model_{mod}", None)
        if flag is not None and mod in explicit and Path(flag) != explicit[mod]:
            raise CwdmError(f"two checkpoints for {mod}: --model_{mod} {flag} and --model {explicit[mod]}")
        explicit.setdefault(mod, flag)
    return find_checkpoints(cfg.models_dir, explicit, cfg.modalities)


def auto(cfg: AutoConfig, next_step: bool = False) -> int:
    """Complete the cases of ``cfg.data_dir`` that miss modalities (:class:`cwdm.inference.pipeline.Pipeline`).

    Args:
        cfg: the command's settings.
        next_step: end the closing line with the command to run next (``cwdm auto`` does).

    Returns:
        0 when every case ends up complete, 1 otherwise.
    """
    from ..feedback import write_line

    info = dist_from_env()
    device = select_device(cfg.device, info)
    options = cfg.options()
    options.validate()
    say = (lambda msg: print(msg, file=sys.stderr)) if info.is_main else (lambda msg: None)
    if cfg.output_dir is not None:
        check_output_dir(cfg.output_dir, cfg.data_dir, in_place_ok=True)
    pipeline = Pipeline(checkpoints_of(cfg), options, device, cfg, command="auto", modalities=cfg.modalities,
                        ema=cfg.ema, postprocess=cfg.postprocess, threshold=cfg.threshold, overwrite=cfg.overwrite,
                        batch_size=cfg.batch_size, num_workers=cfg.num_workers, progress=cfg.progress and info.is_main,
                        say=say, clock_write=write_line if info.is_main else (lambda msg: None),
                        continue_anyway=cfg.continue_anyway, rank=info.rank, world_size=info.world_size,
                        sampler_chosen=sampler_chosen(cfg))
    # each rank takes its share of the cases before looking at outputs other ranks may be writing
    plan = pipeline.completion(cfg.data_dir, cfg.output_dir)
    share = f" (rank {info.rank} of {info.world_size})" if info.enabled else ""
    pipeline.announce(plan)
    say(f"cwdm auto{share}: {plan.cases} cases: {plan.complete} complete, {plan.unusable} cannot be completed, "
        f"to synthesize: " + (", ".join(f"{m} x{len(c)}" + (" (unified)" if key == ANY else "")
                                        for (m, key), c in plan.groups.items()) or "nothing"))
    try:
        result = pipeline.run(plan)
    except OSError as exc:  # what the writers did not name already (a case folder that cannot be made ...)
        raise CwdmError(f"{exc.filename or cfg.data_dir}: {exc.strerror or exc}; free space or make it writable, "
                        f"then rerun the same command (written cases are kept)") from None
    written = [name for name, _, _ in result.written]
    where = (f"into the case folders of {cfg.data_dir}" if cfg.output_dir is None
             else f"under {cfg.output_dir}/<case>/")
    status = 0 if plan.unusable + result.failed == 0 else 1
    after = _next_step(cfg, status) if next_step else ""
    say(f"completed {len(set(written))} cases ({len(written)} files written {where}); {plan.complete} were already "
        f"complete; {plan.unusable + result.failed} could not be completed{after}")
    return status


def _next_step(cfg: AutoConfig, status: int) -> str:
    """The end of the closing line: what to run next."""
    if status == 0:
        pred = cfg.data_dir if cfg.output_dir is None else cfg.output_dir
        return (f"; next: cwdm evaluate --pred_dir {quote(str(pred))} --ref_dir COMPLETE_DIR (the folder "
                f"with the complete cases)")
    return "; fix the cases above, then rerun the same command (completed cases are skipped)"


def run(cfg: AutoConfig) -> int:
    """``cwdm auto``: :func:`auto` with the next step in its closing line; returns the exit status."""
    return auto(cfg, next_step=True)

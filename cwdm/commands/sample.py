"""``cwdm sample``: synthesize the target contrast of every case of a folder (paired mode).

For every case the conditions are read, preprocessed exactly as for the
released models, the target is sampled and written back on the original grid
with the header and affine of the first condition as
``<output_dir>/<case>/<case>-<target>.nii.gz`` (plus ``<case>-<target>_std.nii.gz``
with ``--ensemble K > 1``). Under ``torchrun`` the cases are split across ranks.

With an inpainting checkpoint (``cwdm train --inpainting True``; its task says so) the folder is
in the inpainting challenge's layout (:mod:`cwdm.data.inpainting`) and each case's fill is written
as ``<output_dir>/<case>-t1n-inference.nii.gz`` (flat, as the challenge collects them), or beside
its inputs when ``--output_dir`` is the data folder itself (:mod:`cwdm.inference.inpaint`). With an
insertion checkpoint (``cwdm train --insertion True``) each case folder holds ``<case>-t1n`` and the labels
drawn (``<case>-labels``, else ``<case>-seg``; optionally the region ``<case>-mask``) and the scan with the
tumour is written as ``<output_dir>/<case>/<case>-t1n-inserted.nii.gz``, or into the case folders when
``--output_dir`` is the data folder (:mod:`cwdm.data.insertion`, :mod:`cwdm.inference.insert`).
"""

from __future__ import annotations

import sys
from shlex import quote
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Tuple

from ..naming import MODALITIES
from ..inference.flags import ModelFlags, SamplingFlags
from ..inference.pipeline import Pipeline
from ..inference.recorded import sampler_chosen
from ..inference.steps import check_output_dir
from ..runtime import dist_from_env, select_device

HELP = "synthesize the target contrast of every case of a folder (paired mode)"


@dataclass
class SampleConfig(SamplingFlags, ModelFlags):
    """``cwdm sample``'s flags: the shared sampling and network flags plus the paired-mode folders."""

    data_dir: Path = field(default=Path("data/validation"), metadata={"help": "BraTS-layout input folder"})
    model_path: Optional[Path] = field(default=None, metadata={"help": "checkpoint (released state_dict or cwdm)"})
    contr: Optional[str] = field(default=None, metadata={"help": "target contrast (read from cwdm checkpoints)"})
    output_dir: Path = field(default=Path("results"), metadata={
        "help": "where <case>/<case>-<target>.nii.gz go (an inpainting checkpoint: <case>-t1n-inference.nii.gz, "
                "flat; an insertion checkpoint: <case>/<case>-t1n-inserted.nii.gz; the data folder itself: "
                "beside the inputs)"})
    modalities: Tuple[str, ...] = field(default=MODALITIES, metadata={"help": "modality names"})
    save_target: bool = field(default=False, metadata={"help": "also write the preprocessed target (_target)"})


CONFIG = SampleConfig
# what it writes (checked before it starts): (config field, "dir" or "file")
DESTINATIONS = [("output_dir", "dir")]
ALIASES = {"model_channels": ["num_channels"], "contr": ["target"]}


def sample(cfg: SampleConfig, next_step: bool = False) -> int:
    """Paired-mode synthesis of every usable case of ``cfg.data_dir`` (:class:`cwdm.inference.pipeline.Pipeline`).

    Args:
        cfg: the command's settings.
        next_step: end the closing line with the command to run next (``cwdm sample`` does).

    Returns:
        0 when every usable case was written and no case was unusable, 1 otherwise (a synthesized
        volume that is degenerate, :func:`cwdm.inference.synthesis.degenerate`, is reported and not written).
    """
    from ..feedback import write_line

    info = dist_from_env()
    device = select_device(cfg.device, info)
    options = cfg.options()
    options.validate()
    check_output_dir(cfg.output_dir, cfg.data_dir, in_place_ok=True)  # the folder itself: inpainting only (paired)
    say = (lambda msg: print(msg, file=sys.stderr)) if info.is_main else (lambda msg: None)
    pipeline = Pipeline({}, options, device, cfg, command="sample", modalities=cfg.modalities, ema=cfg.ema,
                        postprocess=cfg.postprocess, overwrite=cfg.overwrite, batch_size=cfg.batch_size,
                        num_workers=cfg.num_workers, progress=cfg.progress and info.is_main, say=say,
                        clock_write=write_line if info.is_main else (lambda msg: None),
                        continue_anyway=cfg.continue_anyway, rank=info.rank, world_size=info.world_size,
                        sampler_chosen=sampler_chosen(cfg))
    plan, target = pipeline.paired(cfg.data_dir, cfg.output_dir, cfg.model_path, cfg.contr, cfg.save_target,
                                   before=_num_samples_note(cfg, say))
    task, options = pipeline.models[target].task, pipeline.options  # a distilled student's sampler, if it records one
    out_root = Path(cfg.output_dir)
    if task.fills_region and cfg.save_target:
        say("note: --save_target has no effect for inpainting or insertion")
    share = f" (rank {info.rank} of {info.world_size})" if info.enabled else ""
    pipeline.announce(plan)
    conditions = task.inputs_for(target)
    what = task.describe() if not task.is_unified else f"{target} from {', '.join(conditions)} (unified model)"
    say(f"cwdm sample: {what} with {options.sampler} "
        f"({options.calls_per_case} network calls per case, {options.precision}) on {device}{share}: "
        f"{plan.todo} cases to do, {plan.complete} already done, {plan.unusable} unusable")
    result = pipeline.run(plan)
    degenerate = result.degenerate
    status = 0 if plan.unusable == 0 and not degenerate else 1
    after = _next_step(cfg, out_root, status, task, len(degenerate)) if next_step else ""
    failed = f", {len(degenerate)} degenerate (not written)" if degenerate else ""
    in_place = task.fills_region and out_root.resolve() == Path(cfg.data_dir).resolve()
    where = f"beside the inputs in {out_root}" if in_place else f"to {out_root}"
    say(f"wrote {len(result.written)} cases {where}{share}; {plan.complete} skipped (already done), "
        f"{plan.unusable} unusable{failed}{after}")
    return status


def _num_samples_note(cfg: SampleConfig, say):
    """What to say once the checkpoint is loaded, before the cases are read: ``--num_samples`` is unused."""
    def note() -> None:
        if cfg.num_samples != 1:
            say("note: --num_samples is accepted for compatibility and has no effect; use --ensemble K")
    return note


def _next_step(cfg: SampleConfig, out_root: Path, status: int, task, degenerate: int = 0) -> str:
    """The end of the closing line: what to run next (``--modalities`` when the task names others)."""
    if degenerate:
        return ("; the checkpoint gave degenerate volumes (listed above): train it longer or check it, then rerun "
                "the same command (written cases are skipped)")
    if status == 0 and task.is_insertion:  # nothing to compare with: the drawn tumour is new
        return ""
    if status == 0:
        names = ("" if tuple(task.modalities) == MODALITIES or task.is_inpainting
                 else " --modalities " + " ".join(map(quote, task.modalities)))
        return f"; next: cwdm evaluate --pred_dir {quote(str(out_root))} --ref_dir {quote(str(cfg.data_dir))}{names}"
    return "; fix or remove the unusable cases above, then rerun the same command (done cases are skipped)"


def run(cfg: SampleConfig) -> int:
    """``cwdm sample``: :func:`sample` with the next step in its closing line; returns the exit status."""
    return sample(cfg, next_step=True)

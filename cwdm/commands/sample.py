"""``cwdm sample``: synthesize the target contrast of every case of a folder (paired mode).

For every case the conditions are read, preprocessed exactly as for the
released models, the target is sampled and written back on the original grid
with the header and affine of the first condition as
``<output_dir>/<case>/<case>-<target>.nii.gz`` (plus ``<case>-<target>_std.nii.gz``
with ``--ensemble K > 1``). Under ``torchrun`` the cases are split across ranks.
"""

from __future__ import annotations

import sys
from shlex import quote
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple

from ..naming import MODALITIES
from ..inference.flags import ModelFlags, SamplingFlags
from ..inference.steps import (announce, check_output_dir, chosen_target, model_grid, paired_paths, progress_bar,
                        resolve_model, synthesize_cases, usable_cases)
from ..runtime import dist_from_env, select_device
from ..inference.synthesis import Synthesizer

HELP = "synthesize the target contrast of every case of a folder (paired mode)"


@dataclass
class SampleConfig(SamplingFlags, ModelFlags):
    """``cwdm sample``'s flags: the shared sampling and network flags plus the paired-mode folders."""

    data_dir: Path = field(default=Path("data/validation"), metadata={"help": "BraTS-layout input folder"})
    model_path: Optional[Path] = field(default=None, metadata={"help": "checkpoint (released state_dict or cwdm)"})
    contr: Optional[str] = field(default=None, metadata={"help": "target contrast (read from cwdm checkpoints)"})
    output_dir: Path = field(default=Path("results"), metadata={"help": "where <case>/<case>-<target>.nii.gz go"})
    modalities: Tuple[str, ...] = field(default=MODALITIES, metadata={"help": "modality names"})
    save_target: bool = field(default=False, metadata={"help": "also write the preprocessed target (_target)"})


CONFIG = SampleConfig
# what it writes (checked before it starts): (config field, "dir" or "file")
DESTINATIONS = [("output_dir", "dir")]
ALIASES = {"model_channels": ["num_channels"], "contr": ["target"]}


def sample(cfg: SampleConfig, next_step: bool = False) -> int:
    """Paired-mode synthesis of every usable case of ``cfg.data_dir``.

    Args:
        cfg: the command's settings.
        next_step: end the closing line with the command to run next (``cwdm sample`` does).

    Returns:
        0 when every usable case was written and no case was unusable, 1 otherwise (a synthesized
        volume that is degenerate, :func:`cwdm.inference.synthesis.degenerate`, is reported and not written).
    """
    from ..data.cases import discover_cases
    from ..feedback import RunClock, write_line

    info = dist_from_env()
    device = select_device(cfg.device, info)
    options = cfg.options()
    options.validate()
    check_output_dir(cfg.output_dir, cfg.data_dir)
    loaded, task = resolve_model(cfg.model_path, cfg.contr, cfg.modalities, cfg, cfg.ema, device)
    target = chosen_target(task, cfg.contr, cfg.model_path)
    conditions = list(task.inputs_for(target))
    synth = Synthesizer(loaded, task, device, options)
    say = (lambda msg: print(msg, file=sys.stderr)) if info.is_main else (lambda msg: None)
    if cfg.num_samples != 1:
        say("note: --num_samples is accepted for compatibility and has no effect; use --ensemble K")

    all_cases = discover_cases(cfg.data_dir, task.modalities)
    cases = usable_cases(all_cases, conditions, loaded.config.image_divisor, say, labels=task.label_maps)
    bad = len(all_cases) - len(cases)
    out_root = Path(cfg.output_dir)
    record = _provenance(cfg, options, device, target, loaded, info.rank, say)

    def out_paths(name: str, prefix: str):
        return paired_paths(out_root, name, prefix, target, cfg.save_target)

    # split before looking at outputs: other ranks may already be writing theirs
    cases = cases[info.rank::info.world_size]
    mine = [c for c in cases if cfg.overwrite or not out_paths(c.name, c.prefix)["volume"].exists()]
    skipped = len(cases) - len(mine)
    share = f" (rank {info.rank} of {info.world_size})" if info.enabled else ""
    grid = model_grid(mine[0], conditions[0], loaded.config.image_divisor) if mine else None
    synth.run_cases = len(mine)
    compiling = grid is not None and synth.compiles(grid)
    announce(say, device, loaded.config.model_channels, grid, options, len(mine), compiling)
    what = task.describe() if not task.is_unified else f"{target} from {', '.join(conditions)} (unified model)"
    say(f"cwdm sample: {what} with {options.sampler} "
        f"({options.calls_per_case} network calls per case, {options.precision}) on {device}{share}: "
        f"{len(mine)} cases to do, {skipped} already done, {bad} unusable")
    done: List[str] = []
    degenerate: List[str] = []  # one line per volume found degenerate, not written

    def problem(line: str) -> None:
        say(line)
        degenerate.append(line)

    if mine:
        bar = progress_bar(len(mine) * options.calls_per_case, cfg.progress and info.is_main, f"sample {target}")
        clock = RunClock(len(mine), options.calls_per_case, write_line if info.is_main else (lambda msg: None),
                         compiling)
        with bar, record.session():
            done = synthesize_cases(synth, mine, lambda it: out_paths(it["name"], it["prefix"]), target=target,
                                    postprocess_on=cfg.postprocess, overwrite=cfg.overwrite,
                                    batch_size=cfg.batch_size, num_workers=cfg.num_workers, bar=bar, clock=clock,
                                    on_case=lambda it, paths, sec: record.case_done(paths["volume"], target, sec),
                                    on_problem=problem)
    status = 0 if bad == 0 and not degenerate else 1
    after = _next_step(cfg, out_root, status, task, len(degenerate)) if next_step else ""
    failed = f", {len(degenerate)} degenerate (not written)" if degenerate else ""
    say(f"wrote {len(done)} cases to {out_root}{share}; {skipped} skipped (already done), {bad} unusable{failed}"
        f"{after}")
    return status


def _provenance(cfg: SampleConfig, options, device, target: str, loaded, rank: int, say):
    """The output folder's provenance record, checked against this run's settings before any work.

    Returns:
        The :class:`cwdm.inference.provenance.Provenance` record of this run.
    """
    from ..inference.provenance import Provenance, checkpoint_entry, result_settings

    settings = result_settings(options, device, target=target, postprocess=cfg.postprocess, threshold=None,
                               ema=cfg.ema)
    record = Provenance(Path(cfg.output_dir), "sample", settings, {target: checkpoint_entry(cfg.model_path, loaded)},
                        device, rank)
    record.check(redo=cfg.overwrite, continue_anyway=cfg.continue_anyway,
                 redo_hint="--overwrite to redo every case", say=say)
    return record


def _next_step(cfg: SampleConfig, out_root: Path, status: int, task, degenerate: int = 0) -> str:
    """The end of the closing line: what to run next (``--modalities`` when the task names others)."""
    if degenerate:
        return ("; the checkpoint gave degenerate volumes (listed above): train it longer or check it, then rerun "
                "the same command (written cases are skipped)")
    if status == 0:
        names = "" if tuple(task.modalities) == MODALITIES else " --modalities " + " ".join(map(quote, task.modalities))
        return f"; next: cwdm evaluate --pred_dir {quote(str(out_root))} --ref_dir {quote(str(cfg.data_dir))}{names}"
    return "; fix or remove the unusable cases above, then rerun the same command (done cases are skipped)"


def run(cfg: SampleConfig) -> int:
    """``cwdm sample``: :func:`sample` with the next step in its closing line; returns the exit status."""
    return sample(cfg, next_step=True)

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
from typing import Dict, List, Optional, Tuple

from ..naming import ANY, MODALITIES
from ..inference.flags import ModelFlags, SamplingFlags
from ..errors import CwdmError
from ..inference.completion import (Group, cases_of, check_case_folders, completion_paths, find_checkpoints, output_path,
                         parse_model_entries, plan, recorded_synthesized)
from ..inference.steps import (announce, check_output_dir, model_grid, progress_bar, resolve_model, synthesize_cases,
                        usable_cases)
from ..runtime import dist_from_env, select_device
from ..inference.synthesis import AUTO_THRESHOLD, Synthesizer, run_compiles

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
    """Complete the cases of ``cfg.data_dir`` that miss one modality.

    Args:
        cfg: the command's settings.
        next_step: end the closing line with the command to run next (``cwdm auto`` does).

    Returns:
        0 when every case ends up complete, 1 otherwise.
    """
    from ..data.cases import discover_cases
    from ..feedback import RunClock, write_line

    info = dist_from_env()
    device = select_device(cfg.device, info)
    options = cfg.options()
    options.validate()
    say = (lambda msg: print(msg, file=sys.stderr)) if info.is_main else (lambda msg: None)
    if cfg.output_dir is not None:
        check_output_dir(cfg.output_dir, cfg.data_dir, in_place_ok=True)
    checkpoints = checkpoints_of(cfg)
    unified = _unified_model(cfg, checkpoints, device)
    # each rank takes its share of the cases before looking at outputs other ranks may be writing
    cases = discover_cases(cfg.data_dir, cfg.modalities)[info.rank::info.world_size]
    in_place = _in_place(cfg)
    groups, complete, unfixable = plan(cases, cfg.modalities, checkpoints, None if in_place else cfg.output_dir,
                                       cfg.overwrite, say,
                                       unified.task if unified is not None else None,
                                       recorded_synthesized(cfg.data_dir) if in_place else ())
    if in_place:
        check_case_folders(groups)  # a read-only case folder: one line now, not after the network ran
    # load (and so check) every needed checkpoint before any case is processed
    models = {key: unified if key == ANY else resolve_model(checkpoints[key], key, cfg.modalities, cfg, cfg.ema,
                                                            device)[0]
              for key in dict.fromkeys(key for _, key in groups)}
    record = _provenance(cfg, options, device, {key: (checkpoints[key], models[key]) for key in models},
                         info.rank, say)
    share = f" (rank {info.rank} of {info.world_size})" if info.enabled else ""
    todo = sum(len(c) for c in groups.values())
    first = next(iter(groups), None)
    grid = model_grid(groups[first][0], models[first[1]].task.inputs_for(first[0], groups[first][0].present)[0],
                      models[first[1]].config.image_divisor) if first else None
    compiling = grid is not None and run_compiles(options, device, cases_of(groups, first[1]), grid)
    announce(say, device, max((m.config.model_channels for m in models.values()), default=0), grid,
             options, todo, compiling)
    say(f"cwdm auto{share}: {len(cases)} cases: {complete} complete, {unfixable} cannot be completed, "
        f"to synthesize: " + (", ".join(f"{m} x{len(c)}" + (" (unified)" if key == ANY else "")
                                        for (m, key), c in groups.items()) or "nothing"))
    clock = RunClock(todo, options.calls_per_case, write_line if info.is_main else (lambda msg: None), compiling)
    try:
        with record.session():
            written, failed = _complete_groups(cfg, groups, models, device, options, clock, record, say,
                                               info.is_main)
    except OSError as exc:  # what the writers did not name already (a case folder that cannot be made ...)
        raise CwdmError(f"{exc.filename or cfg.data_dir}: {exc.strerror or exc}; free space or make it writable, "
                        f"then rerun the same command (written cases are kept)") from None
    where = (f"into the case folders of {cfg.data_dir}" if cfg.output_dir is None
             else f"under {cfg.output_dir}/<case>/")
    status = 0 if unfixable + failed == 0 else 1
    after = _next_step(cfg, status) if next_step else ""
    say(f"completed {len(set(written))} cases ({len(written)} files written {where}); {complete} were already complete; "
        f"{unfixable + failed} could not be completed{after}")
    return status


def _unified_model(cfg: AutoConfig, checkpoints: Dict[str, Path], device):
    """The loaded unified checkpoint (``--model any=PATH``, or one whose task says so), or None."""
    if ANY not in checkpoints:
        return None
    loaded, task = resolve_model(checkpoints[ANY], None, cfg.modalities, cfg, cfg.ema, device)
    if not task.is_unified:
        raise CwdmError(f"{checkpoints[ANY]}: given as the unified checkpoint, but it synthesizes {task.target} only "
                        f"(pass it as --model {task.target}=PATH)")
    return loaded


def _complete_groups(cfg: AutoConfig, groups: Dict[Group, list], models, device, options, clock, record, say,
                     show: bool) -> Tuple[List[str], int]:
    """Synthesize each group's missing modality for its usable cases.

    Args:
        cfg: the command's settings.
        groups: (modality, checkpoint key) -> cases missing it (:func:`cwdm.inference.completion.plan`).
        models: checkpoint key -> loaded checkpoint (its ``task`` set by :func:`cwdm.inference.steps.resolve_model`).
        device: where the networks run.
        options: sampler settings.
        clock: :class:`cwdm.feedback.RunClock` of the whole run.
        record: the provenance record (each written case is added).
        say: prints one line (unusable cases).
        show: show progress bars (main rank).

    Returns:
        ``(names written, number of cases found unusable or whose volume was degenerate)``.
    """
    written: List[str] = []
    failed = 0
    degenerate: List[str] = []  # volumes found degenerate: reported, not written, counted as failed
    synths: Dict[str, Synthesizer] = {}
    for (mod, key), group in groups.items():
        task = models[key].task
        good = usable_cases(group, task.condition_names if not task.is_unified else (),
                            models[key].config.image_divisor, say, labels=task.label_maps)
        failed += len(group) - len(good)
        if not good:
            continue
        if key not in synths:
            synths[key] = Synthesizer(models[key], task, device, options)
            synths[key].run_cases = cases_of(groups, key)
        synth = synths[key]
        by_name = {c.name: c for c in good}

        def out_paths(item, mod=mod):
            return completion_paths(output_path(by_name[item["name"]], mod, cfg.output_dir))

        def on_case(item, paths, seconds, mod=mod):
            record.case_done(paths["volume"], mod, seconds, inputs=item["inputs"])

        bar = progress_bar(len(good) * options.calls_per_case, cfg.progress and show, f"auto {mod}")
        with bar:
            written += synthesize_cases(synth, good, out_paths, target=mod, threshold=cfg.threshold,
                                        postprocess_on=cfg.postprocess, overwrite=cfg.overwrite,
                                        batch_size=cfg.batch_size, num_workers=cfg.num_workers, bar=bar,
                                        clock=clock, on_case=on_case,
                                        on_problem=lambda line: (say(line), degenerate.append(line)))
    return written, failed + len(degenerate)


def _provenance(cfg: AutoConfig, options, device, used: Dict[str, tuple], rank: int, say):
    """The run's provenance record, checked against this run's settings before any work.

    The record goes into the output folder, or the data folder root when completing in place.

    Args:
        cfg: the command's settings.
        options: sampler settings.
        device: where the networks run.
        used: modality -> (checkpoint path, loaded model), for the modalities to synthesize.
        rank: this process's rank.
        say: prints one line.

    Returns:
        The :class:`cwdm.inference.provenance.Provenance` record of this run.
    """
    from ..inference.provenance import MOVE_AWAY, REDO_ALL, Provenance, checkpoint_entry, result_settings

    in_place = _in_place(cfg)
    settings = result_settings(options, device, target=None, postprocess=cfg.postprocess, threshold=cfg.threshold,
                               ema=cfg.ema)
    record = Provenance(Path(cfg.data_dir if in_place else cfg.output_dir), "auto", settings,
                        {mod: checkpoint_entry(path, loaded) for mod, (path, loaded) in used.items()}, device, rank,
                        how=MOVE_AWAY if in_place else REDO_ALL)
    record.check(redo=cfg.overwrite and not in_place, continue_anyway=cfg.continue_anyway, say=say,
                 redo_hint=("delete the synthesized files it lists to redo them" if in_place
                            else "--overwrite to redo every case"))
    return record


def _in_place(cfg: AutoConfig) -> bool:
    """Whether the run completes the case folders themselves (no ``--output_dir``, or the data folder)."""
    return cfg.output_dir is None or Path(cfg.output_dir).resolve() == Path(cfg.data_dir).resolve()


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

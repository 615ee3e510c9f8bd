"""``cwdm auto``: complete case folders that miss one modality (the BraSyn use).

For each case folder the one missing modality is detected, the checkpoint for
it is chosen (``--model_t1n PATH`` ... or one file per contrast in
``--models_dir``), the modality is synthesized from the present ones and
written as ``<case>-<modality>.nii.gz`` into the case folder (or
``--output_dir/<case>/``) with the header and affine of a present modality.
Existing files are never touched. Cases with nothing missing are skipped;
cases missing two or more modalities, lacking a checkpoint or with bad files
are reported and skipped. Exit status 0 only if every case ends up complete.
"""

from __future__ import annotations

import sys
from shlex import quote
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from . import MODALITIES
from .errors import CwdmError
from .naming import contrast_of_checkpoint
from .runtime import dist_from_env, select_device
from .sample import (ModelFlags, SamplingFlags, announce, check_output_dir, items_of, model_grid, progress_bar,
                     resolve_model, synthesize_items, usable_cases)
from .synthesis import AUTO_THRESHOLD, Synthesizer

HELP = "complete case folders that miss one modality (BraSyn use)"


@dataclass
class AutoConfig(SamplingFlags, ModelFlags):
    data_dir: Path = field(default=Path("data/pseudo_validation"), metadata={"help": "folder of case folders"})
    output_dir: Optional[Path] = field(default=None, metadata={"help": "write here instead of into the case folders"})
    models_dir: Optional[Path] = field(default=None, metadata={"help": "folder with one checkpoint per contrast, "
                                                    "named as published (t1_gen.pt, t1ce_gen.pt, t2_gen.pt, "
                                                    "flair_gen.pt) or brats_<contrast>_*.pt"})
    model_t1n: Optional[Path] = field(default=None, metadata={"help": "checkpoint that synthesizes t1n"})
    model_t1c: Optional[Path] = field(default=None, metadata={"help": "checkpoint that synthesizes t1c"})
    model_t2w: Optional[Path] = field(default=None, metadata={"help": "checkpoint that synthesizes t2w"})
    model_t2f: Optional[Path] = field(default=None, metadata={"help": "checkpoint that synthesizes t2f"})
    modalities: Tuple[str, ...] = field(default=MODALITIES, metadata={"help": "modality names"})
    threshold: float = field(default=AUTO_THRESHOLD, metadata={"help": "zero values at or below this (reference)"})


CONFIG = AutoConfig
ALIASES = {"model_channels": ["num_channels"]}
CHECKPOINT_SUFFIXES = (".pt", ".pth")


def find_checkpoints(cfg: AutoConfig) -> Dict[str, Path]:
    """Modality -> checkpoint, from ``--model_<m>`` flags first, then ``--models_dir``.

    In ``models_dir`` a checkpoint belongs to the contrast its name says
    (:func:`cwdm.naming.contrast_of_checkpoint`): the published names
    ``t1_gen.pt``, ``t1ce_gen.pt``, ``t2_gen.pt``, ``flair_gen.pt``, or a name
    with the modality as one of its words, e.g. ``brats_t1n_1200000.pt``;
    two candidates for one modality is an error.
    """
    found: Dict[str, Path] = {}
    if cfg.models_dir is not None:
        folder = Path(cfg.models_dir)
        if not folder.is_dir():
            raise CwdmError(f"{folder}: --models_dir is not a folder")
        by_mod: Dict[str, List[Path]] = {}
        for p in sorted(p for p in folder.iterdir() if p.suffix in CHECKPOINT_SUFFIXES):
            mod = contrast_of_checkpoint(p, cfg.modalities)
            if mod is not None:
                by_mod.setdefault(mod, []).append(p)
        for mod, hits in by_mod.items():
            if len(hits) > 1:
                raise CwdmError(f"{folder}: several checkpoints for {mod} ({', '.join(p.name for p in hits)}); "
                                f"keep one or pass --model_{mod} to choose")
            found[mod] = hits[0]
    for mod in cfg.modalities:
        explicit = getattr(cfg, f"model_{mod}", None)
        if explicit is not None:
            found[mod] = Path(explicit)
    for mod, path in found.items():
        if not Path(path).is_file():
            raise CwdmError(f"{path}: checkpoint for {mod} not found")
    return found


def plan(cases, modalities, checkpoints: Dict[str, Path], out_dir: Optional[Path], overwrite: bool,
         report) -> Tuple[Dict[str, list], int, int]:
    """Group the cases to complete by missing modality.

    Returns ``(groups, complete, unfixable)``: modality -> cases to synthesize,
    the number of cases with nothing to do, and the number that cannot be completed.
    """
    groups: Dict[str, list] = {}
    complete = unfixable = 0
    for case in cases:
        missing = [m for m in case.missing(modalities) if m not in case.duplicates]
        if case.problems:
            report(f"skipping {case.name}: " + "; ".join(case.problems))
            unfixable += 1
        elif case.duplicates:
            report(f"skipping {case.name}: duplicate files for {', '.join(case.duplicates)}")
            unfixable += 1
        elif not missing:
            complete += 1
        elif len(missing) > 1:
            report(f"skipping {case.name}: {len(missing)} modalities missing ({', '.join(missing)}); "
                   f"cwdm completes cases missing exactly one")
            unfixable += 1
        elif missing[0] not in checkpoints:
            report(f"skipping {case.name}: no checkpoint for {missing[0]} (pass --model_{missing[0]} or --models_dir)")
            unfixable += 1
        elif out_dir is not None and not overwrite and output_path(case, missing[0], out_dir).exists():
            complete += 1  # done by an earlier run
        else:
            groups.setdefault(missing[0], []).append(case)
    return groups, complete, unfixable


def output_path(case, modality: str, out_dir: Optional[Path]) -> Path:
    folder = case.folder if out_dir is None else Path(out_dir) / case.name
    return folder / case.file_name(modality)


def auto(cfg: AutoConfig, next_step: bool = False) -> int:
    """Complete the cases; ``next_step``: end the closing line with the command to run next."""
    from .data import InferenceDataset, conditions_for, discover_cases
    from .feedback import RunClock, write_line
    from .provenance import Provenance, checkpoint_entry, result_settings

    info = dist_from_env()
    device = select_device(cfg.device, info)
    options = cfg.options()
    options.validate()
    say = (lambda msg: print(msg, file=sys.stderr)) if info.is_main else (lambda msg: None)
    if cfg.output_dir is not None:
        check_output_dir(cfg.output_dir, cfg.data_dir, in_place_ok=True)
    in_place = cfg.output_dir is None or Path(cfg.output_dir).resolve() == Path(cfg.data_dir).resolve()
    checkpoints = find_checkpoints(cfg)
    # each rank takes its share of the cases before looking at outputs other ranks may be writing
    cases = discover_cases(cfg.data_dir, cfg.modalities)[info.rank::info.world_size]
    groups, complete, unfixable = plan(cases, cfg.modalities, checkpoints, cfg.output_dir, cfg.overwrite, say)
    # load (and so check) every needed checkpoint before any case is processed
    models = {mod: resolve_model(checkpoints[mod], mod, cfg.modalities, cfg, cfg.ema, device)[0] for mod in groups}
    # the record goes into the output folder, or the data folder root when completing in place
    settings = result_settings(options, device, target=None, postprocess=cfg.postprocess, threshold=cfg.threshold,
                               ema=cfg.ema)
    record = Provenance(Path(cfg.data_dir if in_place else cfg.output_dir), "auto", settings,
                        {mod: checkpoint_entry(checkpoints[mod], models[mod]) for mod in groups}, device, info.rank)
    record.check(redo=cfg.overwrite and not in_place, continue_anyway=cfg.continue_anyway, say=say,
                 redo_hint=("delete the synthesized files it lists to redo them" if in_place
                            else "--overwrite to redo every case"))
    share = f" (rank {info.rank} of {info.world_size})" if info.enabled else ""
    todo = sum(len(c) for c in groups.values())
    first = next(iter(groups), None)
    grid = model_grid(groups[first][0], conditions_for(first, cfg.modalities)[0],
                      models[first].config.image_divisor) if first else None
    announce(say, device, max((m.config.model_channels for m in models.values()), default=0), grid,
             options.calls_per_case, todo)
    say(f"cwdm auto{share}: {len(cases)} cases: {complete} complete, {unfixable} cannot be completed, "
        f"to synthesize: " + (", ".join(f"{m} x{len(c)}" for m, c in groups.items()) or "nothing"))
    written: List[str] = []
    failed = 0
    clock = RunClock(todo, options.calls_per_case, write_line if info.is_main else (lambda msg: None))
    with record.session():
        for mod, group in groups.items():
            conditions = conditions_for(mod, cfg.modalities)
            good = usable_cases(group, conditions, models[mod].config.image_divisor, say)
            failed += len(group) - len(good)
            if not good:
                continue
            synth = Synthesizer(models[mod], len(conditions), device, options)
            dataset = InferenceDataset(good, mod, cfg.modalities, models[mod].config.image_divisor, check="none")
            by_name = {c.name: c for c in good}

            def out_paths(item, mod=mod):
                path = output_path(by_name[item["name"]], mod, cfg.output_dir)
                return {"volume": path, "std": path.with_name(path.name.replace(".nii.gz", "_std.nii.gz")),
                        "target": None}

            def on_case(item, paths, seconds, mod=mod):
                record.case_done(paths["volume"], mod, seconds)

            bar = progress_bar(len(good) * options.calls_per_case, cfg.progress and info.is_main, f"auto {mod}")
            with bar:
                written += synthesize_items(synth, items_of(dataset, cfg.num_workers), cfg.batch_size, out_paths,
                                            cfg.threshold, cfg.postprocess, cfg.overwrite, bar, clock, on_case)
    where = (f"into the case folders of {cfg.data_dir}" if cfg.output_dir is None
             else f"under {cfg.output_dir}/<case>/")
    status = 0 if unfixable + failed == 0 else 1
    after = ""
    if next_step:
        pred = cfg.data_dir if cfg.output_dir is None else cfg.output_dir
        after = (f"; next: cwdm evaluate --pred_dir {quote(str(pred))} --ref_dir COMPLETE_DIR (the folder "
                 f"with the complete cases)" if status == 0 else
                 "; fix the cases above, then rerun the same command (completed cases are skipped)")
    say(f"completed {len(written)} cases (files written {where}); {complete} were already complete; "
        f"{unfixable + failed} could not be completed{after}")
    return status


def run(cfg: AutoConfig) -> int:
    return auto(cfg, next_step=True)

"""Completing case folders (``cwdm auto`` and the Python API): which checkpoint synthesizes which
missing modality, which cases can be completed, and where the results go.

* checkpoints: :func:`find_checkpoints` (``--model_<m>``, ``--models_dir``),
  :func:`parse_model_entries` (``--model MODALITY=PATH`` or ``--model PATH``);
* cases: :func:`plan` groups the cases by the modality to synthesize and the
  checkpoint that does it: a per-contrast checkpoint for a case missing only its
  modality, else a unified one (:data:`cwdm.naming.ANY`); a case missing several
  modalities only with a unified checkpoint trained with dropped conditions.
  Each missing modality is then synthesized from the acquired ones only, never
  from another synthesized volume, so errors do not compound. A file cwdm
  synthesized (its header says so, or the record lists it) is not acquired,
  whatever happened since (an interrupted run, a deleted record): a rerun keeps
  it and synthesizes what is still missing from the acquired files, as an
  uninterrupted run would (:meth:`cwdm.data.cases.Case.acquired`);
* before any network call: :func:`check_case_folders` (in place, every case
  folder to write into takes a new file);
* paths: :func:`output_path`, :func:`completion_paths`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Collection, Dict, List, Mapping, Optional, Sequence, Set, Tuple

from ..errors import CwdmError, model_option
from .steps import Paths
from ..naming import ANY, canonical_contrast, contrast_of_checkpoint
from ..task import Task

CHECKPOINT_SUFFIXES = (".pt", ".pth")
"""File name endings :func:`find_checkpoints` takes for checkpoints in a models folder."""

Group = Tuple[str, str]
"""``(modality to synthesize, checkpoint key)``: the key is the modality itself, or :data:`ANY`."""


def find_checkpoints(models_dir: Optional[Path], models: Mapping[str, Optional[Path]],
                     modalities: Sequence[str]) -> Dict[str, Path]:
    """One checkpoint per modality, from ``models`` first, then ``models_dir``.

    In ``models_dir`` a checkpoint belongs to the contrast its name says
    (:func:`cwdm.naming.contrast_of_checkpoint`): the published names
    ``t1_gen.pt``, ``t1ce_gen.pt``, ``t2_gen.pt``, ``flair_gen.pt``, or a name
    with the modality as one of its words, e.g. ``brats_t1n_1200000.pt``
    (``brats_any_*.pt`` for a unified checkpoint); two candidates for one
    modality is an error.

    Args:
        models_dir: folder of checkpoints (``--models_dir``), or None.
        models: modality (or :data:`ANY`) -> checkpoint given explicitly; None values are ignored.
        modalities: modality names.

    Returns:
        Modality -> checkpoint path (every one an existing file).
    """
    found: Dict[str, Path] = {}
    if models_dir is not None:
        found = _checkpoints_in(Path(models_dir), modalities)
    for mod, explicit in models.items():
        if explicit is not None:
            found[mod] = Path(explicit)
    for mod, path in found.items():
        if not Path(path).is_file():
            raise CwdmError(f"{path}: checkpoint for {mod} not found")
    return found


def parse_model_entries(entries: Sequence[str], modalities: Sequence[str]) -> Dict[str, Path]:
    """``--model`` values as modality -> checkpoint.

    An entry is ``MODALITY=PATH`` (the BraTS 2021 names are understood, e.g.
    ``flair=PATH``; ``any=PATH`` for a unified checkpoint) or a bare ``PATH``,
    whose modality is read from its file name or the checkpoint's task
    (a unified checkpoint's is :data:`ANY`).
    Two entries for one modality are an error.
    """
    out: Dict[str, Path] = {}
    for entry in entries:
        name, sep, rest = str(entry).partition("=")
        if sep and name and "/" not in name and not Path(str(entry)).exists():
            mod, path = canonical_contrast(name, modalities), Path(rest)
            if mod not in (*modalities, ANY):
                raise CwdmError(f"--model {entry}: {name} is not one of the modalities {list(modalities)}")
        else:
            path = Path(str(entry))
            mod = _target_of_file(path, modalities)
        if mod in out:
            raise CwdmError(f"--model: two checkpoints for {mod} ({out[mod]} and {path}); keep one")
        out[mod] = path
    return out


def _target_of_file(path: Path, modalities: Sequence[str]) -> str:
    """The modality a checkpoint synthesizes: the one its file name says, else its stored task's
    (a wrong name is caught when the checkpoint is loaded, by :func:`resolve_model`)."""
    from ..model.checkpoint import is_cwdm_checkpoint, read_checkpoint, stored_task

    mod = contrast_of_checkpoint(path, modalities)
    if mod is None:
        obj = read_checkpoint(path)
        task = stored_task(obj, str(path)) if is_cwdm_checkpoint(obj) else None
        mod = task.target if task is not None else None
    if mod is None:
        raise CwdmError(f"--model {path}: cannot tell which modality it synthesizes; write --model MODALITY={path}")
    return mod


def _checkpoints_in(folder: Path, modalities: Sequence[str]) -> Dict[str, Path]:
    """Modality -> the one checkpoint of ``folder`` whose name says it synthesizes that modality."""
    if not folder.is_dir():
        raise CwdmError(f"{folder}: --models_dir is not a folder")
    by_mod: Dict[str, List[Path]] = {}
    for p in sorted(p for p in folder.iterdir() if p.suffix in CHECKPOINT_SUFFIXES):
        mod = contrast_of_checkpoint(p, (*modalities, ANY))
        if mod is not None:
            by_mod.setdefault(mod, []).append(p)
    found: Dict[str, Path] = {}
    for mod, hits in by_mod.items():
        if len(hits) > 1:
            raise CwdmError(f"{folder}: several checkpoints for {mod} ({', '.join(p.name for p in hits)}); "
                            f"keep one or pass {model_option(mod)} to choose")
        found[mod] = hits[0]
    return found


def plan(cases, modalities, checkpoints: Dict[str, Path], out_dir: Optional[Path], overwrite: bool,
         report, unified: Optional[Task] = None,
         recorded: Collection[str] = ()) -> Tuple[Dict[Group, list], int, int]:
    """Group the cases to complete by missing modality and checkpoint (``cwdm auto``).

    Args:
        cases: the discovered cases.
        modalities: modality names.
        checkpoints: modality (or :data:`ANY`) -> checkpoint (:func:`find_checkpoints`).
        out_dir: output folder, or None to complete the case folders in place.
        overwrite: redo cases whose output in ``out_dir`` exists.
        report: called with one line per case that cannot be completed.
        unified: the task of the :data:`ANY` checkpoint, if there is one.
        recorded: absolute paths the provenance record says cwdm synthesized (:func:`recorded_synthesized`).

    Returns:
        ``(groups, complete, unfixable)``: :data:`Group` -> cases to synthesize (as
        :meth:`cwdm.data.cases.Case.acquired` views: their ``files`` are the inputs), the number of cases
        with nothing to do, and the number that cannot be completed.
    """
    groups: Dict[Group, list] = {}
    complete = unfixable = 0
    for case in cases:
        case = case.acquired(recorded)
        missing = [m for m in case.missing(modalities) if m not in case.duplicates]
        problem = _case_problem(case, missing, checkpoints, unified)
        if problem:
            report(f"skipping {case.name}: {problem}")
            unfixable += 1
            continue
        # in place, a synthesized file is kept (delete it to redo it); elsewhere --overwrite redoes it
        if out_dir is None:
            todo = [m for m in missing if m not in case.made and not output_path(case, m, None).exists()]
        else:
            todo = [m for m in missing if overwrite or not output_path(case, m, out_dir).exists()]
        if not todo:
            complete += 1  # nothing missing, or done by an earlier run
        for mod in todo:
            key = mod if mod in checkpoints and len(missing) == 1 else ANY
            groups.setdefault((mod, key), []).append(case)
    return groups, complete, unfixable


def _case_problem(case, missing: List[str], checkpoints: Dict[str, Path], unified: Optional[Task]) -> str:
    """Why ``case`` cannot be completed with these checkpoints ("" when it can, or has nothing missing)."""
    if case.problems:
        return "; ".join(case.problems)
    if case.duplicates:
        return f"duplicate files for {', '.join(case.duplicates)}"
    if missing and not case.files:
        return "no modality file to synthesize from"
    if len(missing) > 1:
        if unified is not None and unified.drop_conditions:
            return ""
        hint = ("the unified checkpoint was trained without --drop_conditions" if unified is not None
                else "cwdm completes cases missing exactly one, or several with a unified checkpoint trained "
                     "with --drop_conditions")
        return f"{len(missing)} modalities missing ({', '.join(missing)}); {hint}"
    if missing and missing[0] not in checkpoints and unified is None:
        return f"no checkpoint for {missing[0]} (pass --model {missing[0]}=PATH or --models_dir)"
    return ""


def recorded_synthesized(root: Path) -> Set[str]:
    """Absolute paths of the files the provenance record of ``root`` says cwdm synthesized (none when
    the record is missing or damaged: the record's own check reports a damaged one)."""
    from .provenance import RECORD_NAME, read_record

    try:
        data = read_record(Path(root) / RECORD_NAME)
    except CwdmError:
        return set()
    return {os.path.abspath(Path(root) / rel) for rel in (data or {}).get("cases", {})}


def check_case_folders(groups: Dict[Group, list]) -> None:
    """In place: one line, before any network call, naming a case folder of the plan that cannot take
    a new file (read-only, full); each is tried with a temporary file, created and removed."""
    from .provenance import probe_folder

    for folder in dict.fromkeys(case.folder for cases in groups.values() for case in cases):
        probe_folder(folder, "the case folder")


def output_path(case, modality: str, out_dir: Optional[Path]) -> Path:
    """Where the synthesized ``modality`` of ``case`` goes: its case folder, or ``out_dir/<case>/``."""
    folder = case.folder if out_dir is None else Path(out_dir) / case.name
    return folder / case.file_name(modality)


def completion_paths(volume: Path) -> Paths:
    """Paths of a completed modality: the volume and its ``_std`` map next to it, no target copy."""
    return {"volume": volume, "std": volume.with_name(volume.name.replace(".nii.gz", "_std.nii.gz")),
            "target": None}


def cases_of(groups: Dict[Group, list], key: str) -> int:
    """How many cases of the plan's ``groups`` the checkpoint ``key`` synthesizes."""
    return sum(len(cases) for (_, k), cases in groups.items() if k == key)

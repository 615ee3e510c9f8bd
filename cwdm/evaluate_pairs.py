"""Pairing of ``cwdm evaluate``: which predicted file is scored against which reference case.

Predictions are ``<pred_dir>/<case>/<case>-<target>.nii.gz`` (plus an optional
``_std`` map), or the reference implementation's ``<case>/sample.nii.gz``
with the target given by ``--targets``; see :func:`find_pairs`.
"""

from __future__ import annotations

import filecmp
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

from . import MODALITIES
from .errors import CwdmError

REFERENCE_SAMPLE = ("sample.nii.gz", "sample.nii")  # the reference's result file names
REFERENCE_CROP = 8  # voxels the reference crops off each side of the first two axes
STD_SUFFIX = "_std"


@dataclass
class Pair:
    """One predicted (case, target) with its reference case."""

    case: str
    target: str
    pred: Path
    ref_case: Any  # cwdm.data.Case
    std: Optional[Path] = None
    reference_layout: bool = False  # pred is the reference's <case>/sample.nii.gz (cropped grid)


# ----------------------------------------------------------------------------- discovery

def _std_path(pred: Path) -> Optional[Path]:
    from .nifti_io import nifti_stem

    stem = nifti_stem(pred)
    for suffix in (".nii.gz", ".nii"):
        cand = pred.with_name(f"{stem}{STD_SUFFIX}{suffix}")
        if cand.is_file():
            return cand
    return None


def _same_file(a: Path, b: Path) -> bool:
    """True if ``a`` is ``b`` or a byte-for-byte copy of it."""
    try:
        if os.path.samefile(a, b):
            return True
        return filecmp.cmp(a, b, shallow=False)
    except OSError:
        return False


def find_pairs(pred_dir: Path, ref_dir: Path, modalities: Sequence[str] = MODALITIES,
               targets: Optional[Sequence[str]] = None) -> Tuple[List[Pair], List[str], List[str]]:
    """Match predictions of ``pred_dir`` with reference cases of ``ref_dir``.

    Returns:
        (pairs sorted by case then modality order, problem lines, skipped lines).

    Raises:
        CwdmError: a folder is missing / not a folder, or both are the same folder.
    """
    from .data import discover_cases
    from .nifti_io import nifti_stem

    pred_dir, ref_dir = Path(pred_dir), Path(ref_dir)
    for name, folder in (("pred_dir", pred_dir), ("ref_dir", ref_dir)):
        if not folder.exists():
            raise CwdmError(f"{folder}: {name} does not exist")
        if not folder.is_dir():
            raise CwdmError(f"{folder}: {name} is not a folder")
    if pred_dir.resolve() == ref_dir.resolve():
        raise CwdmError(f"{pred_dir}: pred_dir and ref_dir are the same folder; predictions must be "
                        f"compared with separate reference volumes")
    wanted = list(modalities) if not targets else [m for m in modalities if m in set(targets)]
    problems: List[str] = []
    skipped: List[str] = []
    cases = {}
    for side, folder in (("pred", pred_dir), ("ref", ref_dir)):
        try:
            cases[side] = {c.name: c for c in discover_cases(folder, modalities)}
        except CwdmError as exc:  # an empty folder is a problem; bad flags stay errors
            if "no case folders" not in str(exc):
                raise
            problems.append(str(exc))
            cases[side] = {}
    preds, refs = cases["pred"], cases["ref"]

    pairs: List[Pair] = []
    for name, pcase in preds.items():
        for mod, paths in pcase.duplicates.items():
            if mod in wanted:
                problems.append(f"{pcase.folder}: {len(paths)} prediction files for {mod} "
                                f"({', '.join(p.name for p in paths)}); not evaluated")
        rcase = refs.get(name)
        found = [m for m in wanted if m in pcase.files]
        std_only = [p for p in pcase.others if nifti_stem(p).endswith(STD_SUFFIX)
                    and nifti_stem(p)[: -len(STD_SUFFIX)].rpartition("-")[2] in wanted
                    and nifti_stem(p)[: -len(STD_SUFFIX)].rpartition("-")[2] not in pcase.files]
        for p in std_only:
            problems.append(f"{p}: uncertainty map without its prediction file; ignored")
        ref_sample = [p for p in pcase.others if p.name in REFERENCE_SAMPLE]
        if not found and not pcase.duplicates and ref_sample:
            if not targets or len(wanted) != 1:
                raise CwdmError(f"{ref_sample[0]}: the reference's result layout (<case>/sample.nii.gz) does not "
                                f"name the contrast; give the one contrast it synthesized, e.g. --targets t2f")
            if rcase is None:
                problems.append(f"{pcase.folder}: case {name} has no reference folder in {ref_dir}; "
                                f"{ref_sample[0].name} not evaluated")
            elif wanted[0] not in rcase.files:
                problems.append(f"{ref_sample[0]}: no reference file for {wanted[0]} in {rcase.folder}; "
                                f"not evaluated")
            else:
                pairs.append(Pair(case=name, target=wanted[0], pred=ref_sample[0], ref_case=rcase,
                                  reference_layout=True))
            continue
        if not found and not any(m in wanted for m in pcase.duplicates):
            if not std_only:
                problems.append(f"{pcase.folder}: no predicted volume ({', '.join(wanted)}) in this case folder")
            continue
        if rcase is None:
            problems.append(f"{pcase.folder}: case {name} has no reference folder in {ref_dir}; "
                            f"{', '.join(found)} not evaluated")
            continue
        for mod in found:
            pred = pcase.files[mod]
            ref = rcase.files.get(mod)
            if ref is None:
                why = "several reference files" if mod in rcase.duplicates else "no reference file"
                problems.append(f"{pred}: {why} for {mod} in {rcase.folder}; not evaluated")
                continue
            if _same_file(pred, ref):
                skipped.append(f"{pred}: identical to the reference {ref} (a copied condition, "
                               f"not a synthesis); skipped")
                continue
            pairs.append(Pair(case=name, target=mod, pred=pred, ref_case=rcase, std=_std_path(pred)))
    for name, rcase in refs.items():
        if name not in preds:
            problems.append(f"{rcase.folder}: reference case {name} has no prediction folder in {pred_dir}")
    return pairs, problems, skipped

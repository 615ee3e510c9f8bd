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
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..naming import MODALITIES
from ..errors import CwdmError

REFERENCE_SAMPLE = ("sample.nii.gz", "sample.nii")  # the reference's result file names
REFERENCE_CROP = 8  # voxels the reference crops off each side of the first two axes
STD_SUFFIX = "_std"


@dataclass
class Pair:
    """One predicted (case, target) with its reference case."""

    case: str
    target: str
    pred: Path
    ref_case: Any  # cwdm.data.cases.Case
    std: Optional[Path] = None
    reference_layout: bool = False  # pred is the reference's <case>/sample.nii.gz (cropped grid)


# ----------------------------------------------------------------------------- discovery

def _std_path(pred: Path) -> Optional[Path]:
    from ..naming import nifti_stem

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


def _check_dirs(pred_dir: Path, ref_dir: Path) -> None:
    """Refuse missing folders, and a prediction folder that is the reference folder.

    Args:
        pred_dir: the predictions.
        ref_dir: the references.

    Raises:
        CwdmError: a folder is missing / not a folder, or both are the same folder.
    """
    for name, folder in (("pred_dir", pred_dir), ("ref_dir", ref_dir)):
        if not folder.exists():
            raise CwdmError(f"{folder}: {name} does not exist")
        if not folder.is_dir():
            raise CwdmError(f"{folder}: {name} is not a folder")
    if pred_dir.resolve() == ref_dir.resolve():
        raise CwdmError(f"{pred_dir}: pred_dir and ref_dir are the same folder; predictions must be "
                        f"compared with separate reference volumes")


def _discover(pred_dir: Path, ref_dir: Path, modalities: Sequence[str],
              problems: List[str]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """The case folders of both sides; an empty side is a problem, not an error.

    Args:
        pred_dir: the predictions.
        ref_dir: the references.
        modalities: the modality names.
        problems: the list a line is appended to for a folder without cases.

    Returns:
        (prediction cases, reference cases): case name -> :class:`cwdm.data.cases.Case`.

    Raises:
        CwdmError: any other failure of :func:`cwdm.data.cases.discover_cases`.
    """
    from ..data.cases import discover_cases

    cases = {}
    for side, folder in (("pred", pred_dir), ("ref", ref_dir)):
        try:
            cases[side] = {c.name: c for c in discover_cases(folder, modalities)}
        except CwdmError as exc:  # an empty folder is a problem; bad flags stay errors
            if "no case folders" not in str(exc):
                raise
            problems.append(str(exc))
            cases[side] = {}
    return cases["pred"], cases["ref"]


def _orphan_std_maps(pcase: Any, wanted: Sequence[str]) -> List[Path]:
    """The uncertainty maps of a predicted case whose prediction file is missing.

    Args:
        pcase: the predicted case (:class:`cwdm.data.cases.Case`).
        wanted: the modalities evaluated.

    Returns:
        The ``<case>-<target>_std`` files of a wanted target without its ``<case>-<target>`` file.
    """
    from ..naming import nifti_stem

    return [p for p in pcase.others if nifti_stem(p).endswith(STD_SUFFIX)
            and nifti_stem(p)[: -len(STD_SUFFIX)].rpartition("-")[2] in wanted
            and nifti_stem(p)[: -len(STD_SUFFIX)].rpartition("-")[2] not in pcase.files]


def _sample_pair(name: str, pcase: Any, rcase: Any, sample: Path, wanted: Sequence[str],
                 targets: Optional[Sequence[str]], ref_dir: Path, problems: List[str]) -> Optional[Pair]:
    """The pair of a case folder holding the reference implementation's ``sample.nii.gz``.

    Args:
        name: the case name.
        pcase: the predicted case.
        rcase: the reference case of the same name, or None.
        sample: the reference's result file.
        wanted: the modalities evaluated.
        targets: the ``--targets`` given (None: none).
        ref_dir: the references.
        problems: the list a line is appended to when the file cannot be paired.

    Returns:
        The pair scored as the one target given, or None.

    Raises:
        CwdmError: not exactly one target was given (the file does not name its contrast).
    """
    if not targets or len(wanted) != 1:
        raise CwdmError(f"{sample}: the reference's result layout (<case>/sample.nii.gz) does not "
                        f"name the contrast; give the one contrast it synthesized, e.g. --targets t2f")
    if rcase is None:
        problems.append(f"{pcase.folder}: case {name} has no reference folder in {ref_dir}; "
                        f"{sample.name} not evaluated")
        return None
    if wanted[0] not in rcase.files:
        problems.append(f"{sample}: no reference file for {wanted[0]} in {rcase.folder}; not evaluated")
        return None
    return Pair(case=name, target=wanted[0], pred=sample, ref_case=rcase, reference_layout=True)


def _modality_pairs(name: str, pcase: Any, rcase: Any, found: Sequence[str], problems: List[str],
                    skipped: List[str]) -> List[Pair]:
    """The pairs of the predicted modality files of one case that has a reference folder.

    Args:
        name: the case name.
        pcase: the predicted case.
        rcase: the reference case.
        found: the wanted modalities with one prediction file, in modality order.
        problems: the list a line is appended to for a file without its reference.
        skipped: the list a line is appended to for a copy of its reference.

    Returns:
        The pairs, in the order of ``found``.
    """
    pairs: List[Pair] = []
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
    return pairs


def _case_pairs(name: str, pcase: Any, rcase: Any, wanted: Sequence[str], targets: Optional[Sequence[str]],
                ref_dir: Path, problems: List[str], skipped: List[str]) -> List[Pair]:
    """The pairs of one predicted case folder.

    Args:
        name: the case name.
        pcase: the predicted case.
        rcase: the reference case of the same name, or None.
        wanted: the modalities evaluated.
        targets: the ``--targets`` given (None: none).
        ref_dir: the references.
        problems: the list the case's problem lines are appended to.
        skipped: the list the case's skipped lines are appended to.

    Returns:
        The case's pairs in modality order (possibly none).
    """
    for mod, paths in pcase.duplicates.items():
        if mod in wanted:
            problems.append(f"{pcase.folder}: {len(paths)} prediction files for {mod} "
                            f"({', '.join(p.name for p in paths)}); not evaluated")
    found = [m for m in wanted if m in pcase.files]
    std_only = _orphan_std_maps(pcase, wanted)
    for p in std_only:
        problems.append(f"{p}: uncertainty map without its prediction file; ignored")
    ref_sample = [p for p in pcase.others if p.name in REFERENCE_SAMPLE]
    if not found and not pcase.duplicates and ref_sample:
        pair = _sample_pair(name, pcase, rcase, ref_sample[0], wanted, targets, ref_dir, problems)
        return [] if pair is None else [pair]
    if not found and not any(m in wanted for m in pcase.duplicates):
        if not std_only:
            problems.append(f"{pcase.folder}: no predicted volume ({', '.join(wanted)}) in this case folder")
        return []
    if rcase is None:
        problems.append(f"{pcase.folder}: case {name} has no reference folder in {ref_dir}; "
                        f"{', '.join(found)} not evaluated")
        return []
    return _modality_pairs(name, pcase, rcase, found, problems, skipped)


def find_pairs(pred_dir: Path, ref_dir: Path, modalities: Sequence[str] = MODALITIES,
               targets: Optional[Sequence[str]] = None) -> Tuple[List[Pair], List[str], List[str]]:
    """Match predictions of ``pred_dir`` with reference cases of ``ref_dir``.

    Args:
        pred_dir: the predictions (``<case>/<case>-<target>.nii.gz`` or the
            reference's ``<case>/sample.nii.gz``).
        ref_dir: the reference cases.
        modalities: the modality names, in canonical order.
        targets: evaluate only these modalities (None or empty: all).

    Returns:
        (pairs sorted by case then modality order, problem lines, skipped lines).

    Raises:
        CwdmError: a folder is missing / not a folder, or both are the same folder.
    """
    pred_dir, ref_dir = Path(pred_dir), Path(ref_dir)
    _check_dirs(pred_dir, ref_dir)
    wanted = list(modalities) if not targets else [m for m in modalities if m in set(targets)]
    problems: List[str] = []
    skipped: List[str] = []
    preds, refs = _discover(pred_dir, ref_dir, modalities, problems)

    pairs: List[Pair] = []
    for name, pcase in preds.items():
        pairs.extend(_case_pairs(name, pcase, refs.get(name), wanted, targets, ref_dir, problems, skipped))
    for name, rcase in refs.items():
        if name not in preds:
            problems.append(f"{rcase.folder}: reference case {name} has no prediction folder in {pred_dir}")
    return pairs, problems, skipped

"""Reading the volumes ``cwdm evaluate`` scores: a prediction and its reference on one grid, the
reference case's other volumes and segmentation, an uncertainty map, a predicted segmentation.

A file that cannot be used (unreadable, another shape, wrong labels) is a problem line naming it,
appended to the caller's list, and the volume is left out (None); nothing here raises for a bad
file. Every array is one (X, Y, Z) volume in nibabel order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import CwdmError, format_shape
from .pairs import REFERENCE_CROP, Pair

__all__ = ["load_volume", "load_matching", "on_reference_grid", "read_pair", "read_context",
           "read_std", "read_predicted_seg"]


def load_volume(path: Path) -> np.ndarray:
    """The (X, Y, Z) data array of a NIfTI file (``CwdmError`` if it cannot be read)."""
    from ..data.nifti_io import load_nifti

    data, _ = load_nifti(path)
    return data


def load_matching(path: Path, shape: Sequence[int], against: str, consequence: str, problems: List[str],
                  unreadable: Optional[str] = None) -> Optional[np.ndarray]:
    """Load a volume that must have ``shape``; on failure append a problem line and return None.

    Args:
        path: the NIfTI file.
        shape: the (X, Y, Z) shape it must have.
        against: what the shape is compared with, as the message names it.
        consequence: what the line says happens to a file of another shape
            (and to an unreadable one unless ``unreadable`` is given).
        problems: the list the problem line is appended to.
        unreadable: what the line says happens to a file that cannot be read.

    Returns:
        The (X, Y, Z) array, or None when it cannot be read or has another shape.
    """
    try:
        vol = load_volume(path)
    except CwdmError as exc:
        problems.append(f"{exc}; {unreadable or consequence}")
        return None
    if vol.shape != tuple(shape):
        problems.append(f"{path}: shape {format_shape(vol.shape)} differs from {against} "
                        f"({format_shape(shape)}); {consequence}")
        return None
    return vol


def on_reference_grid(pred: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """The reference's cropped result placed back on the case grid, zeros in the border.

    Args:
        pred: the reference implementation's (X-16, Y-16, Z) result.
        shape: the case grid (X, Y, Z).

    Returns:
        The (X, Y, Z) volume; a ``pred`` of any other shape is returned as it
        is (and reported as a mismatch by the caller).
    """
    c = REFERENCE_CROP
    x, y, z = (int(s) for s in shape)
    if pred.shape != (x - 2 * c, y - 2 * c, z) or x <= 2 * c or y <= 2 * c:
        return pred
    out = np.zeros((x, y, z), dtype=pred.dtype)
    out[c:x - c, c:y - c, :] = pred
    return out


def read_pair(pair: Pair) -> Tuple[Optional[np.ndarray], Optional[np.ndarray], List[str]]:
    """Load the prediction and its reference on one grid.

    Args:
        pair: the prediction and its reference case.

    Returns:
        (prediction, reference, problem lines): two (X, Y, Z) arrays of one
        shape (the reference's result put back on the case grid) and no
        problem, or None, None and the line saying why the pair is not
        evaluated.
    """
    ref_path = pair.ref_case.files[pair.target]
    try:
        pred = load_volume(pair.pred)
        ref = load_volume(ref_path)
    except CwdmError as exc:
        return None, None, [f"{exc}; {pair.case}/{pair.target} not evaluated"]
    if pair.reference_layout:
        pred = on_reference_grid(pred, ref.shape)
    if pred.shape != ref.shape:
        return None, None, [f"{pair.pred}: shape {format_shape(pred.shape)} differs from the reference "
                            f"{ref_path.name} ({format_shape(ref.shape)}); not evaluated"]
    return pred, ref, []


def read_context(pair: Pair, shape: Sequence[int],
                 problems: List[str]) -> Tuple[Dict[str, np.ndarray], Optional[np.ndarray]]:
    """The reference case's other volumes and its segmentation, where they match the reference.

    Args:
        pair: the prediction and its reference case.
        shape: the reference's (X, Y, Z) shape.
        problems: the list a line is appended to for each file left out.

    Returns:
        (other modality -> (X, Y, Z) volume, (X, Y, Z) label map or None).
    """
    rcase = pair.ref_case
    ref_name = rcase.files[pair.target].name
    others: Dict[str, np.ndarray] = {}
    for mod, path in rcase.files.items():
        if mod == pair.target:
            continue
        vol = load_matching(path, shape, ref_name, "left out of the brain mask", problems,
                            unreadable=f"left out of the brain mask of {pair.case}/{pair.target}")
        if vol is not None:
            others[mod] = vol
    seg = None
    if rcase.seg is not None:
        seg = load_matching(rcase.seg, shape, ref_name, "tumour / non-tumour SSIM not computed", problems)
    return others, seg


def read_std(pair: Pair, shape: Sequence[int], problems: List[str]) -> Optional[np.ndarray]:
    """The uncertainty map beside a prediction, when there is one and it can be used.

    Args:
        pair: the prediction (its ``std``: the ``<case>-<target>_std`` file or None).
        shape: the prediction's (X, Y, Z) shape.
        problems: the list a line is appended to for an unreadable map, one of another shape or
            one holding NaN/Inf voxels.

    Returns:
        The (X, Y, Z) std map, or None.
    """
    if pair.std is None:
        return None
    std = load_matching(pair.std, shape, "the prediction", "uncertainty map ignored", problems)
    if std is not None and not np.isfinite(std).all():
        bad = int(std.size - np.count_nonzero(np.isfinite(std)))
        problems.append(f"{pair.std}: {bad} NaN/Inf voxels; uncertainty map ignored")
        return None
    return std


def read_predicted_seg(path: Optional[Path], pair: Pair, shape: Sequence[int], ref_seg: Optional[np.ndarray],
                       problems: List[str]) -> Optional[np.ndarray]:
    """The user's segmentation of a case, when it and the reference's can be compared.

    Args:
        path: the predicted segmentation (:func:`cwdm.evaluation.segmentation.find_seg`), or None
            when it was not found (already reported).
        pair: the prediction and its reference case.
        shape: the reference's (X, Y, Z) shape.
        ref_seg: the reference case's (X, Y, Z) label map, or None (missing or unusable).
        problems: the list a line is appended to for an unreadable file, one of another shape, one
            with labels that are not BraTS labels, or a reference without a usable segmentation.

    Returns:
        The (X, Y, Z) label map, or None (the row's Dice cells stay empty).
    """
    from .segmentation import label_problem

    if path is None:
        return None
    what = f"Dice of {pair.case}/{pair.target} not computed"
    seg = load_matching(path, shape, pair.ref_case.files[pair.target].name, what, problems)
    if seg is None:
        return None
    for file, labels in ((path, seg), (pair.ref_case.seg, ref_seg)):
        if labels is None:
            problems.append(f"{pair.ref_case.folder}: no usable reference segmentation (-seg) to compare "
                            f"{path} with; {what}")
            return None
        why = label_problem(labels)
        if why is not None:
            problems.append(f"{file}: {why}; {what}")
            return None
    return seg

"""Tumour insertion (the inverse of inpainting): the case layout, the region and the network's inputs.

A data root holds one folder per case (or is one case); a case folder ``<case>/`` holds

* ``<case>-t1n.nii.gz`` (:data:`IMAGE`): the scan to write a tumour into, complete (cwdm voids the
  region itself);
* ``<case>-labels.nii.gz`` (:data:`LABELS`), or without it ``<case>-seg.nii.gz`` (:data:`SEG`): the
  BraTS labels wanted, 1 necrosis / non-enhancing core, 2 edema, 3 enhancing tumour, 0 elsewhere;
* optionally ``<case>-mask.nii.gz`` (:data:`MASK`, 0 / 1): the region to rewrite; it must hold every
  labelled voxel. Without it the region is :func:`region_of` the labels.

Other files (the other modalities) are ignored. The result is ``<case>-t1n-inserted.nii.gz``
(:data:`RESULT`, plus ``_std`` for an ensemble) in ``<output>/<case>/``, or in the case folder itself
(:func:`result_path`). Parts are matched on whole names, longest first, so ``-t1n-inserted`` is never
read as the ``t1n``.

**The region** (:func:`region_of`): the brain voxels (t1n != 0) within Euclidean distance ``margin``
(voxels) of a labelled voxel, and the labelled voxels themselves. Training draws ``margin`` per item
in the task's range ``lo..hi``; sampling uses :func:`sampling_margin`, ``(lo + hi) // 2``.

**The network's inputs** (:func:`network_conditions`): the voided t1n and the region as for inpainting
(:func:`cwdm.data.inpaint_volumes.network_inputs`: the scale comes from the t1n outside the region),
then one channel per label 1, 2, 3 (1 where the label map holds it inside the region): (5, X, Y, Z).
Arrays are (X, Y, Z) in file order; regions are bool.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import CwdmError
from ..naming import SEG, split_part
from .part_cases import PartCase, case_folders, scan_part_case

IMAGE = "t1n"
LABELS = "labels"
MASK = "mask"
RESULT = "t1n-inserted"
PARTS = (IMAGE, LABELS, SEG, MASK, RESULT)
"""Every file-name part of the layout."""
LABEL_VALUES = (1, 2, 3)
"""The BraTS labels a drawing may hold (0 is background)."""


def split_name(path: Any) -> Tuple[str, Optional[str]]:
    """``(prefix, part)`` of a file name for the parts of this layout (:data:`PARTS`;
    :func:`cwdm.naming.split_part`)."""
    return split_part(path, PARTS)


class InsertionCase(PartCase):
    """One case folder of the insertion layout (:class:`cwdm.data.part_cases.PartCase`); its problems
    include a missing scan or label map."""

    @property
    def labels(self) -> Optional[Path]:
        """The label map drawn: ``-labels``, else ``-seg``, else None."""
        return self.files.get(LABELS, self.files.get(SEG))

    @property
    def inputs(self) -> List[str]:
        """The parts read: ``t1n``, ``labels`` or ``seg``, and ``mask`` when present."""
        return [IMAGE, LABELS if LABELS in self.files else SEG] + ([MASK] if MASK in self.files else [])


def scan_case(folder: Path) -> Optional[InsertionCase]:
    """The :class:`InsertionCase` of ``folder``; None when no file there is part of the layout."""
    case = scan_part_case(folder, PARTS, InsertionCase, outputs=(RESULT,))
    if case is None or not case.found:  # None, or a folder that cannot be listed
        return case
    if IMAGE not in case.found:
        case.problems.append(f"{folder / case.file_name(IMAGE)}: missing (the scan to insert into)")
    if LABELS not in case.found and SEG not in case.found:
        case.problems.append(f"{folder / case.file_name(LABELS)}: missing (the labels to insert; or a "
                             f"{case.file_name(SEG)})")
    return case


def discover_insertion_cases(root: Any) -> List[InsertionCase]:
    """The insertion cases under ``root`` (its sub-folders; ``root`` itself when it is one case), sorted
    by name; each case's problems are kept on it (a caller reports them per case).

    Raises:
        CwdmError: ``root`` is missing, not a folder, or holds no case.
    """
    cases = case_folders(Path(root), scan_case)
    if not cases:
        raise CwdmError(f"{root}: no insertion cases found (case folders with <case>-{IMAGE}.nii.gz and "
                        f"<case>-{LABELS}.nii.gz or <case>-{SEG}.nii.gz)")
    return cases


def result_path(case: InsertionCase, output_dir: Optional[Path] = None) -> Path:
    """Where the result of ``case`` goes: ``<case>-t1n-inserted.nii.gz`` in its folder, or in
    ``output_dir/<case>/``."""
    folder = case.folder if output_dir is None else Path(output_dir) / case.name
    return folder / case.file_name(RESULT)


def sampling_margin(margin_range: Sequence[int]) -> int:
    """The margin sampling dilates a drawing by: ``(lo + hi) // 2`` of the task's training range."""
    lo, hi = margin_range
    return (int(lo) + int(hi)) // 2


def region_of(labels: np.ndarray, brain: np.ndarray, margin: int) -> np.ndarray:
    """The region of a label map: brain voxels within Euclidean distance ``margin`` (voxels) of a labelled
    voxel, plus the labelled voxels.

    Args:
        labels: (X, Y, Z) label map (non-zero = labelled).
        brain: (X, Y, Z) bool, where the t1n is not 0.
        margin: dilation radius in voxels (0: the labelled voxels only).

    Returns:
        (X, Y, Z) bool region (empty when nothing is labelled).
    """
    from scipy import ndimage

    labelled = np.asarray(labels) != 0
    if not labelled.any() or margin <= 0:
        return labelled.copy()
    lo = np.maximum(np.argwhere(labelled).min(axis=0) - margin, 0)  # the distance map of the labels' box only
    hi = np.argwhere(labelled).max(axis=0) + margin + 1
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    near = np.zeros_like(labelled)
    near[box] = ndimage.distance_transform_edt(~labelled[box]) <= margin
    return labelled | (near & np.asarray(brain, dtype=bool))


def label_channels(labels: np.ndarray, region: np.ndarray) -> np.ndarray:
    """One (X, Y, Z) float32 channel per label of :data:`LABEL_VALUES`, 1 where ``labels`` holds it inside
    ``region``: (3, X, Y, Z)."""
    inside = np.where(np.asarray(region, dtype=bool), np.asarray(labels), 0)
    return np.stack([inside == v for v in LABEL_VALUES]).astype(np.float32)


def check_labels(path: Any, labels: np.ndarray) -> None:
    """Raise a one-line :class:`CwdmError` naming ``path`` unless ``labels`` holds whole numbers of 0, 1, 2, 3."""
    from .validation import label_problems

    problems = label_problems(path, np.asarray(labels, dtype=np.float64), LABEL_VALUES)
    if problems:
        raise CwdmError(problems[0])


def network_conditions(t1n: np.ndarray, region: np.ndarray, labels: np.ndarray,
                       source: str = "t1n") -> Tuple[np.ndarray, Tuple[float, float]]:
    """The network's condition volumes of an insertion.

    Args:
        t1n: (X, Y, Z) scan, any real dtype (the region's voxels are not read).
        region: (X, Y, Z) bool region to rewrite.
        labels: (X, Y, Z) label map (values of :data:`LABEL_VALUES` or 0; read inside the region only).
        source: names the scan in errors (:func:`cwdm.data.inpaint_volumes.voided_bounds`).

    Returns:
        ``(conditions (5, X, Y, Z) float32: voided t1n on [0, 1], region, labels 1, 2, 3; bounds)``.
    """
    from .inpaint_volumes import network_inputs

    voided, bounds = network_inputs(t1n, region, source)
    return np.concatenate([voided, label_channels(labels, region)]), bounds


def training_example(t1n: np.ndarray, region: np.ndarray, labels: np.ndarray,
                     source: str = "t1n") -> Tuple[np.ndarray, np.ndarray, Tuple[float, float]]:
    """A training pair: the complete ``t1n`` (X, Y, Z) voided at ``region`` with ``labels`` inside it.

    Returns:
        ``(target (X, Y, Z) float32 on [0, 1] by the voided image's bounds, conditions (5, X, Y, Z) as
        :func:`network_conditions`, bounds)``.
    """
    from .inpaint_volumes import training_example as inpaint_example

    target, voided, bounds = inpaint_example(t1n, region, source)
    return target, np.concatenate([voided, label_channels(labels, region)]), bounds


def ball_drawing(shape: Sequence[int], centre: Sequence[float], radius: float) -> np.ndarray:
    """A simple tumour drawing: edema (2) in a ball of ``radius`` voxels around ``centre``, enhancing tumour
    (3) within ``0.6 radius``, a necrotic core (1) within ``0.3 radius``; (X, Y, Z) uint8 of ``shape``."""
    grid = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in shape), indexing="ij")
    dist = np.sqrt(sum((g - c) ** 2 for g, c in zip(grid, centre)))
    out = np.zeros(tuple(shape), np.uint8)
    for label, fraction in ((2, 1.0), (3, 0.6), (1, 0.3)):
        out[dist <= fraction * radius] = label
    return out

"""Label maps for mask-conditioned generation: brain masks, and tumour masks edited by hand.

A model that generates an MR contrast from masks alone (e.g. t1c from the
BraTS ``seg`` plus a brain mask) is trained with label-map conditions (see
:mod:`cwdm.task`); this module makes its inputs:

* :func:`write_brain_masks`: ``<case>-brain.nii.gz`` (uint8, 1 where any
  modality of the case is non-zero) in every case folder of a data root, so a
  task can name ``brain`` among ``--modalities`` and use it as the label map
  ``--label_maps brain=1``;
* :func:`remove_tumour`, :func:`move_tumour`, :func:`grow_tumour`: edits of a
  tumour label map (X, Y, Z integers, 0 background) that keep the tumour
  inside the brain;
* :func:`write_edited_case`: a new case folder holding an edited ``seg`` and
  copies of the case's other inputs, ready for ``cwdm sample``.

Everything is plain numpy / nibabel; nothing here imports torch.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..naming import MODALITIES, SEG
from .cases import Case, discover_cases
from ..errors import CwdmError
from .nifti_io import load_nifti, save_nifti_like

BRAIN = "brain"
"""The modality name :func:`write_brain_masks` gives brain masks (``<case>-brain.nii.gz``)."""

EDEMA = 2
"""The BraTS label of peritumoral edema, the outer layer :func:`grow_tumour` adds by default."""


def brain_of(case: Case, modalities: Sequence[str] = MODALITIES) -> np.ndarray:
    """Boolean (X, Y, Z) brain mask of a case: voxels where any of its ``modalities`` files is non-zero."""
    present = [case.files[m] for m in modalities if m in case.files]
    if not present:
        raise CwdmError(f"{case.folder}: none of the modalities {list(modalities)} to make a brain mask from")
    mask = None
    for path in present:
        nz = load_nifti(path)[0] != 0
        if mask is not None and nz.shape != mask.shape:
            raise CwdmError(f"{path}: shape {nz.shape} differs from the case's other files {mask.shape}")
        mask = nz if mask is None else mask | nz
    return mask  # type: ignore[return-value]


def write_brain_masks(root, modalities: Sequence[str] = MODALITIES, name: str = BRAIN,
                      overwrite: bool = False) -> List[Path]:
    """Write ``<case>-<name>.nii.gz`` (uint8: 1 brain, 0 background) into every case folder of ``root``.

    The brain is where any of ``modalities`` is non-zero (BraTS volumes are
    skull-stripped with an exactly-zero background; so are ``cwdm phantom``
    cases); the header and affine are those of the case's first modality
    file. Existing mask files are kept unless ``overwrite``.

    Returns:
        The mask files of all cases (written or kept), in case order.
    """
    out = []
    for case in discover_cases(root, modalities):
        path = case.folder / f"{case.prefix}-{name}.nii.gz"
        if overwrite or not path.exists():
            mask = brain_of(case, modalities).astype(np.uint8)
            first = next(iter(case.files.values()))
            save_nifti_like(mask, first, path, overwrite=True, dtype=np.uint8)
        out.append(path)
    return out


def _as_labels(seg: np.ndarray) -> np.ndarray:
    seg = np.asarray(seg)
    if seg.ndim != 3:
        raise ValueError(f"expected an (X, Y, Z) label map, got shape {seg.shape}")
    rounded = np.rint(seg)
    if not np.array_equal(rounded, seg):
        raise ValueError("a label map must hold whole numbers")
    return rounded.astype(np.int16)


def _inside(brain: Optional[np.ndarray], shape: Tuple[int, ...]) -> np.ndarray:
    if brain is None:
        return np.ones(shape, dtype=bool)
    brain = np.asarray(brain).astype(bool)
    if brain.shape != tuple(shape):
        raise ValueError(f"brain mask shape {brain.shape} differs from the label map's {tuple(shape)}")
    return brain


def remove_tumour(seg: np.ndarray) -> np.ndarray:
    """The label map with every tumour voxel set to background (a healthy brain)."""
    return np.zeros_like(_as_labels(seg))


def move_tumour(seg: np.ndarray, shift: Sequence[int], brain: Optional[np.ndarray] = None) -> np.ndarray:
    """The label map with its labels moved by ``shift`` voxels (one integer per axis).

    Labels moved past the volume's edge, or outside ``brain`` (boolean
    (X, Y, Z); None: the whole volume), are dropped: check the result's
    tumour size if the move is large.
    """
    seg = _as_labels(seg)
    shift = [int(s) for s in shift]
    if len(shift) != 3:
        raise ValueError(f"shift needs one integer per axis, got {shift}")
    out = np.zeros_like(seg)
    src, dst = [], []
    for s, n in zip(shift, seg.shape):
        lo, hi = max(0, -s), min(n, n - s)
        src.append(slice(lo, max(lo, hi)))
        dst.append(slice(lo + s, max(lo, hi) + s))
    out[tuple(dst)] = seg[tuple(src)]
    out[~_inside(brain, seg.shape)] = 0
    return out


def grow_tumour(seg: np.ndarray, voxels: int = 1, brain: Optional[np.ndarray] = None,
                label: int = EDEMA) -> np.ndarray:
    """The label map with the tumour grown by ``voxels`` layers (6-connected), labelled ``label``.

    Existing labels are kept; the new layers go only into background voxels of
    ``brain`` (boolean (X, Y, Z); None: the whole volume). ``label`` defaults
    to edema, the outer layer of a BraTS tumour.
    """
    from scipy import ndimage

    seg = _as_labels(seg)
    if voxels < 0:
        raise ValueError(f"voxels must be >= 0, got {voxels}")
    tumour = seg > 0
    if voxels == 0 or not tumour.any():
        return seg.copy()
    grown = ndimage.binary_dilation(tumour, iterations=int(voxels))
    out = seg.copy()
    out[grown & ~tumour & _inside(brain, seg.shape)] = int(label)
    return out


def write_edited_case(case: Case, seg: np.ndarray, out_root, name: str, keep: Sequence[str] = ()) -> Path:
    """Write a new case folder ``out_root/<name>/`` for synthesis from an edited tumour mask.

    It holds ``<name>-seg.nii.gz`` (``seg``, uint8, with the header and affine
    of the case's seg, or of its first file) and copies of the case's ``keep``
    files (e.g. ``["brain"]`` or ``["brain", "t1n"]``: the task's other
    conditions), renamed to ``<name>-<modality>.nii.gz``. Leave the target out:
    the case's true target does not show the edited tumour.

    Returns:
        The new case folder.
    """
    folder = Path(out_root) / name
    if not name or "/" in name or name.startswith("."):
        raise CwdmError(f"case name {name!r} is not usable (a non-empty folder name, not hidden)")
    labels = _as_labels(seg)
    if labels.min() < 0 or labels.max() > 255:
        raise CwdmError(f"labels of {name} must be in 0..255, got {int(labels.min())}..{int(labels.max())}")
    like = case.seg if case.seg is not None else next(iter(case.files.values()), None)
    if like is None:
        raise CwdmError(f"{case.folder}: no file to take the header from")
    folder.mkdir(parents=True, exist_ok=True)
    for modality in keep:
        path = case.path(modality)
        if path is None:
            raise CwdmError(f"{case.folder}: no {modality} file to copy (found {', '.join(case.files) or 'none'}; "
                            f"was the case discovered with {modality} among the modalities?)")
        shutil.copyfile(path, folder / f"{name}-{modality}.nii.gz")
    save_nifti_like(labels.astype(np.uint8), like, folder / f"{name}-{SEG}.nii.gz", overwrite=True, dtype=np.uint8)
    return folder

"""A synthesis baseline that needs no deep learning: voxel-wise linear regression.

The target intensity of a brain voxel is modelled as an affine function of the
condition intensities at the same voxel, ``y = w . x + b``, fitted by least
squares on the brain voxels of training cases (volumes preprocessed exactly as
for the network, :func:`cwdm.data.preprocess.clip_and_normalize`). It is what a
synthesis model has to beat to show it learned more than a global intensity
mapping.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Sequence

import numpy as np

from ..naming import MODALITIES
from ..data.cases import Case
from ..task import Task
from ..data.nifti_io import load_nifti, save_nifti_like
from ..data.preprocess import clip_and_normalize


def _conditions(target: str, modalities: Sequence[str]) -> List[str]:
    """The baseline's inputs: those of the released task of ``target`` (the other modalities, in order)."""
    return list(Task.default(target, modalities).condition_names)


def _normalized(case: Case, modalities: Sequence[str]) -> List[np.ndarray]:
    return [clip_and_normalize(load_nifti(case.files[m])[0]) for m in modalities]


def _design(conds: List[np.ndarray], mask: np.ndarray) -> np.ndarray:
    """(N, K + 1) matrix of the K condition intensities and a constant, over ``mask``."""
    return np.stack([c[mask] for c in conds] + [np.ones(int(mask.sum()))], axis=1)


def fit_linear_baseline(cases: Sequence[Case], target: str, modalities: Sequence[str] = MODALITIES) -> np.ndarray:
    """Least-squares coefficients (K + 1,): one weight per condition, then the intercept."""
    conds_names = _conditions(target, modalities)
    rows, values = [], []
    for case in cases:
        conds = _normalized(case, conds_names)
        tgt = clip_and_normalize(load_nifti(case.files[target])[0])
        mask = conds[0] > 0
        rows.append(_design(conds, mask))
        values.append(tgt[mask])
    coef, *_ = np.linalg.lstsq(np.concatenate(rows), np.concatenate(values), rcond=None)
    return coef


def predict_linear_baseline(case: Case, target: str, coef: np.ndarray,
                            modalities: Sequence[str] = MODALITIES) -> np.ndarray:
    """(X, Y, Z) prediction in [0, 1], zero outside the brain of the first condition."""
    conds = _normalized(case, _conditions(target, modalities))
    mask = conds[0] > 0
    out = np.zeros(conds[0].shape, dtype=np.float32)
    out[mask] = np.clip(_design(conds, mask) @ coef, 0.0, 1.0)
    return out


def write_baseline(cases: Sequence[Case], target: str, coef: np.ndarray, out_dir: Path,
                   modalities: Sequence[str] = MODALITIES, overwrite: bool = False) -> List[Path]:
    """Write ``out_dir/<case>/<case>-<target>.nii.gz`` for every case (geometry of the first condition)."""
    written = []
    first = _conditions(target, modalities)[0]
    for case in cases:
        folder = Path(out_dir) / case.name
        folder.mkdir(parents=True, exist_ok=True)
        pred = predict_linear_baseline(case, target, coef, modalities)
        written.append(save_nifti_like(pred, case.files[first], folder / f"{case.prefix}-{target}.nii.gz",
                                       overwrite=overwrite))
    return written

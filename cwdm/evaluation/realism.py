"""Realism of a synthesis: does it hold as much fine detail as its reference, or is it a blurred average?

SSIM, PSNR, MSE and MAE reward the conditional mean: a synthesis that averages over the plausible
images (blurred) scores better than a sharp one that is as detailed as a real scan. This module
measures the amount of high-frequency content instead.

Definition (:func:`hf_energy_ratio`), on the intensity scale of ``mse`` / ``mae`` (the reference
normalized with its 0.5 / 99.5 percentiles, the prediction clipped and scaled with the *reference's*
bounds, :func:`cwdm.evaluation.metrics.brasyn_normalize`):

* the discrete Laplacian with unit voxel spacing, 6-neighbour stencil,
  ``L(v)[x, y, z] = v[x+1, y, z] + v[x-1, y, z] + v[x, y+1, z] + v[x, y-1, z] + v[x, y, z+1]
  + v[x, y, z-1] - 6 v[x, y, z]``;
* over the voxel set ``V``: the voxels of the brain mask whose six neighbours are in the brain mask
  too (voxels on the array border excluded), so the drop to the zero background at the brain's edge
  (which a synthesis copies from its conditions) does not count;
* ``hf_energy_ratio = sum_V L(pred)^2 / sum_V L(ref)^2``.

1 means as much fine detail as the reference (an identical volume gives exactly 1), below 1 a
smoother, blurred synthesis, above 1 a noisier one. Scaling the prediction by ``a`` multiplies the
ratio by ``a^2``. ``nan`` when ``V`` is empty or the reference has no Laplacian energy on it.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np

__all__ = ["REALISM_METRICS", "laplacian", "interior_mask", "hf_energy_ratio"]

REALISM_METRICS = ("hf_energy_ratio",)
"""The names this module computes (columns of ``metrics.csv``)."""


def laplacian(vol: Any) -> np.ndarray:
    """The 6-neighbour discrete Laplacian of an (X, Y, Z) volume on its inner voxels.

    Args:
        vol: (X, Y, Z) array, each axis at least 3 long.

    Returns:
        (X - 2, Y - 2, Z - 2) float64 array: ``L(vol)`` at the voxels ``[1:-1, 1:-1, 1:-1]``.
    """
    v = np.asarray(vol, dtype=np.float64)
    if v.ndim != 3 or min(v.shape) < 3:
        raise ValueError(f"expected a 3D volume at least 3 voxels long on each axis, got shape {v.shape}")
    core = v[1:-1, 1:-1, 1:-1]
    out = -6.0 * core
    out += v[2:, 1:-1, 1:-1] + v[:-2, 1:-1, 1:-1]
    out += v[1:-1, 2:, 1:-1] + v[1:-1, :-2, 1:-1]
    out += v[1:-1, 1:-1, 2:] + v[1:-1, 1:-1, :-2]
    return out


def interior_mask(mask: Any) -> np.ndarray:
    """The voxels of a boolean (X, Y, Z) mask whose six neighbours are in it too.

    Returns:
        (X - 2, Y - 2, Z - 2) boolean array, aligned with :func:`laplacian`'s output.
    """
    m = np.asarray(mask, dtype=bool)
    if m.ndim != 3 or min(m.shape) < 3:
        raise ValueError(f"expected a 3D mask at least 3 voxels long on each axis, got shape {m.shape}")
    inner = m[1:-1, 1:-1, 1:-1].copy()
    for nb in (m[2:, 1:-1, 1:-1], m[:-2, 1:-1, 1:-1], m[1:-1, 2:, 1:-1], m[1:-1, :-2, 1:-1],
               m[1:-1, 1:-1, 2:], m[1:-1, 1:-1, :-2]):
        inner &= nb
    return inner


def hf_energy_ratio(pred: Any, ref: Any, mask: Optional[Any] = None) -> float:
    """Laplacian energy of ``pred`` relative to ``ref`` inside ``mask`` (definition: module docstring).

    Args:
        pred: (X, Y, Z) synthesis on the same intensity scale as ``ref`` (for ``cwdm evaluate``
            both are normalized with the reference's bounds, as for ``mse``).
        ref: (X, Y, Z) reference.
        mask: boolean (X, Y, Z) brain mask; None: every voxel.

    Returns:
        ``sum_V L(pred)^2 / sum_V L(ref)^2`` (float), ``nan`` when ``V`` is empty, the reference's
        energy is 0 or a volume is shorter than 3 voxels on an axis.
    """
    p = np.asarray(pred)
    r = np.asarray(ref)
    if p.shape != r.shape:
        raise ValueError(f"volume shapes differ: {p.shape} vs {r.shape}")
    if p.ndim != 3 or min(p.shape) < 3:
        return math.nan
    m = np.ones(p.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if m.shape != p.shape:
        raise ValueError(f"mask shape {m.shape} differs from the volume shape {p.shape}")
    inside = interior_mask(m)
    if not inside.any():
        return math.nan
    e_ref = float(np.sum(laplacian(r)[inside] ** 2))
    if e_ref == 0.0:
        return math.nan
    e_pred = float(np.sum(laplacian(p)[inside] ** 2))
    return e_pred / e_ref

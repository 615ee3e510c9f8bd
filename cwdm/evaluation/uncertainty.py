"""Calibration of an ensemble's std map: does the predicted uncertainty point at the actual errors?

``cwdm sample --ensemble K`` writes, beside ``<case>-<target>.nii.gz`` (the mean of K samples), the
voxel-wise standard deviation of the samples as ``<case>-<target>_std.nii.gz``, in the prediction's
units (cwdm writes both on the [0, 1] model scale, std zero outside the brain). ``cwdm evaluate``
scores it where it is found.

Scale: the error is the one of ``mse`` / ``mae``, ``err = |pred_n - ref_n|`` with ``ref_n`` the
reference normalized with its 0.5 / 99.5 percentiles ``lo, hi`` and ``pred_n`` the prediction
clipped and scaled with the same bounds; the std map is brought to that scale by dividing it by
``hi - lo`` (prediction units to fractions of the reference range). Both measures below are
invariant to a positive factor on the std map, so they do not depend on that choice.

Over the N voxels of the brain mask:

* ``std_error_corr``: Pearson correlation of ``std`` with ``err`` (``nan`` when either is constant).
* sparsification curves (:func:`sparsification_curves`): for each fraction ``f`` of the grid
  :data:`FRACTIONS` (0, 0.01, ..., 0.99), remove the ``k = floor(f N)`` voxels with the largest
  std (ties: the later voxel in C order first) and take the mean ``err`` of the N - k left,
  ``S_std(f)``; the oracle ``S_err(f)`` removes the k largest errors instead, the best any
  ordering can do, so ``S_std(f) >= S_err(f)``.
* ``ause`` (area under the sparsification error): ``mean_f (S_std(f) - S_err(f)) / S_err(0)``,
  the rectangle-rule area between the two curves over [0, 1) with step 0.01, divided by the mean
  error of the whole brain (``S_err(0) = S_std(0)``, the ``mae``) so it is scale-free. 0 for a std
  map ordered as the errors (perfect calibration, e.g. ``std = |err|``); about
  ``mean_f (1 - S_err(f) / S_err(0))`` for a std map unrelated to the errors; ``nan`` when the
  mean error is 0 (nothing to calibrate) or the brain is empty.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Optional, Tuple

import numpy as np

__all__ = ["UNCERTAINTY_METRICS", "FRACTIONS", "std_error_corr", "sparsification_curves", "ause",
           "calibration_metrics"]

UNCERTAINTY_METRICS = ("std_error_corr", "ause")
"""The names this module computes (columns of ``metrics.csv``; empty without a std map)."""

FRACTIONS = np.arange(100) / 100.0
"""(100,) fractions of voxels removed: 0, 0.01, ..., 0.99."""


def _flat(std: Any, err: Any) -> Tuple[np.ndarray, np.ndarray]:
    """Two 1-D float64 arrays of one length (checked)."""
    s = np.asarray(std, dtype=np.float64).ravel()
    e = np.asarray(err, dtype=np.float64).ravel()
    if s.shape != e.shape:
        raise ValueError(f"std and error sizes differ: {s.size} vs {e.size}")
    return s, e


def std_error_corr(std: Any, err: Any) -> float:
    """Pearson correlation of ``std`` and ``err``, both (N,) (or any shape of N values).

    Returns:
        The correlation in [-1, 1]; ``nan`` for fewer than 2 values or a constant array.
    """
    s, e = _flat(std, err)
    if s.size < 2:
        return math.nan
    ds, de = s - s.mean(), e - e.mean()
    den = math.sqrt(float(np.dot(ds, ds)) * float(np.dot(de, de)))
    if den == 0.0:
        return math.nan
    return max(-1.0, min(1.0, float(np.dot(ds, de)) / den))


def _kept_means(err_in_removal_order: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    """Mean of what is left after removing the first ``floor(f N)`` values, for each ``f``.

    Args:
        err_in_removal_order: (N,) errors, the first removed first.
        fractions: (F,) fractions in [0, 1).

    Returns:
        (F,) float64 means.
    """
    n = err_in_removal_order.size
    kept_first = err_in_removal_order[::-1]  # the last removed first: prefix sums are what is kept
    sums = np.concatenate([[0.0], np.cumsum(kept_first)])
    # floor(f N), robust to f = j / 100 not being exact in binary (e.g. 0.29 * 100 = 28.999...)
    removed = np.floor(np.asarray(fractions, dtype=np.float64) * n + 1e-6).astype(np.int64)
    removed = np.minimum(removed, n - 1)  # at least one voxel is kept
    kept = n - removed
    return sums[kept] / kept


def sparsification_curves(std: Any, err: Any, fractions: Optional[np.ndarray] = None
                          ) -> Tuple[np.ndarray, np.ndarray]:
    """Mean error left after removing the voxels of largest std, and after removing the largest errors.

    Args:
        std: (N,) uncertainty of each voxel.
        err: (N,) absolute error of each voxel (N >= 1).
        fractions: (F,) fractions removed, each in [0, 1); default :data:`FRACTIONS`.

    Returns:
        ``(S_std, S_err)``: two (F,) float64 arrays (module docstring).
    """
    s, e = _flat(std, err)
    if s.size == 0:
        raise ValueError("sparsification needs at least one voxel")
    f = FRACTIONS if fractions is None else np.asarray(fractions, dtype=np.float64)
    if f.size and (f.min() < 0 or f.max() >= 1):
        raise ValueError("fractions must lie in [0, 1)")
    by_std = e[np.argsort(s, kind="stable")[::-1]]  # largest std first; ties: later voxel first
    by_err = np.sort(e)[::-1]  # largest error first
    return _kept_means(by_std, f), _kept_means(by_err, f)


def ause(std: Any, err: Any, fractions: Optional[np.ndarray] = None) -> float:
    """Area between the sparsification curves of ``std`` and of the oracle, over the mean error.

    Args:
        std: (N,) uncertainty of each voxel.
        err: (N,) absolute error of each voxel.
        fractions: the grid (default :data:`FRACTIONS`).

    Returns:
        ``mean(S_std - S_err) / S_err[0]`` (>= 0, up to rounding; 0 when ``std`` orders the voxels
        as ``err`` does); ``nan`` when there is no voxel or the mean error is 0.
    """
    s, e = _flat(std, err)
    if e.size == 0:
        return math.nan
    by_std, oracle = sparsification_curves(s, e, FRACTIONS if fractions is None else fractions)
    mean_err = float(e.mean())
    if mean_err == 0.0:
        return math.nan
    return float(np.mean(by_std - oracle)) / mean_err


def calibration_metrics(pred: Any, ref: Any, std: Any, mask: Any) -> Dict[str, float]:
    """``std_error_corr`` and ``ause`` of a std map over the brain, on the scale of ``mae``.

    Args:
        pred: (X, Y, Z) prediction (the ensemble mean).
        ref: (X, Y, Z) reference on the prediction's scale (as ``cwdm evaluate`` scores it).
        std: (X, Y, Z) std map in the prediction's units, finite.
        mask: boolean (X, Y, Z) brain mask.

    Returns:
        ``{"std_error_corr", "ause"}`` as floats (``nan`` where undefined, all ``nan`` for an
        empty mask).
    """
    from .metrics import brasyn_normalize, normalization_bounds

    r = np.asarray(ref)
    s = np.asarray(std, dtype=np.float64)
    m = np.asarray(mask, dtype=bool)
    if not (np.shape(pred) == r.shape == s.shape == m.shape):
        raise ValueError(f"shapes differ: prediction {np.shape(pred)}, reference {r.shape}, std {s.shape}, "
                         f"mask {m.shape}")
    if not m.any():
        return dict.fromkeys(UNCERTAINTY_METRICS, math.nan)
    lo, hi = normalization_bounds(r)
    rn = brasyn_normalize(r, bounds=(lo, hi)).astype(np.float64)
    pn = brasyn_normalize(pred, bounds=(lo, hi)).astype(np.float64)
    err = np.abs(pn - rn)[m]
    scaled = s[m] / (hi - lo) if hi > lo else s[m]
    return {"std_error_corr": std_error_corr(scaled, err), "ause": ause(scaled, err)}

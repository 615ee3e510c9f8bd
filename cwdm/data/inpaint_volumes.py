"""The intensity convention of inpainting: one definition for training and synthesis.

At inference only the voided t1n exists, so its voxels *outside the mask* set the scale of everything:

* **bounds** (:func:`voided_bounds`): ``lo, hi`` = the 0.1 % / 99.9 % quantiles (numpy's default
  linear quantile, the :data:`~cwdm.data.preprocess.LOWER_QUANTILE` / ``UPPER_QUANTILE`` of
  :func:`~cwdm.data.preprocess.clip_and_normalize`) of the voided image's voxels outside the mask,
  background included, in float64;
* **to the network** (:func:`to_unit`): ``(clip(v, lo, hi) - lo) / (hi - lo)``, for the voided image
  and, in training, for the complete t1n alike (the same ``lo, hi``); the network's voided-image
  channel is this with the mask's voxels set to 0 whatever the file holds there
  (:func:`network_inputs`); the mask channel is the mask as 0 / 1;
* **back** (:func:`from_unit`): ``lo + x (hi - lo)`` maps the network's fill ``x`` (in [0, 1]) to the
  input's intensities;
* **the result** (:func:`paste_fill`): the voided file's voxels, as read, everywhere outside the mask
  (not round-tripped through any arithmetic: bit-identical), the mapped fill inside it.
  Its data type is the voided file's when that is a floating-point type; for an integer file it is
  float32, or float64 when a value outside the mask is not exactly a float32 (an integer beyond
  ``2**24`` in magnitude), so the outside voxels keep their exact values (:func:`result_dtype`).

A voided image that is constant outside the mask (``hi == lo``), a mask that covers every voxel,
and NaN/Inf voxels outside the mask have no scale: :func:`voided_bounds` refuses them in one line.
Arrays are (X, Y, Z) with the spatial axes in file order; masks are bool of the same shape.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np

from ..errors import CwdmError
from .preprocess import LOWER_QUANTILE, UPPER_QUANTILE

Bounds = Tuple[float, float]
"""``(lo, hi)``: the intensities that map to 0 and 1 on the network's scale."""


def voided_bounds(voided: np.ndarray, mask: np.ndarray, source: str = "voided image") -> Bounds:
    """``(lo, hi)`` of the convention from the voxels of ``voided`` (X, Y, Z) outside ``mask`` (bool).

    Raises:
        CwdmError: no voxel outside the mask, NaN/Inf voxels there, or a constant image there
            (one line starting with ``source``, e.g. the file's path).
    """
    outside = np.asarray(voided, dtype=np.float64)[~np.asarray(mask, dtype=bool)]
    if outside.size == 0:
        raise CwdmError(f"{source}: the mask covers every voxel, so nothing is left to scale the fill by")
    finite = np.isfinite(outside)
    if not finite.all():
        raise CwdmError(f"{source}: {int(outside.size - finite.sum())} non-finite voxels (NaN/Inf) outside the mask")
    lo, hi = (float(q) for q in np.quantile(outside, [LOWER_QUANTILE, UPPER_QUANTILE]))
    if not hi > lo:
        raise CwdmError(f"{source}: constant outside the mask (its 0.1 and 99.9 % quantiles are both {lo:g}), so "
                        f"there is no intensity scale for the fill")
    return lo, hi


def to_unit(volume: np.ndarray, bounds: Bounds) -> np.ndarray:
    """``(clip(v, lo, hi) - lo) / (hi - lo)`` in float64, any shape."""
    lo, hi = bounds
    return (np.clip(np.asarray(volume, dtype=np.float64), lo, hi) - lo) / (hi - lo)


def from_unit(values: np.ndarray, bounds: Bounds) -> np.ndarray:
    """``lo + x (hi - lo)`` in float64: the inverse of :func:`to_unit` on [0, 1]."""
    lo, hi = bounds
    return lo + np.asarray(values, dtype=np.float64) * (hi - lo)


def network_inputs(voided: np.ndarray, mask: np.ndarray, source: str = "voided image") -> Tuple[np.ndarray, Bounds]:
    """The network's condition volumes of a voided image and its mask.

    Args:
        voided: (X, Y, Z) voided image, any real dtype (its mask voxels are not read).
        mask: (X, Y, Z) bool region to fill.
        source: names the image in errors.

    Returns:
        ``(conditions (2, X, Y, Z) float32: the voided image on [0, 1] with the mask's voxels 0, then the
        mask as 0 / 1; bounds)``.
    """
    mask = np.asarray(mask, dtype=bool)
    bounds = voided_bounds(voided, mask, source)
    image = to_unit(voided, bounds)
    image[mask] = 0.0
    return np.stack([image, mask]).astype(np.float32), bounds


def training_example(image: np.ndarray, mask: np.ndarray,
                     source: str = "t1n") -> Tuple[np.ndarray, np.ndarray, Bounds]:
    """A training pair: ``image`` (X, Y, Z, the complete t1n) voided at ``mask`` (bool), scaled by the
    voided image's bounds.

    Returns:
        ``(target (X, Y, Z) float32 on [0, 1], conditions (2, X, Y, Z) float32 as :func:`network_inputs`,
        bounds)``.
    """
    voided = np.array(image, dtype=np.float64)
    voided[np.asarray(mask, dtype=bool)] = 0.0
    conditions, bounds = network_inputs(voided, mask, source)
    return to_unit(image, bounds).astype(np.float32), conditions, bounds


def result_dtype(raw: np.ndarray, mask: np.ndarray) -> np.dtype:
    """The data type of an inpainted volume: ``raw``'s (the voided file's, as read) if it is a float type,
    else float32, or float64 when a value outside ``mask`` would not be exact in float32."""
    if np.issubdtype(raw.dtype, np.floating):
        return raw.dtype
    outside = raw[~np.asarray(mask, dtype=bool)]
    exact = np.array_equal(outside.astype(np.float32).astype(np.float64), outside.astype(np.float64))
    return np.dtype(np.float32 if exact else np.float64)


def paste_fill(raw: np.ndarray, mask: np.ndarray, fill: np.ndarray, bounds: Bounds, clamp: bool = True) -> np.ndarray:
    """The inpainted volume: ``raw`` (X, Y, Z, the voided file's voxels as read) outside ``mask`` (bool),
    the network's ``fill`` (X, Y, Z, on the [0, 1] scale; clamped to it when ``clamp``) mapped back with
    ``bounds`` inside it; dtype :func:`result_dtype`."""
    mask = np.asarray(mask, dtype=bool)
    dtype = result_dtype(raw, mask)
    out = np.array(raw, dtype=dtype, copy=True)  # a float file's voxels are copied, never recomputed
    values = np.asarray(fill, dtype=np.float64)[mask]
    out[mask] = from_unit(np.clip(values, 0.0, 1.0) if clamp else values, bounds).astype(dtype)
    return out

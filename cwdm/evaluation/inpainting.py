"""The BraTS inpainting challenge's scores of a filled t1n, as its official metrics package computes them.

The challenge ("local synthesis of healthy brain tissue via inpainting") scores a result
``<case>-t1n-inference.nii.gz`` against the complete ``<case>-t1n.nii.gz`` inside
``<case>-mask-healthy.nii.gz``: the healthy tissue that was voided, where the true tissue is known.
Its official package is ``inpainting`` 0.0.12 on PyPI (``challenge_metrics_2023.generate_metrics`` on
tensors, ``compute_image_quality_metrics`` on files); the definitions below are what that package
does, written here from its behaviour (``tests/test_inpainting_metrics.py`` compares the two).

Every array is one (X, Y, Z) volume (nibabel order); ``m`` is the boolean mask (any non-zero voxel).

1. The prediction and the target are multiplied by ``m`` (zero outside the mask).
2. Both are normalized with the bounds of the **voided image** (the input the model saw):
   ``lo, hi = np.percentile(voided, [0.5, 99.5])`` over all its voxels, a negative ``lo`` becomes 0,
   then ``(clip(v, lo, hi) - lo) / (hi - lo)``: the synthesis challenge's normalization
   (:func:`cwdm.evaluation.metrics.brasyn_normalize`) with another volume's bounds. The masked volumes
   are float32 (as the package reads them); the normalized ones float64, as the package gets them with
   numpy >= 2 (its clip then promotes to float64; with numpy 1 it stays float32, and the SSIM of a
   flat fill moves in its 6th digit). Everything below is computed in float64 (the package's SSIM is
   too; its other scores go through float32 torchmetrics states, about 1e-7 relative from ours).
3. ``ssim``: torchmetrics' SSIM with its defaults (Gaussian window 11, sigma 1.5, data range taken
   from the two inputs: the larger of their ``max - min``) and its full map, averaged over ``m``. The
   package passes (1, X, Y, Z) tensors, which torchmetrics reads as *one 2D image with X channels*
   (N = 1, C = X, H = Y, W = Z): the official SSIM is a **2D SSIM of each slice along the first axis**
   (windows in Y and Z only), not a 3D SSIM. This module does the same.
4. Over the voxels of ``m`` (normalized prediction ``p``, normalized target ``t``, ``n`` voxels):
   ``mse = mean((p - t)^2)``, ``rmse = sqrt(mse)``, ``mae = mean|p - t|``,
   ``msle = mean((log(1 + p) - log(1 + t))^2)``;
   ``psnr``: data range of the masked target, ``r = max(t) - min(t)``; ``p`` is first clipped to
   ``[min(t), max(t)]`` (torchmetrics clamps to a data range given as a pair), then
   ``10 log10(r^2 / mean((clip(p) - t)^2))``; ``psnr_01``: data range 1, ``10 log10(1 / mse)``;
   ``psnr_eps`` / ``psnr_01_eps``: ``10 log10(r^2 / (mse + eps))`` (no clipping) / ``10 log10(1 /
   (mse + eps))``, ``eps = sys.float_info.epsilon`` (finite for a perfect fill).

A perfect fill has ``mse == 0``, ``ssim == 1`` and ``psnr == psnr_01 == inf``. A target constant
inside the mask has ``r == 0``: ``psnr`` is ``nan`` and ``psnr_eps`` ``-inf`` (as in the package).
Inputs the package would turn into NaN or a crash (:func:`unscorable_reason`: empty mask, NaN/Inf,
voided percentiles that coincide) raise :class:`UnscorableCase` instead.

The files are read as the package reads them (:func:`read_challenge_volume`): nibabel's scaled data
cast back to the type stored in the header, then float32.
"""

from __future__ import annotations

import math
import sys
from typing import Any, Dict, Optional, Tuple

import numpy as np

from ..errors import format_shape
from .metrics import _to_numpy, brasyn_normalize, normalization_bounds

__all__ = ["INPAINTING_METRICS", "EPSILON", "UnscorableCase", "read_challenge_volume", "unscorable_reason",
           "inpainting_metrics", "inpainting_file_metrics"]

INPAINTING_METRICS = ("ssim", "psnr", "psnr_01", "mse", "rmse", "mae", "msle", "psnr_eps", "psnr_01_eps")
"""Keys of :func:`inpainting_metrics`' result, in report order (the challenge ranks on ssim, psnr, mse)."""

EPSILON = sys.float_info.epsilon
"""Added to the MSE of ``psnr_eps`` and ``psnr_01_eps`` (2**-52)."""

INPUT_NAMES = ("prediction", "target", "voided", "mask")


class UnscorableCase(ValueError):
    """Inputs the challenge's formulas cannot score; ``volume`` names the culprit (one of
    ``prediction``, ``target``, ``voided``, ``mask``)."""

    def __init__(self, volume: str, reason: str):
        super().__init__(f"{volume}: {reason}")
        self.volume = volume
        self.reason = reason


def read_challenge_volume(path: Any) -> np.ndarray:
    """An (X, Y, Z) float32 volume read as the official package reads it.

    nibabel's data with the header's scaling applied (float64), cast back to the data type stored in
    the header (so a scaled integer file loses its fractions, as in the package), then float32.

    Raises:
        CwdmError: the file is missing, unreadable, corrupt or not 3D (one line naming it).
    """
    from ..data.nifti_io import load_header
    from ..errors import CwdmError

    shape, _, img = load_header(path)
    try:
        data = np.asarray(img.get_fdata())
    except Exception as exc:  # nibabel / gzip raise many kinds on truncated data
        if isinstance(exc, MemoryError):
            raise
        raise CwdmError(f"{path}: unreadable or corrupt NIfTI data ({type(exc).__name__}: {exc})") from None
    with np.errstate(invalid="ignore", over="ignore"):
        data = data.astype(img.header.get_data_dtype(), copy=False)
    return np.asarray(data, dtype=np.float32).reshape(shape)


def _nonfinite(arr: np.ndarray) -> int:
    return int(arr.size - np.count_nonzero(np.isfinite(arr)))


def unscorable_reason(prediction: Any, target: Any, voided: Any, mask: Any) -> Optional[Tuple[str, str]]:
    """``(input name, why)`` when the four (X, Y, Z) inputs cannot be scored, else None.

    Checked in this order: shapes (all four alike, 3D), an empty mask, NaN/Inf voxels in the
    prediction, the target or the voided image, and voided 0.5 / 99.5 percentiles that coincide once a
    negative ``lo`` is raised to 0 (normalization undefined).
    """
    vols = dict(zip(INPUT_NAMES, (_to_numpy(v) for v in (prediction, target, voided, mask))))
    ref_shape = vols["target"].shape
    if len(ref_shape) != 3:
        return "target", f"not a 3D volume (shape {ref_shape})"
    for name in ("prediction", "voided", "mask"):
        shape = vols[name].shape
        if shape != ref_shape:
            return name, f"shape {format_shape(shape)} differs from the target's ({format_shape(ref_shape)})"
    if not np.any(vols["mask"]):
        return "mask", "empty mask (no voxel is set): nothing to score"
    for name in ("prediction", "target", "voided"):
        bad = _nonfinite(vols[name])
        if bad:
            return name, f"{bad} non-finite voxels (NaN/Inf)"
    lo, hi = normalization_bounds(vols["voided"].astype(np.float32, copy=False))
    if not hi > lo:
        return "voided", (f"its 0.5 / 99.5 percentiles coincide after raising a negative lo to 0 (lo {lo:g}, "
                          f"hi {hi:g}): normalization undefined")
    return None


def _psnr(data_range: float, mse: float) -> float:
    """``10 log10(data_range^2 / mse)`` with the limits torchmetrics reaches in float arithmetic."""
    if mse == 0.0:
        return math.inf if data_range > 0 else math.nan
    if data_range == 0.0:
        return -math.inf
    return 10.0 * math.log10(data_range * data_range / mse)


def inpainting_metrics(prediction: Any, target: Any, voided: Any, mask: Any,
                       device: Any = None) -> Dict[str, float]:
    """The challenge's scores of one filled volume (definitions: the module docstring).

    Args:
        prediction: the filled t1n, (X, Y, Z), any numeric dtype (read as float32, as the package does).
        target: the complete t1n, (X, Y, Z), same units as ``prediction``.
        voided: the t1n with the region set to 0, (X, Y, Z): the normalization bounds come from it.
        mask: (X, Y, Z), non-zero where scored (the challenge's ``mask-healthy``).
        device: torch device of the SSIM computation (None: CPU).

    Returns:
        ``{name: float}`` for :data:`INPAINTING_METRICS` (float64 arithmetic after the float32 read).

    Raises:
        UnscorableCase: see :func:`unscorable_reason` (its ``volume`` names the input).
    """
    import torch
    from torchmetrics.functional.image import structural_similarity_index_measure

    why = unscorable_reason(prediction, target, voided, mask)
    if why is not None:
        raise UnscorableCase(*why)
    m = _to_numpy(mask) != 0
    weight = m.astype(np.float32)
    bounds = normalization_bounds(_to_numpy(voided).astype(np.float32, copy=False))
    pn, tn = (brasyn_normalize(_to_numpy(v).astype(np.float32, copy=False) * weight, bounds=bounds,
                               dtype=np.float64) for v in (prediction, target))
    dev = torch.device("cpu") if device is None else torch.device(device)
    with torch.no_grad():
        _, smap = structural_similarity_index_measure(torch.from_numpy(pn)[None].to(dev),
                                                      torch.from_numpy(tn)[None].to(dev), return_full_image=True)
    ssim_map = smap[0].cpu().numpy()
    del smap

    p, t = pn[m], tn[m]
    diff = p - t
    mse = float(np.mean(diff * diff))
    t_lo, t_hi = float(t.min()), float(t.max())
    clipped = np.clip(p, t_lo, t_hi) - t
    out = {
        "ssim": float(ssim_map[m].mean(dtype=np.float64)),
        "psnr": _psnr(t_hi - t_lo, float(np.mean(clipped * clipped))),
        "psnr_01": _psnr(1.0, float(np.mean(np.square(np.clip(p, 0.0, 1.0) - t)))),
        "mse": mse,
        "rmse": math.sqrt(mse),
        "mae": float(np.mean(np.abs(diff))),
        "msle": float(np.mean(np.square(np.log1p(p) - np.log1p(t)))),
        "psnr_eps": _psnr(t_hi - t_lo, mse + EPSILON),
        "psnr_01_eps": _psnr(1.0, mse + EPSILON),
    }
    return {k: out[k] for k in INPAINTING_METRICS}


def inpainting_file_metrics(prediction: Any, target: Any, voided: Any, mask: Any,
                            device: Any = None) -> Dict[str, float]:
    """:func:`inpainting_metrics` of four NIfTI files read as the package reads them.

    Args:
        prediction: ``<case>-t1n-inference.nii.gz``.
        target: ``<case>-t1n.nii.gz``.
        voided: ``<case>-t1n-voided.nii.gz``.
        mask: ``<case>-mask-healthy.nii.gz`` (the challenge's scoring mask).
        device: torch device of the SSIM computation (None: CPU).

    Raises:
        CwdmError: a file cannot be read, or the inputs cannot be scored (one line naming the file).
    """
    from ..errors import CwdmError

    paths = dict(zip(INPUT_NAMES, (prediction, target, voided, mask)))
    vols = {name: read_challenge_volume(path) for name, path in paths.items()}
    try:
        return inpainting_metrics(vols["prediction"], vols["target"], vols["voided"], vols["mask"], device=device)
    except UnscorableCase as exc:
        raise CwdmError(f"{paths[exc.volume]}: {exc.reason}; not scored") from None

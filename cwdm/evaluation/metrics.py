"""Image-quality metrics of a synthesized volume against its reference, as the BraSyn challenge scores them.

Every array below is one (X, Y, Z) volume (nibabel order); tensors and arrays
with leading axes of size 1 (e.g. (1, 1, X, Y, Z)) are accepted too.

Normalization (:func:`brasyn_normalize`): ``lo, hi = np.percentile(v, [0.5,
99.5])`` over all voxels (background included), a negative ``lo`` becomes 0,
then ``(clip(v, lo, hi) - lo) / (hi - lo)``.

The challenge's scores (:func:`case_metrics`, pinned by
``tests/data/reference/brasyn_metrics.npz``):

* ``ssim``: torchmetrics' SSIM with its defaults (3D Gaussian kernel 11,
  sigma 1.5, data range from the inputs, mean of the whole map) of the
  prediction and the target, each normalized with its *own* percentiles.
* ``ssim_tumor``: the same SSIM of the *masked volumes* ``pred * m`` and
  ``target * m`` (``m = seg > 0``), mean over the whole volume, data range of
  the masked volumes; ``ssim_non_tumor``: the same with ``1 - m``.
* ``psnr``, ``mse``, ``mae`` (BraTS inpainting convention): the target
  normalized with its percentiles, the prediction clipped and scaled with the
  *target's* ``lo, hi``; errors over the brain voxels (any reference volume
  non-zero, :func:`brain_mask`); ``psnr = 10 log10(1 / mse)`` (torchmetrics
  ``PeakSignalNoiseRatio(data_range=1.0)``).

Not challenge scores (not comparable with leaderboards): ``ssim_tumor_region``
and ``ssim_non_tumor_region``, the mean of the whole-volume SSIM map inside the
tumour / inside the brain outside the tumour; ``mae_tumor`` / ``mae_non_tumor``;
``hf_energy_ratio``, the fine detail of the synthesis relative to the
reference's on the ``mse`` scale (:mod:`cwdm.evaluation.realism`).

Degenerate volumes (:func:`degenerate_reason`: NaN/Inf voxels, all zero,
constant, or percentiles that coincide) cannot be scored; :func:`case_metrics`
raises :class:`DegenerateVolume` for them. Identical volumes have ``mse == 0``
and ``psnr == inf`` (returned as is); a metric that cannot be computed (no
segmentation, empty region) is ``nan``. How ``cwdm evaluate`` writes them is
documented in :mod:`cwdm.commands.evaluate`.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Optional, Tuple

import numpy as np

__all__ = ["PERCENTILES", "PSNR_CAP_DB", "METRIC_NAMES", "CHALLENGE_METRICS", "DegenerateVolume",
           "PRED_SCALES", "reference_on_prediction_scale",
           "normalization_bounds", "brasyn_normalize", "degenerate_reason", "brain_mask", "ssim_3d",
           "masked_errors", "case_metrics"]

PERCENTILES = (0.5, 99.5)
"""Lower / upper clipping percentiles of :func:`brasyn_normalize`."""

PSNR_CAP_DB = 100.0
"""Cap (dB) applied to PSNR values before summary statistics (``mse == 0`` gives inf)."""

CHALLENGE_METRICS = ("ssim", "ssim_tumor", "ssim_non_tumor", "psnr", "mse", "mae")
"""The scores defined as the challenge defines them (see the module docstring)."""

METRIC_NAMES = CHALLENGE_METRICS + ("ssim_tumor_region", "ssim_non_tumor_region", "mae_tumor", "mae_non_tumor",
                                     "hf_energy_ratio")
"""Keys of :func:`case_metrics`' result, in report order (``hf_energy_ratio``: :mod:`cwdm.evaluation.realism`)."""


PRED_SCALES = ("auto", "target", "unit")
"""How a prediction's intensities relate to its reference (see :func:`reference_on_prediction_scale`)."""


def reference_on_prediction_scale(pred: Any, ref: Any, scale: str = "auto") -> Tuple[np.ndarray, str]:
    """The reference to score ``pred`` against for PSNR / MSE / MAE, and the scale used.

    The BraTS convention scales the prediction with the *target's* percentiles,
    so the prediction must be in the target's intensity units. cwdm (like the
    reference implementation) writes syntheses on the model's scale instead:
    each volume clipped to its 0.1 / 99.9 % quantiles and scaled to [0, 1]
    (:func:`cwdm.data.preprocess.clip_and_normalize`), which is what the network is
    trained to produce. ``scale``:

    * ``"target"``: ``pred`` is in ``ref``'s units; ``ref`` is used as is.
    * ``"unit"``: ``pred`` is on the model scale; ``ref`` is brought to it with
      ``clip_and_normalize`` first (the same map the network's training target had).
    * ``"auto"``: ``"unit"`` when every finite ``pred`` voxel is in [0, 1] and
      ``ref``'s maximum is above 1 (a raw scan), else ``"target"``.

    SSIM is unaffected (each volume is normalized with its own percentiles).

    Returns:
        (reference (X, Y, Z), ``"target"`` or ``"unit"``).
    """
    from ..data.preprocess import clip_and_normalize

    if scale not in PRED_SCALES:
        raise ValueError(f"unknown prediction scale {scale!r}; choose one of {', '.join(PRED_SCALES)}")
    r = _to_numpy(ref)
    if scale == "auto":
        p = _to_numpy(pred)
        finite = p[np.isfinite(p)]
        on_unit = finite.size > 0 and float(finite.min()) >= 0.0 and float(finite.max()) <= 1.0
        scale = "unit" if on_unit and np.isfinite(r).all() and float(r.max()) > 1.0 else "target"
    if scale == "unit" and np.isfinite(r).all():
        return clip_and_normalize(r).astype(np.float32), "unit"
    return r, scale


class DegenerateVolume(ValueError):
    """A volume that cannot be scored (NaN/Inf, all zero, constant, coinciding percentiles).

    ``volume`` says which one: ``"prediction"`` or ``"reference"``.
    """

    def __init__(self, volume: str, reason: str):
        super().__init__(f"{volume} is degenerate: {reason}")
        self.volume = volume


def _to_numpy(x: Any) -> np.ndarray:
    """numpy view of an array or (CPU/GPU) tensor, batch/channel axes of size 1 dropped."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    while arr.ndim > 3 and arr.shape[0] == 1:
        arr = arr[0]
    return arr


def _nonfinite_count(arr: np.ndarray) -> int:
    return int(arr.size - np.count_nonzero(np.isfinite(arr)))


def normalization_bounds(vol: Any, percentiles=PERCENTILES, strictly_positive: bool = True) -> Tuple[float, float]:
    """``(lo, hi)`` of :func:`brasyn_normalize` for an (X, Y, Z) volume: its percentiles, negative ``lo`` -> 0.

    Raises:
        ValueError: ``vol`` is empty or holds NaN/Inf.
    """
    arr = _to_numpy(vol)
    if arr.size == 0:
        raise ValueError("cannot normalize an empty volume")
    bad = _nonfinite_count(arr)
    if bad:
        raise ValueError(f"volume holds {bad} non-finite voxels (NaN/Inf)")
    lo, hi = (float(v) for v in np.percentile(arr.astype(np.float64, copy=False), list(percentiles)))
    if strictly_positive and lo < 0:
        lo = 0.0
    return lo, hi


def brasyn_normalize(vol: Any, percentiles=PERCENTILES, strictly_positive: bool = True,
                     bounds: Optional[Tuple[float, float]] = None, dtype: Any = np.float32) -> np.ndarray:
    """Clip an (X, Y, Z) volume to ``[lo, hi]`` and scale it to [0, 1]; (X, Y, Z) of ``dtype`` (float32 by
    default; computed in float64 either way).

    ``lo, hi`` are the volume's own :func:`normalization_bounds` unless
    ``bounds`` gives them (e.g. the target's, to scale a prediction as the
    challenge's PSNR does). The result is ``(clip(vol, lo, hi) - lo) / (hi -
    lo)``; with ``hi <= lo`` (constant volume, or all values <= 0 with
    ``strictly_positive``) it is all zeros.

    Raises:
        ValueError: ``vol`` is empty or holds NaN/Inf.
    """
    arr = _to_numpy(vol)
    if bounds is None:
        lo, hi = normalization_bounds(arr, percentiles, strictly_positive)
    else:
        lo, hi = (float(b) for b in bounds)
        bad = _nonfinite_count(arr)
        if bad:
            raise ValueError(f"volume holds {bad} non-finite voxels (NaN/Inf)")
    if not hi > lo:
        return np.zeros(arr.shape, dtype=dtype)
    out = (np.clip(arr.astype(np.float64, copy=False), lo, hi) - lo) / (hi - lo)
    return out.astype(dtype, copy=False)


def degenerate_reason(vol: Any) -> Optional[str]:
    """Why an (X, Y, Z) volume cannot be scored, or None when it can.

    Degenerate: any NaN/Inf voxel, all zero, constant, or 0.5 / 99.5
    percentiles that coincide after the negative-``lo`` rule (normalization
    undefined, e.g. fewer than 0.5 % of the voxels above 0).
    """
    arr = _to_numpy(vol)
    if arr.size == 0:
        return "empty volume"
    bad = _nonfinite_count(arr)
    if bad:
        return f"{bad} non-finite voxels (NaN/Inf)"
    vmin, vmax = float(arr.min()), float(arr.max())
    if vmin == vmax:
        return "all zero" if vmax == 0 else f"constant (every voxel {vmax:g})"
    lo, hi = normalization_bounds(arr)
    if not hi > lo:
        return (f"its {PERCENTILES[0]:g} / {PERCENTILES[1]:g} percentiles coincide after clipping at 0 "
                f"(lo {lo:g}, hi {hi:g}): normalization undefined")
    return None


def brain_mask(*volumes: Any) -> np.ndarray:
    """Boolean (X, Y, Z) mask of the voxels where any of the (X, Y, Z) ``volumes`` is non-zero."""
    if not volumes:
        raise ValueError("brain_mask needs at least one volume")
    mask: Optional[np.ndarray] = None
    for v in volumes:
        nz = _to_numpy(v) != 0
        if mask is not None and nz.shape != mask.shape:
            raise ValueError(f"volume shapes differ: {mask.shape} vs {nz.shape}")
        mask = nz if mask is None else (mask | nz)
    return mask  # type: ignore[return-value]


def _masked_mean(values: np.ndarray, mask: np.ndarray) -> float:
    sel = values[mask]
    return float(sel.mean(dtype=np.float64)) if sel.size else math.nan


def _check_mask(mask: Any, shape, name: str) -> Optional[np.ndarray]:
    if mask is None:
        return None
    m = _to_numpy(mask)
    if m.shape != tuple(shape):
        raise ValueError(f"{name} shape {m.shape} differs from the volume shape {tuple(shape)}")
    return m.astype(bool, copy=False)


def ssim_3d(pred: Any, ref: Any, mask_tumor: Any = None, mask_brain: Any = None,
            device: Any = None) -> Dict[str, float]:
    """The challenge's SSIM scores of two (already normalized) volumes, and the region means of its map.

    Args:
        pred, ref: (X, Y, Z) arrays or tensors of the same shape (normally the
            outputs of :func:`brasyn_normalize`, each with its own bounds);
            computed as (1, 1, X, Y, Z) float32 tensors with
            ``torchmetrics.functional.image.structural_similarity_index_measure``
            defaults (``data_range=None``: taken from the inputs).
        mask_tumor: boolean (X, Y, Z) tumour mask (``seg > 0``), or None.
        mask_brain: boolean (X, Y, Z) brain mask, or None (whole volume); only
            restricts ``ssim_non_tumor_region``.
        device: torch device for the SSIM computation (None: CPU). With a
            tumour mask three SSIM maps are computed; one full BraTS volume
            (240 x 240 x 155) takes about 30 s and 4 GB per map on 2 CPU cores.

    Returns:
        ``ssim`` (mean of the SSIM map of ``pred`` and ``ref``),
        ``ssim_tumor`` (SSIM of ``pred * m`` and ``ref * m``, ``m`` the tumour
        mask), ``ssim_non_tumor`` (the same with ``1 - m``),
        ``ssim_tumor_region`` (mean of the ``ssim`` map over the tumour) and
        ``ssim_non_tumor_region`` (its mean over ``mask_brain & ~m``). All but
        ``ssim`` are ``nan`` without ``mask_tumor`` or when their region is empty.
    """
    import torch
    from torchmetrics.functional.image import structural_similarity_index_measure

    p = _to_numpy(pred)
    r = _to_numpy(ref)
    if p.ndim != 3 or p.shape != r.shape:
        raise ValueError(f"expected two 3D volumes of the same shape, got {p.shape} and {r.shape}")
    tumor = _check_mask(mask_tumor, p.shape, "tumour mask")
    brain = _check_mask(mask_brain, p.shape, "brain mask")
    dev = torch.device("cpu") if device is None else torch.device(device)
    pt = torch.from_numpy(np.ascontiguousarray(p, dtype=np.float32))[None, None].to(dev)
    rt = torch.from_numpy(np.ascontiguousarray(r, dtype=np.float32))[None, None].to(dev)
    out = dict.fromkeys(("ssim", "ssim_tumor", "ssim_non_tumor", "ssim_tumor_region", "ssim_non_tumor_region"),
                        math.nan)
    with torch.no_grad():
        value, full = structural_similarity_index_measure(pt, rt, return_full_image=True)
        out["ssim"] = float(value)
        smap = full[0, 0].cpu().numpy()
        del full
        if tumor is not None:
            m = torch.from_numpy(tumor.astype(np.float32))[None, None].to(dev)
            for key, weight, region in (("ssim_tumor", m, tumor), ("ssim_non_tumor", 1.0 - m, ~tumor)):
                if region.any():
                    out[key] = float(structural_similarity_index_measure(pt * weight, rt * weight))
            out["ssim_tumor_region"] = _masked_mean(smap, tumor)
            healthy = ~tumor if brain is None else (brain & ~tumor)
            out["ssim_non_tumor_region"] = _masked_mean(smap, healthy)
    return out


def masked_errors(pred: Any, ref: Any, mask: Any = None) -> Dict[str, float]:
    """MSE, MAE and PSNR (data range 1) of ``pred`` against ``ref`` over ``mask``.

    Args:
        pred, ref: (X, Y, Z) volumes of the same shape, normally in [0, 1].
        mask: boolean (X, Y, Z) mask of the voxels to use; None uses every voxel.

    Returns:
        ``{"psnr", "mse", "mae"}`` as floats (accumulated in float64),
        ``psnr = 10 log10(1 / mse)``: ``inf`` when ``mse == 0``; all three are
        ``nan`` for an empty mask.
    """
    p = _to_numpy(pred)
    r = _to_numpy(ref)
    if p.shape != r.shape:
        raise ValueError(f"volume shapes differ: {p.shape} vs {r.shape}")
    m = _check_mask(mask, p.shape, "mask")
    diff = p.astype(np.float64) - r.astype(np.float64)
    if m is not None:
        diff = diff[m]
    if diff.size == 0:
        return {"psnr": math.nan, "mse": math.nan, "mae": math.nan}
    mse = float(np.mean(diff * diff))
    mae = float(np.mean(np.abs(diff)))
    psnr = math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)
    return {"psnr": psnr, "mse": mse, "mae": mae}


def case_metrics(pred: Any, ref: Any, brain_mask: Any = None, seg: Any = None,
                 device: Any = None) -> Dict[str, float]:
    """All metrics of one synthesized volume, from raw (un-normalized) volumes.

    SSIM (:func:`ssim_3d`) on ``pred`` and ``ref`` each normalized with its
    own percentiles; PSNR/MSE/MAE (:func:`masked_errors`) inside
    ``brain_mask`` on ``ref`` normalized with its percentiles and ``pred``
    clipped and scaled with the same (the reference's) bounds.

    Args:
        pred: synthesized (X, Y, Z) volume.
        ref: true (X, Y, Z) volume of the same shape.
        brain_mask: boolean (X, Y, Z) mask (any reference volume non-zero, see
            :func:`cwdm.evaluation.metrics.brain_mask`); None uses ``ref != 0``.
        seg: (X, Y, Z) segmentation or None; tumour = ``seg > 0``.
        device: torch device of the SSIM computation (None: CPU).

    Returns:
        dict with the keys of :data:`METRIC_NAMES` (floats; ``nan`` where
        undefined, ``inf`` PSNR for identical volumes).

    Raises:
        DegenerateVolume: ``pred`` or ``ref`` cannot be scored (its
            ``volume`` is ``"prediction"`` or ``"reference"``).
        ValueError: shapes differ.
    """
    from .realism import hf_energy_ratio

    p = _to_numpy(pred)
    r = _to_numpy(ref)
    if p.shape != r.shape:
        raise ValueError(f"prediction shape {p.shape} differs from reference shape {r.shape}")
    for name, vol in (("reference", r), ("prediction", p)):
        why = degenerate_reason(vol)
        if why is not None:
            raise DegenerateVolume(name, why)
    brain = (r != 0) if brain_mask is None else _check_mask(brain_mask, r.shape, "brain mask")
    tumor = None if seg is None else (_check_mask(_to_numpy(seg) > 0, r.shape, "segmentation"))
    bounds = normalization_bounds(r)
    rn = brasyn_normalize(r, bounds=bounds)
    out = ssim_3d(brasyn_normalize(p), rn, mask_tumor=tumor, mask_brain=brain, device=device)
    pn = brasyn_normalize(p, bounds=bounds)
    out.update(masked_errors(pn, rn, brain))
    # where the errors are: inside the tumour, and in the brain outside it (nan without a seg)
    out["mae_tumor"] = masked_errors(pn, rn, tumor)["mae"] if tumor is not None else math.nan
    out["mae_non_tumor"] = masked_errors(pn, rn, brain & ~tumor)["mae"] if tumor is not None else math.nan
    out["hf_energy_ratio"] = hf_energy_ratio(pn, rn, brain)  # fine detail kept (1) or blurred away (< 1)
    return {k: out[k] for k in METRIC_NAMES}

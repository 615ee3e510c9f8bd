"""Healthy-tissue masks for the inpainting task: regions of healthy brain to void and fill.

The BraTS inpainting challenge voids a region of healthy tissue (``<case>-mask-healthy``) and scores
the fill there, where the true tissue is known. :func:`draw_healthy_mask` draws such a region:

* inside the brain (``brain``, bool (X, Y, Z)) and with no voxel within ``margin`` voxels (Euclidean
  distance, voxel units) of the tumour (``tumour``, bool (X, Y, Z); all False for a healthy brain):
  every mask voxel's distance to the nearest tumour voxel is larger than ``margin``;
* one 6-connected region (as :func:`scipy.ndimage.label` counts by default) of exactly
  ``round(f * brain voxels)`` voxels (at least 1), the fraction ``f`` drawn log-uniformly in
  ``size_range`` (default 0.5 % to 5 % of the brain: at BraTS size, 1.5 million brain voxels, that
  is about 7 000 to 70 000 voxels, a ball of 24 to 51 mm in diameter; the challenge's healthy masks
  are of this order);
* of irregular shape: around a random centre ``c``, the region is the set of lowest values of the
  score

      s(x) = |A R (x - c)| / r * exp(a n(x))

  grown from the centre (where ``s`` is 0, its only zero) in order of increasing score: the
  sub-level set of ``s`` that holds the centre, completed voxel by voxel to the exact volume. ``r``
  is the radius of a ball of the region's volume; ``R`` a random rotation and ``A`` a diagonal
  stretch with axis factors ``exp(u_i - mean(u))``, ``u_i`` uniform in ``[-log 1.8, log 1.8]``
  (elongated, flattened or round regions); ``n`` a smooth Gaussian random field of unit standard
  deviation and correlation length about ``r / 3`` (white noise on a grid of spacing ``r / 3``,
  smoothed over one grid step and interpolated linearly), weighted by ``a`` uniform in
  ``[0.2, 0.5]``: the region's radius in a direction varies by the factor ``exp(-a n)`` (from nearly
  an ellipsoid to a lobed blob). The region is cut by the brain's edge and the tumour's margin
  where it meets them.

The centre is the most surrounded of :data:`CANDIDATES` random voxels of the allowed tissue (the
one with the most allowed voxels in a cube of side ``r`` around it), so that regions lie mostly
within tissue rather than along its edge. When the allowed tissue connected to the centre (within
a box of half-side ``2.5 r`` around it) is too small, another fraction and centre are drawn, up to
:data:`ATTEMPTS` times; so where large regions do not fit (a small brain, a large tumour), the
drawn sizes lean to the small end of ``size_range``. When none fits, :class:`CwdmError`.

The draw uses only ``rng``: the same generator state gives the same mask. Everything is in voxel
units (voxel spacing is not taken into account). On a BraTS volume (240 x 240 x 155) a draw takes a
fraction of a second.

Callers with a segmentation pass ``tumour = seg > 0`` (BraTS labels 1, 2, 3, edema included), or the
challenge's ``<case>-mask-unhealthy`` file read as bool.
"""

from __future__ import annotations

import heapq
import math
from typing import Tuple

import numpy as np
from scipy import ndimage

from ..errors import CwdmError, option

__all__ = ["draw_healthy_mask", "ATTEMPTS", "CANDIDATES"]

ATTEMPTS = 25
"""Draws of (size, centre) tried before :func:`draw_healthy_mask` gives up."""
CANDIDATES = 8
"""Random centres compared per attempt (the most surrounded by allowed tissue is used)."""
STRETCH = math.log(1.8)
"""Half-range of the log axis factors of the stretch ``A``."""
NOISE = (0.2, 0.5)
"""Range of the weight ``a`` of the random field."""
BOX = 2.5
"""Half-side, in region radii ``r``, of the box a region is grown in."""


def _check(brain: np.ndarray, tumour: np.ndarray, size_range, margin) -> Tuple[np.ndarray, np.ndarray,
                                                                                   float, float, int]:
    brain = np.asarray(brain).astype(bool, copy=False)
    tumour = np.asarray(tumour).astype(bool, copy=False)
    if brain.ndim != 3 or tumour.shape != brain.shape:
        raise ValueError(f"brain and tumour must be (X, Y, Z) arrays of one shape, got {brain.shape} "
                         f"and {tumour.shape}")
    try:
        lo, hi = (float(v) for v in size_range)
    except (TypeError, ValueError):
        raise CwdmError(f"{option('size_range')} must be two fractions of the brain volume (smallest, "
                        f"largest), got {size_range!r}") from None
    if not (0.0 < lo <= hi < 1.0):
        raise CwdmError(f"{option('size_range')} must be two fractions with 0 < smallest <= largest < 1, "
                        f"got {lo:g} {hi:g}")
    if int(margin) != margin or margin < 0:
        raise CwdmError(f"{option('margin')} must be a whole number of voxels >= 0, got {margin!r}")
    return brain, tumour, lo, hi, int(margin)


def allowed_tissue(brain: np.ndarray, tumour: np.ndarray, margin: int) -> np.ndarray:
    """Bool (X, Y, Z): the voxels of ``brain`` farther than ``margin`` voxels (Euclidean) from every
    voxel of ``tumour`` (both bool (X, Y, Z)); ``brain`` itself when there is no tumour."""
    allowed = brain.copy()
    if not tumour.any():
        return allowed
    idx = np.nonzero(tumour)
    box = tuple(slice(max(0, int(i.min()) - margin - 1), min(n, int(i.max()) + margin + 2))
                for i, n in zip(idx, tumour.shape))
    # every voxel within margin of the tumour lies in this box, and so does every tumour voxel:
    # the distances computed inside it are the true ones
    near = ndimage.distance_transform_edt(~tumour[box]) <= margin
    allowed[box] &= ~near
    return allowed


def _box(centre, half: int, shape) -> Tuple[slice, ...]:
    return tuple(slice(max(0, c - half), min(n, c + half + 1)) for c, n in zip(centre, shape))


def _pick_centre(allowed_idx: np.ndarray, allowed: np.ndarray, radius: float,
                 rng: np.random.Generator) -> Tuple[int, ...]:
    """The most surrounded of :data:`CANDIDATES` random allowed voxels (cube of side ``radius``)."""
    picks = allowed_idx[rng.integers(0, allowed_idx.size, size=CANDIDATES)]
    half = max(1, int(round(radius / 2)))
    best, best_count = None, -1
    for flat in picks:
        centre = tuple(int(v) for v in np.unravel_index(int(flat), allowed.shape))
        count = int(allowed[_box(centre, half, allowed.shape)].sum())
        if count > best_count:
            best, best_count = centre, count
    return best  # type: ignore[return-value]


def _interpolation(n: int, coarse: int, spacing: float) -> np.ndarray:
    """Float32 (n, coarse) matrix of linear interpolation from a grid of ``spacing`` voxels to ``n`` voxels."""
    pos = np.arange(n, dtype=np.float64) / spacing + 0.5
    left = np.clip(np.floor(pos).astype(int), 0, coarse - 2)
    w = pos - left
    out = np.zeros((n, coarse), dtype=np.float32)
    out[np.arange(n), left] = 1.0 - w
    out[np.arange(n), left + 1] = w
    return out


def _smooth_field(shape: Tuple[int, ...], spacing: float, rng: np.random.Generator) -> np.ndarray:
    """Float32 ``shape`` Gaussian random field, zero mean and unit standard deviation, correlated over
    about ``spacing`` voxels (white noise on a coarse grid, smoothed, interpolated linearly)."""
    coarse = tuple(int(math.ceil(n / spacing)) + 2 for n in shape)
    noise = ndimage.gaussian_filter(rng.standard_normal(coarse), 1.0, mode="wrap").astype(np.float32)
    wx, wy, wz = (_interpolation(n, c, spacing) for n, c in zip(shape, coarse))
    field = np.einsum("ai,bj,ck,ijk->abc", wx, wy, wz, noise, optimize=True)
    field -= field.mean()
    std = field.std()
    return field / std if std > 0 else field


def _score(shape: Tuple[int, ...], centre: Tuple[int, ...], radius: float,
           rng: np.random.Generator) -> np.ndarray:
    """Float32 ``shape`` score ``|A R (x - c)| / r * exp(a n(x))`` (module docstring); ``centre`` in box
    voxels, where the score is 0 (elsewhere it is positive)."""
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    rot = q * np.sign(np.diag(r))
    u = rng.uniform(-STRETCH, STRETCH, size=3)
    stretch = np.exp(u - u.mean())
    weight = rng.uniform(*NOISE)
    grids = [(np.arange(n, dtype=np.float32) - c) for n, c in zip(shape, centre)]
    d2 = np.zeros(shape, dtype=np.float32)
    for i in range(3):
        axis = (rot[i, 0] * grids[0][:, None, None] + rot[i, 1] * grids[1][None, :, None]
                + rot[i, 2] * grids[2][None, None, :]) * np.float32(stretch[i] / radius)
        d2 += axis * axis
    return np.sqrt(d2) * np.exp(np.float32(weight) * _smooth_field(shape, max(1.0, radius / 3), rng))


def _component(region: np.ndarray, centre: Tuple[int, ...]) -> np.ndarray:
    """Bool: the 6-connected component of ``region`` that holds ``centre`` (labelled within the
    bounding box of ``region``)."""
    box = []
    for axis in range(3):
        hit = np.flatnonzero(region.any(axis=tuple(a for a in range(3) if a != axis)))
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
    labels, _ = ndimage.label(region[tuple(box)])
    out = np.zeros(region.shape, dtype=bool)
    out[tuple(box)] = labels == labels[tuple(c - b.start for c, b in zip(centre, box))]
    return out


def _complete(region: np.ndarray, allowed: np.ndarray, score: np.ndarray, target: int) -> np.ndarray:
    """Grow the connected ``region`` (bool, changed in place) within ``allowed`` to ``target`` voxels,
    adding the lowest-score 6-neighbour each time; returns it."""
    shape = region.shape
    steps = [(axis, d) for axis in range(3) for d in (-1, 1)]
    strides = [int(np.prod(shape[axis + 1:])) for axis in range(3)]
    flat_region, flat_allowed, flat_score = region.reshape(-1), allowed.reshape(-1), score.reshape(-1)
    edge = ndimage.binary_dilation(region) & allowed & ~region
    heap = [(float(flat_score[i]), int(i)) for i in np.flatnonzero(edge)]
    heapq.heapify(heap)
    count = int(region.sum())
    while count < target and heap:
        _, i = heapq.heappop(heap)
        if flat_region[i]:
            continue
        flat_region[i] = True
        count += 1
        coords = np.unravel_index(i, shape)
        for axis, d in steps:
            c = coords[axis] + d
            if 0 <= c < shape[axis]:
                j = i + d * strides[axis]
                if flat_allowed[j] and not flat_region[j]:
                    heapq.heappush(heap, (float(flat_score[j]), j))
    return region


def _grow(allowed: np.ndarray, centre: Tuple[int, ...], target: int, radius: float,
          rng: np.random.Generator) -> np.ndarray | None:
    """Bool (X, Y, Z) region of ``target`` voxels grown around ``centre``, or None when the allowed
    tissue connected to it in the box is smaller."""
    box = _box(centre, int(math.ceil(BOX * radius)) + 2, allowed.shape)
    local = tuple(c - s.start for c, s in zip(centre, box))
    ok = allowed[box]
    reach = _component(ok, local)
    if int(reach.sum()) < target:
        return None
    score = _score(ok.shape, local, radius, rng)
    values = np.sort(score[reach])
    # below the k-th smallest value there are at most k + 1 voxels (ties aside): the component of the
    # centre below index target - 1 has at most target voxels; the one below the last index is reach
    lo, hi = target - 1, values.size - 1
    region, top = _component(reach & (score <= values[lo]), local), reach
    gap = max(64, target // 50)
    while hi - lo > 1 and int(top.sum()) - int(region.sum()) > gap:
        mid = (lo + hi) // 2
        comp = _component(reach & (score <= values[mid]), local)
        if int(comp.sum()) <= target:
            lo, region = mid, comp
        else:
            hi, top = mid, comp
    if int(region.sum()) > target:  # ties at the threshold: grow from the centre alone
        region = np.zeros_like(reach)
        region[local] = True
    region = _complete(region, reach, score, target)
    out = np.zeros(allowed.shape, dtype=bool)
    out[box] = region
    return out


def draw_healthy_mask(brain: np.ndarray, tumour: np.ndarray, rng: np.random.Generator, *,
                      size_range: tuple = (0.005, 0.05), margin: int = 2) -> np.ndarray:
    """Draw one region of healthy tissue to void (see the module docstring for the model).

    Args:
        brain: bool (X, Y, Z), the brain (e.g. the image non-zero).
        tumour: bool (X, Y, Z), the tumour (``seg > 0`` or the ``mask-unhealthy`` file); may be all False.
        rng: the random generator; the same state gives the same mask.
        size_range: (smallest, largest) fraction of the brain's voxels; the fraction is drawn
            log-uniformly in it and the region has ``max(1, round(fraction * brain voxels))`` voxels.
        margin: voxels of healthy tissue kept around the tumour (mask voxels are farther than this
            from every tumour voxel).

    Returns:
        Bool (X, Y, Z): one 6-connected region inside ``brain``, farther than ``margin`` from ``tumour``.

    Raises:
        CwdmError: no region of a drawn size fits (an empty or tiny brain, tumour nearly everywhere),
            or a bad ``size_range`` / ``margin``.
    """
    brain, tumour, lo, hi, margin = _check(brain, tumour, size_range, margin)
    n_brain = int(brain.sum())
    if n_brain == 0:
        raise CwdmError("no brain voxels to draw a healthy-tissue mask in (the brain mask is empty)")
    allowed = allowed_tissue(brain, tumour, margin)
    allowed_idx = np.flatnonzero(allowed)
    if allowed_idx.size == 0:
        raise CwdmError(f"no healthy tissue farther than {margin} voxels from the tumour "
                        f"(brain {n_brain} voxels, tumour {int(tumour.sum())})")
    smallest = max(1, int(round(lo * n_brain)))
    for _ in range(ATTEMPTS):
        fraction = math.exp(rng.uniform(math.log(lo), math.log(hi)))
        target = max(1, int(round(fraction * n_brain)))
        if target > allowed_idx.size:
            continue
        radius = (3.0 * target / (4.0 * math.pi)) ** (1.0 / 3.0)
        centre = _pick_centre(allowed_idx, allowed, radius, rng)
        mask = _grow(allowed, centre, target, radius, rng)
        if mask is not None:
            return mask
    raise CwdmError(f"no healthy-tissue region of {lo:.3g} to {hi:.3g} of the brain ({smallest} voxels or "
                    f"more) fits in one piece farther than {margin} voxels from the tumour "
                    f"(brain {n_brain} voxels, {allowed_idx.size} allowed) after {ATTEMPTS} tries")

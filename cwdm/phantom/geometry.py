"""Geometry of ``cwdm phantom``: output grid, ICBM152 templates and spatial transform.

Holds the BraTS output grid (:func:`grid_shape`, :func:`grid_affine`), the
loading of the templates shipped in ``cwdm/templates/icbm152`` (see the
``COPYING`` notice there) with their resampling onto the 2009c grid and the
low-pass filtering for a coarser output grid (:func:`load_templates`), and the
coordinate field of the one linear resampling of a subject: random affine,
elastic warp and the tumour's mass effect, applied at the brain voxels of the
output grid by :func:`_subject_grid`. The tumour model and
:func:`~cwdm.phantom.anatomy.generate_case` are in :mod:`cwdm.phantom.anatomy`,
the contrasts in :mod:`cwdm.phantom.contrast`.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from importlib import resources

import numpy as np
from scipy import ndimage

BRATS_SHAPE = (240, 240, 155)
BRATS_AFFINE = np.array([[-1.0, 0.0, 0.0, 0.0],
                         [0.0, -1.0, 0.0, 239.0],
                         [0.0, 0.0, 1.0, 0.0],
                         [0.0, 0.0, 0.0, 1.0]])

TEMPLATE_FILES = {
    "t1": "mni_icbm152_t1bet_tal_nlin_sym_09c.nii.gz",
    "t2": "mni_icbm152_t2bet_tal_nlin_sym_09c.nii.gz",
    "mask": "mni_icbm152_t1_tal_nlin_sym_09c_mask.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}


# --------------------------------------------------------------------------- grid

def check_downsample(downsample) -> int:
    f = int(downsample)
    if f != downsample or not 1 <= f <= 16:
        raise ValueError(f"downsample must be an integer from 1 to 16, got {downsample!r}")
    return f


def grid_shape(downsample: int = 1) -> tuple:
    """Output grid: ``ceil(240/F) x ceil(240/F) x ceil(155/F)`` (F=4: 60 x 60 x 39)."""
    f = check_downsample(downsample)
    return tuple(-(-n // f) for n in BRATS_SHAPE)


def grid_affine(downsample: int = 1) -> np.ndarray:
    """Affine of the output grid.

    Voxel ``(i, j, k)`` of the F-times coarser grid is the block of full-size
    BraTS voxels ``F*i .. F*i+F-1`` (same for j, k), centred at full-size voxel
    ``F*i + (F-1)/2``: the affine is ``diag(-F, -F, F)`` with origin
    ``(-(F-1)/2, 239-(F-1)/2, (F-1)/2)``; F=1 gives the BraTS affine.
    """
    f = check_downsample(downsample)
    block = np.diag([f, f, f, 1.0])
    block[:3, 3] = (f - 1) / 2.0
    return BRATS_AFFINE @ block


# ---------------------------------------------------------------------- templates

@dataclass(frozen=True)
class Templates:
    """The aligned templates on the 2009c grid (arrays are read-only)."""

    t1: np.ndarray
    t2: np.ndarray
    mask: np.ndarray
    gm: np.ndarray          # grey-matter fraction, gm + wm <= 1
    wm: np.ndarray
    affine: np.ndarray      # voxel -> world (mm, RAS) of the 2009c grid
    ref: dict               # mean template intensity per tissue: ref["t1"]["wm"], ...
    centres: np.ndarray     # (n, 3) candidate tumour centres, template voxel coordinates
    depth: np.ndarray       # (n,) distance of each candidate to the brain surface (mm)
    bbox: tuple             # (lo, hi) voxel corners of the brain mask


def _template_path(name: str):
    return resources.files("cwdm.phantom") / "templates" / "icbm152" / name


def _load_nifti(name: str):
    import nibabel as nib

    with resources.as_file(_template_path(name)) as path:
        img = nib.load(str(path))
        return np.asarray(img.get_fdata(dtype=np.float32)), np.asarray(img.affine, dtype=np.float64)


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a, dtype=np.float32)
    a.flags.writeable = False
    return a


def _resample(src: np.ndarray, src_affine: np.ndarray, shape: tuple, affine: np.ndarray) -> np.ndarray:
    """Linear resampling of ``src`` onto the grid (shape, affine) via world coordinates."""
    m = np.linalg.inv(src_affine) @ affine
    shift = np.round(m[:3, 3])
    if np.allclose(m[:3, :3], np.eye(3)) and np.allclose(m[:3, 3], shift, atol=1e-6):
        # whole-voxel shift (the case of the 2009a -> 2009c maps): exact copy
        out = np.zeros(shape, dtype=np.float32)
        dst, got = [], []
        for n_out, n_src, s in zip(shape, src.shape, shift.astype(int)):
            lo, hi = max(0, -s), min(n_out, n_src - s)
            dst.append(slice(lo, max(lo, hi)))
            got.append(slice(lo + s, max(lo, hi) + s))
        out[tuple(dst)] = src[tuple(got)]
        return out
    return ndimage.affine_transform(src, m[:3, :3], m[:3, 3], output_shape=shape, order=1,
                                    mode="constant", cval=0.0).astype(np.float32)


@functools.lru_cache(maxsize=1)
def _load_raw() -> Templates:
    t1, aff = _load_nifti(TEMPLATE_FILES["t1"])
    t2, _ = _load_nifti(TEMPLATE_FILES["t2"])
    mask, _ = _load_nifti(TEMPLATE_FILES["mask"])
    mask = np.clip(mask, 0.0, 1.0)
    tissue = {}
    for key in ("gm", "wm"):
        prob, aff_a = _load_nifti(TEMPLATE_FILES[key])
        if prob.max() > 1.5:           # stored as uint8 0..255
            prob = prob / 255.0
        # 2009a grid -> 2009c grid through the world coordinates of both affines
        tissue[key] = _resample(prob, aff_a, t1.shape, aff) * mask
    total = np.maximum(tissue["gm"] + tissue["wm"], 1.0)
    gm, wm = tissue["gm"] / total, tissue["wm"] / total
    csf = np.clip(mask - gm - wm, 0.0, 1.0)
    inside = mask > 0.5

    ref = {}
    for con, img in (("t1", t1), ("t2", t2)):
        ref[con] = {name: float(img[inside & (p > 0.9)].mean())
                    for name, p in (("gm", gm), ("wm", wm), ("csf", csf))}

    # candidate tumour centres: cerebral white matter away from the midline,
    # brainstem and cerebellum, with their depth below the brain surface
    sub = inside[::2, ::2, ::2]
    depth = ndimage.distance_transform_edt(sub) * 2.0
    idx = np.argwhere(sub & (wm[::2, ::2, ::2] > 0.5)) * 2
    world = idx @ aff[:3, :3].T + aff[:3, 3]
    x, y, z = world.T
    keep = (np.abs(x) >= 10) & (z > -15) & (z < 55) & ~((y < -40) & (z < 8))
    idx = idx[keep]
    cdepth = depth[tuple((idx // 2).T)]
    lo = np.argwhere(inside).min(0)
    hi = np.argwhere(inside).max(0)
    return Templates(t1=_readonly(t1), t2=_readonly(t2), mask=_readonly(mask), gm=_readonly(gm),
                     wm=_readonly(wm), affine=aff, ref=ref, centres=idx.astype(np.float64),
                     depth=cdepth.astype(np.float64), bbox=(lo, hi))


@functools.lru_cache(maxsize=4)
def load_templates(downsample: int = 1) -> Templates:
    """Aligned templates, low-pass filtered for a coarser output grid (cached)."""
    f = check_downsample(downsample)
    raw = _load_raw()
    if f == 1:
        return raw
    sigma = 0.5 * f
    smooth = {k: _readonly(ndimage.gaussian_filter(getattr(raw, k), sigma, truncate=3.0))
              for k in ("t1", "t2", "mask", "gm", "wm")}
    return Templates(affine=raw.affine, ref=raw.ref, centres=raw.centres, depth=raw.depth,
                     bbox=raw.bbox, **smooth)


# -------------------------------------------------------------- spatial transform

def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * (k @ k)


def _translation(v) -> np.ndarray:
    m = np.eye(4)
    m[:3, 3] = v
    return m


def _output_to_template(p: dict, tpl: Templates, f: int) -> np.ndarray:
    """4x4 matrix from output voxel indices to template voxel indices (no warp)."""
    lo, hi = tpl.bbox
    brain_centre = (tpl.affine @ np.r_[(lo + hi) / 2.0, 1.0])[:3]
    # brain centre 3 mm below the grid centre: if anything is cut, it is the medulla
    grid_centre = (BRATS_AFFINE @ np.r_[(np.array(BRATS_SHAPE) - 1) / 2.0, 1.0])[:3] - [0.0, 0.0, 3.0]
    linear = np.eye(4)
    linear[:3, :3] = p["rot"] @ np.diag(1.0 / p["scale"])
    return (np.linalg.inv(tpl.affine) @ _translation(brain_centre + p["shift"]) @ linear
            @ _translation(-grid_centre) @ grid_affine(f))


def _crop(m: np.ndarray, tpl: Templates, shape: tuple, f: int) -> tuple:
    """Output-grid box that holds the moved brain (plus margin for warp/mass effect)."""
    lo, hi = tpl.bbox
    corners = np.array([[a, b, c, 1.0] for a in (lo[0], hi[0]) for b in (lo[1], hi[1])
                        for c in (lo[2], hi[2])])
    out = (np.linalg.inv(m) @ corners.T)[:3]
    margin = math.ceil(14.0 / f) + 1
    start = np.maximum(np.floor(out.min(1)).astype(int) - margin, 0)
    stop = np.minimum(np.ceil(out.max(1)).astype(int) + margin + 1, shape)
    return tuple(slice(a, b) for a, b in zip(start, stop))


def _coordinates(m: np.ndarray, box: tuple, p: dict, f: int) -> np.ndarray:
    """Template voxel coordinates (3, *box) of the affine + elastic warp (float32)."""
    axes = [np.arange(s.start, s.stop, dtype=np.float64) for s in box]
    shape = tuple(len(a) for a in axes)
    q = np.empty((3,) + shape, dtype=np.float32)
    tmp = np.empty(shape, dtype=np.float32)
    mm = [a * f for a in axes]          # output millimetres for the warp
    for c in range(3):
        ax, ay, az = (m[c, d] * axes[d] for d in range(3))
        q[c] = (ax + m[c, 3]).astype(np.float32)[:, None, None]
        q[c] += ay.astype(np.float32)[None, :, None]
        q[c] += az.astype(np.float32)[None, None, :]
        omega, phase, coef = p["warp"][c]
        for k in range(len(coef)):
            fx, fy, fz = (np.cos(omega[k, d] * mm[d] + phase[k, d]).astype(np.float32) for d in range(3))
            np.multiply((coef[k] * fx[:, None] * fy[None, :]).astype(np.float32)[:, :, None],
                        fz[None, None, :], out=tmp)
            q[c] += tmp
    return q


def _mass_effect(q: np.ndarray, p: dict) -> np.ndarray:
    """Pull the sampling positions towards the tumour centre, in place.

    A position at distance r from the centre samples the template at
    ``r * g(r)`` with ``g = 1 - a exp(-(r/w)^2)`` (monotone for a < 1), so the
    tissue around the tumour is pushed outwards by up to about ``0.43 a w``.
    Returns g (the pre-push position is ``c + (q - c) / g``).
    """
    centre = p["centre"].astype(np.float32)
    r2 = np.zeros(q.shape[1:], dtype=np.float32)
    for c in range(3):
        q[c] -= centre[c]
        r2 += q[c] * q[c]
    r2 *= np.float32(-1.0 / p["push_width"] ** 2)
    g = np.exp(r2, out=r2)
    g *= np.float32(-p["push"])
    g += np.float32(1.0)
    for c in range(3):
        q[c] *= g
        q[c] += centre[c]
    return g


# ------------------------------------------------------------- one resampling

def _subject_grid(p: dict, tpl: Templates, shape: tuple, f: int) -> dict:
    """The one resampling of a subject (affine + elastic warp + mass effect), at brain voxels only.

    Args:
        p: the subject's parameters (:func:`cwdm.phantom.anatomy._draw_parameters`).
        tpl: the templates at downsampling ``f``.
        shape: the output grid (X, Y, Z).
        f: the downsampling factor.

    Returns:
        ``{"box": tuple of 3 slices (the output-grid box that holds the brain),
        "inside": boolean (bx, by, bz) brain mask of the box, "flat": (n,) flat
        indices of its brain voxels, "pts": float32 (3, n) template voxel
        coordinates they sample, "push": float32 (n,) mass-effect factor g
        (:func:`_mass_effect`), "mask": float32 (n,)
        interpolated template brain mask}``.
    """
    m = _output_to_template(p, tpl, f)
    box = _crop(m, tpl, shape, f)
    q = _coordinates(m, box, p, f)
    g = _mass_effect(q, p)
    mask = ndimage.map_coordinates(tpl.mask, q, order=1, mode="constant", cval=0.0,
                                   prefilter=False, output=np.float32)
    inside = mask > 0.5
    flat = np.flatnonzero(inside)
    pts = q.reshape(3, -1)[:, flat]
    return {"box": box, "inside": inside, "flat": flat, "pts": pts, "push": g.ravel()[flat],
            "mask": mask.ravel()[flat]}


def _on_grid(values: np.ndarray, shape: tuple, grid: dict, dtype) -> np.ndarray:
    """A volume of the output grid holding ``values`` at the brain voxels, 0 elsewhere.

    Args:
        values: (n,) values at the brain voxels.
        shape: the output grid (X, Y, Z).
        grid: the resampling (:func:`_subject_grid`).
        dtype: the volume's dtype.

    Returns:
        The (X, Y, Z) volume.
    """
    volume = np.zeros(shape, dtype=dtype)
    volume[grid["box"]][grid["inside"]] = values
    return volume

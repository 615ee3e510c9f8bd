"""Contrast model of ``cwdm phantom``: the four contrasts of a subject, bias field, gain and noise.

At the brain voxels of a subject resampled by
:func:`cwdm.phantom.geometry._subject_grid`, with its tumour from
:mod:`cwdm.phantom.anatomy`: t1n and t2w are the template intensities with the
tumour painted in, t2f is modelled from the tissue fractions (grey > white,
CSF suppressed, edema bright) modulated by the T2 detail, t1c is t1n plus the
enhancing rim (only its patches in the ambiguous phantom, whose other detail
:mod:`cwdm.phantom.detail` adds) and the choroid plexus. :func:`_acquire` then
gives every contrast its own smooth bias field, gain to scanner-like units and
Rician noise, and stores it as int16 with the background exactly 0.
"""

from __future__ import annotations

import numpy as np

from ..naming import MODALITIES
from .geometry import Templates, _on_grid

CHOROID = np.array([25.0, -38.0, 14.0])      # MNI mm of the right ventricular atrium


def _paint(image: np.ndarray, near: np.ndarray, core: np.ndarray, base, core_value) -> np.ndarray:
    """Paint the tumour into a contrast, in place.

    Args:
        image: float32 (n,) contrast at the brain voxels.
        near: (k,) indices of the voxels near the tumour.
        core: (k,) soft tumour core.
        base: (k,) contrast outside the core (edema included).
        core_value: (k,) contrast inside the core.

    Returns:
        ``image``.
    """
    image[near] = base * (1.0 - core) + core * core_value
    return image


def _t1_contrasts(t1: np.ndarray, near: np.ndarray, tum: dict, p: dict, wm1) -> tuple:
    """t1n and t1c: template T1; edema darker, necrosis CSF-like, rim enhancing on t1c only.

    Args:
        t1: float32 (n,) template T1 at the brain voxels.
        near: (k,) indices of the voxels near the tumour.
        tum: the tumour compartments (k,) (:func:`_tumour`); the ambiguous
            phantom adds ``"enhancing"``, the enhancing share (k,) of the rim
            (:func:`cwdm.phantom.detail.rim_enhancement`): the rest of the rim
            shows on t1c as on t1n.
        p: the subject's parameters.
        wm1: the template's mean white-matter T1 (float32).

    Returns:
        (t1n, t1c): float32 (n,) arrays in template T1 units.
    """
    tex, core, nec, ed = tum["texture"], tum["core"], tum["necrosis"], tum["edema"]
    t1 = wm1 * (t1 / wm1) ** np.float32(p["gamma"][0])
    base = t1[near] * (1.0 - np.float32(p["t1_edema"]) * ed)
    necro = wm1 * p["t1_necrosis"] * (1.0 + 0.08 * tex)
    t1n = _paint(t1.copy(), near, core, base, nec * necro + (1 - nec) * wm1 * p["t1_rim"] * (1.0 + 0.08 * tex))
    rim = (1 - nec) * wm1 * p["t1c_rim"] * (1.0 + 0.15 * tex)
    if "enhancing" in tum:
        share = tum["enhancing"]
        rim = share * rim + (1 - share) * (1 - nec) * wm1 * p["t1_rim"] * (1.0 + 0.08 * tex)
    t1c = _paint(t1.copy(), near, core, base, nec * necro + rim)
    return t1n, t1c


def _add_choroid(t1c: np.ndarray, pts: np.ndarray, fractions: dict, tpl: Templates, p: dict, wm1) -> None:
    """Choroid plexus: patchy enhancement in the CSF of both ventricular atria, added to t1c in place.

    Args:
        t1c: float32 (n,) t1c at the brain voxels.
        pts: float32 (3, n) template voxel coordinates of the brain voxels.
        fractions: the tissue fractions (n,).
        tpl: the templates (their voxel -> MNI mm affine).
        p: the subject's parameters.
        wm1: the template's mean white-matter T1 (float32).
    """
    fluid = np.flatnonzero(fractions["csf"] > 0.3)
    world = pts[:, fluid].T @ tpl.affine[:3, :3].T + tpl.affine[:3, 3]
    blob = np.zeros(fluid.size, dtype=np.float32)
    for side in (-1.0, 1.0):
        blob += np.exp(-((world - CHOROID * [side, 1, 1]) ** 2).sum(1) / (2 * 5.0 ** 2)).astype(np.float32)
    blob *= fractions["csf"][fluid] * (0.6 + 0.4 * p["choroid_tex"](world.T.astype(np.float32)))
    t1c[fluid] += wm1 * np.float32(p["choroid"]) * blob


def _t2_contrasts(t2: np.ndarray, fractions: dict, near: np.ndarray, tum: dict, p: dict, ref2: dict) -> tuple:
    """t2w (template T2, edema and necrosis bright) and t2f (tissue model times the T2 detail).

    t2f: grey matter 1, white matter below 1, CSF suppressed, edema bright.

    Args:
        t2: float32 (n,) template T2 at the brain voxels.
        fractions: the tissue fractions (n,).
        near: (k,) indices of the voxels near the tumour.
        tum: the tumour compartments (k,) (:func:`_tumour`).
        p: the subject's parameters.
        ref2: the template's mean T2 per tissue (``"csf"``, ``"wm"``, ``"gm"``).

    Returns:
        (t2w, t2f): float32 (n,) arrays, t2w in template T2 units, t2f relative to grey matter.
    """
    tex, core, nec, ed = tum["texture"], tum["core"], tum["necrosis"], tum["edema"]
    csf2, wm2, gm2 = (np.float32(ref2[k]) for k in ("csf", "wm", "gm"))
    t2g = csf2 * (t2 / csf2) ** np.float32(p["gamma"][1])
    edema2 = 0.35 * t2g[near] + 0.65 * wm2 * p["t2_edema"] * (1.0 + 0.1 * tex)
    base = t2g[near] * (1.0 - ed) + ed * edema2
    t2w = _paint(t2g, near, core, base, nec * csf2 * p["t2_necrosis"] * (1.0 + 0.05 * tex)
                 + (1 - nec) * wm2 * p["t2_rim"] * (1.0 + 0.08 * tex))

    gmf, wmf, csff = fractions["gm"], fractions["wm"], fractions["csf"]
    flair = gmf + p["flair_wm"] * wmf + p["flair_csf"] * csff
    expected = gmf * gm2 + wmf * wm2 + csff * csf2
    detail = np.clip(t2 / expected, 0.7, 1.4) - 1.0
    flair *= 1.0 + 0.8 * detail * (1.0 - csff)
    base = flair[near] * (1.0 - ed) + ed * p["flair_edema"] * (1.0 + 0.1 * tex)
    t2f = _paint(flair, near, core, base, nec * p["flair_necrosis"] * (1.0 + 0.08 * tex)
                 + (1 - nec) * p["flair_rim"] * (1.0 + 0.08 * tex))
    return t2w, t2f


def _contrasts(t1: np.ndarray, t2: np.ndarray, fractions: dict, near: np.ndarray, tum: dict, grid: dict,
               p: dict, tpl: Templates) -> dict:
    """The four contrasts at the brain voxels, before bias field, gain and noise.

    Args:
        t1, t2: float32 (n,) template intensities at the brain voxels.
        fractions: the tissue fractions (n,).
        near: (k,) indices of the voxels near the tumour.
        tum: the tumour compartments (k,) (:func:`_tumour`).
        grid: the resampling (:func:`_subject_grid`).
        p: the subject's parameters.
        tpl: the templates.

    Returns:
        ``{"t1n", "t1c", "t2w", "t2f"}``: float32 (n,) signals, about 1 in white
        matter (t1n, t1c), CSF (t2w) and grey matter (t2f).
    """
    wm1 = np.float32(tpl.ref["t1"]["wm"])
    t1n, t1c = _t1_contrasts(t1, near, tum, p, wm1)
    _add_choroid(t1c, grid["pts"], fractions, tpl, p, wm1)
    t2w, t2f = _t2_contrasts(t2, fractions, near, tum, p, tpl.ref["t2"])
    csf2 = np.float32(tpl.ref["t2"]["csf"])
    return {"t1n": t1n / wm1, "t1c": t1c / wm1, "t2w": t2w / csf2, "t2f": t2f}


def _bias(points: np.ndarray, coef: np.ndarray, amp: float) -> np.ndarray:
    """Smooth multiplicative field 1 + amp * n, n a quadratic scaled to [-0.5, 0.5]."""
    u, v, w = points
    n = (coef[0] * u + coef[1] * v + coef[2] * w + coef[3] * u * u + coef[4] * v * v
         + coef[5] * w * w + coef[6] * u * v + coef[7] * u * w + coef[8] * v * w)
    lo, hi = float(n.min()), float(n.max())
    n = (n - 0.5 * (lo + hi)) / max(hi - lo, 1e-6)
    return (1.0 + amp * n).astype(np.float32)


def _acquire(images: dict, grid: dict, shape: tuple, p: dict, rng, level: dict = None) -> dict:
    """Bias field, gain, Rician noise and int16 rounding of each contrast; background stays exactly 0.

    Args:
        images: the four float32 (n,) signals (:func:`_contrasts`).
        grid: the resampling (:func:`_subject_grid`).
        shape: the output grid (X, Y, Z).
        p: the subject's parameters.
        rng: the case's generator (one noise draw per contrast, in the order t1n, t1c, t2w, t2f).
        level: signals like ``images`` whose mean sets the noise level (default
            ``images``): the ambiguous phantom passes them without its detail, so
            that the detail changes no voxel outside itself.

    Returns:
        ``{"t1n", "t1c", "t2w", "t2f"}``: int16 (X, Y, Z) volumes.
    """
    flat, box = grid["flat"], grid["box"]
    ijk = np.unravel_index(flat, grid["inside"].shape)
    half = (np.array(shape) - 1) / 2.0
    where = np.stack([((ijk[a] + box[a].start) - half[a]) / half[a] for a in range(3)]).astype(np.float32)
    out = {}
    for c, name in enumerate(MODALITIES):
        field = _bias(where, p["bias_coef"][c], p["bias_amp"][c])
        signal = images[name] * field
        signal *= np.float32(p["gain"][name])
        if level is not None:
            reference = level[name] * field
            reference *= np.float32(p["gain"][name])
        sigma = np.float32(p["noise"][c] * float((signal if level is None else reference).mean()))
        noise = rng.standard_normal((2, flat.size), dtype=np.float32) * sigma
        signal = np.hypot(signal + noise[0], noise[1])
        out[name] = _on_grid(np.clip(np.rint(signal), 1, 32767).astype(np.int16), shape, grid, np.int16)
    return out

"""Anatomy and contrast model behind ``cwdm phantom``: tumour, contrasts, :func:`generate_case`.

One phantom subject is the ICBM 2009c symmetric average brain (T1, T2, brain
mask) plus the 2009a grey/white matter probability maps, shipped in
``cwdm/templates/icbm152`` (see the ``COPYING`` notice there), moved into the
BraTS grid by **one** linear resampling whose coordinate field combines

* a small random affine (rotation up to 8 degrees about a random axis,
  scale 0.86-0.96 with +-1.5 % per-axis jitter kept in that range, shift up
  to 4 mm; the brain's box centre lands 3 mm below the grid centre so that
  the cerebrum always fits and only the lowest medulla may be cut),
* a smooth elastic warp (separable cosine products, peak 1-3 mm),
* the tumour's mass effect (radial push away from the tumour centre).

The tumour is a lobulated ball (enhancing rim around a necrotic core in about
85 % of subjects, solid enhancing otherwise) surrounded by edema that reaches
further into white matter than into grey matter and avoids CSF. Contrasts:
t1n and t2w are the template intensities with the tumour painted in, t2f is
modelled from the tissue fractions (grey > white, CSF suppressed, edema
bright) modulated by the T2 detail, t1c is t1n plus the enhancing rim. The
ambiguous phantom (``ambiguous=True``) adds detail that shows in one contrast
only, drawn from random streams of its own (:mod:`cwdm.phantom.detail`). Every
contrast then gets its own smooth bias field (10-25 % peak to peak), its own
gain to scanner-like units and Rician noise (1.5-4 % of the mean brain
signal), and is stored as int16 with the background exactly 0.

Everything is computed only at the brain voxels of the output grid, so a
full-size case takes about one to two seconds; ``downsample`` F samples the
same model directly on a coarser grid (see :func:`grid_shape`).

This module holds the random parameters of a subject, the tumour shapes and
:func:`generate_case`; the intensity of each contrast, the bias field and the
noise are in :mod:`cwdm.phantom.contrast`; the output grid, the templates and
the spatial transform (affine, warp, mass effect) are in
:mod:`cwdm.phantom.geometry`, whose public names are re-exported here.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from ..naming import SEG
from .contrast import _acquire, _contrasts
from .detail import STREAM, add_detail, draw_detail, rim_enhancement
from .geometry import Templates, check_downsample, grid_affine, grid_shape, load_templates
from .geometry import _on_grid, _rotation, _subject_grid

LABEL_NECROSIS, LABEL_EDEMA, LABEL_ENHANCING = 1, 2, 3
# CHOROID and the phantom_geometry names are re-exported
__all__ = ["generate_case", "LABEL_NECROSIS", "LABEL_EDEMA", "LABEL_ENHANCING"]


# ----------------------------------------------------------------- random helpers

class _Waves:
    """A random smooth function: ``sum_k a_k cos(w_k . x + phi_k)`` at points (3, n)."""

    def __init__(self, rng, n, wavelength, amplitude):
        direction = rng.normal(size=(n, 3))
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
        self.omega = direction * (2 * np.pi / rng.uniform(*wavelength, size=(n, 1)))
        self.phase = rng.uniform(0, 2 * np.pi, size=n)
        weights = rng.uniform(0.5, 1.0, size=n)
        self.amp = amplitude * weights / weights.sum()   # |f| <= amplitude

    def __call__(self, pts: np.ndarray) -> np.ndarray:
        out = np.zeros(pts.shape[1], dtype=np.float32)
        for w, p, a in zip(self.omega.astype(np.float32), self.phase, self.amp):
            out += np.float32(a) * np.cos(w @ pts + np.float32(p))
        return out


def _smoothstep(x: np.ndarray) -> np.ndarray:
    """Soft 0/1 step of a signed distance already divided by the edge width."""
    return np.clip(x + 0.5, 0.0, 1.0)


# -------------------------------------------------------------------- the subject

def _draw_parameters(rng, tpl: Templates, f: int) -> dict:
    """All random choices of one subject, drawn in a fixed order."""
    p = {}
    p["rot"] = _rotation(rng.normal(size=3), math.radians(rng.uniform(0.0, 8.0)))
    p["scale"] = np.clip(rng.uniform(0.86, 0.96) * (1 + rng.uniform(-0.015, 0.015, size=3)), 0.86, 0.96)
    p["shift"] = rng.uniform(-4.0, 4.0, size=3)
    amp = rng.uniform(1.0, 3.0)
    # warp: per component, 4 separable cosine products over output millimetres
    warp = []
    for _ in range(3):
        omega = 2 * np.pi / rng.uniform(50.0, 120.0, size=(4, 3)) * rng.choice([-1, 1], size=(4, 3))
        phase = rng.uniform(0, 2 * np.pi, size=(4, 3))
        coef = rng.normal(size=4)
        warp.append((omega, phase, amp * coef / np.abs(coef).sum()))
    p["warp"] = warp

    radius = rng.uniform(8.0, 19.0)
    p["radius"] = radius
    p["rim"] = max(rng.uniform(2.0, 4.5), 0.8 * f)
    p["necrosis"] = bool(rng.random() < 0.85)
    p["edema"] = rng.uniform(8.0, 24.0)
    ok = np.flatnonzero(tpl.depth >= radius + 8.0)
    if ok.size == 0:
        ok = np.flatnonzero(tpl.depth >= tpl.depth.max() - 2.0)
    p["centre"] = tpl.centres[ok[rng.integers(ok.size)]] + rng.uniform(-1.0, 1.0, size=3)
    p["lobes"] = _Waves(rng, 6, (1.2, 3.5), rng.uniform(0.12, 0.3))      # over directions
    p["rough"] = _Waves(rng, 4, (7.0, 15.0), 1.0)                        # mm on the border
    p["rim_var"] = _Waves(rng, 4, (1.5, 4.0), 0.5)
    p["rim_rough"] = _Waves(rng, 4, (4.0, 9.0), 1.2)                     # mm on the inner border
    p["edema_var"] = _Waves(rng, 4, (12.0, 30.0), 0.35)
    p["texture"] = _Waves(rng, 5, (5.0, 14.0), 1.0)
    p["push"] = rng.uniform(0.3, 0.5)
    p["push_width"] = radius + 8.0 + 0.4 * p["edema"]

    p["gamma"] = rng.uniform(0.9, 1.1, size=2)          # t1, t2 contrast
    p["t1_edema"] = rng.uniform(0.08, 0.2)              # fractional darkening on t1n
    p["t1_rim"] = rng.uniform(0.55, 0.7)                # x WM on t1n
    p["t1_necrosis"] = rng.uniform(0.3, 0.45)           # x WM on t1n / t1c
    p["t1c_rim"] = rng.uniform(1.35, 1.7)               # x WM on t1c
    p["t2_edema"] = rng.uniform(2.0, 2.5)               # x WM on t2w
    p["t2_rim"] = rng.uniform(1.5, 1.8)                 # x WM on t2w
    p["t2_necrosis"] = rng.uniform(1.1, 1.3)            # x CSF on t2w
    p["flair_wm"] = rng.uniform(0.68, 0.78)             # x GM on t2f
    p["flair_csf"] = rng.uniform(0.08, 0.18)
    p["flair_edema"] = rng.uniform(1.35, 1.7)
    p["flair_rim"] = rng.uniform(0.95, 1.2)
    p["flair_necrosis"] = rng.uniform(0.55, 1.05)
    p["gain"] = {"t1n": rng.uniform(500, 1400), "t1c": rng.uniform(500, 1400),
                 "t2w": rng.uniform(1200, 3500), "t2f": rng.uniform(300, 900)}
    p["bias_amp"] = rng.uniform(0.10, 0.25, size=4)
    p["bias_coef"] = rng.normal(size=(4, 9)) * np.array([1, 1, 1, .5, .5, .5, .5, .5, .5])
    p["noise"] = rng.uniform(0.015, 0.04, size=4)
    p["choroid"] = rng.uniform(0.5, 0.9)                # x WM extra on t1c in the atria
    p["choroid_tex"] = _Waves(rng, 4, (3.0, 6.0), 1.0)
    return p


def _tumour(d: np.ndarray, tissue: dict, p: dict, f: int) -> dict:
    """Soft tumour compartments at points d (3, n) relative to the centre (template mm)."""
    rho = np.sqrt((d * d).sum(0)) + np.float32(1e-6)
    unit = d / rho
    dist = rho / (1.0 + p["lobes"](unit)) + p["rough"](d)     # lobulated distance
    radius = np.float32(p["radius"])
    width = np.float32(max(1.0, 0.6 * f / float(np.mean(p["scale"]))))
    core = _smoothstep((radius - dist) / width)
    rim = np.float32(p["rim"]) * (1.0 + p["rim_var"](unit)) + p["rim_rough"](d)
    rim = np.maximum(rim, np.float32(0.4 * p["rim"]))
    necrosis = _smoothstep((radius - rim - dist) / width) if p["necrosis"] else np.zeros_like(core)
    outside = dist - radius
    reach = np.float32(p["edema"]) * (0.15 + tissue["wm"]) * (1.0 + p["edema_var"](d))
    avoid_csf = np.clip(1.6 - 2.0 * tissue["csf"], 0.0, 1.0)
    shell = np.float32(1.5 + 0.5 * f) - outside
    edema = np.maximum(_smoothstep((reach - outside) / (2 * width)) * avoid_csf, _smoothstep(shell / width))
    # intensity change: 1/2 at the label border, fading over about half the reach
    ramp = 0.5 * reach + 2 * width
    signal = np.maximum(_smoothstep((reach - outside) / ramp) * avoid_csf, _smoothstep(shell / ramp))
    labels = np.zeros(d.shape[1], dtype=np.uint8)
    labels[edema >= 0.5] = LABEL_EDEMA
    labels[core >= 0.5] = LABEL_ENHANCING
    labels[(core >= 0.5) & (necrosis >= 0.5)] = LABEL_NECROSIS
    return {"core": core, "necrosis": necrosis, "edema": signal * (1.0 - core),
            "texture": p["texture"](d), "labels": labels}


def _sample_templates(tpl: Templates, grid: dict) -> tuple:
    """Template T1, T2 and tissue fractions at the brain voxels.

    Args:
        tpl: the templates.
        grid: the resampling (:func:`_subject_grid`).

    Returns:
        (t1, t2, fractions): float32 (n,) template intensities and
        ``{"gm", "wm", "csf"}`` float32 (n,) fractions summing to 1.
    """
    def sample(volume):
        return ndimage.map_coordinates(volume, grid["pts"], order=1, mode="constant", cval=0.0,
                                       prefilter=False, output=np.float32)

    t1, t2, gm, wm = sample(tpl.t1), sample(tpl.t2), sample(tpl.gm), sample(tpl.wm)
    csf = np.clip(grid["mask"] - gm - wm, 0.0, 1.0)
    total = np.maximum(gm + wm + csf, 1e-3)
    return t1, t2, {"gm": gm / total, "wm": wm / total, "csf": csf / total}


def _tumour_near(grid: dict, fractions: dict, p: dict, f: int) -> tuple:
    """The tumour at the brain voxels near its centre (positions before the push).

    Args:
        grid: the resampling (:func:`_subject_grid`).
        fractions: the tissue fractions (n,) at the brain voxels.
        p: the subject's parameters.
        f: the downsampling factor.

    Returns:
        (near, tum, seg): (k,) indices of the brain voxels the tumour may
        reach, the :func:`_tumour` compartments (k,) there, uint8 (n,) labels
        of all brain voxels.
    """
    centre = p["centre"].astype(np.float32)[:, None]
    d = (grid["pts"] - centre) / grid["push"]
    lob = 1.0 + p["lobes"].amp.sum()
    reach = (p["radius"] + 1.6 * p["edema"] + 4.0 + 0.5 * f) * lob + 2.0
    near = np.flatnonzero((d * d).sum(0) < reach ** 2)
    tum = _tumour(d[:, near], {k: v[near] for k, v in fractions.items()}, p, f)
    seg = np.zeros(grid["flat"].size, dtype=np.uint8)
    seg[near] = tum["labels"]
    return near, tum, seg


def generate_case(seed: int, index: int = 0, downsample: int = 1, *, tissue: bool = False,
                  ambiguous: bool = False, detail_seed: int = 0, noise: bool = True) -> dict:
    """One phantom subject: ``{"t1n", "t1c", "t2w", "t2f": int16, "seg": uint8, "affine"}``.

    Volumes are (X, Y, Z) arrays on the grid of :func:`grid_shape` /
    :func:`grid_affine` (F = ``downsample``, sampled directly, not reduced
    from full size); ``affine`` is (4, 4) float64. Case ``index`` of ``seed``
    draws everything from ``np.random.default_rng([seed, index])``, so it is
    byte-identical however many other cases are made. ``tissue=True`` adds
    ``"tissue": {"gm", "wm", "csf"}``, the float32 tissue fractions of the
    healthy anatomy at each brain voxel (0 outside), for checks and tests.

    ``ambiguous=True`` adds the detail of :mod:`cwdm.phantom.detail`, each kind
    visible in one contrast only (patchy rim enhancement and vessels on t1c,
    white-matter hyperintensities on t2f, perivascular spaces on t2w) and drawn
    from ``np.random.default_rng([seed, index, 1, detail_seed, kind])``;
    everything else is the plain case's. It also adds ``"details": {"t1c",
    "t2w", "t2f"}``, bool (X, Y, Z) masks of the voxels whose contrast the detail
    changed: for t1c the whole rim (enhancing or not, partial volume included)
    and the vessels. Another ``detail_seed`` draws other detail for the same
    subject.

    ``noise=False`` sets the acquisition noise level to 0 and changes nothing
    else (the noise is still drawn, so every later draw is the same): the
    case as a noiseless scanner would record it.

    Args:
        seed: non-negative random seed.
        index: non-negative case number.
        downsample: grid factor F (1 to 16).
        tissue: add the tissue fractions.
        ambiguous: add detail that the other contrasts do not show.
        detail_seed: non-negative number of the detail draw (ambiguous only).
        noise: add the Rician acquisition noise.

    Returns:
        The case dict described above.

    Raises:
        ValueError: a negative or non-integer seed, index or detail_seed, or a
            detail_seed without ambiguous.
    """
    if int(seed) != seed or int(index) != index or seed < 0 or index < 0:
        raise ValueError(f"seed and index must be non-negative integers, got {seed!r}, {index!r}")
    if int(detail_seed) != detail_seed or detail_seed < 0 or (detail_seed and not ambiguous):
        raise ValueError(f"detail_seed must be a non-negative integer, used with ambiguous=True, got {detail_seed!r}")
    f = check_downsample(downsample)
    tpl = load_templates(f)
    rng = np.random.default_rng([int(seed), int(index)])
    p = _draw_parameters(rng, tpl, f)
    if not noise:
        p["noise"] = p["noise"] * 0.0
    shape = grid_shape(f)

    grid = _subject_grid(p, tpl, shape, f)
    t1, t2, fractions = _sample_templates(tpl, grid)
    near, tum, seg = _tumour_near(grid, fractions, p, f)
    images = _contrasts(t1, t2, fractions, near, tum, grid, p, tpl)
    plain = details = None
    if ambiguous:
        detail = draw_detail([int(seed), int(index), STREAM, int(detail_seed)], p)
        enhancing = rim_enhancement(detail, grid, near, p)
        plain, images = images, _contrasts(t1, t2, fractions, near, dict(tum, enhancing=enhancing), grid, p, tpl)
        details = add_detail(images, detail, grid, fractions, f)
        details["t1c"][near[tum["core"] * (1.0 - tum["necrosis"]) > 0]] = True      # the whole rim
        seg[near[(tum["labels"] == LABEL_ENHANCING) & (enhancing < 0.5)]] = LABEL_NECROSIS
    out = _acquire(images, grid, shape, p, rng, level=plain)
    out[SEG] = _on_grid(seg, shape, grid, np.uint8)
    out["affine"] = grid_affine(f)
    if tissue:
        out["tissue"] = {name: _on_grid(values, shape, grid, np.float32) for name, values in fractions.items()}
    if details is not None:
        out["details"] = {name: _on_grid(mask, shape, grid, bool) for name, mask in details.items()}
    return out

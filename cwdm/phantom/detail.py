"""Detail of the ambiguous phantom (``generate_case(..., ambiguous=True)``): each kind shows in one contrast.

The plain phantom's four contrasts are functions of one anatomy, so a model can
learn an almost deterministic map from three of them to the fourth. On BraTS
the missing contrast is not determined by the other three. The ambiguous
phantom therefore adds, per subject, detail that shows in **one** contrast only
and is drawn from random streams of its own, independent of everything the
other contrasts show:

* **t1c, patchy rim enhancement.** The tumour rim (the tumour core outside
  the necrosis; the whole core of a solid tumour) enhances only where a smooth
  random function of the direction from the tumour centre (6 cosines of
  wavelength 1.2-2.5 on the unit sphere: patches of roughly 5-25 mm along the
  rim) exceeds its quantile; the enhancing fraction of directions is uniform
  in 30-80 %. The rest of the rim shows on t1c as on t1n (0.55-0.7 times white
  matter instead of 1.35-1.7: roughly 50-70 % darker than where it enhances), with a
  soft border between. seg label 3 follows where the rim enhances, the rest of
  the rim becomes label 1; t1n, t2w and t2f show the rim as without detail.
* **t1c, enhancing vessels.** 3-8 tortuous tubes of radius 0.6-1.2 mm: two
  random walks of 1 mm steps (turning by about 9 degrees per step) of 12.5-30
  mm each from a random point of cerebral grey or white matter, each stopped at
  the brain surface. At full occupancy they add 0.6-1.0 times the white-matter
  signal (+60-100 % on white matter, more on grey matter).
* **t2f, white-matter hyperintensities.** 0-15 balls (uniform count) of
  radius 1.5-3.5 mm centred in deep cerebral white matter (fraction > 0.9),
  raising t2f by 60-100 % of the local signal times the non-CSF fraction (white
  matter at 0.68-0.78 x grey matter becomes about 1.1-1.6 x grey matter, like
  edema).
* **t2w, perivascular spaces.** 5-25 capsules of length 5-12 mm and radius
  0.6-1.5 mm: with probability one half in the basal ganglia (MNI 12-28 mm
  either side of the midline, y -10..12, z -6..10), running up within about 20
  degrees of vertical (18 on average), otherwise in centrum semiovale white
  matter (z 15-45), radial in the coronal plane (tilted likewise). They pull
  t2w 80-100 % of the way to the CSF signal (the template's white matter is at
  0.51 x CSF on T2: +75-95 % on white matter at full occupancy).

Sizes are template millimetres (the brain enters the grid scaled by
0.86-0.96). So that detail shows on coarse grids a vessel's radius is at least
``0.5 F`` mm, a ball's or capsule's ``0.8 F`` mm (F = ``downsample``), and every
edge is soft over ``max(1, 0.6 F)`` mm, as the tumour's. At F = 4 (4 mm voxels;
the objects of 24 subjects) a ball touches 4 voxels (median; 2-8), a capsule 10
(5-16), a vessel 15 (3-30), and the peak occupancy of a ball is 0.96 (median;
at least 0.36), of a capsule 1.0 (at least 0.64), of a vessel 1.0 (at least
0.62). Vessel starts, balls and capsules are placed at least 5 mm beyond the
tumour's furthest possible edema; vessels may then cross it. Where several
objects of a kind overlap the strongest counts.

Kind ``k`` (0 rim, 1 vessels, 2 hyperintensities, 3 perivascular spaces) of
detail draw ``D`` (``generate_case``'s ``detail_seed``) of case ``index`` of
``seed`` draws from ``np.random.default_rng([seed, index, 1, D, k])``, in an
order that does not depend on F; the case's anatomy, bias fields and noise keep
``np.random.default_rng([seed, index])`` and the noise level follows the
contrasts without detail, so an ambiguous case is the plain case of the same
seed and index with the detail added and nothing else changed.

:func:`draw_detail` makes the random choices, :func:`rim_enhancement` gives the
enhancing share of the rim for :func:`cwdm.phantom.contrast._t1_contrasts`
(as ``tum["enhancing"]``), :func:`add_detail` paints the rest into the contrasts
before the acquisition and returns where each kind is;
:func:`cwdm.phantom.anatomy.generate_case` puts it together.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy.spatial import cKDTree

from .geometry import load_templates

STREAM = 1
"""Third entry of the detail's random streams ``[seed, index, STREAM, detail_seed, kind]``."""
SPACING = 0.25      # mm between the sample points of a centre line
CLEARANCE = 5.0     # mm between the tumour's furthest edema and a detail's site


# ------------------------------------------------------------------- helpers

class _Field:
    """A random smooth function ``sum_k a_k cos(w_k . x + phi_k)`` (weights summing to 1) at points (3, n)."""

    def __init__(self, rng, n: int, wavelength: tuple):
        direction = rng.normal(size=(n, 3))
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
        self.omega = (direction * (2 * np.pi / rng.uniform(*wavelength, size=(n, 1)))).astype(np.float32)
        self.phase = rng.uniform(0, 2 * np.pi, size=n).astype(np.float32)
        weights = rng.uniform(0.5, 1.0, size=n)
        self.amp = (weights / weights.sum()).astype(np.float32)

    def __call__(self, pts: np.ndarray) -> np.ndarray:
        return (self.amp[:, None] * np.cos(self.omega @ pts + self.phase[:, None])).sum(0)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


@functools.lru_cache(maxsize=1)
def _sphere(n: int = 2000) -> np.ndarray:
    """(3, n) nearly uniform unit vectors (a Fibonacci lattice)."""
    k = np.arange(n) + 0.5
    z = 1.0 - 2.0 * k / n
    phi = np.pi * (3.0 - np.sqrt(5.0)) * k
    r = np.sqrt(1.0 - z * z)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z]).astype(np.float32)


@functools.lru_cache(maxsize=1)
def _sites() -> dict:
    """Candidate sites (m, 3) in template voxel coordinates (= mm) on a 2 mm lattice of the full-size templates.

    Returns:
        ``{"vessel": grey or white matter of the cerebrum, "wmh": deep cerebral
        white matter, "bg": basal ganglia, "cso": centrum semiovale}``.
    """
    tpl = load_templates(1)
    sub = (slice(None, None, 2),) * 3
    mask, gm, wm = tpl.mask[sub], tpl.gm[sub], tpl.wm[sub]
    ijk = np.argwhere(mask > 0.5)
    at = tuple(ijk.T)
    vox = ijk * 2.0
    x, y, z = (vox @ tpl.affine[:3, :3].T + tpl.affine[:3, 3]).T
    csf = np.clip(mask[at] - gm[at] - wm[at], 0.0, 1.0)
    cerebrum = (z > -20) & ~((y < -40) & (z < 8))
    return {"vessel": vox[cerebrum & (gm[at] + wm[at] > 0.6)],
            "wmh": vox[cerebrum & (z > -5) & (z < 50) & (wm[at] > 0.9)],
            "bg": vox[(np.abs(x) >= 12) & (np.abs(x) <= 28) & (y >= -10) & (y <= 12) & (z >= -6) & (z <= 10)
                      & (csf < 0.3)],
            "cso": vox[(z >= 15) & (z <= 45) & (wm[at] > 0.9)]}


def _clear(sites: np.ndarray, p: dict) -> np.ndarray:
    """The sites (m, 3) at least :data:`CLEARANCE` mm beyond the tumour's furthest possible edema."""
    reach = (p["radius"] + 1.6 * p["edema"]) * (1.0 + p["lobes"].amp.sum()) + CLEARANCE
    return sites[((sites - p["centre"]) ** 2).sum(1) > reach ** 2]


def _pick(rng, sites: np.ndarray) -> np.ndarray:
    """One random site (3,), jittered within its 2 mm lattice cell."""
    return sites[rng.integers(len(sites))] + rng.uniform(-1.0, 1.0, size=3)


def _segment(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(m, 3) points from a to b, :data:`SPACING` mm apart or closer."""
    t = np.linspace(0.0, 1.0, max(2, int(np.ceil(np.linalg.norm(b - a) / SPACING)) + 1))
    return a + t[:, None] * (b - a)


# ------------------------------------------------------------------ the draws

def _draw_rim(rng) -> dict:
    """Patchy enhancement: the field over directions, its threshold and soft width."""
    fraction = rng.uniform(0.3, 0.8)
    field = _Field(rng, 6, (1.2, 2.5))
    values = field(_sphere())
    return {"fraction": fraction, "field": field, "threshold": float(np.quantile(values, 1.0 - fraction)),
            "soft": 0.3 * float(values.std())}


def _walk(rng, start: np.ndarray, length: float, mask: np.ndarray) -> np.ndarray:
    """(m, 3) centre line of a vessel: two walks of 1 mm steps from ``start``, stopped at the brain surface."""
    direction = _unit(rng.normal(size=3))
    steps = int(round(length / 2))
    turns = rng.normal(size=(2, steps, 3)) * 0.12         # drawn in full: the order never depends on the mask
    halves = []
    for side, sign in enumerate((1.0, -1.0)):
        pos, d, line = start.copy(), sign * direction, []
        for turn in turns[side]:
            d = _unit(d + turn)
            pos = pos + d
            ijk = np.rint(pos).astype(int)
            if np.any(ijk < 0) or np.any(ijk >= mask.shape) or mask[tuple(ijk)] <= 0.5:
                break
            line.append(pos)
        halves.append(line)
    points = np.array(halves[1][::-1] + [start] + halves[0])
    return np.concatenate([_segment(a, b)[:-1] for a, b in zip(points[:-1], points[1:])] + [points[-1:]])


def _draw_vessels(rng, p: dict) -> list:
    sites, mask = _clear(_sites()["vessel"], p), load_templates(1).mask
    vessels = []
    for _ in range(rng.integers(3, 9) if len(sites) else 0):
        start, length = _pick(rng, sites), rng.uniform(25.0, 60.0)
        radius, amp = rng.uniform(0.6, 1.2), rng.uniform(0.6, 1.0)
        vessels.append({"line": _walk(rng, start, length, mask), "radius": radius, "floor": 0.5, "amp": amp})
    return vessels


def _draw_wmh(rng, p: dict) -> list:
    sites = _clear(_sites()["wmh"], p)
    balls = []
    for _ in range(rng.integers(0, 16) if len(sites) else 0):
        centre = _pick(rng, sites)
        balls.append({"line": centre[None, :], "radius": rng.uniform(1.5, 3.5), "floor": 0.8,
                      "amp": rng.uniform(0.6, 1.0)})
    return balls


def _draw_pvs(rng, p: dict, affine: np.ndarray) -> list:
    regions = {name: _clear(_sites()[name], p) for name in ("bg", "cso")}
    spaces = []
    for _ in range(rng.integers(5, 26)):
        name = "bg" if rng.random() < 0.5 else "cso"
        tilt = rng.normal(size=3) * 0.25
        length, radius, amp = rng.uniform(5.0, 12.0), rng.uniform(0.6, 1.5), rng.uniform(0.8, 1.0)
        sites = regions[name]
        if not len(sites):
            continue
        centre = _pick(rng, sites)
        if name == "bg":
            axis = np.array([0.0, 0.0, 1.0])
        else:                       # radial in the coronal plane, from the midline at MNI z = 0
            world = affine[:3, :3] @ centre + affine[:3, 3]
            axis = _unit(np.array([world[0], 0.0, world[2]]))
        axis = _unit(axis + tilt)
        spaces.append({"line": _segment(centre - 0.5 * length * axis, centre + 0.5 * length * axis),
                       "radius": radius, "floor": 0.8, "amp": amp})
    return spaces


def draw_detail(entropy: list, p: dict) -> dict:
    """All random choices of a subject's detail, independent of the output grid.

    Args:
        entropy: ``[seed, index, STREAM, detail_seed]``; kind k draws from
            ``np.random.default_rng(entropy + [k])``.
        p: the subject's parameters (tumour centre, radius and edema, to keep clear of).

    Returns:
        ``{"rim": the patch field, "vessels", "wmh", "pvs": lists of objects
        {"line": (m, 3) template voxel coordinates of its centre line (one
        point for a ball), "radius": mm, "floor": least radius per unit of F,
        "amp": strength}}``.
    """
    rng = [np.random.default_rng([int(e) for e in entropy] + [k]) for k in range(4)]
    return {"rim": _draw_rim(rng[0]), "vessels": _draw_vessels(rng[1], p), "wmh": _draw_wmh(rng[2], p),
            "pvs": _draw_pvs(rng[3], p, load_templates(1).affine)}


# ----------------------------------------------------------------- painting

def rim_enhancement(detail: dict, grid: dict, near: np.ndarray, p: dict) -> np.ndarray:
    """Enhancing share of the rim: float32 (k,) in [0, 1] at the voxels near the tumour.

    Args:
        detail: :func:`draw_detail`.
        grid: the resampling (:func:`cwdm.phantom.geometry._subject_grid`).
        near: (k,) indices of the brain voxels near the tumour.
        p: the subject's parameters.

    Returns:
        1 where the rim enhances, 0 where it does not, a soft border between
        (0.5 at the threshold: seg's label 3 is where it is at least 0.5).
    """
    rim = detail["rim"]
    d = (grid["pts"][:, near] - p["centre"].astype(np.float32)[:, None]) / grid["push"][near]
    unit = d / (np.sqrt((d * d).sum(0)) + np.float32(1e-6))
    share = (rim["field"](unit) - np.float32(rim["threshold"])) / np.float32(rim["soft"]) + np.float32(0.5)
    return np.clip(share, 0.0, 1.0).astype(np.float32)


def _strength(pts: np.ndarray, objects: list, f: int) -> np.ndarray:
    """float32 (n,): the largest ``amp x occupancy`` of the objects at points (3, n) (0 where none reaches).

    Occupancy is 1 within ``radius - width / 2`` of the centre line and falls
    linearly to 0 at ``radius + width / 2``; radius at least ``floor x F``,
    width ``max(1, 0.6 F)`` mm.
    """
    width = max(1.0, 0.6 * f)
    out = np.zeros(pts.shape[1], dtype=np.float32)
    for obj in objects:
        radius = max(obj["radius"], obj["floor"] * f)
        reach = radius + 0.5 * width
        lo, hi = obj["line"].min(0) - reach, obj["line"].max(0) + reach
        sel = np.flatnonzero((pts[0] >= lo[0]) & (pts[0] <= hi[0]))
        for axis in (1, 2):
            sel = sel[(pts[axis, sel] >= lo[axis]) & (pts[axis, sel] <= hi[axis])]
        if not sel.size:
            continue
        dist, _ = cKDTree(obj["line"]).query(pts[:, sel].T, distance_upper_bound=reach)
        occupancy = np.clip((radius - dist) / width + 0.5, 0.0, 1.0).astype(np.float32)
        out[sel] = np.maximum(out[sel], np.float32(obj["amp"]) * occupancy)
    return out


def add_detail(images: dict, detail: dict, grid: dict, fractions: dict, f: int) -> dict:
    """Paint vessels (t1c), hyperintensities (t2f) and perivascular spaces (t2w) into the contrasts, in place.

    Args:
        images: the four float32 (n,) signals (:func:`cwdm.phantom.contrast._contrasts`):
            t1c in white-matter units, t2w in CSF units.
        detail: :func:`draw_detail`.
        grid: the resampling (:func:`cwdm.phantom.geometry._subject_grid`).
        fractions: the tissue fractions (n,) at the brain voxels.
        f: the downsampling factor.

    Returns:
        ``{"t1c": vessels, "t2w": perivascular spaces, "t2f": hyperintensities}``:
        bool (n,) masks of the voxels each changed (the rim is added by the caller).
    """
    pts = grid["pts"]
    vessels = _strength(pts, detail["vessels"], f)
    images["t1c"] += vessels
    wmh = _strength(pts, detail["wmh"], f) * (1.0 - fractions["csf"])
    images["t2f"] *= 1.0 + wmh
    pvs = _strength(pts, detail["pvs"], f)
    images["t2w"] += pvs * np.maximum(1.0 - images["t2w"], 0.0)
    return {"t1c": vessels > 0, "t2w": pvs > 0, "t2f": wmh > 0}

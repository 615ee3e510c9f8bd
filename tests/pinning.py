"""Pinned outputs: compare the volumes a command wrote with reference arrays in ``tests/data/pinned/``.

Synthesized volumes come out of float32 convolutions whose last bits depend on the
CPU's kernels (AVX2 or AVX-512 oneDNN code, the number of threads) and on the torch
build, and their ``.nii.gz`` bytes depend on the zlib build as well. So a pin never
compares file bytes or hashes of floating-point results: it decodes every written
volume with nibabel and compares

* exactly what is exact: the list of files, shapes, on-disk dtypes, affines and the
  geometry of the header (qform/sform and their codes, voxel sizes, units), and
  integer volumes voxel by voxel;
* floating-point voxels within :data:`ATOL` (see there why that value).

``CWDM_REPIN=1 python -m pytest tests/test_x.py -k pinned`` rewrites the reference
files from the current code instead of comparing (see CONTRIBUTING.md, "Pinning
outputs"); commit them together with the change that was meant to alter the output.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Optional

import nibabel as nib
import numpy as np

PINNED = Path(__file__).parent / "data" / "pinned"
ATOL = 1e-5
"""Largest accepted difference of a floating-point voxel, on the networks' [0, 1] intensity scale.

The same code on one machine gave differences of up to 1.9e-7 between oneDNN's AVX-512 and
AVX2 kernels (``ONEDNN_MAX_CPU_ISA=AVX2``) and 7.4e-8 between 1 and 2 threads in the pinned
runs (2 sampling steps, ensembles of 2); 1e-5 leaves a factor of 50 for other CPUs and torch
builds, while anything that changes the computation (a sampler, a schedule, the
preprocessing, a seed) moves voxels by 1e-3 or more and fails."""
HEADER_FIELDS = ("qform_code", "sform_code", "xyzt_units", "dim")
"""Header entries compared exactly (with the affine, the sform/qform matrices and the voxel sizes).
``descrip`` is left out: it says which software wrote the file, not what the volume is."""
REPIN = os.environ.get("CWDM_REPIN", "") not in ("", "0")


def read_volumes(folder: Path) -> Dict[str, np.ndarray]:
    """Every ``.nii.gz`` below ``folder``, decoded: ``{"<rel>": voxels, "<rel>:affine": ..., ...}``.

    Voxels keep their on-disk dtype; the header's geometry is stored as arrays next to them.
    """
    out: Dict[str, np.ndarray] = {}
    for path in sorted(Path(folder).rglob("*.nii.gz")):
        rel = path.relative_to(folder).as_posix()
        img = nib.load(str(path))
        out[rel] = np.asarray(img.dataobj)
        out[f"{rel}:affine"] = np.asarray(img.affine, dtype=np.float64)
        out[f"{rel}:zooms"] = np.asarray(img.header.get_zooms(), dtype=np.float64)
        for name in HEADER_FIELDS:
            out[f"{rel}:{name}"] = np.asarray(img.header[name])
    return out


def assert_voxels_close(actual: np.ndarray, expected: np.ndarray, name: str, atol: float = ATOL,
                        threshold: Optional[float] = None) -> None:
    """Raise AssertionError unless ``actual`` matches ``expected``.

    Shapes and dtypes must be equal; integer (and boolean) voxels must be equal; floating-point
    voxels may differ by ``atol``. ``threshold``: the volumes were zeroed at or below it (``cwdm
    auto``), a step that turns a difference of one bit into one of ``threshold``, so a voxel within
    ``atol`` of it may be zero on one side and up to ``threshold + atol`` on the other.
    """
    assert actual.shape == expected.shape, f"{name}: shape {actual.shape}, pinned {expected.shape}"
    assert actual.dtype == expected.dtype, f"{name}: dtype {actual.dtype}, pinned {expected.dtype}"
    if not np.issubdtype(expected.dtype, np.floating):
        bad = int(np.count_nonzero(actual != expected))
        assert bad == 0, f"{name}: {bad} voxels differ from the pinned integer volume"
        return
    assert np.array_equal(np.isfinite(actual), np.isfinite(expected)), f"{name}: NaN/Inf voxels differ"
    diff = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    diff[~np.isfinite(expected)] = 0.0
    if threshold is not None:
        a, e = actual.astype(np.float64), expected.astype(np.float64)
        flipped = ((a == 0) | (e == 0)) & (np.maximum(a, e) <= threshold + atol)
        diff[flipped] = 0.0
    worst = float(diff.max()) if diff.size else 0.0
    if worst > atol:
        where = tuple(int(i) for i in np.unravel_index(int(diff.argmax()), diff.shape))
        raise AssertionError(f"{name}: {int(np.count_nonzero(diff > atol))} voxels differ by more than {atol:g} "
                             f"from the pinned volume (worst {worst:.3g} at {where}: "
                             f"{actual[where]!r} vs pinned {expected[where]!r})")


def assert_matches_pinned(folder: Path, name: str, threshold: Optional[float] = None) -> Dict[str, np.ndarray]:
    """Compare the volumes below ``folder`` with ``tests/data/pinned/<name>.npz`` (see the module notes).

    With ``CWDM_REPIN=1`` the reference is rewritten from ``folder`` instead. Returns the decoded volumes.
    """
    got = read_volumes(folder)
    ref_path = PINNED / f"{name}.npz"
    if REPIN:
        ref_path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(ref_path, **got)
        return got
    with np.load(ref_path) as data:
        ref = {k: data[k] for k in data.files}
    assert sorted(got) == sorted(ref), f"written files differ from the pinned ones: {sorted(set(got) ^ set(ref))}"
    for key, expected in ref.items():
        if ":" in key:  # header geometry: exact
            assert np.array_equal(got[key], expected), f"{key}: {got[key]!r}, pinned {expected!r}"
        else:
            assert_voxels_close(got[key], expected, key, threshold=threshold)
    return got

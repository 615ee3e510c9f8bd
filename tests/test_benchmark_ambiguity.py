"""Checks of ``benchmarks/ambiguity.py``'s region means and its exact-sampler reference row
(imported by path: benchmarks are not a package)."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import pytest


BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def amb():
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location("ambiguity", BENCH / "ambiguity.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH))
    return module


@pytest.fixture(scope="module")
def setup(amb):
    a = types.SimpleNamespace(train_cases=3, test_cases=1, seed=0, downsample=4)
    return a, amb.detail_masks(a)


def test_masks_split_the_detail_into_rim_and_vessels(setup):
    a, masks = setup
    (m,) = masks.values()
    assert m["rim"].any() and m["vessels"].any()
    assert not (m["rim"] & m["vessels"]).any()
    np.testing.assert_array_equal(m["rim"] | m["vessels"], m["detail"])
    assert not (m["detail"] & ~m["brain"]).any()


def test_region_means(amb, setup):
    a, masks = setup
    (m,) = masks.values()
    means = amb.detail_means(lambda name: m["rim"] * 3.0 + (m["brain"] & ~m["detail"]) * 1.0, masks)
    assert means == pytest.approx({"rim": 3.0, "vessels": 0.0, "elsewhere": 1.0,
                                   "detail": 3.0 * m["rim"].sum() / m["detail"].sum()})


def test_the_phantoms_own_spread(amb, setup):
    a, masks = setup
    row = amb.posterior_row(a, masks, draws=3)
    # the rim enhances in other patches in other draws: far more spread than the noise elsewhere
    assert row["std_rim"] > 3 * row["std_elsewhere"] > 0.03
    # the exact sampler's draws enhance part of the rim (30-80 % of the directions in each draw)
    assert 0.2 < row["rim_enhanced"] < 0.9


def test_rim_enhanced_counts_rim_voxels_above_the_threshold(amb, setup):
    a, masks = setup
    (m,) = masks.values()
    rim = np.flatnonzero(m["rim"])
    volume = np.where(m["brain"], 1.0, 0.0)  # bright outside the rim does not count
    flat = volume.reshape(-1)
    flat[rim] = amb.ENHANCED  # not above: not enhanced
    flat[rim[: len(rim) // 4]] = amb.ENHANCED + 0.01
    assert amb.rim_enhanced(lambda name: volume, masks) == pytest.approx((len(rim) // 4) / len(rim))


def test_a_cached_row_gains_rim_enhanced_from_its_volumes(amb, setup, tmp_path):
    import json
    import nibabel as nib

    a, masks = setup
    (name, m), = masks.items()
    (tmp_path / name).mkdir()
    nib.save(nib.Nifti1Image(np.where(m["rim"], 0.97, 0.6).astype(np.float32), np.eye(4)),
             tmp_path / name / f"{name}-t1c.nii.gz")
    assert amb.cached(tmp_path, masks) is None  # no row yet
    (tmp_path / "row.json").write_text(json.dumps({"setting": "ddim:10", "ssim": 0.9}))
    row = amb.cached(tmp_path, masks)
    assert row == {"setting": "ddim:10", "ssim": 0.9, "rim_enhanced": 1.0}
    assert json.loads((tmp_path / "row.json").read_text()) == row

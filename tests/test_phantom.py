"""Tests of ``cwdm phantom`` (BraTS-like phantom cases from the ICBM152 templates)."""

from __future__ import annotations

from importlib import resources

import nibabel as nib
import numpy as np
import pytest

from cwdm.cli import main
from cwdm.errors import CwdmError
from cwdm.commands.phantom import CONFIG, HELP, PhantomConfig, run
from cwdm.phantom.sets import case_name, make_phantom_set, write_case
from cwdm.phantom.anatomy import generate_case
from cwdm.phantom.geometry import grid_affine, grid_shape

MODS = ("t1n", "t1c", "t2w", "t2f")
BRATS_AFFINE = np.array([[-1, 0, 0, 0], [0, -1, 0, 239], [0, 0, 1, 0], [0, 0, 0, 1]], float)


@pytest.fixture(scope="module")
def full_case():
    """The one full-size case of this module (with tissue fractions for the statistics)."""
    return generate_case(11, 0, tissue=True)


def _means(case, thr):
    seg, tis = case["seg"], case["tissue"]
    healthy = {k: (seg == 0) & (tis[k] > thr) for k in ("gm", "wm", "csf")}
    out = {}
    for m in MODS:
        v = case[m].astype(np.float64)
        out[m] = {k: v[sel].mean() for k, sel in healthy.items()}
        out[m].update({lab: v[seg == lab].mean() for lab in (1, 2, 3) if (seg == lab).any()})
    return out


# ----------------------------------------------------------------------- grid

def test_package_data_shipped():
    folder = resources.files("cwdm.phantom") / "templates" / "icbm152"
    names = {p.name for p in folder.iterdir()}
    assert "COPYING" in names
    assert sum(n.endswith(".nii.gz") for n in names) == 5


def test_grid_shapes_and_affines():
    assert grid_shape(1) == (240, 240, 155)
    assert grid_shape(2) == (120, 120, 78)
    assert grid_shape(4) == (60, 60, 39)
    np.testing.assert_array_equal(grid_affine(1), BRATS_AFFINE)
    aff4 = grid_affine(4)
    np.testing.assert_allclose(np.abs(np.diag(aff4)[:3]), 4.0)
    # voxel (i, j, k) of the F=4 grid is the centre of full-size voxels 4i..4i+3
    for ijk in ([0, 0, 0], [59, 10, 38]):
        np.testing.assert_allclose(aff4 @ np.r_[ijk, 1], BRATS_AFFINE @ np.r_[np.array(ijk) * 4 + 1.5, 1])


# ------------------------------------------------------------------ full size

def test_full_size_case_format(full_case):
    c = full_case
    np.testing.assert_array_equal(c["affine"], BRATS_AFFINE)
    assert c["affine"].dtype == np.float64
    brain = c["t1n"] != 0
    for m in MODS:
        assert c[m].shape == (240, 240, 155) and c[m].dtype == np.int16
        np.testing.assert_array_equal(c[m] != 0, brain)        # same skull-stripped support
        assert c[m].min() == 0 and c[m][brain].min() >= 1
    assert c["seg"].dtype == np.uint8 and c["seg"].shape == (240, 240, 155)
    assert set(np.unique(c["seg"])) <= {0, 1, 2, 3}
    assert not (c["seg"][~brain]).any()
    assert 0.9e6 < brain.sum() < 1.8e6
    for axis in range(2):           # the brain fits in the grid (only the medulla may be cut)
        assert not np.take(brain, [0, -1], axis=axis).any()
    assert not brain[:, :, -1].any() and brain[:, :, 0].sum() < 500


def test_full_size_contrasts(full_case):
    s = _means(full_case, 0.9)
    t1n, t1c, t2w, t2f = (s[m] for m in MODS)
    assert t1n["wm"] > t1n["gm"] > t1n["csf"]
    assert t2w["csf"] > t2w["gm"] > t2w["wm"]
    assert t2f["gm"] > 1.1 * t2f["wm"] and t2f["csf"] < 0.6 * t2f["gm"]
    assert t1n[2] < t1n["wm"] and t1n[3] < t1n["wm"]
    if 1 in t1n:
        assert t1n[1] < 0.6 * t1n["wm"]
        assert t2w[1] > t2w["gm"]
    assert t2w[2] > 1.3 * t2w["wm"] and t2f[2] > 1.3 * t2f["wm"]
    assert t1c[3] / t1c["wm"] > 1.5 * t1n[3] / t1n["wm"]
    assert t1c[3] > t1c["wm"]


# ------------------------------------------------------------ downsample 4

def test_downsampled_case_format_and_contrasts():
    c = generate_case(2, 3, downsample=4, tissue=True)
    brain = c["t1n"] != 0
    for m in MODS:
        assert c[m].shape == (60, 60, 39) and c[m].dtype == np.int16
        np.testing.assert_array_equal(c[m] != 0, brain)
    np.testing.assert_array_equal(c["affine"], grid_affine(4))
    assert 0.9e6 / 64 < brain.sum() < 1.8e6 / 64
    s = _means(c, 0.7)
    assert s["t1n"]["wm"] > s["t1n"]["gm"] > s["t1n"]["csf"]
    assert s["t2w"]["csf"] > s["t2w"]["gm"] > s["t2w"]["wm"]
    assert s["t2f"]["gm"] > s["t2f"]["wm"] > s["t2f"]["csf"]
    assert s["t2f"][2] > s["t2f"]["wm"] and s["t2w"][2] > s["t2w"]["wm"] and s["t1n"][2] < s["t1n"]["wm"]
    assert s["t1c"][3] / s["t1c"]["wm"] > s["t1n"][3] / s["t1n"]["wm"]


def test_deterministic_per_seed_and_index():
    a, b = generate_case(3, 1, 4), generate_case(3, 1, 4)
    for k in MODS + ("seg", "affine"):
        np.testing.assert_array_equal(a[k], b[k])
        assert a[k].tobytes() == b[k].tobytes()
    for other in (generate_case(4, 1, 4), generate_case(3, 2, 4)):
        for m in MODS:
            assert not np.array_equal(a[m], other[m])
        assert not np.array_equal(a["seg"], other["seg"])


@pytest.mark.parametrize("ambiguous", [False, True])
def test_noise_free_case(ambiguous):
    noisy = generate_case(3, 1, 4, ambiguous=ambiguous)
    quiet = generate_case(3, 1, 4, ambiguous=ambiguous, noise=False)
    np.testing.assert_array_equal(quiet["seg"], noisy["seg"])
    for m in MODS:
        brain = quiet[m] != 0
        np.testing.assert_array_equal(noisy[m] != 0, brain)
        # only the noise differs: 1.5-4 % of the mean brain signal, Rician at high SNR
        diff = (noisy[m].astype(np.float64) - quiet[m])[brain]
        assert 0.01 < diff.std() / quiet[m][brain].mean() < 0.05, m
        # and neighbouring voxels of the noise-free case differ less
        step = lambda v: np.diff(v.astype(np.float64), axis=0)[brain[1:] & brain[:-1]].var()
        assert step(quiet[m]) < step(noisy[m]), m


def test_tumour_labels_over_seeds():
    has = {1: 0, 2: 0, 3: 0}
    n = 12
    for seed in range(n):
        seg = generate_case(seed, 0, 4)["seg"]
        for lab in has:
            has[lab] += bool((seg == lab).any())
    assert has[2] == n and has[3] == n
    assert has[1] >= 2 * n // 3


# --------------------------------------------------------------------- files

def _files(folder):
    return sorted(p.name for p in folder.iterdir())


def test_case_independent_of_set_size(tmp_path):
    many = make_phantom_set(tmp_path / "a", cases=3, seed=5, downsample=4, progress=False)
    one = make_phantom_set(tmp_path / "b", cases=1, seed=5, downsample=4, start=2, progress=False)
    assert [p.name for p in many] == [case_name(i) for i in range(3)]
    assert [p.name for p in one] == ["BraTS-GLI-00002-000"]
    ref = generate_case(5, 2, 4)
    for key in MODS + ("seg",):
        name = f"BraTS-GLI-00002-000-{key}.nii.gz"
        assert (many[2] / name).read_bytes() == (one[0] / name).read_bytes()
        np.testing.assert_array_equal(np.asanyarray(nib.load(one[0] / name).dataobj), ref[key])


def test_written_files(tmp_path):
    folders = make_phantom_set(tmp_path, cases=2, seed=1, downsample=4, start=7, progress=False)
    assert _files(tmp_path) == ["BraTS-GLI-00007-000", "BraTS-GLI-00008-000"]
    folder = folders[0]
    assert _files(folder) == sorted(f"BraTS-GLI-00007-000-{k}.nii.gz" for k in MODS + ("seg",))
    for key in MODS + ("seg",):
        img = nib.load(folder / f"BraTS-GLI-00007-000-{key}.nii.gz")
        data = np.asanyarray(img.dataobj)
        assert data.dtype == (np.uint8 if key == "seg" else np.int16)
        assert data.shape == (60, 60, 39)
        np.testing.assert_allclose(img.affine, grid_affine(4))
        np.testing.assert_allclose(img.header.get_zooms(), (4, 4, 4))


def test_refuses_to_overwrite(tmp_path):
    make_phantom_set(tmp_path, cases=2, seed=0, downsample=4, progress=False)
    target = tmp_path / "BraTS-GLI-00001-000" / "BraTS-GLI-00001-000-t1n.nii.gz"
    before = target.read_bytes()
    with pytest.raises(CwdmError, match="overwrite"):
        make_phantom_set(tmp_path, cases=1, seed=9, downsample=4, start=1, progress=False)
    assert target.read_bytes() == before
    with pytest.raises(CwdmError):
        write_case(generate_case(9, 1, 4), tmp_path, "BraTS-GLI-00001-000")
    assert target.read_bytes() == before
    assert main(["phantom", str(tmp_path), "--cases", "1", "--seed", "9", "--downsample", "4",
                 "--start", "1"]) == 1
    assert target.read_bytes() == before
    # a new, non-clashing index is fine; --overwrite replaces
    make_phantom_set(tmp_path, cases=1, seed=9, downsample=4, start=2, progress=False)
    make_phantom_set(tmp_path, cases=1, seed=9, downsample=4, start=1, overwrite=True, progress=False)
    assert target.read_bytes() != before
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".")]  # no temp files left


def test_cli(tmp_path, capsys):
    assert CONFIG is PhantomConfig and HELP
    out = tmp_path / "set"
    assert main(["phantom", str(out), "--cases", "2", "--seed", "3", "--downsample", "4"]) == 0
    assert _files(out) == ["BraTS-GLI-00000-000", "BraTS-GLI-00001-000"]
    assert "wrote 2" in capsys.readouterr().out
    assert main(["phantom", str(out), "--cases", "2", "--seed", "3", "--downsample", "4", "--overwrite"]) == 0
    assert run(PhantomConfig(out=tmp_path / "x", cases=1, downsample=4)) == 0


@pytest.mark.parametrize("kwargs", [dict(downsample=0), dict(seed=-1), dict(cases=0), dict(start=-2)])
def test_bad_arguments(tmp_path, kwargs):
    args = dict(out=tmp_path / "bad", cases=1, seed=0, downsample=4)
    args.update(kwargs)
    with pytest.raises(CwdmError):
        make_phantom_set(progress=False, **args)
    assert not (tmp_path / "bad").exists()

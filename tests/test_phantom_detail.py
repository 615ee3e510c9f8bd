"""Tests of the ambiguous phantom (``generate_case(..., ambiguous=True)``, :mod:`cwdm.phantom.detail`).

Each kind of detail must show in its own contrast only: the same subject with
another detail draw (``detail_seed``) or without detail may differ only inside
the detail masks of the contrast, and never on t1n.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from cwdm.cli import main
from cwdm.phantom.anatomy import generate_case

MODS = ("t1n", "t1c", "t2w", "t2f")
DETAILED = ("t1c", "t2w", "t2f")


@pytest.fixture(scope="module")
def cases():
    """Case 3 of seed 2 at downsample 4: plain, ambiguous, ambiguous with another detail draw."""
    return {"plain": generate_case(2, 3, 4), "a": generate_case(2, 3, 4, ambiguous=True),
            "b": generate_case(2, 3, 4, ambiguous=True, detail_seed=1)}


def test_deterministic_and_masks(cases):
    a, again = cases["a"], generate_case(2, 3, 4, ambiguous=True)
    for key in MODS + ("seg", "affine"):
        assert a[key].tobytes() == again[key].tobytes()
    assert sorted(a["details"]) == sorted(DETAILED) and "details" not in cases["plain"]
    brain = a["t1n"] > 0
    for m in DETAILED:
        mask = a["details"][m]
        assert mask.dtype == bool and mask.shape == (60, 60, 39)
        np.testing.assert_array_equal(mask, again["details"][m])
        assert mask.any() and not (mask & ~brain).any()


def test_ambiguous_case_is_the_plain_case_plus_its_detail(cases):
    plain, a = cases["plain"], cases["a"]
    np.testing.assert_array_equal(plain["t1n"], a["t1n"])
    for m in DETAILED:
        changed = plain[m] != a[m]
        assert changed.sum() >= 3, m
        assert not (changed & ~a["details"][m]).any(), f"{m} changed outside its detail"
    relabelled = plain["seg"] != a["seg"]
    assert relabelled.any()
    assert (plain["seg"][relabelled] == 3).all() and (a["seg"][relabelled] == 1).all()


def test_detail_shows_only_in_its_contrast(cases):
    """Two detail draws of one subject: t1n identical, each contrast differs only in its own masks."""
    a, b, plain = cases["a"], cases["b"], cases["plain"]
    np.testing.assert_array_equal(a["t1n"], b["t1n"])
    for m in DETAILED:
        changed = a[m] != b[m]
        assert changed.any(), m
        outside = changed & ~(a["details"][m] | b["details"][m])
        assert not outside.any(), f"{m} differs at {int(outside.sum())} voxels outside its detail masks"
    differs = a["seg"] != b["seg"]
    assert differs.any() and (plain["seg"][differs] == 3).all()      # only on the rim


def test_enhancing_label_is_where_t1c_enhances(cases):
    plain, a = cases["plain"], cases["a"]
    rim = plain["seg"] == 3
    enhancing, rest = a["seg"] == 3, rim & (a["seg"] == 1)
    assert enhancing.any() and rest.any()
    assert not (enhancing & ~rim).any()
    assert (a["details"]["t1c"] >= rim).all()                          # the mask holds the whole rim
    ratio = a["t1c"].astype(float) / np.maximum(a["t1n"], 1)
    healthy = np.median(ratio[(a["seg"] == 0) & (a["t1n"] > 0)])
    assert np.median(ratio[enhancing]) > 1.5 * healthy
    assert np.median(ratio[rest]) < 1.25 * healthy


def test_detail_visible_at_downsample_4():
    """Over seeds: every detail mask has voxels (t2f may have no hyperintensity) and a clear change."""
    with_wmh = 0
    for seed in range(5):
        plain, a = generate_case(seed, 0, 4), generate_case(seed, 0, 4, ambiguous=True)
        for m in DETAILED:
            mask = a["details"][m]
            if m == "t2f" and not mask.any():
                continue
            with_wmh += m == "t2f"
            assert mask.sum() >= 3, (seed, m)
            change = a[m][mask].astype(float) / plain[m][mask] - 1.0
            assert np.abs(change).max() > 0.3, (seed, m)
    assert with_wmh >= 3


def test_cli_and_bad_detail_seed(tmp_path):
    out = tmp_path / "amb"
    assert main(["phantom", str(out), "--cases", "1", "--seed", "2", "--downsample", "8", "--ambiguous", "True"]) == 0
    ref = generate_case(2, 0, 8, ambiguous=True)
    for key in MODS + ("seg",):
        data = np.asanyarray(nib.load(out / "BraTS-GLI-00000-000" / f"BraTS-GLI-00000-000-{key}.nii.gz").dataobj)
        np.testing.assert_array_equal(data, ref[key])
    for kwargs in (dict(detail_seed=-1, ambiguous=True), dict(detail_seed=1), dict(detail_seed=0.5, ambiguous=True)):
        with pytest.raises(ValueError, match="detail_seed"):
            generate_case(0, 0, 8, **kwargs)


def test_detail_draws_write_one_subject_with_independent_detail(tmp_path):
    out = tmp_path / "draws"
    assert main(["phantom", str(out), "--cases", "2", "--seed", "2", "--downsample", "8", "--ambiguous", "True",
                 "--detail_draws", "3", "--start", "4"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"BraTS-GLI-0000{i}-00{d}" for i in (4, 5) for d in range(3)]

    def read(name, key):
        return np.asanyarray(nib.load(out / name / f"{name}-{key}.nii.gz").dataobj)

    for d in range(3):  # draw d of subject 5 is generate_case's detail_seed d
        ref = generate_case(2, 5, 8, ambiguous=True, detail_seed=d)
        for key in MODS + ("seg",):
            np.testing.assert_array_equal(read(f"BraTS-GLI-00005-00{d}", key), ref[key])
    first, second = "BraTS-GLI-00005-000", "BraTS-GLI-00005-001"
    np.testing.assert_array_equal(read(first, "t1n"), read(second, "t1n"))  # same anatomy
    assert (read(first, "t1c") != read(second, "t1c")).any()                 # other detail


@pytest.mark.parametrize("args, message", [(["--detail_draws", "0", "--ambiguous", "True"], "detail_draws"),
                                           (["--detail_draws", "2"], "needs --ambiguous")])
def test_bad_detail_draws(tmp_path, capsys, args, message):
    out = tmp_path / "bad"
    assert main(["phantom", str(out), "--cases", "1", "--downsample", "8", *args]) == 1
    assert message in capsys.readouterr().err
    assert not out.exists()

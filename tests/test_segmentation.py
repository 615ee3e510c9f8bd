"""Dice of a user's segmentation per BraTS label and region, the empty-label convention, finding the files."""

import numpy as np
import pytest

from cwdm.evaluation import segmentation as S

SHAPE = (24, 20, 12)


def _slabs(bounds):
    """A label map with label ``k`` on the x range ``bounds[k]`` (inside y 6:14, z 3:9): 4 x 8 x 6 = 192 voxels
    per 4 x-slices."""
    seg = np.zeros(SHAPE, dtype=np.float32)
    for label, (x0, x1) in bounds.items():
        seg[x0:x1, 6:14, 3:9] = label
    return seg


def test_dice_of_known_masks_and_the_empty_label_convention():
    a = np.zeros((4, 4, 4), dtype=bool)
    b = np.zeros((4, 4, 4), dtype=bool)
    a[0, 0, :3] = True  # 3 voxels
    b[0, 0, 2:4] = True  # 2 voxels, 1 shared
    assert S.dice(a, b) == 2 * 1 / (3 + 2)
    assert S.dice(a, a) == 1.0
    empty = np.zeros_like(a)
    assert S.dice(empty, empty) == 1.0  # both empty: nothing to find, nothing found
    assert S.dice(a, empty) == 0.0 and S.dice(empty, b) == 0.0  # one empty
    far = np.zeros_like(a)
    far[3, 3, :2] = True
    assert S.dice(a, far) == 0.0  # disjoint
    with pytest.raises(ValueError):
        S.dice(a, np.zeros((4, 4, 3), dtype=bool))


def test_dice_per_label_and_per_region():
    ref = _slabs({1: (4, 8), 3: (8, 12), 2: (12, 16)})  # 192 voxels each
    pred = _slabs({1: (4, 8), 3: (8, 10), 2: (10, 16)})  # enhancing half as big, edema grown into it
    got = S.dice_scores(pred, ref)
    assert list(got) == ["dice_et", "dice_tc", "dice_wt", "dice_1", "dice_2", "dice_3"]
    assert got["dice_1"] == 1.0
    assert got["dice_3"] == pytest.approx(2 * 96 / (96 + 192))  # 2/3
    assert got["dice_2"] == pytest.approx(2 * 192 / (288 + 192))  # 0.8
    assert got["dice_et"] == got["dice_3"]
    assert got["dice_tc"] == pytest.approx(2 * 288 / (288 + 384))  # TC = 1 u 3: 6/7
    assert got["dice_wt"] == 1.0  # the same tumour as a whole
    # necrosis and enhancing swapped: every label wrong, the tumour core and whole tumour right
    swapped = _slabs({3: (4, 8), 1: (8, 12), 2: (12, 16)})
    got = S.dice_scores(swapped, ref)
    assert got["dice_1"] == got["dice_3"] == got["dice_et"] == 0.0
    assert got["dice_tc"] == got["dice_wt"] == got["dice_2"] == 1.0
    # no enhancing tumour in either: ET and label 3 count as found (1), not as missed
    no_et = _slabs({1: (4, 8), 2: (12, 16)})
    got = S.dice_scores(no_et, no_et)
    assert got["dice_et"] == got["dice_3"] == 1.0
    assert S.dice_scores(no_et, ref)["dice_et"] == 0.0  # missed entirely


def test_label_four_is_enhancing_and_other_labels_are_refused():
    ref = _slabs({1: (4, 8), 3: (8, 12), 2: (12, 16)})
    old = _slabs({1: (4, 8), 4: (8, 12), 2: (12, 16)})  # BraTS 2021 labels
    assert S.label_problem(old) is None
    assert all(v == 1.0 for v in S.dice_scores(old, ref).values())
    assert S.label_problem(ref) is None and S.label_problem(np.zeros(SHAPE)) is None
    bad = ref.copy()
    bad[0, 0, 0] = 5
    assert "labels 5 outside 0-3" in S.label_problem(bad)
    both = ref.copy()
    both[0, 0, 0] = 4
    assert "both 3 and 4" in S.label_problem(both)
    frac = ref.copy()
    frac[0, 0, 0] = 0.5
    assert "non-integer" in S.label_problem(frac)
    nan = ref.copy()
    nan[0, 0, 0] = np.nan
    assert "NaN" in S.label_problem(nan)


def test_find_seg_in_both_layouts(tmp_path):
    flat = tmp_path / "case-A.nii.gz"
    flat.write_bytes(b"x")
    nested = tmp_path / "case-B" / "case-B-seg.nii.gz"
    nested.parent.mkdir()
    nested.write_bytes(b"x")
    assert S.find_seg(tmp_path, "case-A") == (flat, None)
    assert S.find_seg(tmp_path, "case-B") == (nested, None)
    path, why = S.find_seg(tmp_path, "case-C")
    assert path is None and str(tmp_path / "case-C.nii.gz") in why and "Dice not computed" in why
    (tmp_path / "case-A").mkdir()
    (tmp_path / "case-A" / "case-A-seg.nii.gz").write_bytes(b"x")
    path, why = S.find_seg(tmp_path, "case-A")
    assert path is None and "2 segmentation files for case case-A" in why
    # a case whose files are prefixed otherwise than its folder (BraTS 2021: BraTS2021_00000_seg.nii.gz)
    other = tmp_path / "c1" / "BraTS2021_00000_seg.nii.gz"
    other.parent.mkdir()
    other.write_bytes(b"x")
    assert S.find_seg(tmp_path, "c1", prefix="BraTS2021_00000") == (other, None)

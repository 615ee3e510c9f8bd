"""The pinning helper (tests/pinning.py): a last-bit difference passes, a real one fails."""

import numpy as np
import pytest

from pinning import ATOL, PINNED, assert_voxels_close


@pytest.fixture
def pinned_volume():
    """A synthesized float32 volume of the pinned `cwdm sample` run, and one of its non-zero voxels."""
    with np.load(PINNED / "sample.npz") as data:
        vol = data["BraTS-GLI-00001-000/BraTS-GLI-00001-000-t2f.nii.gz"]
    assert vol.dtype == np.float32 and vol.max() > 0
    return vol, np.unravel_index(int(vol.argmax()), vol.shape)


def test_one_ulp_off_passes(pinned_volume):
    vol, at = pinned_volume
    bumped = vol.copy()
    bumped[at] = np.nextafter(vol[at], np.float32(np.inf))
    assert bumped[at] != vol[at] and not np.array_equal(bumped, vol)  # really one bit off
    assert_voxels_close(bumped, vol, "bumped")
    down = vol.copy()
    down[at] = np.nextafter(vol[at], np.float32(-np.inf))
    assert_voxels_close(down, vol, "down")


@pytest.mark.parametrize("delta", [2 * ATOL, -2 * ATOL, 0.01])
def test_more_than_the_tolerance_fails(pinned_volume, delta):
    vol, at = pinned_volume
    moved = vol.copy()
    moved[at] = vol[at] + np.float32(delta)
    with pytest.raises(AssertionError, match="1 voxels differ by more than 1e-05"):
        assert_voxels_close(moved, vol, "moved")


def test_nan_dtype_shape_and_integer_volumes_are_exact(pinned_volume):
    vol, at = pinned_volume
    nan = vol.copy()
    nan[at] = np.nan
    with pytest.raises(AssertionError, match="NaN/Inf"):
        assert_voxels_close(nan, vol, "nan")
    with pytest.raises(AssertionError, match="dtype float64"):
        assert_voxels_close(vol.astype(np.float64), vol, "f64")
    with pytest.raises(AssertionError, match="shape"):
        assert_voxels_close(vol[:-1], vol, "cropped")
    labels = (vol > 0).astype(np.uint8)
    off = labels.copy()
    off[at] = 2
    assert_voxels_close(labels.copy(), labels, "labels")
    with pytest.raises(AssertionError, match="1 voxels differ from the pinned integer volume"):
        assert_voxels_close(off, labels, "labels")


def test_threshold_flip_is_allowed_only_at_the_threshold():
    ref = np.array([0.0, 0.5, 0.0], dtype=np.float32)
    near = np.array([0.04 + ATOL / 2, 0.5, 0.0], dtype=np.float32)  # zeroed on one machine, kept on another
    assert_voxels_close(near, ref, "near", threshold=0.04)
    with pytest.raises(AssertionError):
        assert_voxels_close(near, ref, "near")  # no threshold step: a real difference
    far = np.array([0.05, 0.5, 0.0], dtype=np.float32)
    with pytest.raises(AssertionError):
        assert_voxels_close(far, ref, "far", threshold=0.04)

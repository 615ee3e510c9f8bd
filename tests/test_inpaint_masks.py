"""Healthy-tissue masks of the inpainting task (cwdm.data.inpaint_masks.draw_healthy_mask)."""

import numpy as np
import pytest
from scipy import ndimage

from cwdm.data.inpaint_masks import draw_healthy_mask
from cwdm.errors import CwdmError

SHAPES = [(40, 40, 26), (48, 44, 36)]
SEEDS = [0, 1, 2]


def ellipsoid(shape, centre, radii):
    """Bool ``shape`` ellipsoid (centre and radii in voxels)."""
    grids = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii)) <= 1.0


def brain_and_tumour(shape, with_tumour=True):
    s = np.asarray(shape, dtype=float)
    brain = ellipsoid(shape, s / 2, s * 0.42)
    tumour = ellipsoid(shape, s * [0.62, 0.45, 0.5], s * 0.14) & brain if with_tumour else np.zeros(shape, bool)
    return brain, tumour


def assert_valid(mask, brain, tumour, size_range, margin):
    assert mask.dtype == bool and mask.shape == brain.shape
    assert not (mask & ~brain).any(), "mask voxels outside the brain"
    if tumour.any():
        assert ndimage.distance_transform_edt(~tumour)[mask].min() > margin, "mask within the margin"
    n_brain, n_mask = int(brain.sum()), int(mask.sum())
    lo, hi = size_range
    # the volume is round(f * brain voxels) (at least 1) for a fraction f in size_range
    assert max(1, lo * n_brain - 0.5) <= n_mask <= hi * n_brain + 0.5, (n_mask, n_brain)
    _, pieces = ndimage.label(mask)
    assert pieces == 1, f"{pieces} pieces"


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("with_tumour", [True, False])
def test_mask_is_one_piece_of_the_drawn_size_inside_the_brain_away_from_the_tumour(shape, seed, with_tumour):
    brain, tumour = brain_and_tumour(shape, with_tumour)
    mask = draw_healthy_mask(brain, tumour, np.random.default_rng(seed))
    assert_valid(mask, brain, tumour, (0.005, 0.05), 2)


@pytest.mark.parametrize("margin", [0, 4])
@pytest.mark.parametrize("size_range", [(0.02, 0.02), (0.08, 0.15)])
def test_margin_and_size_range_are_kept(margin, size_range):
    shape = SHAPES[0]
    brain, tumour = brain_and_tumour(shape)
    for seed in range(4):
        mask = draw_healthy_mask(brain, tumour, np.random.default_rng(seed), size_range=size_range, margin=margin)
        assert_valid(mask, brain, tumour, size_range, margin)
    if size_range[0] == size_range[1]:
        assert int(mask.sum()) == round(0.02 * int(brain.sum()))


def test_large_masks_next_to_a_large_tumour_keep_the_margin():
    shape = SHAPES[1]
    s = np.asarray(shape, dtype=float)
    brain = ellipsoid(shape, s / 2, s * 0.42)
    tumour = ellipsoid(shape, s * [0.5, 0.5, 0.5], s * [0.3, 0.25, 0.2])
    for seed in range(5):
        mask = draw_healthy_mask(brain, tumour, np.random.default_rng(seed), size_range=(0.1, 0.2), margin=3)
        assert_valid(mask, brain, tumour, (0.1, 0.2), 3)


@pytest.mark.parametrize("shape", SHAPES)
def test_same_rng_state_same_mask_other_seed_other_mask(shape):
    brain, tumour = brain_and_tumour(shape)
    masks = [draw_healthy_mask(brain, tumour, np.random.default_rng(seed)) for seed in range(5)]
    again = [draw_healthy_mask(brain, tumour, np.random.default_rng(seed)) for seed in range(5)]
    for a, b in zip(masks, again):
        np.testing.assert_array_equal(a, b)
    for i in range(5):
        for j in range(i + 1, 5):
            assert not np.array_equal(masks[i], masks[j]), (i, j)
    # one generator drawn twice moves on: a second mask from it is another one
    rng = np.random.default_rng(0)
    first, second = draw_healthy_mask(brain, tumour, rng), draw_healthy_mask(brain, tumour, rng)
    assert not np.array_equal(first, second)


def test_sizes_spread_over_the_range_and_shapes_are_not_balls():
    brain, tumour = brain_and_tumour(SHAPES[1])
    n_brain = int(brain.sum())
    fractions, fills = [], []
    for seed in range(16):
        mask = draw_healthy_mask(brain, tumour, np.random.default_rng(seed))
        fractions.append(mask.sum() / n_brain)
        # how much of the mask's bounding box it fills: a ball or cube would be alike every time
        box = tuple(slice(i.min(), i.max() + 1) for i in np.nonzero(mask))
        fills.append(mask[box].mean())
    assert min(fractions) < 0.012 and max(fractions) > 0.02  # log-uniform over 0.005 .. 0.05
    assert np.std(fills) > 0.03


def test_brain_given_as_numbers_is_read_as_bool():
    brain, tumour = brain_and_tumour(SHAPES[0])
    a = draw_healthy_mask(brain, tumour, np.random.default_rng(3))
    b = draw_healthy_mask(brain.astype(np.float32) * 7.0, tumour.astype(np.uint8), np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)


def _fragmented(shape=(32, 32, 32)):
    """A cube of brain cut by tumour planes every 4 voxels: only 3x3x3 pockets are healthy."""
    brain = np.ones(shape, bool)
    tumour = np.zeros(shape, bool)
    for axis in range(3):
        index = [slice(None)] * 3
        index[axis] = slice(0, None, 4)
        tumour[tuple(index)] = True
    return brain, tumour


@pytest.mark.parametrize("case", ["empty brain", "tumour everywhere", "no room at the margin", "fragments"])
def test_no_site_is_one_line_cwdm_error(case):
    shape = SHAPES[0]
    brain, tumour = brain_and_tumour(shape)
    kwargs = {}
    if case == "empty brain":
        brain = np.zeros(shape, bool)
    elif case == "tumour everywhere":
        tumour = brain.copy()
    elif case == "no room at the margin":
        tumour = brain & ~ellipsoid(shape, np.asarray(shape) / 2, (3, 3, 3))
        kwargs = {"margin": 3}
    else:
        brain, tumour = _fragmented()
        kwargs = {"margin": 0, "size_range": (0.01, 0.02)}  # 328 to 655 voxels; pockets hold 27
    with pytest.raises(CwdmError) as info:
        draw_healthy_mask(brain, tumour, np.random.default_rng(0), **kwargs)
    assert "\n" not in str(info.value) and str(info.value)


def test_fragments_that_fit_are_used():
    brain, tumour = _fragmented()
    mask = draw_healthy_mask(brain, tumour, np.random.default_rng(0), size_range=(0.0005, 0.0008), margin=0)
    assert_valid(mask, brain, tumour, (0.0005, 0.0008), 0)  # 16 to 26 voxels in one 27-voxel pocket


@pytest.mark.parametrize("size_range", [(0.05, 0.01), (0.0, 0.1), (0.1, 1.0), (0.1,), "big"])
def test_bad_size_range_is_cwdm_error(size_range):
    brain, tumour = brain_and_tumour(SHAPES[0])
    with pytest.raises(CwdmError, match="size_range"):
        draw_healthy_mask(brain, tumour, np.random.default_rng(0), size_range=size_range)


@pytest.mark.parametrize("margin", [-1, 1.5])
def test_bad_margin_is_cwdm_error(margin):
    brain, tumour = brain_and_tumour(SHAPES[0])
    with pytest.raises(CwdmError, match="margin"):
        draw_healthy_mask(brain, tumour, np.random.default_rng(0), margin=margin)


def test_shapes_that_differ_are_refused():
    brain, _ = brain_and_tumour(SHAPES[0])
    with pytest.raises(ValueError):
        draw_healthy_mask(brain, np.zeros((40, 40, 25), bool), np.random.default_rng(0))

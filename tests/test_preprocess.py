"""Intensity normalization against the reference, and the crop/pad grid."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cwdm.errors import CwdmError
from cwdm.data.preprocess import Grid, clip_and_normalize, grid_for, prepare_volume

REF = Path(__file__).parent / "data" / "reference" / "clip_and_normalize.npz"


# --- intensity ----------------------------------------------------------------

def test_clip_and_normalize_matches_reference():
    ref = np.load(REF)
    out = clip_and_normalize(ref["raw"])
    assert out.shape == ref["raw"].shape
    assert out.dtype == np.float64
    assert np.max(np.abs(out - ref["normalized"])) < 1e-6


def test_clip_and_normalize_reference_from_float32_input():
    # a float32 volume (as read from disk) is normalized in float64: only the
    # float32 rounding of the input remains
    ref = np.load(REF)
    out = clip_and_normalize(ref["raw"].astype(np.float32))
    assert out.dtype == np.float64
    assert np.max(np.abs(out - ref["normalized"])) < 1e-6
    assert out.min() == 0.0 and out.max() == 1.0


def test_clip_uses_quantiles_over_all_voxels():
    # an outlier must be clipped to the 99.9 % quantile, not define the maximum
    rng = np.random.default_rng(0)
    vol = np.zeros((20, 20, 10))
    vol[5:15, 5:15, 2:8] = rng.random((10, 10, 6)) * 100
    vol[0, 0, 0] = 1e6
    out = clip_and_normalize(vol)
    hi = np.quantile(vol, 0.999)
    lo = np.quantile(vol, 0.001)
    expected = (np.clip(vol, lo, hi) - lo) / (hi - lo)
    np.testing.assert_allclose(out, expected, atol=1e-12)
    assert out[0, 0, 0] == 1.0
    # the maximum is not the outlier: many voxels are at 1 after clipping
    assert np.count_nonzero(out == 1.0) > 1


@pytest.mark.parametrize("value", [0.0, 7.5, -3.0])
def test_constant_volume_gives_zeros(value):
    out = clip_and_normalize(np.full((6, 5, 4), value, dtype=np.float32))
    assert np.all(out == 0.0) and not np.any(np.isnan(out))


def test_non_finite_rejected():
    vol = np.ones((4, 4, 4))
    vol[1, 1, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        clip_and_normalize(vol)


# --- geometry -----------------------------------------------------------------

def test_brats_grid_is_the_reference_one():
    g = grid_for((240, 240, 155), 32)
    assert g.model == (224, 224, 160)
    assert g.crop_start == (8, 8, 0)
    assert g.crop_end == (8, 8, 0)
    assert g.pad_end == (0, 0, 5)
    vol = np.random.default_rng(0).random((240, 240, 155)).astype(np.float32)
    model = g.to_model(vol)
    assert model.shape == (224, 224, 160) and model.dtype == np.float32
    np.testing.assert_array_equal(model[:, :, :155], vol[8:-8, 8:-8, :])
    assert np.all(model[:, :, 155:] == 0)
    back = g.to_original(model)
    assert back.shape == (240, 240, 155)
    np.testing.assert_array_equal(back[8:-8, 8:-8, :], vol[8:-8, 8:-8, :])
    assert np.all(back[:8] == 0) and np.all(back[-8:] == 0)
    assert np.all(back[:, :8] == 0) and np.all(back[:, -8:] == 0)


def test_brats_inverse_of_model_output():
    # writing a result back: pad 8 back on axes 0/1, drop the last 5 slices
    g = grid_for((240, 240, 155), 32)
    out = torch.rand(1, 1, 224, 224, 160)
    back = g.to_original(out)
    assert back.shape == (1, 1, 240, 240, 155)
    assert torch.equal(back[..., 8:232, 8:232, :], out[..., :155])
    assert torch.count_nonzero(back[..., :8, :, :]) == 0


@pytest.mark.parametrize("shape,divisor,model,crop_start,crop_end,pad_end", [
    ((240, 240, 155), 32, (224, 224, 160), (8, 8, 0), (8, 8, 0), (0, 0, 5)),
    ((100, 120, 90), 16, (96, 112, 96), (2, 4, 0), (2, 4, 0), (0, 0, 6)),
    ((64, 64, 64), 8, (64, 64, 64), (0, 0, 0), (0, 0, 0), (0, 0, 0)),
    ((101, 20, 17), 32, (96, 32, 32), (2, 0, 0), (3, 0, 0), (0, 12, 15)),  # odd crop, pad up to one multiple
    ((24, 24, 16), 4, (24, 24, 16), (0, 0, 0), (0, 0, 0), (0, 0, 0)),
    ((30, 26, 18), 4, (28, 24, 16), (1, 1, 1), (1, 1, 1), (0, 0, 0)),  # ties -> crop
    ((31, 25, 19), 4, (32, 24, 20), (0, 0, 0), (0, 1, 0), (1, 0, 1)),
])
def test_grid_rule(shape, divisor, model, crop_start, crop_end, pad_end):
    g = grid_for(shape, divisor)
    assert (g.model, g.crop_start, g.crop_end, g.pad_end) == (model, crop_start, crop_end, pad_end)
    assert all(m % divisor == 0 for m in g.model)


@pytest.mark.parametrize("shape,divisor", [((240, 240, 155), 32), ((100, 120, 90), 16),
                                           ((64, 64, 64), 8), ((37, 50, 23), 8)])
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_round_trip(shape, divisor, backend):
    g = grid_for(shape, divisor)
    rng = np.random.default_rng(1)
    vol = rng.random((2,) + shape).astype(np.float32)  # leading channel axis
    x = torch.from_numpy(vol) if backend == "torch" else vol
    m = g.to_model(x)
    assert tuple(m.shape) == (2,) + g.model
    assert type(m) is type(x) and m.dtype == x.dtype
    back = g.to_original(m)
    back = back.numpy() if backend == "torch" else back
    keep = tuple(slice(s, n - e) for s, n, e in zip(g.crop_start, shape, g.crop_end))
    np.testing.assert_array_equal(back[(Ellipsis,) + keep], vol[(Ellipsis,) + keep])
    mask = np.ones(shape, bool)
    mask[keep] = False
    assert np.all(back[:, mask] == 0)
    # and model -> original -> model is exact on the kept region, zero in the pad
    again = g.to_model(g.to_original(m))
    again = again.numpy() if backend == "torch" else again
    m_np = m.numpy() if backend == "torch" else m
    np.testing.assert_array_equal(again, m_np)


def test_identity_grid_unchanged():
    g = grid_for((64, 64, 64), 8)
    assert g.is_identity
    vol = np.arange(64 ** 3, dtype=np.float32).reshape(64, 64, 64)
    np.testing.assert_array_equal(g.to_model(vol), vol)
    np.testing.assert_array_equal(g.to_original(vol), vol)


@pytest.mark.parametrize("shape,divisor", [((240, 240, 155), 32), ((101, 20, 17), 32)])
def test_grid_json_round_trip(shape, divisor):
    g = grid_for(shape, divisor)
    text = json.dumps(g.to_dict())
    g2 = Grid.from_dict(json.loads(text))
    assert g2 == g
    assert Grid.from_dict(text) == g


def test_grid_from_inconsistent_dict_rejected():
    d = grid_for((240, 240, 155), 32).to_dict()
    d["pad_end"] = [0, 0, 4]
    with pytest.raises(ValueError, match="inconsistent"):
        Grid.from_dict(d)
    with pytest.raises(ValueError, match="not a Grid"):
        Grid.from_dict({"model": [1, 2, 3]})


@pytest.mark.parametrize("shape,divisor,words", [
    ((10, 240, 155), 32, "axis 0 has 10 voxels"),
    ((64, 64, 3), 8, "axis 2 has 3 voxels"),
    ((64, 64), 8, "3D"),
    ((64, 0, 64), 8, "empty"),
])
def test_unmappable_shapes(shape, divisor, words):
    with pytest.raises(CwdmError, match=words):
        grid_for(shape, divisor)


def test_half_divisor_is_padded():
    assert grid_for((16, 17, 32), 32).model == (32, 32, 32)


def test_wrong_input_shape_rejected():
    g = grid_for((240, 240, 155), 32)
    with pytest.raises(ValueError, match="last 3 axes"):
        g.to_model(np.zeros((224, 224, 160), np.float32))
    with pytest.raises(ValueError, match="last 3 axes"):
        g.to_original(np.zeros((240, 240, 155), np.float32))


def test_prepare_volume():
    vol = np.random.default_rng(2).random((30, 26, 18)) * 500
    g = grid_for(vol.shape, 4)
    out = prepare_volume(vol, g)
    assert out.shape == (28, 24, 16) and out.dtype == np.float32
    np.testing.assert_allclose(out, g.to_model(clip_and_normalize(vol)).astype(np.float32))

"""hf_energy_ratio: the Laplacian energy of a synthesis relative to its reference's, inside the brain."""

import math

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from cwdm.evaluation import realism as R
from cwdm.evaluation.metrics import METRIC_NAMES, brasyn_normalize, case_metrics, normalization_bounds

SHAPE = (28, 28, 20)


def _textured(seed=0, shape=SHAPE):
    """(volume with fine texture in [0.2, 0.8] inside a ball, 0 outside; the ball mask)."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    brain = x ** 2 + y ** 2 + z ** 2 < 0.8
    tex = gaussian_filter(rng.random(shape), 0.7)
    tex = (tex - tex.min()) / (tex.max() - tex.min())
    return np.where(brain, 0.2 + 0.6 * tex, 0.0), brain


def test_identical_is_exactly_one_blurred_is_lower_noisier_is_higher():
    ref, brain = _textured()
    assert R.hf_energy_ratio(ref.copy(), ref, brain) == 1.0
    blurred = np.where(brain, gaussian_filter(ref, 1.0), 0.0)
    more_blurred = np.where(brain, gaussian_filter(ref, 2.0), 0.0)
    r1, r2 = R.hf_energy_ratio(blurred, ref, brain), R.hf_energy_ratio(more_blurred, ref, brain)
    assert r2 < r1 < 0.5  # the more blurred, the less detail
    noisy = ref + np.where(brain, np.random.default_rng(1).normal(0, 0.05, SHAPE), 0.0)
    assert R.hf_energy_ratio(noisy, ref, brain) > 1.5


def test_known_answers_of_the_laplacian_and_the_ratio():
    i, j, k = np.meshgrid(*[np.arange(s, dtype=np.float64) for s in (6, 7, 8)], indexing="ij")
    # L(x^2 + y^2 + z^2) = 2 + 2 + 2 with unit spacing, exactly, on every inner voxel
    np.testing.assert_array_equal(R.laplacian(i ** 2 + j ** 2 + k ** 2), np.full((4, 5, 6), 6.0))
    vol = np.random.default_rng(2).random((5, 5, 5))
    hand = vol[3, 2, 2] + vol[1, 2, 2] + vol[2, 3, 2] + vol[2, 1, 2] + vol[2, 2, 3] + vol[2, 2, 1] - 6 * vol[2, 2, 2]
    assert R.laplacian(vol)[1, 1, 1] == pytest.approx(hand, abs=1e-12)
    ref = i ** 2 + 3.0 * j  # L = 2 everywhere
    assert R.hf_energy_ratio(3.0 * j, ref) == 0.0  # a linear ramp has no Laplacian energy
    assert R.hf_energy_ratio(2.0 * i ** 2, ref) == pytest.approx(4.0, rel=1e-12)  # L = 4: ratio 4^2 / 2^2
    tex, brain = _textured(3)
    assert R.hf_energy_ratio(0.5 * tex, tex, brain) == pytest.approx(0.25, rel=1e-12)  # a^2


def test_only_voxels_whose_neighbours_are_all_in_the_brain_count():
    mask = np.zeros((9, 9, 9), dtype=bool)
    mask[2:7, 2:7, 2:7] = True  # a 5-voxel cube: its interior is the 3-voxel cube
    inner = R.interior_mask(mask)
    assert inner.shape == (7, 7, 7) and int(inner.sum()) == 27 and inner[2:5, 2:5, 2:5].all()  # voxels 3..5
    ref, brain = _textured(4)
    # anything outside the brain (here noise on the background) changes nothing
    outside = ref + np.where(brain, 0.0, np.random.default_rng(5).random(SHAPE))
    assert R.hf_energy_ratio(outside, ref, brain) == 1.0
    # with the whole volume as the mask, the same background noise counts
    assert R.hf_energy_ratio(outside, ref, None) > 2.0


def test_undefined_cases_are_nan():
    ref, brain = _textured(6)
    assert math.isnan(R.hf_energy_ratio(ref, ref, np.zeros(SHAPE, dtype=bool)))  # empty brain
    flat = np.where(brain, 0.5, 0.0)
    assert math.isnan(R.hf_energy_ratio(ref, flat, brain))  # no detail in the reference: no ratio
    assert math.isnan(R.hf_energy_ratio(np.ones((2, 5, 5)), np.ones((2, 5, 5))))  # too thin for the stencil
    with pytest.raises(ValueError):
        R.hf_energy_ratio(ref, ref[:-1])


def test_case_metrics_reports_it_on_the_scale_of_mse():
    ref, brain = _textured(7)
    raw = ref * 700.0
    assert "hf_energy_ratio" in METRIC_NAMES
    assert case_metrics(raw.copy(), raw, brain)["hf_energy_ratio"] == 1.0
    blurred = np.where(brain, gaussian_filter(raw, 1.0), 0.0)
    got = case_metrics(blurred, raw, brain)["hf_energy_ratio"]
    bounds = normalization_bounds(raw)  # the prediction is scaled with the reference's bounds
    want = R.hf_energy_ratio(brasyn_normalize(blurred, bounds=bounds), brasyn_normalize(raw, bounds=bounds), brain)
    assert got == pytest.approx(want, rel=1e-12) and got < 0.5
    # a prediction twice as bright is clipped to the reference's range, not rescaled to its own
    assert case_metrics(raw * 2.0, raw, brain)["hf_energy_ratio"] != pytest.approx(1.0, abs=1e-3)

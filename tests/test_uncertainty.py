"""Calibration of an ensemble's std map: std_error_corr and the sparsification error (ause)."""

import math

import numpy as np
import pytest

from cwdm.evaluation import uncertainty as U
from cwdm.evaluation.metrics import brasyn_normalize, normalization_bounds


def _ause_by_hand(std, err, fractions):
    """The definition, slowly: remove floor(f N) voxels, mean of the rest, for each f."""
    n = len(err)
    by_std = [float(np.mean(err[np.argsort(-std, kind="stable")][int(math.floor(f * n + 1e-9)):])) for f in fractions]
    oracle = [float(np.mean(np.sort(err)[::-1][int(math.floor(f * n + 1e-9)):])) for f in fractions]
    return float(np.mean(np.subtract(by_std, oracle))) / float(np.mean(err))


def test_a_std_equal_to_the_error_is_perfectly_calibrated():
    err = np.abs(np.random.default_rng(0).normal(size=5000))
    assert U.ause(err, err) == 0.0  # exactly: the two orderings are the same
    assert U.std_error_corr(err, err) == pytest.approx(1.0, abs=1e-12)
    assert U.ause(7.5 * err, err) == 0.0  # a positive factor on the std changes nothing
    by_std, oracle = U.sparsification_curves(err, err)
    np.testing.assert_array_equal(by_std, oracle)
    assert by_std.shape == (100,) and by_std[0] == pytest.approx(err.mean(), rel=1e-12)
    assert np.all(np.diff(oracle) <= 1e-12)  # removing the largest errors only lowers the mean


def test_a_random_std_is_clearly_not_calibrated():
    rng = np.random.default_rng(1)
    err = np.abs(rng.normal(size=20000))
    std = rng.random(20000)
    got = U.ause(std, err)
    # a std unrelated to the error: S_std stays near the mean error, the area is that of the oracle's drop
    _, oracle = U.sparsification_curves(err, err)
    assert got == pytest.approx(float(np.mean(1.0 - oracle / err.mean())), abs=0.02)
    assert got > 0.3
    assert abs(U.std_error_corr(std, err)) < 0.03
    assert got == pytest.approx(_ause_by_hand(std, err, U.FRACTIONS), rel=1e-9)


def test_sparsification_known_values():
    err = np.array([4.0, 3.0, 2.0, 1.0])
    std = np.array([1.0, 2.0, 3.0, 4.0])  # exactly backwards: the most certain voxels are the worst
    f = np.array([0.0, 0.25, 0.5, 0.75])
    by_std, oracle = U.sparsification_curves(std, err, f)
    np.testing.assert_allclose(by_std, [2.5, 3.0, 3.5, 4.0])
    np.testing.assert_allclose(oracle, [2.5, 2.0, 1.5, 1.0])
    assert U.ause(std, err, f) == pytest.approx(1.5 / 2.5)
    assert U.std_error_corr(std, err) == pytest.approx(-1.0)
    # floor(f N) on the 0.01 grid: 0.29 * 100 is 28.999... in binary; 29 voxels must go
    ramp = np.arange(100.0)
    _, oracle = U.sparsification_curves(ramp, ramp)
    assert oracle[29] == pytest.approx(np.arange(71.0).mean()) and oracle[99] == 0.0


def test_undefined_values_are_nan():
    assert math.isnan(U.std_error_corr(np.ones(10), np.arange(10.0)))  # constant std
    assert math.isnan(U.ause(np.arange(10.0), np.zeros(10)))  # no error to explain
    assert math.isnan(U.ause(np.array([]), np.array([])))
    with pytest.raises(ValueError):
        U.ause(np.ones(3), np.ones(4))


def test_calibration_is_computed_on_the_brain_voxels_and_the_scale_of_mae():
    rng = np.random.default_rng(2)
    shape = (20, 20, 12)
    brain = np.zeros(shape, dtype=bool)
    brain[3:17, 3:17, 2:10] = True
    vals = 300.0 + 400.0 * rng.random(shape)
    vals[3:5] = 700.0  # > 0.5 % of the voxels at the maximum, > 0.5 % background: bounds (0, 700), nothing clipped
    ref = np.where(brain, vals, 0.0)
    lo, hi = normalization_bounds(ref)
    assert (lo, hi) == (0.0, 700.0)
    pred = np.clip(ref + np.where(brain, rng.normal(0, 30, shape), 0.0), lo, hi)  # inside the bounds too
    std = np.abs(pred - ref)  # in the prediction's units: the true error, scaled by hi - lo
    std[~brain] = 1000.0  # outside the brain: must not count
    got = U.calibration_metrics(pred, ref, std, brain)
    assert set(got) == set(U.UNCERTAINTY_METRICS)
    assert got["std_error_corr"] == pytest.approx(1.0, abs=1e-6)
    assert got["ause"] == pytest.approx(0.0, abs=1e-6)
    # the error is the one of mae: prediction and reference scaled with the reference's bounds
    err = np.abs(brasyn_normalize(pred, bounds=(lo, hi)) - brasyn_normalize(ref, bounds=(lo, hi)))[brain]
    noise = rng.random(shape)
    got = U.calibration_metrics(pred, ref, noise, brain)
    assert got["ause"] == pytest.approx(U.ause(noise[brain], err), rel=1e-9)
    assert got["std_error_corr"] == pytest.approx(U.std_error_corr(noise[brain], err), rel=1e-9)
    assert all(math.isnan(v) for v in U.calibration_metrics(pred, ref, std, np.zeros(shape, bool)).values())

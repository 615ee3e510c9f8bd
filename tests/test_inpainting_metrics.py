"""The BraTS inpainting challenge's scores (cwdm.evaluation.inpainting) against its official package.

The package (``inpainting`` 0.0.12, a test dependency) is run on the same NIfTI files; every score must
agree to a relative tolerance of RTOL = 1e-6, infinite values exactly. SSIM agrees to the last bit;
the others differ by the package's float32 metric states (its sums and PSNR factor are float32, ours
float64): 1.2e-7 relative at worst on these cases.
"""

import contextlib
import io
import math
import re

import nibabel as nib
import numpy as np
import pytest
import torch
from inpainting.challenge_metrics_2023 import compute_image_quality_metrics, generate_metrics
from scipy.ndimage import gaussian_filter

from cwdm.errors import CwdmError
from cwdm.evaluation.inpainting import (EPSILON, INPAINTING_METRICS, UnscorableCase, inpainting_file_metrics,
                                        inpainting_metrics, read_challenge_volume)

RTOL = 1e-6
SHAPE = (24, 28, 20)


def make_case(seed=0):
    """(target, voided, healthy mask) of a smooth brain-like volume: positive inside an ellipsoid, zero
    outside; a box voided, its part outside a 'tumour' corner the healthy mask."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, s) for s in SHAPE], indexing="ij")
    brain = x ** 2 / 0.9 + y ** 2 + z ** 2 / 0.8 < 0.85
    tex = gaussian_filter(rng.random(SHAPE), 1.5)
    tex = (tex - tex.min()) / (tex.max() - tex.min())
    target = np.where(brain, 150.0 + 1400.0 * tex, 0.0)
    voided_region = np.zeros(SHAPE, bool)
    voided_region[7:17, 8:20, 5:15] = True
    voided_region &= brain
    healthy = voided_region.copy()
    healthy[7:10, 8:11, 5:8] = False  # the tumour part: voided, not scored
    voided = np.where(voided_region, 0.0, target)
    return target, voided, healthy


def make_prediction(kind, target, healthy, seed=1):
    rng = np.random.default_rng(seed)
    if kind == "noise":  # wide noise: some voxels fall below the target's masked minimum (psnr clips them)
        return target + rng.normal(0.0, 120.0, SHAPE)
    if kind == "blur":
        return gaussian_filter(target, 1.5)
    if kind == "constant":
        return np.where(healthy, 700.0, target)
    if kind == "bright":  # above the voided image's 99.5 percentile: clipped at 1 by the normalization
        return np.where(healthy, target * 1.6, target)
    raise ValueError(kind)


def save(path, data, dtype, slope=None):
    img = nib.Nifti1Image(np.asarray(data).astype(dtype) if slope is None else np.asarray(data), np.eye(4))
    img.header.set_data_dtype(dtype)
    if slope is not None:  # written as int16 with a scale factor, as some converters store scans
        img.header.set_slope_inter(slope, 0.0)
    nib.save(img, str(path))
    return path


def official(pred, healthy, target, voided):
    with contextlib.redirect_stdout(io.StringIO()):  # the package prints its inputs
        return compute_image_quality_metrics(str(pred), str(healthy), str(target), str(voided))


def assert_same(ours, ref):
    assert set(ref) <= set(ours)
    for key, want in ref.items():
        got = ours[key]
        if math.isfinite(want):
            assert got == pytest.approx(want, rel=RTOL, abs=1e-12), key
        else:
            assert got == want or (math.isnan(got) and math.isnan(want)), key


@pytest.mark.parametrize("dtype, slope", [(np.float32, None), (np.int16, None), (np.int16, 0.7)])
@pytest.mark.parametrize("kind", ["noise", "blur", "constant", "bright"])
def test_files_score_as_the_official_package(tmp_path, dtype, slope, kind):
    target, voided, healthy = make_case()
    pred = make_prediction(kind, target, healthy)
    if slope is not None:  # stored values round(v / slope) * slope; the package casts them back to int16
        target, voided, pred = (np.round(v / slope) * slope for v in (target, voided, pred))
    files = {name: save(tmp_path / f"c-{name}.nii.gz", vol, dtype, slope)
             for name, vol in (("pred", pred), ("t1n", target), ("voided", voided))}
    files["mask"] = save(tmp_path / "c-mask-healthy.nii.gz", healthy, np.uint8)
    ref = official(files["pred"], files["mask"], files["t1n"], files["voided"])
    ours = inpainting_file_metrics(files["pred"], files["t1n"], files["voided"], files["mask"])
    assert tuple(ours) == INPAINTING_METRICS
    assert_same(ours, ref)
    assert 0.3 < ours["ssim"] < 1.0 and ours["mse"] > 0
    if kind == "noise":  # the masked target's range clips the prediction before psnr's mse
        assert ours["psnr"] > ours["psnr_eps"] + 0.01
    if slope is not None:  # the package's read truncates the scaled values to the stored int16
        direct = nib.load(str(files["t1n"])).get_fdata()
        assert not np.array_equal(read_challenge_volume(files["t1n"]), direct.astype(np.float32))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16])
def test_arrays_score_as_generate_metrics(dtype):
    target, voided, healthy = make_case(seed=3)
    pred = make_prediction("noise", target, healthy, seed=4)
    arrays = [np.asarray(v).astype(dtype) for v in (pred, target, voided)]
    tensors = [torch.Tensor(a)[None] for a in arrays]
    mask = torch.from_numpy(healthy)[None]
    ref = generate_metrics(tensors[0], tensors[1], tensors[2], mask)
    assert_same(inpainting_metrics(*arrays, healthy.astype(np.uint8)), ref)


def test_ssim_is_the_official_slice_wise_2d_ssim():
    """torchmetrics reads the package's (1, X, Y, Z) tensors as X channels of a 2D image: a 3D SSIM of the
    same volumes differs, and so does the package's SSIM on the volumes transposed."""
    from torchmetrics.functional.image import structural_similarity_index_measure as ssim

    target, voided, healthy = make_case(seed=5)
    pred = make_prediction("blur", target, healthy)
    ours = inpainting_metrics(pred, target, voided, healthy)["ssim"]
    t = [torch.from_numpy(np.asarray(v, np.float32)) for v in (pred, target, voided)]
    ref = generate_metrics(t[0][None], t[1][None], t[2][None], torch.from_numpy(healthy)[None])["ssim"]
    assert ours == pytest.approx(ref, rel=RTOL)
    swapped = inpainting_metrics(*(np.transpose(v, (2, 1, 0)) for v in (pred, target, voided, healthy)))["ssim"]
    assert abs(swapped - ours) > 1e-3  # slices along another axis: another number
    lo, hi = np.percentile(voided, [0.5, 99.5])
    norm = [torch.from_numpy(((np.clip(v * healthy, lo, hi) - lo) / (hi - lo)).astype(np.float32))[None, None]
            for v in (pred, target)]
    smap = ssim(norm[0], norm[1], return_full_image=True)[1][0, 0].numpy()
    assert abs(float(smap[healthy].mean()) - ours) > 1e-3  # a 3D SSIM is not the official score


def test_perfect_fill_known_answers():
    target, voided, healthy = make_case()
    out = inpainting_metrics(target, target, voided, healthy)
    assert out["mse"] == 0.0 and out["rmse"] == 0.0 and out["mae"] == 0.0 and out["msle"] == 0.0
    assert out["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert out["psnr"] == math.inf and out["psnr_01"] == math.inf
    assert out["psnr_01_eps"] == pytest.approx(10 * math.log10(1 / EPSILON))  # 156.5 dB
    assert math.isfinite(out["psnr_eps"]) and out["psnr_eps"] < out["psnr_01_eps"]  # target range < 1

    # wrong everywhere outside the scoring mask (the tumour part and the rest of the head): still perfect
    rng = np.random.default_rng(9)
    outside = np.where(healthy, target, target + rng.normal(0, 300, SHAPE))
    assert inpainting_metrics(outside, target, voided, healthy) == out


def test_errors_are_on_the_voided_images_scale():
    """An offset d inside the mask where nothing is clipped: mae = d / (hi - lo) of the voided image."""
    target, voided, healthy = make_case()
    lo, hi = np.percentile(voided.astype(np.float32), [0.5, 99.5])
    lo = max(lo, 0.0)
    inner = healthy & (target > lo + 20) & (target < hi - 20)
    pred = np.where(inner, target + 10.0, target)
    out = inpainting_metrics(pred, target, voided, inner)
    assert out["mae"] == pytest.approx(10.0 / (hi - lo), rel=1e-5)
    assert out["rmse"] == pytest.approx(out["mae"], rel=1e-5)  # a constant error
    assert out["psnr_01"] == pytest.approx(-20 * math.log10(out["mae"]), rel=1e-5)


@pytest.mark.parametrize("change, volume, fragment", [
    (lambda p, t, v, m: (p, t, v, np.zeros_like(m)), "mask", "empty mask"),
    (lambda p, t, v, m: (np.where(m, np.nan, p), t, v, m), "prediction", "non-finite"),
    (lambda p, t, v, m: (p[:, :, :-1], t, v, m), "prediction", "differs from the target's (24x28x20)"),
    (lambda p, t, v, m: (p, t, np.full_like(v, 5.0), m), "voided", "normalization undefined"),
])
def test_unscorable_inputs_raise_naming_the_input(change, volume, fragment):
    target, voided, healthy = make_case()
    args = change(target + 1.0, target, voided, healthy)
    with pytest.raises(UnscorableCase, match=re.escape(fragment)) as info:
        inpainting_metrics(*args)
    assert info.value.volume == volume


def test_file_helper_names_the_file(tmp_path):
    target, voided, healthy = make_case()
    pred = target.copy()
    pred[3, 3, 3] = np.nan
    paths = [save(tmp_path / f"{n}.nii.gz", v, np.float32) for n, v in
             (("p", pred), ("t", target), ("v", voided), ("m", healthy))]
    with pytest.raises(CwdmError, match=f"^{paths[0]}: 1 non-finite voxels"):
        inpainting_file_metrics(*paths)
    with pytest.raises(CwdmError, match="file not found"):
        inpainting_file_metrics(tmp_path / "nope.nii.gz", *paths[1:])


def test_a_target_constant_in_the_mask_gives_the_packages_nan_and_minus_inf():
    target, voided, healthy = make_case(seed=7)
    target = np.where(healthy, 500.0, target)
    pred = make_prediction("noise", target, healthy)
    t = [torch.Tensor(np.asarray(v, np.float32))[None] for v in (pred, target, voided)]
    ref = generate_metrics(t[0], t[1], t[2], torch.from_numpy(healthy)[None])
    ours = inpainting_metrics(pred, target, voided, healthy)
    assert math.isnan(ours["psnr"]) and ours["psnr_eps"] == -math.inf and math.isfinite(ours["psnr_01"])
    assert_same(ours, ref)

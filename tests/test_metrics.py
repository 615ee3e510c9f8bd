"""Metrics of the BraSyn challenge: normalization, SSIM (+ tumour / non-tumour), errors on the target's scale."""

import math

import numpy as np
import pytest
import torch
from scipy.ndimage import binary_dilation, gaussian_filter
from torchmetrics.functional.image import structural_similarity_index_measure
from torchmetrics.image import StructuralSimilarityIndexMeasure

from cwdm.evaluation import metrics as M
from conftest import REF

SHAPE = (32, 32, 24)


def _phantom(seed=0, shape=SHAPE):
    """(reference volume in [0.2, 0.8] inside an ellipsoid brain, brain mask, seg)."""
    rng = np.random.default_rng(seed)
    axes = [np.linspace(-1, 1, s) for s in shape]
    x, y, z = np.meshgrid(*axes, indexing="ij")
    brain = x ** 2 + y ** 2 + z ** 2 < 0.8
    tex = gaussian_filter(rng.random(shape), 1.5)
    tex = (tex - tex.min()) / (tex.max() - tex.min())
    ref = np.where(brain, 0.2 + 0.6 * tex, 0.0).astype(np.float32)
    seg = np.zeros(shape, dtype=np.float32)
    seg[12:20, 12:20, 9:15] = 1
    seg[14:17, 14:17, 11:13] = 2  # several labels: every label > 0 is tumour
    return ref, brain, seg


# ----------------------------------------------------------------------------- normalization

def test_normalize_uses_percentiles_not_min_max():
    rng = np.random.default_rng(1)
    vol = rng.uniform(10.0, 20.0, size=SHAPE)
    vol[0, 0, 0] = 1e6  # a single outlier must not squash the scale
    vol[0, 0, 1] = -50.0  # a negative outlier: lower bound raised to 0 only if the percentile is < 0
    lo, hi = np.percentile(vol, [0.5, 99.5])
    assert 10.0 <= lo < hi <= 20.0
    out = M.brasyn_normalize(vol)
    assert out.dtype == np.float32 and out.shape == SHAPE
    expected = (np.clip(vol, lo, hi) - lo) / (hi - lo)
    np.testing.assert_allclose(out, expected, atol=1e-6)
    assert out.min() == 0.0 and out.max() == 1.0
    assert out[0, 0, 0] == 1.0 and out[0, 0, 1] == 0.0
    # the bulk of voxels keeps its spread (min-max scaling would put them near 0)
    assert 0.4 < float(np.median(out)) < 0.6


def test_normalize_strictly_positive_and_constant():
    vol = np.linspace(-1.0, 3.0, num=int(np.prod(SHAPE))).reshape(SHAPE)
    lo, hi = np.percentile(vol, [0.5, 99.5])
    assert lo < 0
    out = M.brasyn_normalize(vol)
    np.testing.assert_allclose(out, np.clip(vol, 0.0, hi) / hi, atol=1e-6)
    np.testing.assert_allclose(M.brasyn_normalize(vol, strictly_positive=False),
                               (np.clip(vol, lo, hi) - lo) / (hi - lo), atol=1e-6)
    assert not np.any(M.brasyn_normalize(np.full(SHAPE, 5.0)))
    with pytest.raises(ValueError, match="non-finite"):
        M.brasyn_normalize(np.where(np.arange(8).reshape(2, 2, 2) == 3, np.nan, 1.0))


def test_brain_mask_is_union_of_non_zero():
    a = np.zeros(SHAPE)
    b = np.zeros(SHAPE)
    a[1, 2, 3] = 1.0
    b[4, 5, 6] = -2.0
    m = M.brain_mask(a, b)
    assert m.dtype == bool and int(m.sum()) == 2 and m[1, 2, 3] and m[4, 5, 6]


# ----------------------------------------------------------------------------- the challenge's values

def _reference_case(i):
    with np.load(REF / "brasyn_metrics.npz") as d:
        return {k[len(f"case{i}_"):]: d[k] for k in d.files if k.startswith(f"case{i}_")}


@pytest.mark.parametrize("i", [0, 1, 2])
def test_reference_cases_reproduce_the_official_scores(i):
    c = _reference_case(i)
    res = M.case_metrics(c["prediction"], c["target"], c["brain"], c["seg"])
    for key in ("ssim", "ssim_tumor", "ssim_non_tumor"):
        assert res[key] == pytest.approx(float(c[key]), abs=1e-5), key
    assert res["psnr"] == pytest.approx(float(c["psnr_refnorm"]), abs=1e-3)
    assert res["mse"] == pytest.approx(float(c["mse_refnorm"]), rel=1e-5)
    # the tumour score is not the tumour's share of the whole-volume map (the old, wrong definition)
    assert abs(res["ssim_tumor_region"] - float(c["ssim_tumor"])) > 0.05


def test_reference_ssim_is_the_mean_of_the_whole_map():
    """torchmetrics < 1.4.2 dropped a border of the map before the mean: that would fail here."""
    c = _reference_case(0)
    res = M.ssim_3d(M.brasyn_normalize(c["prediction"]), M.brasyn_normalize(c["target"]))
    assert res["ssim"] == pytest.approx(float(c["ssim"]), abs=1e-5)
    assert all(math.isnan(res[k]) for k in res if k != "ssim")  # no tumour mask: no split


def test_masked_ssim_takes_the_data_range_of_the_masked_volumes():
    ref, brain, _ = _phantom(seed=7)
    tumor = brain.copy()
    tumor[:, 16:, :] = False  # a large "tumour": half of the brain
    ref[tumor] = 0.3 + 0.2 * ref[tumor]  # the masked target stays well below 1 ...
    rng = np.random.default_rng(8)
    pred = ref + np.where(tumor, rng.normal(0, 0.03, SHAPE), 0.0)
    pn, rn = M.brasyn_normalize(pred), M.brasyn_normalize(ref)
    assert max((rn * tumor).max(), (pn * tumor).max()) < 0.9  # ... and so does the prediction
    res = M.ssim_3d(pn, rn, mask_tumor=tumor)
    m = torch.from_numpy(tumor.astype(np.float32))[None, None]
    pt, rt = torch.from_numpy(pn)[None, None], torch.from_numpy(rn)[None, None]
    own_range = float(structural_similarity_index_measure(pt * m, rt * m))
    unit_range = float(structural_similarity_index_measure(pt * m, rt * m, data_range=1.0))
    assert res["ssim_tumor"] == pytest.approx(own_range, abs=1e-6)
    assert abs(own_range - unit_range) > 5e-4  # the data range matters (tolerance above: 1e-6)


# ----------------------------------------------------------------------------- identical volumes

def test_identical_volumes_give_ssim_one_and_infinite_psnr():
    ref, brain, seg = _phantom()
    res = M.case_metrics(ref * 37.0, ref * 37.0, brain, seg)
    assert set(res) == set(M.METRIC_NAMES)
    for key in ("ssim", "ssim_tumor", "ssim_non_tumor", "ssim_tumor_region", "ssim_non_tumor_region"):
        assert res[key] == pytest.approx(1.0, abs=1e-5), key
    assert res["mse"] == 0.0 and res["mae"] == 0.0
    assert res["psnr"] == math.inf


def test_scaled_prediction_is_judged_on_the_targets_scale():
    """PSNR/MSE scale the prediction with the target's percentiles: a 1.7x brighter prediction is poor."""
    ref, brain, seg = _phantom(seed=9)
    ref = ref * 500.0
    pred = ref * 1.7
    res = M.case_metrics(pred, ref, brain, seg)
    # independent computation: numpy percentiles of the target, clip both to them, errors over the brain
    lo, hi = np.percentile(ref.astype(np.float64), [0.5, 99.5])
    lo = max(lo, 0.0)
    tn = (np.clip(ref.astype(np.float64), lo, hi) - lo) / (hi - lo)
    pn = (np.clip(pred.astype(np.float64), lo, hi) - lo) / (hi - lo)
    mse = np.mean((pn - tn)[brain] ** 2)
    assert res["mse"] == pytest.approx(mse, rel=1e-5)
    assert res["mae"] == pytest.approx(np.mean(np.abs(pn - tn)[brain]), rel=1e-5)
    assert res["psnr"] == pytest.approx(10 * math.log10(1 / mse), abs=1e-3)
    assert res["psnr"] < 30.0  # per-volume normalization of the prediction gave ~150 dB here
    # SSIM normalizes each volume with its own percentiles: the structure is still perfect
    assert res["ssim"] == pytest.approx(1.0, abs=1e-5)
    # a darker prediction is not clipped away either
    assert M.case_metrics(ref * 0.5, ref, brain, seg)["psnr"] < 30.0


# ----------------------------------------------------------------------------- degenerate volumes

@pytest.mark.parametrize("kind, fragment", [("zero", "all zero"), ("constant", "constant"),
                                            ("nan", "non-finite"), ("inf", "non-finite"),
                                            ("sparse", "percentiles coincide")])
def test_degenerate_predictions_are_refused(kind, fragment):
    ref, brain, seg = _phantom(seed=10)
    pred = {"zero": np.zeros(SHAPE), "constant": np.full(SHAPE, 0.4), "nan": ref.copy(), "inf": ref.copy(),
            "sparse": np.zeros(SHAPE)}[kind]
    if kind == "nan":
        pred[5, 5, 5] = np.nan
    elif kind == "inf":
        pred[5, 5, 5] = -np.inf
    elif kind == "sparse":
        pred[0, 0, :3] = 1.0  # 3 non-zero voxels: 99.5 percentile is 0
    assert fragment in M.degenerate_reason(pred)
    with pytest.raises(M.DegenerateVolume, match=f"prediction is degenerate: .*{fragment}"):
        M.case_metrics(pred, ref, brain, seg)
    with pytest.raises(M.DegenerateVolume, match="reference is degenerate"):
        M.case_metrics(ref, pred, brain, seg)
    assert M.degenerate_reason(ref) is None and M.degenerate_reason(ref - 0.5) is None


# ----------------------------------------------------------------------------- known perturbation

def test_known_perturbation_gives_expected_errors():
    ref, brain, seg = _phantom(seed=2)
    # control the percentiles: > 0.5 % of voxels at 0 (background) and at 1 (a bright block inside
    # the brain), everything else in [0.2, 0.8] -> normalization is the identity for ref and pred
    ref[12:20, 12:20, 10:14] = 1.0  # 256 voxels, 1 % of the volume
    perturbed = brain.copy()
    perturbed[12:20, 12:20, 10:14] = False  # the bright block stays at 1
    perturbed[:, :16, :] = False  # perturb only half of the brain
    pred = ref.copy()
    pred[perturbed] += 0.1
    np.testing.assert_allclose(M.brasyn_normalize(ref), ref, atol=1e-6)
    np.testing.assert_allclose(M.brasyn_normalize(pred), pred, atol=1e-6)

    frac = perturbed.sum() / brain.sum()
    exp_mse = 0.01 * frac
    exp_mae = 0.1 * frac
    res = M.case_metrics(pred, ref, brain)
    assert res["mse"] == pytest.approx(exp_mse, rel=1e-4)
    assert res["mae"] == pytest.approx(exp_mae, rel=1e-4)
    assert res["psnr"] == pytest.approx(10 * math.log10(1 / exp_mse), rel=1e-4)
    # no seg: tumour split undefined
    assert math.isnan(res["ssim_tumor"]) and math.isnan(res["ssim_non_tumor"])

    # the errors are taken inside the mask only: outside differences do not count
    errs = M.masked_errors(pred, ref, perturbed)
    assert errs["mse"] == pytest.approx(0.01, rel=1e-4) and errs["mae"] == pytest.approx(0.1, rel=1e-4)
    assert errs["psnr"] == pytest.approx(20.0, rel=1e-4)
    assert M.masked_errors(pred, ref, ~brain)["mse"] == 0.0
    empty = M.masked_errors(pred, ref, np.zeros(SHAPE, dtype=bool))
    assert all(math.isnan(v) for v in empty.values())


def test_masked_errors_reject_shape_mismatch():
    with pytest.raises(ValueError):
        M.masked_errors(np.zeros(SHAPE), np.zeros((32, 32, 20)), None)
    with pytest.raises(ValueError):
        M.case_metrics(np.zeros(SHAPE), np.zeros((32, 32, 20)), None)


# ----------------------------------------------------------------------------- tumour split

def test_tumour_split_uses_the_segmentation():
    ref, brain, seg = _phantom(seed=3)
    tumor = seg > 0
    rng = np.random.default_rng(4)

    pred = ref.copy()
    pred[tumor] = rng.uniform(0.2, 0.8, size=int(tumor.sum()))
    res = M.case_metrics(pred, ref, brain, seg)
    # the masked volumes are zero (identical) outside the tumour, so a small tumour moves the
    # challenge's tumour score little; the region mean of the map shows the damage plainly
    assert res["ssim_tumor"] < 0.995 and res["ssim_tumor_region"] < 0.3
    assert res["ssim_non_tumor"] > 0.99  # the non-tumour masked volumes are (nearly) identical
    assert res["ssim_non_tumor_region"] > 0.85  # the map near the tumour sees the corrupted voxels
    assert res["ssim_tumor_region"] < res["ssim"] < 1.0

    # corrupt only brain far from the tumour (beyond the SSIM window): the tumour stays near perfect
    far = brain & ~binary_dilation(tumor, iterations=7)
    pred2 = ref.copy()
    pred2[far] = rng.uniform(0.2, 0.8, size=int(far.sum()))
    res2 = M.case_metrics(pred2, ref, brain, seg)
    assert res2["ssim_tumor"] > res["ssim_tumor"] and res2["ssim_tumor_region"] > 0.95
    assert res2["ssim_non_tumor"] < 0.9 and res2["ssim_non_tumor"] < res["ssim_non_tumor"] - 0.05
    assert res2["ssim_non_tumor_region"] < res["ssim_non_tumor_region"] - 0.05

    # an all-zero segmentation: no tumour region; the non-tumour score is then the whole-volume one
    res3 = M.case_metrics(pred, ref, brain, np.zeros(SHAPE))
    assert math.isnan(res3["ssim_tumor"]) and math.isnan(res3["ssim_tumor_region"])
    assert res3["ssim_non_tumor"] == pytest.approx(res3["ssim"], abs=1e-6)


# ----------------------------------------------------------------------------- agreement with torchmetrics

def test_ssim_equals_torchmetrics_and_map_means():
    ref, brain, seg = _phantom(seed=5)
    rng = np.random.default_rng(6)
    pred = gaussian_filter(ref, 0.8) + np.where(brain, rng.normal(0, 0.05, SHAPE), 0)
    pn, rn = M.brasyn_normalize(pred), M.brasyn_normalize(ref)
    pt = torch.from_numpy(pn)[None, None]
    rt = torch.from_numpy(rn)[None, None]
    expected = float(StructuralSimilarityIndexMeasure()(pt, rt))
    value, full = structural_similarity_index_measure(pt, rt, return_full_image=True)
    assert float(value) == pytest.approx(expected, abs=1e-6)
    assert 0.3 < expected < 0.99  # a non-trivial value

    tumor = seg > 0
    m = torch.from_numpy(tumor.astype(np.float32))[None, None]
    res = M.ssim_3d(pn, rn, mask_tumor=tumor, mask_brain=brain)
    smap = full[0, 0].numpy().astype(np.float64)
    assert res["ssim"] == pytest.approx(expected, abs=1e-6)
    assert res["ssim_tumor"] == pytest.approx(float(StructuralSimilarityIndexMeasure()(pt * m, rt * m)), abs=1e-6)
    assert res["ssim_non_tumor"] == pytest.approx(
        float(StructuralSimilarityIndexMeasure()(pt * (1 - m), rt * (1 - m))), abs=1e-6)
    assert res["ssim_tumor_region"] == pytest.approx(smap[tumor].mean(), abs=1e-6)
    assert res["ssim_non_tumor_region"] == pytest.approx(smap[brain & ~tumor].mean(), abs=1e-6)
    # tensors (with batch/channel axes) are accepted too
    assert M.ssim_3d(pt, rt)["ssim"] == pytest.approx(expected, abs=1e-6)
    # case_metrics normalizes the raw volumes itself
    assert M.case_metrics(pred, ref, brain, seg)["ssim"] == pytest.approx(expected, abs=1e-6)
    # without a brain mask the non-tumour region is the whole rest of the volume
    res_nb = M.ssim_3d(pn, rn, mask_tumor=tumor)
    assert res_nb["ssim_non_tumor_region"] == pytest.approx(smap[~tumor].mean(), abs=1e-6)
    assert res_nb["ssim_non_tumor"] == pytest.approx(res["ssim_non_tumor"], abs=1e-7)


def test_prediction_on_cwdm_scale_is_scored_against_the_reference_on_that_scale():
    from cwdm.data.preprocess import clip_and_normalize

    ref, brain, seg = _phantom()
    raw = ref * 900.0  # a scan in scanner units
    on_model_scale = clip_and_normalize(raw).astype(np.float32)  # what cwdm writes for a perfect synthesis
    scaled, used = M.reference_on_prediction_scale(on_model_scale, raw, "auto")
    assert used == "unit" and np.allclose(scaled, on_model_scale)
    perfect = M.case_metrics(on_model_scale, scaled, brain, seg)
    assert perfect["psnr"] == math.inf and perfect["mae_tumor"] == 0 and perfect["mae_non_tumor"] == 0
    assert M.reference_on_prediction_scale(raw * 1.1, raw, "auto")[1] == "target"  # same units: as is
    assert M.reference_on_prediction_scale(on_model_scale, raw, "target")[1] == "target"
    as_target = M.case_metrics(on_model_scale, raw, brain, seg)
    assert as_target["psnr"] < 10  # compared on the wrong scale, a perfect synthesis looks terrible
    with pytest.raises(ValueError, match="scale"):
        M.reference_on_prediction_scale(raw, raw, "both")


def test_mae_inside_and_outside_the_tumour():
    ref, brain, seg = _phantom()
    pred = ref.copy()
    tumour = seg > 0
    pred[tumour] = np.clip(pred[tumour] + 0.1, 0, None)
    out = M.case_metrics(pred, ref, brain, seg)
    lo, hi = M.normalization_bounds(ref)
    expected = np.abs(np.clip(pred, lo, hi) - np.clip(ref, lo, hi))[tumour].mean() / (hi - lo)
    assert out["mae_tumor"] == pytest.approx(expected, rel=1e-5)
    assert out["mae_non_tumor"] == pytest.approx(0.0, abs=1e-7)
    assert math.isnan(M.case_metrics(pred, ref, brain, None)["mae_tumor"])

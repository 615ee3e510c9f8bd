"""``cwdm evaluate`` on inpainting results: detected from the file names, scored as the BraTS inpainting
challenge does (cwdm.evaluation.inpainting), reported like the synthesis scores, problems one line each."""

import csv
import json
import math
import shutil

import nibabel as nib
import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from cwdm.cli import main
from cwdm.evaluation.inpainting import INPAINTING_METRICS, inpainting_metrics
from cwdm.evaluation.inpainting_scoring import INPAINTING_CSV_FIELDS, TASK_NOTE

SHAPE = (20, 24, 16)


def _save(path, data, dtype=np.float32):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data).astype(dtype), np.eye(4)), str(path))


def _case(root, name, seed, parts=("t1n", "t1n-voided", "mask", "mask-healthy")):
    """A reference case; returns its volumes (target, voided, voided region, healthy part)."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, s) for s in SHAPE], indexing="ij")
    brain = x ** 2 + y ** 2 + z ** 2 < 0.8
    tex = gaussian_filter(rng.random(SHAPE), 1.5)
    target = np.where(brain, 100.0 + 900.0 * (tex - tex.min()) / (tex.max() - tex.min()), 0.0)
    region = np.zeros(SHAPE, bool)
    region[6:14, 7:17, 4:12] = True
    healthy = region.copy()
    healthy[6:8, 7:10, 4:6] = False
    vols = {"t1n": target, "t1n-voided": np.where(region, 0.0, target), "mask": region, "mask-healthy": healthy}
    for part in parts:
        _save(root / name / f"{name}-{part}.nii.gz", vols[part], np.uint8 if part.startswith("mask") else np.float32)
    return vols


@pytest.fixture()
def layout(tmp_path):
    """R: B-1 (complete), B-2 (no mask-healthy); P: their results, flat."""
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    refs = {"B-1": _case(ref, "B-1", 1), "B-2": _case(ref, "B-2", 2, parts=("t1n", "t1n-voided", "mask"))}
    rng = np.random.default_rng(0)
    preds = {"B-1": refs["B-1"]["t1n"] + rng.normal(0, 50, SHAPE), "B-2": gaussian_filter(refs["B-2"]["t1n"], 1.0)}
    for name, p in preds.items():
        _save(pred / f"{name}-t1n-inference.nii.gz", p)
    return pred, ref, refs, preds


def _evaluate(pred, ref, out, *more):
    return main(["evaluate", "--pred_dir", str(pred), "--ref_dir", str(ref), "--output_dir", str(out),
                 "--progress=false", *more])


def _table(out):
    with open(out / "metrics.csv", newline="") as fh:
        return {r["case"]: r for r in csv.DictReader(fh)}


def test_inpainting_results_are_detected_scored_and_reported(layout, tmp_path, capsys):
    pred, ref, refs, preds = layout
    out = tmp_path / "report"
    assert _evaluate(pred, ref, out) == 0
    captured = capsys.readouterr()
    assert f"note: {TASK_NOTE}" in captured.err
    assert "1 cases have no <case>-mask-healthy.nii.gz and are scored in <case>-mask.nii.gz" in captured.err
    assert "warning:" not in captured.err
    assert "PSNR dB (target range)" in captured.out and "PSNR dB (range 1)" in captured.out
    assert "2 of 2 inpainting results scored, 0 problems" in captured.out

    table = _table(out)
    with open(out / "metrics.csv", newline="") as fh:
        assert tuple(next(csv.reader(fh))) == INPAINTING_CSV_FIELDS
    assert table["B-1"]["mask"] == "mask-healthy" and table["B-2"]["mask"] == "mask"
    for name, mask in (("B-1", "mask-healthy"), ("B-2", "mask")):
        want = inpainting_metrics(preds[name].astype(np.float32), refs[name]["t1n"].astype(np.float32),
                                  refs[name]["t1n-voided"].astype(np.float32), refs[name][mask])
        for key in INPAINTING_METRICS:
            assert float(table[name][key]) == pytest.approx(want[key], rel=1e-8), (name, key)
        assert table[name]["target"] == "t1n" and table[name]["problem"] == ""
    healthy_only = inpainting_metrics(preds["B-1"], refs["B-1"]["t1n"], refs["B-1"]["t1n-voided"],
                                      refs["B-1"]["mask"])
    assert healthy_only["mse"] != pytest.approx(float(table["B-1"]["mse"]), rel=1e-3)  # the mask matters

    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "inpainting" and summary["mask_fallback"] == ["B-2"]
    assert summary["metrics"] == list(INPAINTING_METRICS) and summary["problems"] == []
    overall = summary["overall"]
    assert overall["n"] == 2 and overall["n_unscored"] == 0
    assert overall["ssim"]["mean"] == pytest.approx(np.mean([float(table[n]["ssim"]) for n in table]))
    assert overall["psnr"]["n_capped"] == 0 and overall["psnr_01"]["n_capped"] == 0
    assert summary["inputs"] == {"pred_dir": str(pred.resolve()), "ref_dir": str(ref.resolve()), "task": "inpainting"}
    assert not (out / "montages").exists()

    # other inputs into the same report folder: refused in one line unless --overwrite
    other = tmp_path / "other ref"
    shutil.copytree(ref, other)
    assert _evaluate(pred, other, out) == 1
    assert "holds the report of --pred_dir" in capsys.readouterr().err
    assert _evaluate(pred, other, out, "--overwrite") == 0


def test_results_beside_the_inputs_and_a_perfect_fill(layout, tmp_path, capsys):
    """Results in the case folders of the data folder itself (pred_dir == ref_dir) are read too."""
    _, ref, refs, _ = layout
    _save(ref / "B-1" / "B-1-t1n-inference.nii.gz", refs["B-1"]["t1n"])  # perfect: psnr inf, capped
    _save(ref / "B-2" / "B-2-t1n-inference.nii.gz", refs["B-2"]["t1n"] + 5.0)
    out = tmp_path / "r"
    assert _evaluate(ref, ref, out) == 0
    table = _table(out)
    assert table["B-1"]["psnr"] == "inf" and float(table["B-1"]["mse"]) == 0.0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["overall"]["psnr"]["n_capped"] == 1 and summary["overall"]["psnr_01"]["n_capped"] == 1
    assert "capped at 100 dB: 1 psnr and 1 psnr_01" in capsys.readouterr().out


def test_problems_are_one_line_naming_the_file_and_fail_the_case(layout, tmp_path, capsys):
    pred, ref, refs, preds = layout
    _case(ref, "B-3", 3, parts=("t1n-voided", "mask", "mask-healthy"))  # no true t1n
    vols = _case(ref, "B-4", 4)
    _save(ref / "B-4" / "B-4-mask-healthy.nii.gz", np.zeros(SHAPE), np.uint8)  # empty mask
    _case(ref, "B-5", 5)
    _case(ref, "B-6", 6)
    _case(ref, "B-7", 7)  # no result
    nan = vols["t1n"].copy()
    nan[10, 12, 8] = np.nan
    bad = {"B-3": vols["t1n"], "B-4": vols["t1n"], "B-5": nan, "B-6": np.zeros((20, 24, 15)), "X-9": vols["t1n"]}
    for name, p in bad.items():
        _save(pred / f"{name}-t1n-inference.nii.gz", p)
    out = tmp_path / "report"
    assert _evaluate(pred, ref, out) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    expected = {
        "B-3": f"{ref / 'B-3' / 'B-3-t1n.nii.gz'}: missing (the true t1n is needed to score the case); B-3 not scored",
        "B-4": f"{ref / 'B-4' / 'B-4-mask-healthy.nii.gz'}: empty mask (no voxel is set): nothing to score; "
               f"B-4 not scored",
        "B-5": f"{pred / 'B-5-t1n-inference.nii.gz'}: 1 non-finite voxels (NaN/Inf); B-5 not scored",
        "B-6": f"{pred / 'B-6-t1n-inference.nii.gz'}: shape 20x24x15 differs from the target's (20x24x16); "
               f"B-6 not scored",
        "X-9": f"{pred / 'X-9-t1n-inference.nii.gz'}: no reference case X-9; not scored",
    }
    missing = f"{ref / 'B-7'}: reference case B-7 has no result (B-7-t1n-inference.nii.gz) in {pred}"
    assert sorted(err) == sorted(f"warning: {line}" for line in [*expected.values(), missing])
    table = _table(out)
    assert sorted(table) == ["B-1", "B-2", "B-3", "B-4", "B-5", "B-6", "X-9"]  # a row per result
    for name, line in expected.items():
        assert table[name]["problem"] == line and all(table[name][k] == "" for k in INPAINTING_METRICS)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["overall"]["n"] == 7 and summary["overall"]["n_unscored"] == 5
    assert summary["overall"]["ssim"]["n"] == 2 and len(summary["problems"]) == 6
    assert not math.isnan(float(table["B-1"]["ssim"]))


def test_nothing_scored_and_flags_that_do_not_apply(layout, tmp_path, capsys):
    pred, ref, _, _ = layout
    only_bad = tmp_path / "only_bad"
    _save(only_bad / "Z-1-t1n-inference.nii.gz", np.ones(SHAPE))
    assert _evaluate(only_bad, ref, tmp_path / "o1") == 1
    assert "no inpainting result was scored" in capsys.readouterr().err

    assert _evaluate(pred, ref, tmp_path / "o2", "--targets", "t2f") == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"{pred}: holds inpainting results" in err and "--targets does not apply" in err

    synthesis_ref = tmp_path / "synth"
    _save(synthesis_ref / "S-1" / "S-1-t1n.nii.gz", np.ones(SHAPE))
    assert _evaluate(pred, synthesis_ref, tmp_path / "o3") == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"{synthesis_ref}: no inpainting cases" in err


def test_two_results_for_one_case_are_a_problem(layout, tmp_path, capsys):
    pred, ref, _, _ = layout
    (pred / "B-1").mkdir()
    shutil.copy2(pred / "B-1-t1n-inference.nii.gz", pred / "B-1" / "B-1-t1n-inference.nii.gz")
    assert _evaluate(pred, ref, tmp_path / "o") == 1
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert warnings == [f"warning: {pred / 'B-1' / 'B-1-t1n-inference.nii.gz'}: a second result for case B-1 "
                        f"(also {pred / 'B-1-t1n-inference.nii.gz'}); not scored"]
    assert _table(tmp_path / "o")["B-1"]["ssim"] == ""

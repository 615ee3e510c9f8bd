"""``cwdm evaluate`` end to end on small synthetic case folders."""

import csv
import json
import math
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from cwdm.naming import MODALITIES
from cwdm.cli import main
from cwdm.evaluation.report import CSV_FIELDS
from cwdm.evaluation.scoring import evaluate_dirs
from cwdm.evaluation.metrics import PSNR_CAP_DB, case_metrics
from cwdm.evaluation.montage import save_montage

SHAPE = (32, 32, 24)
ROOT = Path(__file__).resolve().parents[1]


def _save(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data, dtype=np.float32), np.eye(4)), str(path))


def _brain(shape=SHAPE):
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    return x ** 2 + y ** 2 + z ** 2 < 0.8


def _volume(seed, shape=SHAPE):
    rng = np.random.default_rng(seed)
    tex = gaussian_filter(rng.random(shape), 1.5)
    tex = (tex - tex.min()) / (tex.max() - tex.min())
    return np.where(_brain(shape), 100.0 + 800.0 * tex, 0.0).astype(np.float32)


def _ref_case(root, name, seed, seg=True):
    vols = {}
    for i, mod in enumerate(MODALITIES):
        vols[mod] = _volume(seed * 10 + i)
        if mod == "t2f":  # non-zero outside the others' brain: the brain mask is the union
            vols[mod][1:4, 10:20, 8:16] = 50.0
        _save(root / name / f"{name}-{mod}.nii.gz", vols[mod])
    if seg:
        s = np.zeros(SHAPE, dtype=np.float32)
        s[12:20, 12:20, 9:15] = 1
        _save(root / name / f"{name}-seg.nii.gz", s)
        vols["seg"] = s
    return vols


@pytest.fixture()
def dirs(tmp_path):
    """R: cases A, B, C (with seg) and E (no seg); P: A (t1c + std), B (wrong shape),
    D (no reference), E (t2w identical data as .nii + a byte copy of its t1n); C has no prediction."""
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    refs = {n: _ref_case(ref, n, seed, seg=n != "case-E")
            for seed, n in enumerate(["case-A", "case-B", "case-C", "case-E"], start=1)}
    rng = np.random.default_rng(0)
    brain = _brain()
    a_pred = refs["case-A"]["t1c"] + np.where(brain, rng.normal(0, 40, SHAPE), 0)
    a_pred[refs["case-A"]["seg"] > 0] = 300.0  # a flat tumour: clearly worse there
    _save(pred / "case-A" / "case-A-t1c.nii.gz", a_pred)
    _save(pred / "case-A" / "case-A-t1c_std.nii.gz", np.where(brain, 0.05, 0.0))
    _save(pred / "case-B" / "case-B-t2f.nii.gz", np.ones((32, 32, 20)))
    _save(pred / "case-D" / "case-D-t1n.nii.gz", _volume(99))
    _save(pred / "case-E" / "case-E-t2w.nii", refs["case-E"]["t2w"])
    shutil.copy2(ref / "case-E" / "case-E-t1n.nii.gz", pred / "case-E" / "case-E-t1n.nii.gz")
    return pred, ref, refs, a_pred


def _no_nan_json(path):
    def reject(name):
        raise AssertionError(f"{path} holds {name}")
    return json.loads(Path(path).read_text(), parse_constant=reject)


def test_evaluate_dirs_end_to_end(dirs):
    pred, ref, refs, a_pred = dirs
    rows, summary = evaluate_dirs(pred, ref, montage=True, progress=False, verbose=False)
    out = pred / "evaluation"

    assert [(r["case"], r["target"]) for r in rows] == [("case-A", "t1c"), ("case-E", "t2w")]
    a, e = rows
    ra = refs["case-A"]
    brain = np.any([ra[m] != 0 for m in MODALITIES], axis=0)
    expected = case_metrics(a_pred, ra["t1c"], brain, ra["seg"])
    target_only = case_metrics(a_pred, ra["t1c"], ra["t1c"] != 0, ra["seg"])
    assert target_only["mse"] > expected["mse"] * 1.01  # the mask matters in this set-up
    for k, v in expected.items():
        assert a[k] == pytest.approx(v, rel=1e-6)
    assert a["ssim_tumor"] < a["ssim_non_tumor"]
    assert a["has_std"] is True and e["has_std"] is False
    assert e["psnr"] == math.inf and e["mse"] == 0.0 and e["ssim"] == pytest.approx(1.0, abs=1e-5)
    assert math.isnan(e["ssim_tumor"]) and math.isnan(e["ssim_non_tumor"])

    # CSV: header, one row per pair, inf PSNR spelled "inf", undefined values empty
    with open(out / "metrics.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert tuple(table[0].keys()) == CSV_FIELDS and len(table) == 2
    assert table[0]["case"] == "case-A" and table[0]["target"] == "t1c"
    assert float(table[0]["mse"]) == pytest.approx(a["mse"], rel=1e-8)
    assert float(table[0]["ssim_tumor"]) == pytest.approx(a["ssim_tumor"], rel=1e-8)
    assert table[1]["psnr"] == "inf" and float(table[1]["psnr"]) == math.inf
    assert table[1]["ssim_tumor"] == "" and table[1]["ssim_non_tumor"] == ""
    assert table[0]["has_std"] == "True" and table[1]["has_std"] == "False"
    assert table[0]["problem"] == "" and table[1]["problem"] == ""
    assert float(table[0]["ssim_tumor_region"]) == pytest.approx(a["ssim_tumor_region"], rel=1e-8)

    # JSON: no NaN/Infinity, PSNR statistics capped, problems and skipped listed
    data = _no_nan_json(out / "summary.json")
    assert data["n_pairs"] == 2 and data["psnr_cap_db"] == PSNR_CAP_DB
    assert set(data["per_target"]) == {"t1c", "t2w"}
    psnr = data["overall"]["psnr"]
    assert psnr["n"] == 2 and psnr["n_capped"] == 1
    assert psnr["mean"] == pytest.approx((a["psnr"] + PSNR_CAP_DB) / 2)
    assert psnr["median"] == pytest.approx((a["psnr"] + PSNR_CAP_DB) / 2)
    assert psnr["std"] == pytest.approx(abs(PSNR_CAP_DB - a["psnr"]) / 2)
    assert data["per_target"]["t2w"]["ssim_tumor"] == {"n": 0, "mean": None, "std": None, "median": None}
    assert data["per_target"]["t1c"]["n"] == 1
    assert data["per_target"]["t1c"]["mse"]["mean"] == pytest.approx(a["mse"])
    assert data["overall"]["ssim_tumor"]["n"] == 1
    problems = data["problems"]
    assert problems == summary["problems"]
    assert any("case-B-t2f" in p and "shape" in p for p in problems)
    assert any("case-D" in p and "no reference" in p for p in problems)
    assert any("case-C" in p and "no prediction" in p for p in problems)
    assert len(problems) == 3
    assert len(data["skipped"]) == 1 and "case-E-t1n" in data["skipped"][0]

    # montages: valid PNGs; case A has one more column (its std map) than case E
    import matplotlib.image as mpimg

    pa, pe = out / "montages" / "case-A-t1c.png", out / "montages" / "case-E-t2w.png"
    assert sorted(p.name for p in (out / "montages").iterdir()) == [pa.name, pe.name]
    ia, ie = mpimg.imread(pa), mpimg.imread(pe)
    assert ia.shape[0] == ie.shape[0] and ia.shape[1] > ie.shape[1]
    # nothing left behind by the atomic writes
    assert not [p for p in out.rglob(".*")]


def test_cli_without_montage_and_exit_status(dirs, tmp_path, capsys):
    pred, ref, _, _ = dirs
    out = tmp_path / "report"
    status = main(["evaluate", "--pred_dir", str(pred), "--ref_dir", str(ref), "--out_dir", str(out),
                   "--no-montage", "--progress=false"])
    assert status == 1  # evaluated, but with problems (reported below)
    assert (out / "metrics.csv").is_file() and (out / "summary.json").is_file()
    assert not (out / "montages").exists()
    captured = capsys.readouterr()
    assert "overall" in captured.out and "SSIM" in captured.out
    assert captured.err.count("warning:") == 3

    # --targets restricts the evaluated modalities (case-C without prediction is still a problem)
    assert main(["evaluate", "--pred_dir", str(pred), "--ref_dir", str(ref), "--out_dir", str(out),
                 "--no-montage", "--progress=false", "--targets", "t2w", "--overwrite"]) == 1
    assert _no_nan_json(out / "summary.json")["n_pairs"] == 1

    # a clean pair of folders: exit status 0
    clean_pred, clean_ref = tmp_path / "clean_pred", tmp_path / "clean_ref"
    shutil.copytree(pred / "case-A", clean_pred / "case-A")
    shutil.copytree(ref / "case-A", clean_ref / "case-A")
    assert main(["evaluate", "--pred_dir", str(clean_pred), "--ref_dir", str(clean_ref),
                 "--no-montage", "--progress=false"]) == 0
    assert _no_nan_json(clean_pred / "evaluation" / "summary.json")["n_pairs"] == 1

    # only unmatched / broken predictions: nothing evaluated -> exit status 1, reports still written
    only_bad = tmp_path / "only_bad"
    shutil.copytree(pred / "case-B", only_bad / "case-B")
    shutil.copytree(pred / "case-D", only_bad / "case-D")
    capsys.readouterr()
    assert main(["evaluate", "--pred_dir", str(only_bad), "--ref_dir", str(ref), "--progress=false"]) == 1
    data = _no_nan_json(only_bad / "evaluation" / "summary.json")
    assert data["n_pairs"] == 0 and data["overall"]["ssim"]["mean"] is None and len(data["problems"]) == 5

    # a missing folder is a one-line user error
    assert main(["evaluate", "--pred_dir", str(tmp_path / "nope"), "--ref_dir", str(ref)]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_report_of_other_inputs_is_not_replaced_without_overwrite(dirs, tmp_path, capsys, monkeypatch):
    pred, ref, _, _ = dirs
    out = tmp_path / "my report"
    args = ["evaluate", "--pred_dir", str(pred), "--output_dir", str(out), "--no-montage", "--progress=false"]
    assert main([*args, "--ref_dir", str(ref)]) == 1  # problems in the fixture: exit 1, report written
    good = (out / "summary.json").read_text()
    assert json.loads(good)["inputs"]["ref_dir"] == str(ref.resolve())
    last = capsys.readouterr().out.strip().splitlines()[-1]
    command = shlex.split(last.partition("with: ")[2])  # can be pasted: paths quoted
    assert command == ["cwdm", "evaluate", "--pred_dir", "OTHER", "--ref_dir", str(ref)]
    assert f"reports in {shlex.quote(str(out))} (" in last

    wrong = tmp_path / "wrong ref"
    shutil.copytree(ref, wrong)
    assert main([*args, "--ref_dir", str(wrong)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (f"cwdm evaluate: error: {out / 'summary.json'}: holds the report of --pred_dir {pred.resolve()} "
                   f"--ref_dir {ref.resolve()}; use --overwrite to replace it, or another --output_dir")
    assert (out / "summary.json").read_text() == good
    assert main([*args, "--ref_dir", str(ref), "--targets", "t2w"]) == 1
    assert "--targets (all)" in capsys.readouterr().err and (out / "summary.json").read_text() == good

    # the same inputs again (here as a relative path) replace the report silently
    monkeypatch.chdir(ref.parent)
    assert main([*args, "--ref_dir", ref.name]) == 1
    assert "holds the report" not in capsys.readouterr().err
    assert json.loads((out / "summary.json").read_text())["ref_dir"] == ref.name
    assert main([*args, "--ref_dir", str(wrong), "--overwrite"]) == 1
    assert json.loads((out / "summary.json").read_text())["inputs"]["ref_dir"] == str(wrong.resolve())


def test_corrupt_prediction_is_a_problem_not_a_crash(dirs, tmp_path):
    pred, ref, _, _ = dirs
    (pred / "case-A" / "case-A-t1c.nii.gz").write_bytes(b"not a nifti file")
    rows, summary = evaluate_dirs(pred, ref, tmp_path / "o", montage=False, progress=False, verbose=False)
    assert [(r["case"], r["target"]) for r in rows] == [("case-E", "t2w")]
    assert any("case-A-t1c" in p for p in summary["problems"])


def test_save_montage_grid(tmp_path):
    import matplotlib.image as mpimg

    vol = _volume(3)
    one = save_montage(tmp_path / "one.png", [("a", vol)])
    three = save_montage(tmp_path / "three.png",
                         [("a", vol), ("b", vol * 2), ("err", np.abs(vol - 1), {"cmap": "magma", "vmin": 0})])
    i1, i3 = mpimg.imread(one), mpimg.imread(three)
    assert i1.shape[0] == i3.shape[0] and i3.shape[1] > 2 * i1.shape[1]
    with pytest.raises(ValueError):
        save_montage(tmp_path / "bad.png", [("a", vol), ("b", np.zeros((4, 4, 4)))])
    assert not (tmp_path / "bad.png").exists()


def test_help_via_python_m():
    res = subprocess.run([sys.executable, "-m", "cwdm", "evaluate", "--help"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    for flag in ("--pred_dir", "--ref_dir", "--out_dir", "--modalities", "--montage"):
        assert flag in res.stdout


def test_degenerate_predictions_are_problems_with_empty_cells(tmp_path, capsys):
    """All-zero, constant, NaN and Inf predictions are never scored (an all-zero one used to get SSIM ~0.76)."""
    ref, pred, out = tmp_path / "ref", tmp_path / "pred", tmp_path / "out"
    kinds = {"case-0": "good", "case-1": "zero", "case-2": "constant", "case-3": "nan", "case-4": "inf",
             "case-5": "bad reference"}
    for seed, (name, kind) in enumerate(kinds.items(), start=1):
        vols = _ref_case(ref, name, seed)
        p = vols["t2w"] + 10.0
        if kind == "zero":
            p = np.zeros(SHAPE)
        elif kind == "constant":
            p = np.full(SHAPE, 250.0)
        elif kind in ("nan", "inf"):
            p[3, 4, 5] = np.nan if kind == "nan" else np.inf
        elif kind == "bad reference":
            bad = vols["t2w"].copy()
            bad[16, 16, 12] = np.nan
            _save(ref / name / f"{name}-t2w.nii.gz", bad)
        _save(pred / name / f"{name}-t2w.nii.gz", p)
    status = main(["evaluate", "--pred_dir", str(pred), "--ref_dir", str(ref), "--out_dir", str(out),
                   "--progress=false"])
    assert status == 1
    err = capsys.readouterr().err
    with open(out / "metrics.csv", newline="") as fh:
        table = {r["case"]: r for r in csv.DictReader(fh)}
    assert sorted(table) == sorted(kinds)  # every pair keeps its row
    good = table["case-0"]
    assert good["problem"] == "" and 0.5 < float(good["ssim"]) <= 1.0 and float(good["psnr"]) > 10
    why = {"case-1": "all zero", "case-2": "constant", "case-3": "non-finite", "case-4": "non-finite",
           "case-5": "reference is degenerate"}
    for name, fragment in why.items():
        row = table[name]
        assert fragment in row["problem"], row
        for metric in ("ssim", "ssim_tumor", "ssim_non_tumor", "psnr", "mse", "mae"):
            assert row[metric] == "", (name, metric)
        bad_file = f"{name}-t2w.nii.gz"
        assert any(bad_file in line and fragment in line and "not scored" in line
                   for line in err.splitlines() if line.startswith("warning:")), (name, err)
    assert any(str(ref / "case-5" / "case-5-t2w.nii.gz") in line for line in err.splitlines())
    data = _no_nan_json(out / "summary.json")
    assert len(data["problems"]) == 5 and data["overall"]["n"] == 6 and data["overall"]["n_unscored"] == 5
    assert data["overall"]["ssim"]["n"] == 1  # statistics only over the scored pair
    assert data["overall"]["ssim"]["mean"] == pytest.approx(float(good["ssim"]), rel=1e-8)
    assert sorted(p.name for p in (out / "montages").iterdir()) == ["case-0-t2w.png"]


def test_reference_result_layout_scored_as_the_given_target(tmp_path, capsys):
    """The reference's sample.py writes <case>/sample.nii.gz (no contrast in the path), [0, 1],
    8 voxels cropped off each side of the first two axes."""
    from cwdm.errors import CwdmError
    from cwdm.data.preprocess import clip_and_normalize

    ref, theirs, ours = tmp_path / "ref", tmp_path / "theirs", tmp_path / "ours"
    for seed, name in enumerate(["case-A", "case-B"], start=1):
        vols = _ref_case(ref, name, seed)
        full = clip_and_normalize(vols["t2f"] + 30.0 * _brain()).astype(np.float32)
        full[:8] = full[-8:] = 0
        full[:, :8] = full[:, -8:] = 0
        _save(theirs / name / "sample.nii.gz", full[8:-8, 8:-8, :])
        _save(theirs / name / "target.nii.gz", np.ones((16, 16, SHAPE[2])))  # the reference's copy: ignored
        _save(ours / name / f"{name}-t2f.nii.gz", full)
    with pytest.raises(CwdmError, match="does not name the contrast.*--targets t2f"):
        evaluate_dirs(theirs, ref, montage=False, progress=False, verbose=False)
    rows, summary = evaluate_dirs(theirs, ref, montage=True, progress=False, targets=["t2f"])
    assert "2 cases hold the reference's results" in capsys.readouterr().err
    assert [(r["case"], r["target"], r["pred_scale"]) for r in rows] == \
        [("case-A", "t2f", "unit"), ("case-B", "t2f", "unit")]
    assert summary["problems"] == []
    expected, _ = evaluate_dirs(ours, ref, out_dir=tmp_path / "e", montage=False, progress=False, verbose=False)
    for got, want in zip(rows, expected):
        for k in ("ssim", "psnr", "mse", "mae", "ssim_tumor"):
            assert got[k] == pytest.approx(want[k], rel=1e-9)
    # the command line
    assert main(["evaluate", "--pred_dir", str(theirs), "--ref_dir", str(ref), "--targets", "t2f",
                 "--no-montage", "--progress", "False", "--out_dir", str(tmp_path / "cli")]) == 0


def _slab_seg(labels):
    """A label map with label ``k`` on the x range ``labels[k]`` inside y 12:20, z 9:15 (192 voxels per 4 x-slices)."""
    seg = np.zeros(SHAPE, dtype=np.float32)
    for label, (x0, x1) in labels.items():
        seg[x0:x1, 12:20, 9:15] = label
    return seg


def test_seg_dir_dice_std_calibration_and_realism_end_to_end(tmp_path, capsys):
    """--seg_dir: Dice per label and region (both layouts), bad segmentation files as problems; a std map
    beside a prediction: its calibration; every pair: hf_energy_ratio."""
    from cwdm.evaluation.uncertainty import calibration_metrics

    ref, pred, segs, out = tmp_path / "ref", tmp_path / "pred", tmp_path / "segs", tmp_path / "out"
    names = ["case-A", "case-B", "case-C", "case-D", "case-E", "case-F", "case-G"]
    refs = {n: _ref_case(ref, n, seed, seg=n != "case-F") for seed, n in enumerate(names, start=1)}
    true_seg = _slab_seg({1: (10, 14), 3: (14, 18), 2: (18, 22)})
    _save(ref / "case-A" / "case-A-seg.nii.gz", true_seg)
    rng = np.random.default_rng(3)
    brain = _brain()
    for n in names:
        noise = np.where(brain, rng.normal(0, 30, SHAPE), 0.0)
        p = refs[n]["t1c"] + noise if n != "case-B" else np.where(brain, gaussian_filter(refs[n]["t1c"], 1.5), 0)
        _save(pred / n / f"{n}-t1c.nii.gz", p)
        if n == "case-A":  # an ensemble std map that knows where the errors are
            _save(pred / n / f"{n}-t1c_std.nii.gz", np.abs(noise))
            a_pred, a_std = p.astype(np.float32), np.abs(noise).astype(np.float32)  # as read back
    _save(segs / "case-A.nii.gz", _slab_seg({1: (10, 14), 3: (14, 16), 2: (16, 22)}))
    _save(segs / "case-B" / "case-B-seg.nii.gz", refs["case-B"]["seg"])  # perfect; no label 2 or 3 in either
    _save(segs / "case-C.nii.gz", np.zeros((32, 32, 20)))  # wrong shape
    (segs / "case-D.nii.gz").write_bytes(b"not a nifti file")  # unreadable
    # case-E: no segmentation at all
    _save(segs / "case-F.nii.gz", refs["case-B"]["seg"])  # but the reference case has no -seg
    bad_labels = refs["case-G"]["seg"].copy()
    bad_labels[0, 0, 0] = 7
    _save(segs / "case-G.nii.gz", bad_labels)

    status = main(["evaluate", "--pred_dir", str(pred), "--ref_dir", str(ref), "--out_dir", str(out),
                   "--seg_dir", str(segs), "--no-montage", "--progress=false"])
    assert status == 1  # scored, with the segmentation problems below
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    expected_files = {"case-C": segs / "case-C.nii.gz", "case-D": segs / "case-D.nii.gz",
                      "case-E": segs / "case-E.nii.gz", "case-F": ref / "case-F",
                      "case-G": segs / "case-G.nii.gz"}
    assert len(warnings) == len(expected_files)
    for case, path in expected_files.items():
        assert any(line.startswith(f"warning: {path}:") and "Dice" in line for line in warnings), (case, warnings)
    with open(out / "metrics.csv", newline="") as fh:
        table = {r["case"]: r for r in csv.DictReader(fh)}
    assert tuple(next(iter(table.values()))) == CSV_FIELDS and sorted(table) == names
    dice_cols = ("dice_et", "dice_tc", "dice_wt", "dice_1", "dice_2", "dice_3")
    a = {k: float(table["case-A"][k]) for k in dice_cols}
    assert a == pytest.approx({"dice_et": 2 / 3, "dice_tc": 6 / 7, "dice_wt": 1.0, "dice_1": 1.0, "dice_2": 0.8,
                               "dice_3": 2 / 3}, rel=1e-9)
    assert all(float(table["case-B"][k]) == 1.0 for k in dice_cols)  # empty labels in both count as 1
    for case in expected_files:
        assert all(table[case][k] == "" for k in dice_cols) and table[case]["problem"] == "", case

    # the std map: on the error's scale, nearly perfectly ordered; no std map: empty cells, not zeros
    assert table["case-A"]["has_std"] == "True"
    want = calibration_metrics(a_pred, refs["case-A"]["t1c"], a_std, brain | (refs["case-A"]["t2f"] != 0))
    assert float(table["case-A"]["std_error_corr"]) == pytest.approx(want["std_error_corr"], rel=1e-8)
    assert float(table["case-A"]["ause"]) == pytest.approx(want["ause"], rel=1e-8, abs=1e-12)
    assert float(table["case-A"]["std_error_corr"]) > 0.95 and float(table["case-A"]["ause"]) < 0.02
    assert table["case-C"]["std_error_corr"] == "" and table["case-C"]["ause"] == ""

    # realism: added noise is more detail than the reference's, a blur less
    assert float(table["case-A"]["hf_energy_ratio"]) > 1.0 > float(table["case-B"]["hf_energy_ratio"])
    data = _no_nan_json(out / "summary.json")
    assert data["metrics"][-9:] == ["hf_energy_ratio", "std_error_corr", "ause", *dice_cols]
    assert data["overall"]["dice_wt"]["n"] == 2 and data["overall"]["ause"]["n"] == 1
    assert data["overall"]["dice_2"]["mean"] == pytest.approx((0.8 + 1.0) / 2)
    assert data["inputs"]["seg_dir"] == str(segs.resolve()) and len(data["problems"]) == 5

    # without --seg_dir: the Dice cells are empty; a missing --seg_dir is a one-line error
    rows, summary = evaluate_dirs(pred, ref, tmp_path / "plain", montage=False, progress=False, verbose=False)
    assert all(math.isnan(r["dice_wt"]) for r in rows) and summary["problems"] == []
    assert main(["evaluate", "--pred_dir", str(pred), "--ref_dir", str(ref), "--out_dir", str(tmp_path / "x"),
                 "--seg_dir", str(tmp_path / "nowhere")]) == 1
    assert f"{tmp_path / 'nowhere'}: --seg_dir does not exist" in capsys.readouterr().err

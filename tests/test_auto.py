import hashlib
import json

import nibabel as nib
import numpy as np
import pytest
import torch

from conftest import write_brats_root
from cwdm.cli import main as cli
from conftest import FAST, make_checkpoint
from pinning import assert_matches_pinned


def snapshot(root):
    return {p.relative_to(root): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def test_auto_writes_exactly_the_missing_file(make_brats_root, models):
    data = make_brats_root(shape=(26, 24, 18), cases=3,
                           missing={"BraTS-GLI-00000-000": ["t2f"], "BraTS-GLI-00001-000": ["t1c"]})
    before = snapshot(data)
    rc = cli(["auto", "--data_dir", str(data), "--models_dir", str(models), *FAST])
    assert rc == 0
    after = snapshot(data)
    new = set(after) - set(before)
    assert {str(p) for p in new} == {"BraTS-GLI-00000-000/BraTS-GLI-00000-000-t2f.nii.gz",
                                     "BraTS-GLI-00001-000/BraTS-GLI-00001-000-t1c.nii.gz",
                                     "cwdm_provenance.json"}  # the record goes into the data folder root
    assert all(after[p] == h for p, h in before.items())  # nothing else changed
    for case, mod in (("BraTS-GLI-00000-000", "t2f"), ("BraTS-GLI-00001-000", "t1c")):
        out = nib.load(str(data / case / f"{case}-{mod}.nii.gz"))
        ref = nib.load(str(data / case / f"{case}-t1n.nii.gz"))
        assert out.shape == ref.shape == (26, 24, 18)
        np.testing.assert_allclose(out.affine, ref.affine)
        assert out.header["qform_code"] == ref.header["qform_code"]
        assert out.header["sform_code"] == ref.header["sform_code"]
        np.testing.assert_allclose(out.header.get_zooms(), ref.header.get_zooms())
        vol = np.asarray(out.dataobj)
        assert vol.max() > 0 and np.all((vol == 0) | (vol > 0.04))  # threshold of the reference


def test_auto_reports_and_exit_status(make_brats_root, tmp_path, models, capsys):
    data = make_brats_root(cases=3, missing={"BraTS-GLI-00000-000": ["t2f", "t1c"], "BraTS-GLI-00001-000": ["t2w"]})
    only_t2f = tmp_path / "one"
    only_t2f.mkdir()
    (only_t2f / "x_t2f.pt").write_bytes((models / "brats_t2f_1200000.pt").read_bytes())
    rc = cli(["auto", "--data_dir", str(data), "--models_dir", str(only_t2f), *FAST])
    err = capsys.readouterr().err
    assert rc == 1
    assert "2 modalities missing (t1c, t2f)" in err
    assert "no checkpoint for t2w" in err
    assert "1 complete" in err
    assert not (data / "BraTS-GLI-00001-000" / "BraTS-GLI-00001-000-t2w.nii.gz").exists()


def test_auto_output_dir_and_rerun(make_brats_root, tmp_path, models, capsys):
    data = make_brats_root(cases=2, missing={"BraTS-GLI-00000-000": ["t1n"]})
    before = snapshot(data)
    out = tmp_path / "completed"
    args = ["auto", "--data_dir", str(data), "--models_dir", str(models), "--output_dir", str(out), *FAST]
    assert cli(args) == 0
    assert snapshot(data) == before
    written = out / "BraTS-GLI-00000-000" / "BraTS-GLI-00000-000-t1n.nii.gz"
    assert written.is_file()
    stamp = written.stat().st_mtime_ns
    capsys.readouterr()
    assert cli(args) == 0
    assert written.stat().st_mtime_ns == stamp
    assert "to synthesize: nothing" in capsys.readouterr().err


def test_auto_wrong_checkpoint_refused_before_work(make_brats_root, tmp_path, models, capsys):
    data = make_brats_root(cases=1, missing={"BraTS-GLI-00000-000": ["t1c"]})
    rc = cli(["auto", "--data_dir", str(data), "--model_t1c", str(models / "brats_t2f_1200000.pt"), *FAST])
    assert rc == 1
    assert "trained to synthesize t2f, not t1c" in capsys.readouterr().err
    assert not (data / "BraTS-GLI-00000-000" / "BraTS-GLI-00000-000-t1c.nii.gz").exists()


def test_ambiguous_models_dir(make_brats_root, tmp_path, models, capsys):
    data = make_brats_root(cases=1, missing={"BraTS-GLI-00000-000": ["t1c"]})
    (models / "other_t1c.pt").write_bytes(b"x")
    assert cli(["auto", "--data_dir", str(data), "--models_dir", str(models), *FAST]) == 1
    assert "several checkpoints for t1c" in capsys.readouterr().err


def test_auto_output_dir_inside_the_input_is_refused(make_brats_root, models, capsys):
    data = make_brats_root(cases=1, missing={"BraTS-GLI-00000-000": ["t1n"]})
    before = snapshot(data)
    assert cli(["auto", "--data_dir", str(data), "--models_dir", str(models), "--output_dir",
                str(data / "completed"), *FAST]) == 1
    assert "input folder" in capsys.readouterr().err
    assert snapshot(data) == before and not (data / "completed").exists()
    # the input folder itself is fine: only the missing file is added
    assert cli(["auto", "--data_dir", str(data), "--models_dir", str(models), "--output_dir", str(data), *FAST]) == 0
    assert {str(p) for p in set(snapshot(data)) - set(before)} == {
        "BraTS-GLI-00000-000/BraTS-GLI-00000-000-t1n.nii.gz", "cwdm_provenance.json"}


PUBLISHED = {"t1_gen.pt": "t1n", "t1ce_gen.pt": "t1c", "t2_gen.pt": "t2w", "flair_gen.pt": "t2f"}


@pytest.fixture
def published(tmp_path):
    """Bare state_dicts (tiny networks) under the published file names, as downloaded."""
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    for i, name in enumerate(PUBLISHED):
        sd = torch.load(make_checkpoint(tmp_path / f"tmp{i}.pt", seed=i), weights_only=True)["ema"]
        torch.save(sd, folder / name)
    return folder


def test_auto_with_the_published_file_names(make_brats_root, published, capsys):
    data = make_brats_root(cases=4, missing={f"BraTS-GLI-{i:05d}-000": [m] for i, m in enumerate(PUBLISHED.values())})
    before = snapshot(data)
    # only num_groups is given: the rest of each network is read from its tensors
    assert cli(["auto", "--data_dir", str(data), "--models_dir", str(published), "--num_groups", "4", *FAST]) == 0
    new = {str(p) for p in set(snapshot(data)) - set(before)} - {"cwdm_provenance.json"}
    assert new == {f"BraTS-GLI-{i:05d}-000/BraTS-GLI-{i:05d}-000-{m}.nii.gz" for i, m in enumerate(PUBLISHED.values())}
    assert "t1n x1, t1c x1, t2w x1, t2f x1" in capsys.readouterr().err


def test_published_name_and_brats_name_for_one_contrast(make_brats_root, published, capsys):
    data = make_brats_root(cases=1, missing={"BraTS-GLI-00000-000": ["t2f"]})
    (published / "brats_t2f_1200000.pt").write_bytes((published / "flair_gen.pt").read_bytes())
    assert cli(["auto", "--data_dir", str(data), "--models_dir", str(published), "--num_groups", "4", *FAST]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "several checkpoints for t2f (brats_t2f_1200000.pt, flair_gen.pt)" in err


def test_auto_completes_brats2021_cases_in_their_own_naming(tmp_path, models, capsys):
    case = tmp_path / "data" / "BraTS2021_00000"
    write_brats_root(tmp_path / "tmp", cases=["x"], missing={"x": ["t2f"]})
    case.mkdir(parents=True)
    for old, new in (("t1", "t1n"), ("t1ce", "t1c"), ("t2", "t2w"), ("seg", "seg")):
        (tmp_path / "tmp" / "x" / f"x-{new}.nii.gz").rename(case / f"BraTS2021_00000_{old}.nii.gz")
    assert cli(["auto", "--data_dir", str(tmp_path / "data"), "--models_dir", str(models), *FAST]) == 0
    assert (case / "BraTS2021_00000_flair.nii.gz").is_file()
    assert len(list(case.iterdir())) == 5
    assert (tmp_path / "data" / "cwdm_provenance.json").is_file()
    err = capsys.readouterr().err
    assert err.count("BraTS 2021 file names") == 1


def test_auto_outputs_are_pinned(make_brats_root, tmp_path, models):
    """Decoded voxels within pinning.ATOL of tests/data/pinned/auto.npz (a voxel that the 0.04
    threshold zeroes on one machine may stay on another: allowed within ATOL of it); file list,
    dtypes, geometry and the provenance record exactly."""
    data = make_brats_root(shape=(26, 24, 18), cases=3,
                           missing={"BraTS-GLI-00000-000": ["t2f"], "BraTS-GLI-00001-000": ["t1c"],
                                    "BraTS-GLI-00002-000": ["t2f"]})
    out = tmp_path / "out"
    assert cli(["auto", "--data_dir", str(data), "--models_dir", str(models), "--output_dir", str(out), *FAST,
                "--ensemble", "2", "--eta", "1", "--batch_size", "2"]) == 0
    got = assert_matches_pinned(out, "auto", threshold=0.04)
    assert len([k for k in got if ":" not in k]) == 6  # volume and std map of 3 cases
    record = json.loads((out / "cwdm_provenance.json").read_text())
    (run,) = record["runs"].values()
    assert run["settings"] == {"target": None, "sampler": "ddim", "sampling_steps": 2, "eta": 1.0, "ensemble": 2,
                               "seed": 0, "clip_denoised": True, "postprocess": True, "threshold": 0.04,
                               "ema": True, "precision": "fp32"}
    assert {m: c["sha256"] for m, c in run["checkpoints"].items()} == {
        m: hashlib.sha256((models / f"brats_{m}_1200000.pt").read_bytes()).hexdigest() for m in ("t1c", "t2f")}
    assert {rel: (c["target"], c["inputs"]) for rel, c in record["cases"].items()} == {
        "BraTS-GLI-00000-000/BraTS-GLI-00000-000-t2f.nii.gz": ("t2f", ["t1n", "t1c", "t2w"]),
        "BraTS-GLI-00001-000/BraTS-GLI-00001-000-t1c.nii.gz": ("t1c", ["t1n", "t2w", "t2f"]),
        "BraTS-GLI-00002-000/BraTS-GLI-00002-000-t2f.nii.gz": ("t2f", ["t1n", "t1c", "t2w"])}


def test_auto_reports_degenerate_volumes_per_file(make_brats_root, tmp_path, models, capsys):
    data = make_brats_root(cases=3, missing={"BraTS-GLI-00000-000": ["t2f"], "BraTS-GLI-00001-000": ["t1c"],
                                             "BraTS-GLI-00002-000": ["t2f"]})
    make_checkpoint(models / "brats_t2f_1200000.pt", target="t2f", output="zero")  # an all-zero t2f model
    assert cli(["auto", "--data_dir", str(data), "--models_dir", str(models), *FAST]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    for case in ("BraTS-GLI-00000-000", "BraTS-GLI-00002-000"):
        path = data / case / f"{case}-t2f.nii.gz"
        assert f"{path}: synthesized volume is all zero (an undertrained or broken checkpoint?); not written" in err
        assert not path.exists()
    assert (data / "BraTS-GLI-00001-000" / "BraTS-GLI-00001-000-t1c.nii.gz").is_file()
    assert "completed 1 cases (1 files written" in err[-1] and "2 could not be completed" in err[-1]
    record = json.loads((data / "cwdm_provenance.json").read_text())
    assert list(record["cases"]) == ["BraTS-GLI-00001-000/BraTS-GLI-00001-000-t1c.nii.gz"]

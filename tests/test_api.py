"""The Python API (cwdm.MissingModality) against `cwdm auto` on the same cases."""

import shutil

import nibabel as nib
import numpy as np
import pytest

import cwdm
from cwdm.cli import main as cli
from cwdm.errors import CwdmError
from test_auto import models  # noqa: F401  (fixture: one tiny checkpoint per contrast)
from conftest import FAST

MISSING = {"BraTS-GLI-00000-000": ["t2f"], "BraTS-GLI-00001-000": ["t1c"], "BraTS-GLI-00002-000": ["t2w", "t1n"]}


def _data(make_brats_root):
    return make_brats_root(shape=(26, 24, 18), cases=3, missing=MISSING)


def test_infer_single_and_batch_write_what_auto_writes(make_brats_root, models, tmp_path):  # noqa: F811
    data = _data(make_brats_root)
    via_cli = tmp_path / "cli"
    assert cli(["auto", "--data_dir", str(data), "--models_dir", str(models), "--output_dir", str(via_cli),
                *FAST]) == 1  # the case missing two modalities cannot be completed
    mm = cwdm.MissingModality(models_dir=models, sampler="ddim", steps=2, device="cpu")

    case = data / "BraTS-GLI-00000-000"
    out = tmp_path / "single" / "BraTS-GLI-00000-000-t2f.nii.gz"
    written = mm.infer_single(t1n=case / "BraTS-GLI-00000-000-t1n.nii.gz", t1c=case / "BraTS-GLI-00000-000-t1c.nii.gz",
                              t2w=case / "BraTS-GLI-00000-000-t2w.nii.gz", output_file=out)
    assert written == out
    expected = nib.load(str(via_cli / "BraTS-GLI-00000-000" / "BraTS-GLI-00000-000-t2f.nii.gz"))
    got = nib.load(str(out))
    np.testing.assert_array_equal(np.asarray(got.dataobj), np.asarray(expected.dataobj))
    np.testing.assert_array_equal(got.affine, expected.affine)

    batch = mm.infer_batch(data, tmp_path / "batch")
    assert sorted(batch) == ["BraTS-GLI-00000-000", "BraTS-GLI-00001-000"]
    for name, path in batch.items():
        ref = via_cli / name / path.name
        np.testing.assert_array_equal(np.asarray(nib.load(str(path)).dataobj), np.asarray(nib.load(str(ref)).dataobj))
    assert not (tmp_path / "batch" / "BraTS-GLI-00002-000").exists()


def test_infer_single_refusals(make_brats_root, models, tmp_path):  # noqa: F811
    data = _data(make_brats_root)
    case = data / "BraTS-GLI-00000-000"
    files = {m: case / f"BraTS-GLI-00000-000-{m}.nii.gz" for m in ("t1n", "t1c", "t2w")}
    mm = cwdm.MissingModality(models_dir=models, sampler="ddim", steps=2, device="cpu")
    with pytest.raises(CwdmError, match="missing now: t1c, t2f"):
        mm.infer_single(t1n=files["t1n"], t2w=files["t2w"], output_file=tmp_path / "x-t2f.nii.gz")
    with pytest.raises(CwdmError, match="does not exist"):
        mm.infer_single(**{**files, "t1n": tmp_path / "nope.nii.gz"}, output_file=tmp_path / "x-t2f.nii.gz")
    existing = tmp_path / "x-t2f.nii.gz"
    shutil.copy(files["t1n"], existing)
    with pytest.raises(CwdmError, match="already exists"):
        mm.infer_single(**files, output_file=existing)
    with pytest.raises(CwdmError, match="no checkpoint synthesizes t2f"):
        cwdm.MissingModality(models={"t1n": models / "brats_t1n_1200000.pt"}).infer_single(
            **files, output_file=tmp_path / "y-t2f.nii.gz")

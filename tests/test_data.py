"""Case discovery, validation messages, ``cwdm check`` and the datasets."""

import nibabel as nib
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from cwdm.naming import MODALITIES
from cwdm.cli import main as cli_main
from cwdm.data.cases import Case, discover_cases
from cwdm.data.datasets import InferenceDataset, PairedVolumeDataset, collate_list
from cwdm.data.validation import check_cases, validate_case
from cwdm.errors import CwdmError
from cwdm.data.preprocess import Grid, clip_and_normalize, grid_for
from cwdm.task import Task

SMALL = (24, 24, 16)


def _save(path, data, affine=None):
    if affine is None:
        affine = nib.load(str(next(path.parent.glob("*-t1n.nii.gz")))).affine
    nib.save(nib.Nifti1Image(np.asarray(data, np.float32), affine), str(path))


def _one_case(root):
    cases = discover_cases(root)
    assert len(cases) == 1
    return cases[0]


# --- discovery ------------------------------------------------------------------

def test_discover_sorted_with_files(make_brats_root):
    names = ["BraTS-GLI-00010-000", "BraTS-GLI-00002-001", "BraTS-GLI-00002-000"]
    root = make_brats_root(cases=names)
    (root / ".hidden").mkdir()
    (root / "notes").mkdir()  # no NIfTI: not a case
    (root / "README.txt").write_text("x")
    cases = discover_cases(root)
    assert [c.name for c in cases] == sorted(names)
    c = cases[0]
    assert c.folder == root / c.name and c.prefix == c.name
    assert c.present == MODALITIES
    assert c.files == {m: root / c.name / f"{c.name}-{m}.nii.gz" for m in MODALITIES}
    assert c.seg == root / c.name / f"{c.name}-seg.nii.gz"
    assert c.missing() == [] and c.duplicates == {}
    assert c.folder / c.file_name("t1c") == c.files["t1c"]


@pytest.mark.parametrize("shape", [SMALL, (9, 7, 5)])
def test_discover_nii_missing_and_other_files(make_brats_root, shape):
    root = make_brats_root(cases=2, shape=shape, ext=".nii", seg=False,
                           missing={"BraTS-GLI-00001-000": ["t2w"]})
    extra = root / "BraTS-GLI-00000-000" / "BraTS-GLI-00000-000-t1n_synth.nii.gz"
    extra.write_bytes(b"")
    cases = discover_cases(root)
    assert cases[0].seg is None
    assert cases[0].files["t1n"].name == "BraTS-GLI-00000-000-t1n.nii"
    assert cases[0].others == [extra]
    assert cases[1].present == ("t1n", "t1c", "t2f")
    assert cases[1].missing() == ["t2w"] and cases[1].missing(["t1n", "t2w"]) == ["t2w"]


def test_discover_other_modality_names(tmp_path, make_brats_root):
    root = make_brats_root(cases=["p1", "p0"], modalities=("ct", "mr"), seg=False)
    cases = discover_cases(root, modalities=("ct", "mr"))
    assert [c.name for c in cases] == ["p0", "p1"]
    assert cases[0].present == ("ct", "mr")


@pytest.mark.parametrize("dup", ["other_ext", "other_prefix"])
def test_discover_duplicates(make_brats_root, dup):
    root = make_brats_root(cases=1)
    case = _one_case(root)
    src = case.files["t2f"]
    name = f"{case.name}-t2f.nii" if dup == "other_ext" else "BraTS-GLI-99999-000-t2f.nii.gz"
    _save(src.parent / name, np.ones(SMALL))
    case = _one_case(root)
    assert "t2f" not in case.files and len(case.duplicates["t2f"]) == 2
    problems = validate_case(case, MODALITIES, read_data=False)
    assert len(problems) == 1
    assert "2 files for modality t2f" in problems[0] and name in problems[0] and src.name in problems[0]


def test_discover_errors(tmp_path):
    with pytest.raises(CwdmError, match="does not exist") as err:
        discover_cases(tmp_path / "nowhere")
    assert "nowhere" in str(err.value)
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(CwdmError, match="not a folder"):
        discover_cases(tmp_path / "file.txt")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CwdmError, match=r"empty: no case folders"):
        discover_cases(empty)
    nib.save(nib.Nifti1Image(np.ones((3, 3, 3), np.float32), np.eye(4)), str(empty / "c-t1n.nii.gz"))
    with pytest.raises(CwdmError, match="holds 1 NIfTI files directly"):
        discover_cases(empty)




# --- validation -------------------------------------------------------------------

def test_good_case_has_no_problems(brats_root):
    for case in discover_cases(brats_root):
        assert validate_case(case, MODALITIES, divisor=8) == []
    check_cases(discover_cases(brats_root), MODALITIES, divisor=8)


def _break(case, kind):
    """Damage one file of ``case``; returns (file name, expected words)."""
    p = case.files["t1c"]
    if kind == "corrupt":
        p.write_bytes(p.read_bytes()[:200])
        return p.name, "unreadable or corrupt"
    if kind == "garbage":
        p.write_bytes(b"garbage" * 100)
        return p.name, "unreadable or corrupt"
    if kind == "not3d":
        _save(p, np.ones(SMALL + (2,)))
        return p.name, "not a 3D volume"
    if kind == "shape":
        _save(p, np.ones((24, 24, 15)))
        return p.name, "shape 24x24x15 differs from " + case.files["t1n"].name
    if kind == "affine":
        aff = nib.load(str(case.files["t1n"])).affine.copy()
        aff[0, 3] += 0.5
        _save(p, nib.load(str(p)).get_fdata(), affine=aff)
        return p.name, "affine differs from " + case.files["t1n"].name
    if kind == "nan":
        data = nib.load(str(p)).get_fdata()
        data[3, 4, 5] = np.nan
        data[0, 0, 0] = np.inf
        _save(p, data)
        return p.name, "2 non-finite voxels"
    if kind == "zero":
        _save(p, np.zeros(SMALL))
        return p.name, "all voxels are zero"
    if kind == "constant":
        _save(p, np.full(SMALL, 4.0))
        return p.name, "constant volume"
    if kind == "missing":
        p.unlink()
        return case.name, "missing required modality t1c"
    if kind == "seg_shape":
        _save(case.seg, np.ones((24, 20, 16)))
        return case.seg.name, "shape 24x20x16 differs"
    raise AssertionError(kind)


KINDS = ["corrupt", "garbage", "not3d", "shape", "affine", "nan", "zero", "constant", "missing", "seg_shape"]


@pytest.mark.parametrize("kind", KINDS)
def test_validate_reports_each_problem(make_brats_root, kind):
    root = make_brats_root(cases=1)
    name, words = _break(_one_case(root), kind)
    problems = validate_case(_one_case(root), MODALITIES)
    assert len(problems) == 1, problems
    assert name in problems[0] and words in problems[0]
    assert "\n" not in problems[0]


def test_odd_first_file_is_the_one_reported(make_brats_root):
    root = make_brats_root(cases=1)
    case = _one_case(root)
    p = case.files["t1n"]
    _save(p, nib.load(str(p)).get_fdata(), affine=np.eye(4))
    problems = validate_case(case, MODALITIES)
    assert len(problems) == 1
    assert problems[0].startswith(str(p)) and "affine differs from " + case.files["t1c"].name in problems[0]


def test_affine_within_tolerance_is_fine(make_brats_root):
    root = make_brats_root(cases=1)
    case = _one_case(root)
    aff = nib.load(str(case.files["t1n"])).affine.copy()
    aff[0, 3] += 5e-4
    _save(case.files["t1c"], nib.load(str(case.files["t1c"])).get_fdata(), affine=aff)
    assert validate_case(case, MODALITIES) == []


def test_header_only_skips_voxel_checks(make_brats_root):
    root = make_brats_root(cases=1)
    case = _one_case(root)
    _save(case.files["t2w"], np.full(SMALL, np.nan))
    _save(case.files["t1c"], np.ones((24, 24, 15)))
    problems = validate_case(case, MODALITIES, read_data=False)
    assert len(problems) == 1 and "t1c" in problems[0] and "differs" in problems[0]
    assert len(validate_case(case, MODALITIES)) == 2


def test_unmappable_grid(make_brats_root):
    root = make_brats_root(cases=1, shape=(40, 40, 10))
    case = _one_case(root)
    assert validate_case(case, MODALITIES, divisor=16) == []
    problems = validate_case(case, MODALITIES, divisor=32)
    assert len(problems) == 1
    assert case.files["t1n"].name in problems[0]
    assert "axis 2 has 10 voxels" in problems[0] and "cannot be mapped to the model grid" in problems[0]


def test_required_is_respected(make_brats_root):
    root = make_brats_root(cases=1, missing={"BraTS-GLI-00000-000": ["t2f"]})
    case = _one_case(root)
    assert validate_case(case, ["t1n", "t1c", "t2w"]) == []
    assert "missing required modality t2f" in validate_case(case, MODALITIES)[0]


def test_check_cases_lists_all_bad_cases(make_brats_root):
    root = make_brats_root(cases=4, missing={"BraTS-GLI-00001-000": ["t1c", "t2w"]})
    cases = discover_cases(root)
    _save(cases[3].files["t2f"], np.zeros(SMALL))
    with pytest.raises(CwdmError) as err:
        check_cases(cases, MODALITIES)
    msg = str(err.value)
    assert msg.startswith("2 of 4 cases are unusable: ")
    assert "\n" not in msg
    assert "BraTS-GLI-00001-000: missing required modality t1c" in msg
    assert "missing required modality t2w" in msg
    assert "BraTS-GLI-00003-000-t2f.nii.gz: all voxels are zero" in msg
    assert "BraTS-GLI-00000-000" not in msg and "BraTS-GLI-00002-000" not in msg
    # same answer with threads
    with pytest.raises(CwdmError) as err2:
        check_cases(cases, MODALITIES, workers=2)
    assert str(err2.value) == msg


def test_check_cases_caps_the_listing(make_brats_root):
    root = make_brats_root(cases=6, seg=False, shape=(4, 4, 4),
                           missing={f"BraTS-GLI-{i:05d}-000": list(MODALITIES) for i in range(1)})
    cases = discover_cases(root)
    fake = [Case(name=f"c{i}", folder=root / f"c{i}", files={}) for i in range(8)]
    with pytest.raises(CwdmError) as err:
        check_cases(fake, MODALITIES)
    msg = str(err.value)
    assert msg.startswith("8 of 8 cases are unusable")
    assert "and 12 more problems" in msg
    with pytest.raises(CwdmError, match="no cases"):
        check_cases([], MODALITIES)
    check_cases(cases[1:], MODALITIES)


# --- cwdm check -------------------------------------------------------------------

def test_check_command_ok(brats_root, capsys):
    assert cli_main(["check", str(brats_root), "--require", *MODALITIES, "--divisor", "8"]) == 0
    out = capsys.readouterr().out
    assert out.count("OK") == 3
    assert "3 cases" in out and "0 unusable" in out


def test_check_command_reports_problems(make_brats_root, capsys):
    root = make_brats_root(cases=3, missing={"BraTS-GLI-00002-000": ["t2w"]})
    case = discover_cases(root)[0]
    _save(case.files["t1n"], np.full(SMALL, np.nan))
    # without --require a missing modality is not a problem
    assert cli_main(["check", str(root), "--header_only"]) == 0
    capsys.readouterr()
    assert cli_main(["check", str(root), "--require", *MODALITIES]) == 1
    out = capsys.readouterr().out
    assert "BraTS-GLI-00000-000-t1n.nii.gz: 9216 non-finite voxels" in out  # 24*24*16 voxels
    assert "missing required modality t2w" in out
    assert "t1n t1c --- t2f seg" in out
    assert "2 unusable" in out


def test_check_command_errors(tmp_path, brats_root, capsys):
    assert cli_main(["check", str(tmp_path / "nowhere")]) == 1
    assert "nowhere: data folder does not exist" in capsys.readouterr().err
    assert cli_main(["check", str(brats_root), "--require", "flair"]) == 1
    assert "unknown modalities" in capsys.readouterr().err


# --- datasets ----------------------------------------------------------------------

def _expected(path, grid):
    return grid.to_model(clip_and_normalize(nib.load(str(path)).get_fdata(dtype=np.float32)).astype(np.float32))


@pytest.mark.parametrize("shape,divisor,model", [(SMALL, 8, SMALL), (SMALL, 32, (32, 32, 32)),
                                                 ((20, 18, 10), 4, (20, 16, 8))])
@pytest.mark.parametrize("target", ["t1c", "t2f"])
def test_paired_dataset(make_brats_root, shape, divisor, model, target):
    root = make_brats_root(cases=2, shape=shape)
    cases = discover_cases(root)
    ds = PairedVolumeDataset(cases, Task.default(target), divisor=divisor)
    assert len(ds) == 2
    tgt, cond = ds[1]
    assert tgt.shape == (1,) + model and cond.shape == (3,) + model
    assert tgt.dtype == torch.float32 and cond.dtype == torch.float32
    grid = grid_for(shape, divisor)
    np.testing.assert_allclose(tgt[0].numpy(), _expected(cases[1].files[target], grid), atol=1e-7)
    for i, m in enumerate(Task.default(target).condition_names):
        np.testing.assert_allclose(cond[i].numpy(), _expected(cases[1].files[m], grid), atol=1e-7)
    assert float(tgt.max()) == 1.0 and float(tgt.min()) == 0.0


def test_paired_dataset_rejects_incomplete_cases(make_brats_root):
    root = make_brats_root(cases=3, missing={"BraTS-GLI-00000-000": ["t1c"], "BraTS-GLI-00002-000": ["t2w"]})
    with pytest.raises(CwdmError, match="2 of 3 cases are unusable") as err:
        PairedVolumeDataset(discover_cases(root), Task.default("t1c"), divisor=8)
    assert "BraTS-GLI-00000-000: missing required modality t1c" in str(err.value)
    assert "BraTS-GLI-00002-000: missing required modality t2w" in str(err.value)
    with pytest.raises(CwdmError, match="missing required modality t2w"):
        PairedVolumeDataset(discover_cases(root)[1:], Task.default("t1c"), divisor=8, check="none")


def test_header_check_defers_voxel_errors_to_loading(make_brats_root):
    root = make_brats_root(cases=1)
    case = _one_case(root)
    _save(case.files["t2w"], np.full(SMALL, np.inf))
    with pytest.raises(CwdmError, match="non-finite"):
        PairedVolumeDataset([case], Task.default("t1c"), divisor=8)
    ds = PairedVolumeDataset([case], Task.default("t1c"), divisor=8, check="header")
    with pytest.raises(CwdmError, match=r"-t2w\.nii\.gz: volume contains non-finite"):
        ds[0]


def test_paired_dataset_with_loader(brats_root):
    ds = PairedVolumeDataset(discover_cases(brats_root), Task.default("t2w"), divisor=8)
    batches = list(DataLoader(ds, batch_size=2, num_workers=0))
    assert batches[0][0].shape == (2, 1) + SMALL and batches[0][1].shape == (2, 3) + SMALL
    assert batches[1][0].shape == (1, 1) + SMALL


def test_inference_dataset(make_brats_root):
    root = make_brats_root(cases=3, shape=(20, 18, 10), missing={"BraTS-GLI-00001-000": ["t1n"]})
    cases = discover_cases(root)
    ds = InferenceDataset(cases, Task.default("t1n"), divisor=4)
    item = ds[0]
    assert item["name"] == "BraTS-GLI-00000-000" and item["prefix"] == item["name"]
    assert item["conditions"].shape == (3, 20, 16, 8) and item["conditions"].dtype == torch.float32
    assert item["target"].shape == (1, 20, 16, 8)
    assert item["target_path"] == str(cases[0].files["t1n"])
    assert item["reference"] == str(cases[0].files["t1c"])
    grid = Grid.from_dict(item["grid"])
    assert grid == grid_for((20, 18, 10), 4)
    assert grid.to_original(item["conditions"]).shape == (3, 20, 18, 10)
    np.testing.assert_allclose(item["conditions"][1].numpy(), _expected(cases[0].files["t2w"], grid), atol=1e-7)
    missing = ds[1]
    assert "target" not in missing and "target_path" not in missing
    assert missing["conditions"].shape == (3, 20, 16, 8)
    with pytest.raises(CwdmError, match="missing required modality t1n"):
        InferenceDataset(cases, Task.default("t1n"), divisor=4, require_target=True)


def test_inference_dataset_loader_with_workers(make_brats_root):
    root = make_brats_root(cases=3, missing={"BraTS-GLI-00001-000": ["t2f"]})
    ds = InferenceDataset(discover_cases(root), Task.default("t2f"), divisor=8)
    items = [it for batch in DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate_list)
             for it in batch]
    assert [it["name"] for it in items] == [c.name for c in ds.cases]
    assert ["target" in it for it in items] == [True, False, True]
    single = list(DataLoader(ds, batch_size=None))
    assert single[2]["conditions"].shape == (3,) + SMALL

"""BraTS 2021 file names, --contr aliases, cases with nothing recognized, dangling links."""

import os

import pytest

from conftest import write_brats_root
from cwdm.naming import MODALITIES, canonical_contrast, contrast_of_checkpoint, parse_file_name
from cwdm.data.cases import discover_cases
from cwdm.cli import main as cli
from cwdm.data.datasets import InferenceDataset
from cwdm.data.validation import validate_case
from cwdm.task import Task
from cwdm.training.state import checkpoint_files

OLD = {"t1n": "t1", "t1c": "t1ce", "t2w": "t2", "t2f": "flair", "seg": "seg"}


def brats2021_root(tmp_path, names=("BraTS2021_00000", "BraTS2021_00001"), missing=None):
    """Cases written as BraTS 2021 names: <case>/<case>_flair.nii.gz ..."""
    new = write_brats_root(tmp_path / "new", cases=list(names), missing=missing)
    root = tmp_path / "old"
    for name in names:
        (root / name).mkdir(parents=True)
        for path in sorted((new / name).iterdir()):
            mod = path.name[len(name) + 1:-len(".nii.gz")]
            path.rename(root / name / f"{name}_{OLD[mod]}.nii.gz")
    return root


def test_parse_file_name():
    assert parse_file_name("BraTS2021_00000_flair.nii.gz", MODALITIES) == ("BraTS2021_00000", "t2f", "_")
    assert parse_file_name("BraTS2021_00000_t1ce.nii", MODALITIES) == ("BraTS2021_00000", "t1c", "_")
    assert parse_file_name("BraTS2021_00000_seg.nii.gz", MODALITIES) == ("BraTS2021_00000", "seg", "_")
    assert parse_file_name("BraTS-GLI-00000-000-t2w.nii.gz", MODALITIES) == ("BraTS-GLI-00000-000", "t2w", "-")
    assert parse_file_name("BraTS2021_00000_dwi.nii.gz", MODALITIES)[1] is None
    # other tasks' names are never rewritten
    assert parse_file_name("p_flair.nii.gz", ("ct", "mr"))[1] is None


def test_contr_aliases_and_checkpoint_names():
    assert [canonical_contrast(c, MODALITIES) for c in ("flair", "T1CE", "t1", "t2", "t2f")] == \
        ["t2f", "t1c", "t1n", "t2w", "t2f"]
    assert canonical_contrast("flair", ("flair", "t1")) == "flair"
    assert canonical_contrast("pd", MODALITIES) == "pd"
    assert contrast_of_checkpoint("ckpt/t1ce_gen.pt", MODALITIES) == "t1c"
    assert contrast_of_checkpoint("brats_t2f_1200000.pt", MODALITIES) == "t2f"
    assert contrast_of_checkpoint("t1n_to_t2f.pt", MODALITIES) is None  # names two: says nothing
    assert contrast_of_checkpoint("model.pt", MODALITIES) is None


def test_brats2021_cases_are_read_and_said_once(tmp_path, capsys):
    root = brats2021_root(tmp_path, missing={"BraTS2021_00001": ["t2f"]})
    cases = discover_cases(root)
    assert [c.present for c in cases] == [("t1n", "t1c", "t2w", "t2f"), ("t1n", "t1c", "t2w")]
    assert cases[0].files["t2f"].name == "BraTS2021_00000_flair.nii.gz" and cases[0].seg is not None
    assert cases[1].file_name("t2f") == "BraTS2021_00001_flair.nii.gz"
    discover_cases(root)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "2 of 2 cases" in err[0] and "flair=t2f" in err[0]
    assert validate_case(cases[0], MODALITIES, divisor=8) == []
    item = InferenceDataset(cases[:1], Task.default("t2f"), divisor=8)[0]
    assert item["conditions"].shape[0] == 3
    assert cli(["check", str(root), "--require", "t1n", "t1c", "t2w"]) == 0


def test_train_and_sample_with_old_contrast_names(tmp_path):
    root = brats2021_root(tmp_path)
    run = tmp_path / "run"
    net = ["--num_channels", "8", "--channel_mult", "1", "--num_res_blocks", "1", "--num_groups", "4"]
    assert cli(["train", "--data_dir", str(root), "--contr", "flair", "--run_dir", str(run), "--max_steps", "1",
                "--num_workers", "0", "--progress", "False", *net]) == 0
    ckpt = checkpoint_files(run)[-1]
    out = tmp_path / "out"
    assert cli(["sample", "--data_dir", str(root), "--model_path", str(ckpt), "--contr", "FLAIR",
                "--output_dir", str(out), "--sampler", "regression", "--progress", "False",
                "--num_workers", "0"]) == 0
    assert len(list(out.glob("*/*t2f.nii.gz"))) == 2


def test_check_fails_on_a_case_with_no_recognized_modality(make_brats_root, capsys):
    root = make_brats_root(cases=2)
    case = root / "BraTS-GLI-00001-000"
    for path in case.iterdir():
        path.rename(case / path.name.replace("-", "_").replace("_t1n", "_T1w").replace("_t2w", "_T2w"))
    assert cli(["check", str(root)]) == 1
    out = capsys.readouterr().out
    assert "BraTS-GLI-00001-000: no file with a known modality name" in out
    assert "1 unusable" in out


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symbolic links")
def test_dangling_symlinks_are_reported(make_brats_root, tmp_path, capsys):
    root = make_brats_root(cases=2)
    os.symlink(tmp_path / "gone", root / "BraTS-GLI-00009-000")
    os.symlink(tmp_path / "gone.nii.gz", root / "BraTS-GLI-00000-000" / "BraTS-GLI-00000-000-t1c-copy.nii.gz")
    assert cli(["check", str(root)]) == 1
    out = capsys.readouterr().out
    assert "BraTS-GLI-00009-000: dangling symbolic link" in out
    assert "t1c-copy.nii.gz: dangling symbolic link" in out
    assert "2 unusable" in out and "3 cases" in out

"""The Python API (cwdm.MissingModality) against `cwdm auto` on the same cases."""

import hashlib
import json
import shutil

import nibabel as nib
import numpy as np
import pytest

import cwdm
from cwdm.cli import main as cli
from cwdm.errors import CwdmError
from cwdm.model.checkpoint import load_model
from conftest import FAST, REF, make_checkpoint

MISSING = {"BraTS-GLI-00000-000": ["t2f"], "BraTS-GLI-00001-000": ["t1c"], "BraTS-GLI-00002-000": ["t2w", "t1n"]}


def _data(make_brats_root):
    return make_brats_root(shape=(26, 24, 18), cases=3, missing=MISSING)


def test_infer_single_and_batch_write_what_auto_writes(make_brats_root, models, tmp_path):
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


def test_infer_single_refusals(make_brats_root, models, tmp_path):
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


def _files(data, name="BraTS-GLI-00000-000", given=("t1n", "t1c", "t2w")):
    return {m: data / name / f"{name}-{m}.nii.gz" for m in given}


def test_api_writes_the_provenance_record_like_auto(make_brats_root, models, tmp_path):
    data = _data(make_brats_root)
    mm = cwdm.MissingModality(models_dir=models, sampler="ddim", steps=2, device="cpu")
    out = tmp_path / "single" / "x-t2f.nii.gz"
    mm.infer_single(output_file=out, **_files(data))
    record = json.loads((out.parent / "cwdm_provenance.json").read_text())
    (run,) = record["runs"].values()
    assert run["command"] == "api" and run["status"] == "finished"
    assert (run["settings"]["sampler"], run["settings"]["sampling_steps"], run["settings"]["threshold"]) == ("ddim", 2,
                                                                                                            0.04)
    assert list(run["checkpoints"]) == ["t2f"]
    assert run["checkpoints"]["t2f"]["sha256"] == hashlib.sha256(
        (models / "brats_t2f_1200000.pt").read_bytes()).hexdigest()
    assert {k: (c["target"], c["inputs"]) for k, c in record["cases"].items()} == {
        "x-t2f.nii.gz": ("t2f", ["t1n", "t1c", "t2w"])}
    # a batch into an output folder: one record there; completing in place: in the data folder
    mm.infer_batch(data, tmp_path / "batch")
    batch = json.loads((tmp_path / "batch" / "cwdm_provenance.json").read_text())
    assert sorted(batch["cases"]) == ["BraTS-GLI-00000-000/BraTS-GLI-00000-000-t2f.nii.gz",
                                      "BraTS-GLI-00001-000/BraTS-GLI-00001-000-t1c.nii.gz"]
    assert sorted(next(iter(batch["runs"].values()))["checkpoints"]) == ["t1c", "t2f"]
    # other settings into the same folder are refused in one line naming the API's argument
    other = cwdm.MissingModality(models_dir=models, sampler="ddim", steps=3, device="cpu")
    (tmp_path / "batch" / "BraTS-GLI-00000-000" / "BraTS-GLI-00000-000-t2f.nii.gz").unlink()
    with pytest.raises(CwdmError, match=r"sampling_steps 2 -> 3.*continue_anyway=True") as info:
        other.infer_batch(data, tmp_path / "batch")
    assert "--" not in str(info.value)
    assert not (tmp_path / "batch" / "BraTS-GLI-00000-000" / "BraTS-GLI-00000-000-t2f.nii.gz").exists()
    cwdm.MissingModality(models_dir=models, sampler="ddim", steps=3, device="cpu",
                         continue_anyway=True).infer_batch(data, tmp_path / "batch")
    assert len(json.loads((tmp_path / "batch" / "cwdm_provenance.json").read_text())["runs"]) == 2
    mm.infer_batch(data)
    assert len(json.loads((data / "cwdm_provenance.json").read_text())["cases"]) == 2


@pytest.mark.parametrize("kwargs,message", [
    (dict(steps="10"), "steps= must be an integer, got '10' (str)"),
    (dict(steps=0), "steps= must be in 1..1000, got 0"),
    (dict(steps=True), "steps= must be an integer"),
    (dict(eta=-1.0), "eta= must be >= 0"),
    (dict(eta="0.5"), "eta= must be a number"),
    (dict(etta=0.5), "unexpected argument etta=; the samplers' options are eta="),
    (dict(ensemble=1.5), "ensemble= must be an integer"),
    (dict(sampler="euler"), "sampler= must be one of 'ddpm', "),
    (dict(precision="fp16"), "precision= must be one of"),
    (dict(num_groups="8"), "num_groups= must be an integer"),
    (dict(compile="sometimes"), "compile= must be 'auto', True or False"),
    (dict(device="gpu"), "device= must be 'auto', 'cpu', 'cuda' or 'cuda:N'"),
    (dict(models_dir=None), "give models_dir= (a folder of checkpoints) or models="),
    (dict(models={"t2f": None}), "models['t2f']= must be a path"),
    (dict(models={"pd": "x.pt"}), "models= given for unknown modalities ['pd']"),
])
def test_bad_constructor_arguments_are_one_line_cwdm_errors(models, kwargs, message):
    args = {"models_dir": models, "device": "cpu", **kwargs}
    with pytest.raises(CwdmError) as info:
        cwdm.MissingModality(**args)
    text = str(info.value)
    assert message in text and "\n" not in text and "--" not in text


def test_models_dir_that_is_missing_or_a_file(tmp_path):
    with pytest.raises(CwdmError, match="models_dir= .*nope: does not exist"):
        cwdm.MissingModality(models_dir=tmp_path / "nope")
    (tmp_path / "f").write_text("x")
    with pytest.raises(CwdmError, match="models_dir= .*f: not a folder"):
        cwdm.MissingModality(models_dir=tmp_path / "f")


def test_bad_call_arguments_are_one_line_cwdm_errors(make_brats_root, models, tmp_path):
    data = _data(make_brats_root)
    files = _files(data)
    mm = cwdm.MissingModality(models_dir=models, sampler="ddim", steps=2, device="cpu")
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    cases = [
        (lambda: mm.infer_single(output_file=None, **files), "output_file= is required"),
        (lambda: mm.infer_single(**files), "output_file= is required"),
        (lambda: mm.infer_single(output_file=3, **files), "output_file= must be a path"),
        (lambda: mm.infer_single(output_file=afile / "x-t2f.nii.gz", **files),
         f"output_file= {afile}: the output folder is a file"),
        (lambda: mm.infer_single(output_file=afile / "sub" / "x-t2f.nii.gz", **files), f"lies below {afile}"),
        (lambda: mm.infer_single(output_file=tmp_path, **files), "must end in .nii.gz"),
        (lambda: mm.infer_single(output_file=tmp_path / "x-t2f.nii.gz", overwrite="yes", **files),
         "overwrite= must be True or False"),
        (lambda: mm.infer_single(output_file=tmp_path / "x-t2f.nii.gz", **{**files, "t1n": 5}), "t1n= must be a path"),
        (lambda: mm.infer_single(output_file=tmp_path / "x-t2f.nii.gz", **{**files, "t1n": tmp_path}),
         "t1n= " + str(tmp_path) + ": is not a file"),
        (lambda: mm.infer_batch(), "data_folder= is required"),
        (lambda: mm.infer_batch(data, afile), f"output_folder= {afile}: the output folder is a file"),
        (lambda: mm.infer_batch(data, 7), "output_folder= must be a path"),
        (lambda: mm.infer_batch(tmp_path / "none"), "data folder does not exist"),
        (lambda: mm.infer_batch(data, data / "completed"), f"output_folder= {data / 'completed'} is (inside) the "
         f"input folder"),
    ]
    for call, message in cases:
        with pytest.raises(CwdmError) as info:
            call()
        assert message in str(info.value) and "\n" not in str(info.value), (message, str(info.value))
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["afile"]  # nothing written


def test_api_errors_name_api_arguments_not_flags(make_brats_root, tmp_path):
    """A bare state_dict whose GroupNorm groups do not fit: the API says num_groups=, the CLI --num_groups."""
    data = _data(make_brats_root)
    mm = cwdm.MissingModality(models={"t2f": REF / "unet_tiny.pt"}, device="cpu", steps=2)
    with pytest.raises(CwdmError) as info:
        mm.infer_single(output_file=tmp_path / "x-t2f.nii.gz", **_files(data))
    assert "pass num_groups= with a divisor of 16" in str(info.value) and "--num_groups" not in str(info.value)
    with pytest.raises(CwdmError, match="pass --num_groups with a divisor"):  # outside the API: the flag
        load_model(REF / "unet_tiny.pt")
    assert not (tmp_path / "x-t2f.nii.gz").exists()


def test_degenerate_volumes_raise_in_single_and_after_the_batch(make_brats_root, models, tmp_path):
    data = _data(make_brats_root)
    make_checkpoint(models / "brats_t2f_1200000.pt", target="t2f", output="zero")
    mm = cwdm.MissingModality(models_dir=models, sampler="ddim", steps=2, device="cpu")
    out = tmp_path / "single" / "x-t2f.nii.gz"
    with pytest.raises(CwdmError, match=f"{out}: synthesized volume is all zero .*; not written"):
        mm.infer_single(output_file=out, **_files(data))
    assert not out.exists() and not (tmp_path / "single").exists()
    with pytest.raises(CwdmError) as info:
        mm.infer_batch(data, tmp_path / "batch")
    text = str(info.value)
    bad = tmp_path / "batch" / "BraTS-GLI-00000-000" / "BraTS-GLI-00000-000-t2f.nii.gz"
    good = tmp_path / "batch" / "BraTS-GLI-00001-000" / "BraTS-GLI-00001-000-t1c.nii.gz"
    assert text.startswith("1 of 2 synthesized volumes were degenerate") and f"{bad}: synthesized volume is all zero" \
        in text and "\n" not in text
    assert info.value.written == {"BraTS-GLI-00001-000": good} and good.is_file() and not bad.exists()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_cuda_without_a_gpu_names_the_argument(models):
    with pytest.raises(CwdmError, match=r"device='cuda': no CUDA GPU is available here \(use device='cpu'"):
        cwdm.MissingModality(models_dir=models, device="cuda")


def test_two_checkpoints_for_one_contrast_name_the_models_argument(models):
    shutil.copy(models / "brats_t2f_1200000.pt", models / "flair_gen.pt")
    with pytest.raises(CwdmError, match=r"several checkpoints for t2f .*pass models=\{'t2f': PATH\} to choose"):
        cwdm.MissingModality(models_dir=models, device="cpu")


def test_numpy_numbers_are_accepted_and_recorded_as_numbers(make_brats_root, models, tmp_path):
    data = _data(make_brats_root)
    mm = cwdm.MissingModality(models_dir=models, sampler="ddim", steps=np.int64(2), eta=np.float32(0.5),
                              seed=np.int32(3), device="cpu")  # ddim: its eta is recorded
    mm.infer_single(output_file=tmp_path / "x-t2f.nii.gz", **_files(data))
    settings = next(iter(json.loads((tmp_path / "cwdm_provenance.json").read_text())["runs"].values()))["settings"]
    assert (settings["sampling_steps"], settings["eta"], settings["seed"]) == (2, 0.5, 3)


def test_sampler_options_are_forwarded_by_name(models):
    mm = cwdm.MissingModality(models_dir=models, sampler="ddim", steps=3, device="cpu", eta=0.25)
    assert mm.options.sampler_options == {"eta": 0.25} and mm.options.sampler_settings() == {"eta": 0.25}
    assert cwdm.MissingModality(models_dir=models, device="cpu").options.sampler_options == {"eta": 0.0}

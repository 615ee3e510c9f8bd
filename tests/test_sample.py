import hashlib
import json

import nibabel as nib
import numpy as np
import pytest
import torch

from cwdm.model.checkpoint import checkpoint_dict
from cwdm.cli import main as cli
from cwdm.task import Task
from cwdm.model.unet import UNet, UNetConfig
from conftest import FAST, REF, make_checkpoint
from pinning import assert_matches_pinned

TINY_FLAGS = ["--num_channels", "16", "--channel_mult", "1", "2", "--num_res_blocks", "1", "--num_groups", "8"]


@pytest.fixture
def ckpt(tmp_path):
    return make_checkpoint(tmp_path / "t2f.pt")


def test_sample_writes_on_original_grid_with_geometry(make_brats_root, tmp_path, ckpt):
    data = make_brats_root(shape=(26, 24, 18), cases=2)  # cropped to 24x24x16 for the network
    out = tmp_path / "out"
    assert cli(["sample", "--data_dir", str(data), "--model_path", str(ckpt), "--output_dir", str(out), *FAST]) == 0
    for case in ("BraTS-GLI-00000-000", "BraTS-GLI-00001-000"):
        written = nib.load(str(out / case / f"{case}-t2f.nii.gz"))
        ref = nib.load(str(data / case / f"{case}-t1n.nii.gz"))
        assert written.shape == (26, 24, 18)
        np.testing.assert_allclose(written.affine, ref.affine)
        vol = np.asarray(written.dataobj)
        assert vol.dtype == np.float32 and 0 <= vol.min() and vol.max() <= 1
        # zero outside the brain of the first condition (post-processing), and cropped border zero
        t1n = np.asarray(ref.dataobj)
        assert np.all(vol[t1n == 0] == 0)
        assert np.all(vol[0] == 0) and np.all(vol[:, :, -1] == 0)
        assert vol.max() > 0


def test_same_seed_identical_and_independent_of_other_cases(make_brats_root, tmp_path, ckpt):
    data = make_brats_root(cases=3)
    single = make_brats_root(cases=["BraTS-GLI-00001-000"], seed=0)
    # same contents for case 1 in both roots: copy it over
    for f in (data / "BraTS-GLI-00001-000").iterdir():
        (single / "BraTS-GLI-00001-000" / f.name).write_bytes(f.read_bytes())
    args = ["--model_path", str(ckpt), "--sampler", "ddim", "--sampling_steps", "3", "--eta", "1",
            "--progress", "False", "--num_workers", "0", "--batch_size", "2"]
    cli(["sample", "--data_dir", str(data), "--output_dir", str(tmp_path / "a"), *args])
    cli(["sample", "--data_dir", str(data), "--output_dir", str(tmp_path / "b"), *args])
    cli(["sample", "--data_dir", str(single), "--output_dir", str(tmp_path / "c"), *args])
    cli(["sample", "--data_dir", str(data), "--output_dir", str(tmp_path / "d"), *args, "--seed", "1"])
    name = "BraTS-GLI-00001-000/BraTS-GLI-00001-000-t2f.nii.gz"
    a, b, c, d = (np.asarray(nib.load(str(tmp_path / x / name)).dataobj) for x in "abcd")
    assert np.array_equal(a, b)
    np.testing.assert_allclose(a, c, atol=1e-5)
    assert not np.allclose(a, d)


def test_rerun_skips_done_cases_and_overwrite_redoes(make_brats_root, tmp_path, ckpt, capsys):
    data = make_brats_root(cases=2)
    out = tmp_path / "out"
    base = ["sample", "--data_dir", str(data), "--model_path", str(ckpt), "--output_dir", str(out), *FAST]
    cli(base)
    target = out / "BraTS-GLI-00000-000" / "BraTS-GLI-00000-000-t2f.nii.gz"
    target.write_bytes(target.read_bytes())  # keep, note mtime
    before = target.stat().st_mtime_ns
    capsys.readouterr()
    assert cli(base) == 0
    assert "2 skipped" in capsys.readouterr().err
    assert target.stat().st_mtime_ns == before
    assert cli(base + ["--overwrite"]) == 0
    assert target.stat().st_mtime_ns != before


def test_ensemble_writes_std_map(make_brats_root, tmp_path, ckpt):
    data = make_brats_root(cases=1)
    out = tmp_path / "out"
    cli(["sample", "--data_dir", str(data), "--model_path", str(ckpt), "--output_dir", str(out), *FAST,
         "--ensemble", "3", "--eta", "1"])
    std = np.asarray(nib.load(str(out / "BraTS-GLI-00000-000" / "BraTS-GLI-00000-000-t2f_std.nii.gz")).dataobj)
    assert std.shape == (24, 24, 16) and std.max() > 0 and std.min() >= 0


def test_released_state_dict_with_flags(make_brats_root, tmp_path):
    data = make_brats_root(cases=1)
    out = tmp_path / "out"
    rc = cli(["sample", "--data_dir", str(data), "--model_path", str(REF / "unet_tiny.pt"), "--contr", "t1c",
              "--output_dir", str(out), *FAST, *TINY_FLAGS, "--sampler", "regression"])
    assert rc == 0
    assert (out / "BraTS-GLI-00000-000" / "BraTS-GLI-00000-000-t1c.nii.gz").is_file()


@pytest.mark.parametrize("extra,message", [
    (["--contr", "t1n"], "trained to synthesize t2f, not t1n"),
    (["--sampling_steps", "0"], "sampling_steps must be in 1..1000"),
])
def test_refusals_before_any_case(make_brats_root, tmp_path, ckpt, capsys, extra, message):
    data = make_brats_root(cases=1)
    rc = cli(["sample", "--data_dir", str(data), "--model_path", str(ckpt), "--output_dir", str(tmp_path / "o"),
              *FAST, *extra])
    assert rc == 1
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_released_state_dict_refusals(make_brats_root, tmp_path, capsys):
    data = make_brats_root(cases=1)
    base = ["sample", "--data_dir", str(data), "--model_path", str(REF / "unet_tiny.pt"),
            "--output_dir", str(tmp_path / "o"), *FAST]
    assert cli(base + TINY_FLAGS) == 1
    assert "pass --contr" in capsys.readouterr().err
    assert cli(base + ["--contr", "t1c"]) == 1  # network read from the file; num_groups 32 does not fit
    assert "pass --num_groups" in capsys.readouterr().err
    # explicit flags that contradict the file: all of them in one line, before any work
    assert cli(base + ["--contr", "t1c", "--num_channels", "64", "--num_res_blocks", "2", "--num_groups", "8"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "checkpoint has model_channels 16, config expects 64" in err
    assert "checkpoint has num_res_blocks 1, config expects 2" in err
    assert not (tmp_path / "o").exists()


def test_released_state_dict_needs_only_num_groups(make_brats_root, tmp_path, capsys):
    data = make_brats_root(cases=1)
    out = tmp_path / "out"
    rc = cli(["sample", "--data_dir", str(data), "--model_path", str(REF / "unet_tiny.pt"), "--contr", "flair",
              "--output_dir", str(out), *FAST, "--num_groups", "8", "--sampler", "regression"])
    assert rc == 0
    assert (out / "BraTS-GLI-00000-000" / "BraTS-GLI-00000-000-t2f.nii.gz").is_file()  # flair = t2f


@pytest.mark.parametrize("name,contr,says", [("flair_gen.pt", "t1c", "t2f"), ("brats_t2w_1200000.pt", "t1n", "t2w")])
def test_file_name_and_contr_disagree_warns(make_brats_root, tmp_path, capsys, name, contr, says):
    data = make_brats_root(cases=1)
    path = tmp_path / name
    path.write_bytes((REF / "unet_tiny.pt").read_bytes())
    args = ["sample", "--data_dir", str(data), "--model_path", str(path), "--output_dir", str(tmp_path / "o"),
            *FAST, "--num_groups", "8", "--sampler", "regression"]
    assert cli(args + ["--contr", contr]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "file name says" in line]
    assert len(warnings) == 1 and f"synthesizes {says}, but {contr}" in warnings[0]
    # without --contr the name decides
    assert cli(args + ["--output_dir", str(tmp_path / "o2")]) == 0
    assert (tmp_path / "o2" / "BraTS-GLI-00000-000" / f"BraTS-GLI-00000-000-{says}.nii.gz").is_file()


def test_bad_case_is_reported_and_rest_complete(make_brats_root, tmp_path, ckpt, capsys):
    data = make_brats_root(cases=2)
    bad = data / "BraTS-GLI-00000-000" / "BraTS-GLI-00000-000-t1c.nii.gz"
    bad.write_bytes(b"garbage")
    out = tmp_path / "out"
    rc = cli(["sample", "--data_dir", str(data), "--model_path", str(ckpt), "--output_dir", str(out), *FAST])
    assert rc == 1
    assert "BraTS-GLI-00000-000-t1c.nii.gz" in capsys.readouterr().err
    assert (out / "BraTS-GLI-00001-000" / "BraTS-GLI-00001-000-t2f.nii.gz").is_file()
    assert not (out / "BraTS-GLI-00000-000").exists()


@pytest.mark.slow
def test_cases_are_split_across_torchrun_ranks(make_brats_root, tmp_path, ckpt):
    import os
    import subprocess
    import sys
    from pathlib import Path

    data = make_brats_root(cases=3)
    out = tmp_path / "out"
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1]) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", "29519", "-m", "cwdm", "sample", "--data_dir", str(data),
                           "--model_path", str(ckpt), "--output_dir", str(out), "--device", "cpu", *FAST],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    written = sorted(p.name for p in out.rglob("*-t2f.nii.gz"))
    assert written == [f"BraTS-GLI-0000{i}-000-t2f.nii.gz" for i in range(3)]
    # the same files as a single process would write (per-case generators)
    single = tmp_path / "single"
    cli(["sample", "--data_dir", str(data), "--model_path", str(ckpt), "--output_dir", str(single), *FAST])
    for name in ("BraTS-GLI-00000-000", "BraTS-GLI-00002-000"):
        a = np.asarray(nib.load(str(out / name / f"{name}-t2f.nii.gz")).dataobj)
        b = np.asarray(nib.load(str(single / name / f"{name}-t2f.nii.gz")).dataobj)
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_output_dir_inside_the_input_is_refused(make_brats_root, tmp_path, ckpt, capsys):
    data = make_brats_root(cases=1)
    target = data / "BraTS-GLI-00000-000" / "BraTS-GLI-00000-000-t2f.nii.gz"
    before = target.read_bytes()
    for out in (data, data / "results"):
        rc = cli(["sample", "--data_dir", str(data), "--model_path", str(ckpt), "--output_dir", str(out), *FAST,
                  "--overwrite"])
        assert rc == 1
        assert "input folder" in capsys.readouterr().err
    assert target.read_bytes() == before and not (data / "results").exists()


def test_checkpoint_modalities_are_used(tmp_path, make_brats_root):
    cfg = UNetConfig(model_channels=8, channel_mult=(1, 2), num_res_blocks=1, num_groups=4, in_channels=16)
    path = tmp_path / "ct.pt"
    model = UNet(cfg)  # its output convolution starts at zero: raise its low-pass bias for a non-zero volume
    with torch.no_grad():
        dict(model.named_parameters())["out.2.bias"][0] = 0.5
        dict(model.named_parameters())["out.2.weight"].normal_(std=0.05)
    torch.save(checkpoint_dict(cfg, model.state_dict(), task=Task.default("ct", ["mr", "ct"]), step=1), path)
    data = make_brats_root(cases=1, modalities=("mr", "ct"))
    out = tmp_path / "out"
    assert cli(["sample", "--data_dir", str(data), "--model_path", str(path), "--output_dir", str(out), *FAST]) == 0
    assert (out / "BraTS-GLI-00000-000" / "BraTS-GLI-00000-000-ct.nii.gz").is_file()


def _pinned_run(make_brats_root, tmp_path, ckpt, *extra):
    """The pinned `cwdm sample` run (3 cases in batches of 2, ensemble 2, with targets); returns its folder."""
    data = make_brats_root(shape=(26, 24, 18), cases=3)
    out = tmp_path / "out"
    assert cli(["sample", "--data_dir", str(data), "--model_path", str(ckpt), "--output_dir", str(out), *FAST,
                "--ensemble", "2", "--eta", "1", "--batch_size", "2", "--save_target", "True", *extra]) == 0
    return out


def test_sample_pin_catches_a_changed_computation(make_brats_root, tmp_path, ckpt):
    """The tolerance is not so loose that another seed (other noise, same everything else) passes."""
    out = _pinned_run(make_brats_root, tmp_path, ckpt, "--seed", "1")
    with pytest.raises(AssertionError, match="differ by more than 1e-05"):
        assert_matches_pinned(out, "sample")


def test_sample_outputs_are_pinned(make_brats_root, tmp_path, ckpt):
    """Decoded voxels within pinning.ATOL of tests/data/pinned/sample.npz (never file bytes: see
    tests/pinning.py); file list, dtypes, geometry and the provenance record exactly."""
    out = _pinned_run(make_brats_root, tmp_path, ckpt)
    got = assert_matches_pinned(out, "sample")
    assert len([k for k in got if ":" not in k]) == 9  # volume, std map and target of 3 cases
    record = json.loads((out / "cwdm_provenance.json").read_text())
    (run,) = record["runs"].values()
    assert run["settings"] == {"target": "t2f", "sampler": "ddim", "sampling_steps": 2, "eta": 1.0, "ensemble": 2,
                               "seed": 0, "clip_denoised": True, "postprocess": True, "threshold": None,
                               "ema": True, "precision": "fp32"}
    assert run["checkpoints"]["t2f"]["sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert (run["command"], run["status"], run["checkpoints"]["t2f"]["step"]) == ("sample", "finished", 1)
    assert {rel: c["target"] for rel, c in record["cases"].items()} == {
        f"BraTS-GLI-0000{i}-000/BraTS-GLI-0000{i}-000-t2f.nii.gz": "t2f" for i in range(3)}


@pytest.mark.parametrize("output,says", [("zero", "synthesized volume is all zero"),
                                         ("constant", "synthesized volume is constant"),
                                         ("nan", "NaN/Inf voxels")])
def test_degenerate_volumes_are_reported_not_written_and_retried(make_brats_root, tmp_path, capsys, output, says):
    data = make_brats_root(cases=2)
    out = tmp_path / "out"
    broken = make_checkpoint(tmp_path / "broken_t2f.pt", output=output)
    base = ["sample", "--data_dir", str(data), "--output_dir", str(out), *FAST]
    assert cli(base + ["--model_path", str(broken)]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    files = [out / c / f"{c}-t2f.nii.gz" for c in ("BraTS-GLI-00000-000", "BraTS-GLI-00001-000")]
    for f in files:  # one line per file, naming it; nothing under its name
        (line,) = [x for x in lines if x.startswith(f"{f}: ")]
        assert says in line and line.endswith("not written") and not f.exists()
    assert "wrote 0 cases" in lines[-1] and "2 degenerate (not written)" in lines[-1]
    assert not list(out.rglob("*.nii.gz")) and not (out / "cwdm_provenance.json").exists()
    # a rerun (here with a sound checkpoint) does those cases: none was taken as done
    assert cli(base + ["--model_path", str(make_checkpoint(tmp_path / "t2f.pt"))]) == 0
    assert all(f.is_file() for f in files)
    assert "wrote 2 cases" in capsys.readouterr().err

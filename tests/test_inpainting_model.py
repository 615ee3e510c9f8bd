"""The inpainting model: its task, the intensity convention, training (regions drawn per item, exact
resume, the region's loss weight) and inpainting through ``cwdm sample`` and :class:`cwdm.api.Inpainting`.

The cases are phantom cases (30 x 30 x 20, t1n int16) turned into the challenge's layout here: a healthy
region drawn with :func:`cwdm.data.inpaint_masks.draw_healthy_mask` is the ``-mask``, the t1n with it set
to 0 the ``-t1n-voided`` (case 1 as float64 with fractional values, so both result dtypes are seen).
"""

import json
import re
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch

from cwdm.cli import main as cli
from cwdm.data.inpaint_masks import draw_healthy_mask
from cwdm.data.inpaint_training import InpaintingTrainingSet, training_cases
from cwdm.data.preprocess import grid_for
from cwdm.data.inpaint_volumes import (from_unit, network_inputs, paste_fill, result_dtype, to_unit,
                                       training_example, voided_bounds)
from cwdm.errors import CwdmError
from cwdm.model.checkpoint import read_checkpoint
from cwdm.model.diffusion import linear_schedule, region_weight, training_loss
from cwdm.task import Task
from cwdm.training.config import TrainConfig
from cwdm.training.loop import train
from cwdm.training.state import DataOrder, KeyedDataOrder, checkpoint_files

TINY = ["--num_channels", "8", "--channel_mult", "1", "2", "--num_res_blocks", "1", "--num_groups", "4"]
FAST = ["--sampler", "ddim", "--sampling_steps", "2", "--progress", "False", "--num_workers", "0"]
NAMES = [f"BraTS-GLI-{i:05d}-000" for i in range(3)]


def _save(array, affine, path):
    nib.save(nib.Nifti1Image(array, affine), str(path))


def _raw(path):
    return np.asarray(nib.load(str(path)).dataobj)


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    """Three phantom cases in the challenge's layout (t1n, mask-unhealthy, mask, mask-healthy, t1n-voided)."""
    from cwdm.phantom.sets import make_phantom_set

    base = tmp_path_factory.mktemp("inpainting")
    make_phantom_set(base / "phantom", 3, 0, downsample=8, progress=False)
    root = base / "cases"
    for i, name in enumerate(NAMES):
        img = nib.load(str(base / "phantom" / name / f"{name}-t1n.nii.gz"))
        t1n = np.asarray(img.dataobj)
        if i == 1:  # a float64 image with fractional values
            t1n = t1n.astype(np.float64) * 0.37 + 0.125 * (t1n > 0)
        tumour = np.asarray(nib.load(str(base / "phantom" / name / f"{name}-seg.nii.gz")).dataobj) > 0
        mask = draw_healthy_mask(t1n != 0, tumour, np.random.default_rng([99, i]))
        voided = t1n.copy()
        voided[mask] = 0
        folder = root / name
        folder.mkdir(parents=True)
        _save(t1n, img.affine, folder / f"{name}-t1n.nii.gz")
        _save(voided, img.affine, folder / f"{name}-t1n-voided.nii.gz")
        for part, volume in (("mask", mask), ("mask-healthy", mask), ("mask-unhealthy", tumour)):
            _save(volume.astype(np.uint8), img.affine, folder / f"{name}-{part}.nii.gz")
    return root


@pytest.fixture(scope="module")
def model(cases, tmp_path_factory):
    """A tiny inpainting model trained 2 steps on ``cases`` through the CLI (region weighted 3x)."""
    run = tmp_path_factory.mktemp("run") / "inp"
    assert cli(["train", "--data_dir", str(cases), "--inpainting", "True", "--mask_weight", "3", "--run_dir", str(run),
                "--max_steps", "2", "--lr", "1e-3", "--ema_rate", "0", "--num_workers", "0", "--progress", "False",
                *TINY]) == 0
    return checkpoint_files(run)[-1]


# --- the task and the flags -------------------------------------------------------------------------

def test_inpainting_task_is_stored_and_read_back(model):
    task = Task.inpainting()
    assert task.is_inpainting and not task.is_default and not task.is_unified
    assert task.condition_names == ("t1n-voided", "mask") and task.label_maps == {"mask": (1,)}
    assert task.in_channels == 24 and task.target == "t1n"
    assert Task.from_dict(json.loads(json.dumps(task.to_dict()))) == task
    assert not Task.from_dict({**task.to_dict(), "inpainting": False}).is_inpainting  # the flag is what marks it
    with pytest.raises(CwdmError, match="an inpainting task maps t1n"):
        Task("t1n", task.conditions[:1], task.modalities, inpaint=True)
    state = read_checkpoint(model)
    assert Task.from_dict(state["task"]) == task and state["model_config"]["in_channels"] == 24
    config = json.loads((model.parents[1] / "config.json").read_text())
    assert config["task"] == task.to_dict() and config["train"]["mask_weight"] == 3.0


@pytest.mark.parametrize("changes,message", [
    (dict(contr="t2f"), "--inpainting True fills a t1n"), (dict(conditions=("t2w",)), "drop --contr, --conditions"),
    (dict(inpainting=False, mask_weight=2.0), "--mask_weight .* needs --inpainting True"),
    (dict(mask_weight=0.0), "--mask_weight must be positive")])
def test_contradicting_flags_are_refused_before_anything_is_written(cases, tmp_path, changes, message):
    cfg = TrainConfig(**{**dict(data_dir=cases, inpainting=True, run_dir=tmp_path / "r", max_steps=1), **changes})
    with pytest.raises(CwdmError, match=message):
        train(cfg)
    assert not (tmp_path / "r").exists()
    assert TrainConfig(inpainting=True).run_folder().as_posix() == "runs/inpainting"


# --- the intensity convention -------------------------------------------------------------------------

def test_the_convention_maps_a_perfect_fill_back_to_the_truth(cases):
    name = NAMES[1]
    truth = _raw(cases / name / f"{name}-t1n.nii.gz")
    mask = _raw(cases / name / f"{name}-mask.nii.gz") == 1
    voided = _raw(cases / name / f"{name}-t1n-voided.nii.gz")
    lo, hi = voided_bounds(voided, mask)
    assert (lo, hi) == tuple(np.quantile(voided[~mask].astype(np.float64), [0.001, 0.999]))
    garbage = voided.copy()
    garbage[mask] = 1e6  # what the file holds inside the mask is never read
    conditions, bounds = network_inputs(garbage, mask)
    assert bounds == (lo, hi) and np.all(conditions[0][mask] == 0) and np.array_equal(conditions[1], mask)
    assert np.allclose(conditions[0][~mask], (np.clip(voided[~mask], lo, hi) - lo) / (hi - lo), atol=1e-7)
    target, cond, bounds = training_example(truth, mask)  # training: the same bounds for both images
    assert bounds == (lo, hi) and np.array_equal(cond, conditions)
    inside = truth[mask]
    assert lo <= inside.min() and inside.max() <= hi  # (so the truth survives the clip)
    out = paste_fill(voided, mask, to_unit(truth, bounds), bounds)
    assert out.dtype == np.float64 and np.array_equal(out[~mask], voided[~mask])
    np.testing.assert_allclose(out[mask], inside, rtol=0, atol=4 * np.finfo(np.float32).eps * hi)
    np.testing.assert_allclose(from_unit(target[mask], bounds), inside, rtol=0, atol=4 * np.finfo(np.float32).eps * hi)


def test_result_dtype_and_refused_scales():
    mask = np.zeros((4, 4, 4), bool)
    mask[1, 1, 1] = True
    assert result_dtype(np.ones((4, 4, 4), np.int16), mask) == np.float32
    assert result_dtype(np.ones((4, 4, 4), np.float16), mask) == np.float16
    big = np.full((4, 4, 4), 2 ** 24 + 1, np.int32)
    assert result_dtype(big, mask) == np.float64  # not exact in float32: the outside keeps its values
    with pytest.raises(CwdmError, match="constant outside the mask"):
        voided_bounds(np.ones((4, 4, 4)), mask)
    with pytest.raises(CwdmError, match="covers every voxel"):
        voided_bounds(np.ones((4, 4, 4)), np.ones((4, 4, 4), bool))
    nan = np.arange(64, dtype=np.float32).reshape(4, 4, 4)
    nan[0, 0, 0] = np.nan
    with pytest.raises(CwdmError, match="x.nii.gz: 1 non-finite voxels"):
        voided_bounds(nan, mask, "x.nii.gz")


# --- training -------------------------------------------------------------------------------------------

def test_keyed_order_is_the_data_order_with_each_samples_place():
    plain, keyed = iter(DataOrder(5, seed=3)), iter(KeyedDataOrder(5, seed=3))
    stream = [next(keyed) for _ in range(12)]
    assert [s[0] for s in stream] == [next(plain) for _ in range(12)]
    assert [s[1:] for s in stream] == [(e, p) for e in range(3) for p in range(5)][:12]
    resumed = KeyedDataOrder(5, seed=3)
    resumed.advance(7)
    it = iter(resumed)
    assert [next(it) for _ in range(5)] == stream[7:]
    for rank in (0, 1):  # two ranks: each place holds the case it holds on one rank (place 5 wraps: padding)
        it = iter(KeyedDataOrder(5, seed=3, rank=rank, world=2))
        for index, epoch, place in (next(it) for _ in range(3)):
            assert epoch == 0 and place % 2 == rank and index == stream[place % 5][0]


def test_training_items_draw_a_region_per_place(cases):
    dataset = InpaintingTrainingSet(training_cases(cases), divisor=4, seed=5)
    grid = grid_for((30, 30, 20), 4)
    target, cond = dataset[(0, 2, 7)]
    assert target.shape == (1, *grid.model) and cond.shape == (2, *grid.model)
    again_target, again_cond = dataset[(0, 2, 7)]
    assert torch.equal(again_cond, cond) and torch.equal(again_target, target)
    other = dataset[(0, 2, 8)][1]
    assert not torch.equal(other[1], cond[1])  # another place, another region
    mask = cond[1].bool()
    assert mask.any() and torch.all(cond[0][mask] == 0) and float(target.max()) == 1.0
    name = NAMES[0]
    tumour = _raw(cases / name / f"{name}-mask-unhealthy.nii.gz") > 0
    region = dataset.region(0, 2, 7)
    assert not (region & tumour).any() and np.array_equal(grid.to_model(region), mask.numpy())


def test_training_cases_of_a_synthesis_layout_folder(cases, tmp_path):
    shutil.copytree(cases.parent / "phantom", tmp_path / "brats")
    found = training_cases(tmp_path / "brats")
    assert [c.name for c in found] == NAMES and found[0].files["tumour"].name.endswith("-seg.nii.gz")
    (tmp_path / "brats" / NAMES[1] / f"{NAMES[1]}-seg.nii.gz").unlink()
    with pytest.raises(CwdmError, match=f"{NAMES[1]}: no {NAMES[1]}-seg.nii.gz .the tumour"):
        training_cases(tmp_path / "brats")


def test_region_weight_and_weighted_loss():
    mask = torch.zeros(1, 1, 4, 4, 4)
    mask[0, 0, 0, 0, 0] = 1  # one image voxel: its whole 2x2x2 block's subband voxel is weighted
    weight = region_weight(mask, 5.0)
    assert weight.shape == (1, 1, 2, 2, 2) and weight[0, 0, 0, 0, 0] == 5 and float(weight.sum()) == 5 + 7
    torch.manual_seed(0)
    net = lambda x, t: x[:, 8:16] * 0.5  # noqa: E731 - a fixed "network": half the first condition's subbands
    x0, cond, noise = torch.rand(1, 8, 2, 2, 2), torch.rand(1, 16, 2, 2, 2), torch.randn(1, 8, 2, 2, 2)
    t, sched = torch.tensor([10]), linear_schedule()
    plain, per, _ = training_loss(net, sched, x0, cond, t, noise)
    ones, _, _ = training_loss(net, sched, x0, cond, t, noise, weight=torch.ones_like(weight))
    weighted, per_w, _ = training_loss(net, sched, x0, cond, t, noise, weight=weight)
    err = (cond[:, :8] * 0.5 - x0) ** 2
    assert torch.equal(ones, plain) and torch.allclose(per, err.mean(dim=(0, 2, 3, 4)))
    assert torch.allclose(per_w, (err * weight).mean(dim=(0, 2, 3, 4))) and weighted > plain


def test_resume_draws_the_regions_of_the_uninterrupted_run(cases, tmp_path):
    def run(folder, steps, **kw):
        return train(TrainConfig(data_dir=cases, inpainting=True, mask_weight=2.0, run_dir=folder, max_steps=steps,
                                 num_workers=0, progress=False, lr=1e-3, save_interval=1000, model_channels=8,
                                 channel_mult=(1, 2), num_res_blocks=1, num_groups=4, **kw))

    assert run(tmp_path / "a", 5) == 0
    assert run(tmp_path / "b", 2) == 0  # 3 cases: the resumed part crosses an epoch boundary
    assert run(tmp_path / "b", 5, resume="auto") == 0
    a, b = read_checkpoint(checkpoint_files(tmp_path / "a")[-1]), read_checkpoint(checkpoint_files(tmp_path / "b")[-1])
    assert a["data_order"] == b["data_order"] == {"epoch": 1, "offset": 2}
    for key in ("model", "ema"):
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key
    assert run(tmp_path / "c", 5, seed=1) == 0  # another seed: other regions (and order), other weights
    c = read_checkpoint(checkpoint_files(tmp_path / "c")[-1])
    assert not all(torch.equal(a["model"][k], c["model"][k]) for k in a["model"])


# --- inpainting: cwdm sample and the API ------------------------------------------------------------------

def _check_result(result_path, case_folder, name, dtype):
    """The result of a case: the voided file's voxels (bits and dtype) outside the mask, a finite fill in
    the voided image's range inside; returns (result, mask)."""
    voided_img, result_img = nib.load(str(case_folder / f"{name}-t1n-voided.nii.gz")), nib.load(str(result_path))
    voided, result = np.asarray(voided_img.dataobj), np.asarray(result_img.dataobj)
    mask = _raw(case_folder / f"{name}-mask.nii.gz") == 1
    assert result.dtype == dtype and result_img.get_data_dtype() == dtype
    assert np.array_equal(result[~mask], voided[~mask].astype(dtype))
    if voided.dtype == dtype:  # the same bits, not only equal values
        assert result[~mask].tobytes() == voided[~mask].tobytes()
    lo, hi = voided_bounds(voided, mask)
    fill = result[mask]
    assert np.all(np.isfinite(fill)) and np.all((lo <= fill) & (fill <= hi)) and not np.array_equal(fill, voided[mask])
    assert np.allclose(result_img.affine, voided_img.affine)
    assert b"t1n from t1n-voided,mask" in result_img.header["descrip"].tobytes()
    return result, mask


def test_sample_inpaints_a_challenge_folder(cases, model, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli(["sample", "--data_dir", str(cases), "--model_path", str(model), "--output_dir", str(out), *FAST]) == 0
    err = capsys.readouterr().err
    assert "inpainting: t1n inside mask from t1n-voided" in err and f"wrote 3 cases to {out}" in err
    flat = sorted([f"{n}-t1n-inference.nii.gz" for n in NAMES] + ["cwdm_provenance.json"])  # as the challenge collects
    assert sorted(p.name for p in out.iterdir()) == flat
    for i, name in enumerate(NAMES):
        _check_result(out / f"{name}-t1n-inference.nii.gz", cases / name, name, np.float64 if i == 1 else np.float32)
    record = json.loads((out / "cwdm_provenance.json").read_text())
    assert sorted(record["cases"]) == sorted(f"{n}-t1n-inference.nii.gz" for n in NAMES)
    [run] = record["runs"].values()
    assert run["checkpoints"]["t1n"]["task"]["inpainting"] is True and run["settings"]["sampler"] == "ddim"
    before = {p.name: p.read_bytes() for p in out.glob("*.nii.gz")}
    assert cli(["sample", "--data_dir", str(cases), "--model_path", str(model), "--output_dir", str(out), *FAST]) == 0
    assert "wrote 0 cases" in capsys.readouterr().err
    assert before == {p.name: p.read_bytes() for p in out.glob("*.nii.gz")}
    assert cli(["sample", "--data_dir", str(cases), "--model_path", str(model), "--output_dir", str(out), *FAST,
                "--seed", "1"]) == 1  # other settings into the same folder: refused, as for synthesis
    assert "seed 0 -> 1" in capsys.readouterr().err


def test_ensemble_writes_a_std_map_zero_outside_the_mask_and_in_place(cases, model, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(cases, data)
    assert cli(["sample", "--data_dir", str(data), "--model_path", str(model), "--output_dir", str(data), *FAST,
                "--ensemble", "3"]) == 0
    assert "beside the inputs" in capsys.readouterr().err
    for i, name in enumerate(NAMES):
        result, mask = _check_result(data / name / f"{name}-t1n-inference.nii.gz", data / name, name,
                                     np.float64 if i == 1 else np.float32)
        std = _raw(data / name / f"{name}-t1n-inference_std.nii.gz")
        assert std.dtype == result.dtype and np.all(std[~mask] == 0) and np.all(std[mask] >= 0) and std[mask].max() > 0
    assert (data / "cwdm_provenance.json").is_file()
    assert [p.name for p in (data / NAMES[0]).iterdir() if p.name.startswith(".")] == []


def test_api_gives_what_sample_writes(cases, model, tmp_path):
    from cwdm import Inpainting

    out = tmp_path / "cli"
    assert cli(["sample", "--data_dir", str(cases), "--model_path", str(model), "--output_dir", str(out), *FAST]) == 0
    inp = Inpainting(model, sampler="ddim", steps=2, device="cpu")
    name = NAMES[1]
    single = inp.infer_single(t1n_voided=cases / name / f"{name}-t1n-voided.nii.gz",
                              mask=str(cases / name / f"{name}-mask.nii.gz"),
                              output_file=tmp_path / "api" / f"{name}-t1n-inference.nii.gz")
    assert _raw(single).tobytes() == _raw(out / single.name).tobytes()
    assert (tmp_path / "api" / "cwdm_provenance.json").is_file()
    written = inp.infer_batch(cases, tmp_path / "batch")
    assert sorted(written) == NAMES
    for case, path in written.items():
        assert path == tmp_path / "batch" / f"{case}-t1n-inference.nii.gz"
        assert _raw(path).tobytes() == _raw(out / path.name).tobytes()
    with pytest.raises(CwdmError, match="output_file= .*already exists"):
        inp.infer_single(t1n_voided=cases / name / f"{name}-t1n-voided.nii.gz",
                         mask=cases / name / f"{name}-mask.nii.gz", output_file=single)
    with pytest.raises(CwdmError, match="mask= .*file does not exist"):
        inp.infer_single(t1n_voided=cases / name / f"{name}-t1n-voided.nii.gz", mask=tmp_path / "nope.nii.gz",
                         output_file=tmp_path / "x.nii.gz")
    with pytest.raises(CwdmError, match="steps= must be in 1..1000"):
        Inpainting(model, sampler="ddim", steps=0)


def test_api_refuses_a_synthesis_checkpoint(tmp_path):
    from conftest import make_checkpoint

    from cwdm import Inpainting

    ckpt = make_checkpoint(tmp_path / "t2f.pt")
    with pytest.raises(CwdmError, match="not an inpainting checkpoint .it synthesizes t2f from t1n, t1c, t2w"):
        Inpainting(ckpt, device="cpu")


def _bad_cases(cases, root):
    """Copies of case 0 made unusable one way each (and case 0 itself, good): folder -> expected problem."""
    name = NAMES[0]
    src = cases / name
    voided, mask = _raw(src / f"{name}-t1n-voided.nii.gz"), _raw(src / f"{name}-mask.nii.gz")
    affine = nib.load(str(src / f"{name}-mask.nii.gz")).affine
    bad = {"B-shape": ("mask", mask[:-1], "shape 29x30x20 differs from the voided image"),
           "B-empty": ("mask", np.zeros_like(mask), "the mask is empty"),
           "B-values": ("mask", mask * 2, "a mask holds 0 and 1, found other values .2."),
           "B-nan": ("t1n-voided", np.where(mask == 1, 0, voided).astype(np.float32), "1 non-finite voxels")}
    bad["B-nan"][1][0, 0, 0] = np.nan
    shutil.copytree(src, root / name)
    for case, (part, array, _) in bad.items():
        folder = root / case
        folder.mkdir(parents=True)
        _save(voided, affine, folder / f"{case}-t1n-voided.nii.gz")
        _save(mask, affine, folder / f"{case}-mask.nii.gz")
        _save(array, affine, folder / f"{case}-{part}.nii.gz")
    return {case: (root / case / f"{case}-{part}.nii.gz", message) for case, (part, _, message) in bad.items()}


def test_bad_cases_are_one_line_each_and_nothing_is_written(cases, model, tmp_path, capsys):
    from cwdm import Inpainting

    bad = _bad_cases(cases, tmp_path / "data")
    out = tmp_path / "out"
    assert cli(["sample", "--data_dir", str(tmp_path / "data"), "--model_path", str(model), "--output_dir", str(out),
                *FAST]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert "Traceback" not in "\n".join(lines)
    for case, (path, message) in bad.items():
        [line] = [ln for ln in lines if ln.startswith(f"skipping {case}: ")]
        assert line.startswith(f"skipping {case}: {path}: ") and re.search(message, line)
        assert not (out / f"{case}-t1n-inference.nii.gz").exists()
    assert "4 unusable" in lines[-1] and (out / f"{NAMES[0]}-t1n-inference.nii.gz").is_file()
    inp = Inpainting(model, sampler="ddim", steps=2, device="cpu")
    for case, (path, message) in bad.items():
        with pytest.raises(CwdmError, match=message) as info:
            inp.infer_single(t1n_voided=tmp_path / "data" / case / f"{case}-t1n-voided.nii.gz",
                             mask=tmp_path / "data" / case / f"{case}-mask.nii.gz",
                             output_file=tmp_path / "api" / "r.nii.gz")
        assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)
    assert not (tmp_path / "api" / "r.nii.gz").exists()
    with pytest.raises(CwdmError, match="4 cases were not inpainted") as info:
        inp.infer_batch(tmp_path / "data", tmp_path / "batch")
    assert list(info.value.written) == [NAMES[0]]


def test_a_failed_write_leaves_no_part_of_the_case(cases, model, tmp_path, monkeypatch, capsys):
    import errno

    from cwdm.data import nifti_io

    real, calls = nifti_io.save_nifti_like, []

    def full_at_the_volume(array, reference, path, **kwargs):
        calls.append(path)
        if not str(path).endswith("_std.nii.gz"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(array, reference, path, **kwargs)

    monkeypatch.setattr(nifti_io, "save_nifti_like", full_at_the_volume)
    out = tmp_path / "out"
    assert cli(["sample", "--data_dir", str(cases), "--model_path", str(model), "--output_dir", str(out), *FAST,
                "--ensemble", "2"]) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"{out / NAMES[0]}-t1n-inference.nii.gz: cannot write (No space left on device" in last
    assert len(calls) == 2 and not list(out.glob("*.nii.gz"))  # the std map written first is removed again
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_auto_refuses_an_inpainting_checkpoint(model, make_brats_root, capsys):
    data = make_brats_root(cases=1, missing={"BraTS-GLI-00000-000": ["t1n"]})
    assert cli(["auto", "--data_dir", str(data), "--model", f"t1n={model}", *FAST]) == 1
    [line] = capsys.readouterr().err.strip().splitlines()[-1:]
    assert "an inpainting checkpoint completes no missing modality; inpaint cases" in line
    assert not (data / "BraTS-GLI-00000-000" / "BraTS-GLI-00000-000-t1n.nii.gz").exists()

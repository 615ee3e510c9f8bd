"""Tumour insertion: the task, the region, training items (exact resume), and insertion through
``cwdm sample`` and :class:`cwdm.api.Insertion` (outside the region bit-identical, the labels reach the
network, one-line errors).

The cases are phantom cases (30 x 30 x 20, t1n int16, seg with labels 1-3). The insertion cases hold a
t1n and either the case's seg, a ``-labels`` drawing (a ball away from the tumour; case 1's t1n as
float64 with fractional values) or a drawing and a ``-mask``.
"""

import json
import re
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch

from cwdm.cli import main as cli
from cwdm.data.insert_training import InsertionTrainingSet, insertion_cases
from cwdm.data.insertion import ball_drawing, label_channels, region_of, sampling_margin
from cwdm.data.inpaint_volumes import voided_bounds
from cwdm.data.preprocess import grid_for
from cwdm.errors import CwdmError
from cwdm.model.checkpoint import read_checkpoint
from cwdm.task import Task
from cwdm.training.config import TrainConfig
from cwdm.training.loop import train
from cwdm.training.state import checkpoint_files

TINY = ["--num_channels", "8", "--channel_mult", "1", "2", "--num_res_blocks", "1", "--num_groups", "4"]
FAST = ["--sampler", "ddim", "--sampling_steps", "2", "--progress", "False", "--num_workers", "0"]
NAMES = [f"BraTS-GLI-{i:05d}-000" for i in range(3)]
MARGIN = (1, 2)  # sampling dilates by (1 + 2) // 2 = 1


def _save(array, affine, path):
    nib.save(nib.Nifti1Image(array, affine), str(path))


def _raw(path):
    return np.asarray(nib.load(str(path)).dataobj)


def _free_centre(t1n, seg, radius):
    """The brain voxel farthest from the tumour and the brain's edge (a place for a drawn ball)."""
    from scipy import ndimage

    room = np.minimum(ndimage.distance_transform_edt(t1n != 0), ndimage.distance_transform_edt(seg == 0))
    return np.unravel_index(int(np.argmax(room)), room.shape)


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    from cwdm.phantom.sets import make_phantom_set

    root = tmp_path_factory.mktemp("insertion") / "phantom"
    make_phantom_set(root, 3, 0, downsample=8, progress=False)
    return root


@pytest.fixture(scope="module")
def cases(phantom):
    """Insertion cases: case 0 t1n + seg; case 1 float t1n + a drawn -labels; case 2 t1n + -labels + -mask."""
    root = phantom.parent / "cases"
    for i, name in enumerate(NAMES):
        img = nib.load(str(phantom / name / f"{name}-t1n.nii.gz"))
        t1n = np.asarray(img.dataobj)
        seg = _raw(phantom / name / f"{name}-seg.nii.gz")
        folder = root / name
        folder.mkdir(parents=True)
        if i == 1:
            t1n = t1n.astype(np.float64) * 0.37 + 0.125 * (t1n > 0)
        _save(t1n, img.affine, folder / f"{name}-t1n.nii.gz")
        if i == 0:
            _save(seg, img.affine, folder / f"{name}-seg.nii.gz")
            continue
        drawing = ball_drawing(t1n.shape, _free_centre(t1n, seg, 3), 3.0)
        _save(drawing, img.affine, folder / f"{name}-labels.nii.gz")
        if i == 2:
            _save(region_of(drawing, t1n != 0, 2).astype(np.uint8), img.affine, folder / f"{name}-mask.nii.gz")
    return root


@pytest.fixture(scope="module")
def model(phantom, tmp_path_factory):
    """A tiny insertion model trained 2 steps through the CLI."""
    run = tmp_path_factory.mktemp("run") / "ins"
    assert cli(["train", "--data_dir", str(phantom), "--insertion", "True", "--insertion_margin", *map(str, MARGIN),
                "--mask_weight", "2", "--run_dir", str(run), "--max_steps", "2", "--lr", "1e-3", "--ema_rate", "0",
                "--num_workers", "0", "--progress", "False", *TINY]) == 0
    return checkpoint_files(run)[-1]


def _region(folder, name):
    """The region cwdm rewrites in a case of ``cases``: its mask, else its labels dilated by the sampling margin."""
    t1n = _raw(folder / f"{name}-t1n.nii.gz")
    if (folder / f"{name}-mask.nii.gz").exists():
        return _raw(folder / f"{name}-mask.nii.gz") == 1
    labels = folder / f"{name}-labels.nii.gz"
    labels = _raw(labels if labels.exists() else folder / f"{name}-seg.nii.gz")
    return region_of(labels, t1n != 0, sampling_margin(MARGIN))


def _check_result(path, folder, name):
    """The t1n's voxels (bits and, for a float file, dtype) outside the region, a finite fill in its range inside."""
    t1n, result = _raw(folder / f"{name}-t1n.nii.gz"), _raw(path)
    region = _region(folder, name)
    assert region.any() and result.dtype == (t1n.dtype if t1n.dtype.kind == "f" else np.float32)
    assert result[~region].tobytes() == t1n[~region].astype(result.dtype).tobytes()
    lo, hi = voided_bounds(t1n, region)
    fill = result[region]
    assert np.all(np.isfinite(fill)) and np.all((lo <= fill) & (fill <= hi)) and not np.array_equal(fill, t1n[region])
    return result, region


# --- the task, the flags, the region ---------------------------------------------------------------------

def test_insertion_task_is_stored_and_read_back(model):
    task = Task.insertion(MARGIN)
    assert task.is_insertion and task.fills_region and not task.is_inpainting and task.in_channels == 48
    assert task.condition_names == ("t1n-voided", "mask", "labels")
    assert task.label_maps == {"mask": (1,), "labels": (1, 2, 3)}
    assert Task.from_dict(json.loads(json.dumps(task.to_dict()))) == task != Task.insertion((1, 3))
    assert not Task.inpainting().is_insertion and Task.inpainting().fills_region
    with pytest.raises(CwdmError, match="an insertion task maps t1n"):
        Task("t1n", task.conditions[:2], task.modalities, insert_margin=MARGIN)
    with pytest.raises(CwdmError, match="margin is two whole numbers"):
        Task.insertion((3, 1))
    state = read_checkpoint(model)
    assert Task.from_dict(state["task"]) == task and state["model_config"]["in_channels"] == 48
    config = json.loads((model.parents[1] / "config.json").read_text())
    assert config["task"]["insertion"] == {"margin": [1, 2]} and config["train"]["insertion_healthy"] == 0.2


@pytest.mark.parametrize("changes,message", [
    (dict(inpainting=True), "drop --inpainting"), (dict(contr="t2f"), "--insertion True writes a tumour"),
    (dict(insertion_margin=(3, 1)), "--insertion_margin takes two whole numbers"),
    (dict(insertion_healthy=1.5), "--insertion_healthy must be a fraction"),
    (dict(insertion=False, mask_weight=2.0), "needs --inpainting True or --insertion True")])
def test_contradicting_flags_are_refused_before_anything_is_written(phantom, tmp_path, changes, message):
    cfg = TrainConfig(**{**dict(data_dir=phantom, insertion=True, run_dir=tmp_path / "r", max_steps=1), **changes})
    with pytest.raises(CwdmError, match=message):
        train(cfg)
    assert not (tmp_path / "r").exists()
    assert TrainConfig(insertion=True).run_folder().as_posix() == "runs/insertion"


def test_resume_cannot_change_the_margin(model, phantom):
    run = model.parents[1]
    before = sorted(p.name for p in (run / "checkpoints").iterdir())
    with pytest.raises(CwdmError, match="trained with insertion_margin"):
        train(TrainConfig(data_dir=phantom, insertion=True, insertion_margin=(1, 3), run_dir=run, resume="auto"))
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before


def test_region_is_the_labels_dilated_in_the_brain():
    labels = np.zeros((9, 9, 9), np.uint8)
    labels[4, 4, 4] = 3
    labels[0, 0, 0] = 2  # outside the brain: kept, its neighbours only where they are brain
    brain = np.ones((9, 9, 9), bool)
    brain[:2] = False
    region = region_of(labels, brain, 2)
    x, y, z = np.meshgrid(*[np.arange(9)] * 3, indexing="ij")
    ball = (x - 4) ** 2 + (y - 4) ** 2 + (z - 4) ** 2 <= 4  # 33 voxels
    corner = (x == 2) & (y == 0) & (z == 0)  # the one brain voxel within 2 of (0, 0, 0)
    assert np.array_equal(region, ball | corner | (labels > 0)) and region.sum() == 35
    assert np.array_equal(region_of(labels, brain, 0), labels > 0) and not region_of(labels * 0, brain, 2).any()
    channels = label_channels(labels, region_of(labels, brain, 0) & brain)
    assert channels.shape == (3, 9, 9, 9) and channels[2, 4, 4, 4] == 1 and channels.sum() == 1  # (0,0,0) not in region


# --- training items ------------------------------------------------------------------------------------

def test_training_items_void_the_dilated_tumour_and_give_its_labels(phantom):
    cases = insertion_cases(phantom)
    grid = grid_for((30, 30, 20), 4)
    tumour_only = InsertionTrainingSet(cases, divisor=4, seed=5, margin=(0, 3), healthy=0.0)
    seg = _raw(phantom / NAMES[1] / f"{NAMES[1]}-seg.nii.gz").astype(np.int64)
    brain = _raw(phantom / NAMES[1] / f"{NAMES[1]}-t1n.nii.gz") != 0
    sizes = set()
    for position in range(8):
        region, labels = tumour_only.draw(1, 0, position)
        assert any(np.array_equal(region, region_of(seg, brain, m)) for m in range(4)) and np.array_equal(labels, seg)
        sizes.add(int(region.sum()))
    assert len(sizes) > 1  # the margin is drawn per item
    target, cond = tumour_only[(1, 2, 7)]
    assert target.shape == (1, *grid.model) and cond.shape == (5, *grid.model)
    region, labels = tumour_only.draw(1, 2, 7)
    assert torch.equal(cond[1], torch.from_numpy(grid.to_model(region.astype(np.float32))))
    for k, value in enumerate((1, 2, 3)):
        assert torch.equal(cond[2 + k], torch.from_numpy(grid.to_model((seg == value).astype(np.float32))))
    assert torch.all(cond[0][cond[1] == 1] == 0) and float(target.max()) == 1.0
    again = InsertionTrainingSet(cases, divisor=4, seed=5, margin=(0, 3), healthy=0.0)[(1, 2, 7)]  # a fresh reader
    assert torch.equal(again[0], target) and torch.equal(again[1], cond)
    healthy = InsertionTrainingSet(cases, divisor=4, seed=5, margin=(0, 3), healthy=1.0)
    region, labels = healthy.draw(1, 2, 7)
    assert region.any() and not (region & (seg > 0)).any() and not labels.any()
    assert not healthy[(1, 2, 7)][1][2:].any()
    mixed = InsertionTrainingSet(cases, divisor=4, seed=5, margin=(0, 3), healthy=0.5)
    kinds = {bool(mixed.draw(0, 0, p)[1].any()) for p in range(12)}
    assert kinds == {True, False}


def test_training_data_needs_labels(phantom, tmp_path):
    challenge = tmp_path / "challenge" / "B-1"
    challenge.mkdir(parents=True)
    for part in ("t1n", "mask-unhealthy", "t1n-voided", "mask"):
        shutil.copy(phantom / NAMES[0] / f"{NAMES[0]}-t1n.nii.gz", challenge / f"B-1-{part}.nii.gz")
    with pytest.raises(CwdmError, match="insertion needs the tumour's labels"):
        insertion_cases(tmp_path / "challenge")
    shutil.copytree(phantom, tmp_path / "brats")
    seg_path = tmp_path / "brats" / NAMES[2] / f"{NAMES[2]}-seg.nii.gz"
    seg = _raw(seg_path)
    seg[seg == 3] = 4  # BraTS 2021's enhancing label
    _save(seg, nib.load(str(seg_path)).affine, seg_path)
    with pytest.raises(CwdmError, match=rf"insertion training data: {seg_path}: labels \[4\] are not in the declared"):
        InsertionTrainingSet(insertion_cases(tmp_path / "brats"), divisor=4)


def test_resume_draws_the_regions_of_the_uninterrupted_run(phantom, tmp_path):
    def run(folder, steps, **kw):
        return train(TrainConfig(data_dir=phantom, insertion=True, insertion_margin=(0, 2), insertion_healthy=0.3,
                                 run_dir=folder, max_steps=steps, num_workers=0, progress=False, lr=1e-3,
                                 save_interval=1000, model_channels=8, channel_mult=(1, 2), num_res_blocks=1,
                                 num_groups=4, **kw))

    assert run(tmp_path / "a", 4) == 0
    assert run(tmp_path / "b", 2) == 0  # 3 cases: the resumed part crosses an epoch boundary
    assert run(tmp_path / "b", 4, resume="auto") == 0
    a, b = read_checkpoint(checkpoint_files(tmp_path / "a")[-1]), read_checkpoint(checkpoint_files(tmp_path / "b")[-1])
    assert a["data_order"] == b["data_order"]
    for key in ("model", "ema"):
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key


# --- insertion: cwdm sample and the API --------------------------------------------------------------------

def test_sample_inserts_into_a_folder(cases, model, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli(["sample", "--data_dir", str(cases), "--model_path", str(model), "--output_dir", str(out), *FAST]) == 0
    err = capsys.readouterr().err
    assert "insertion: t1n inside mask from t1n-voided and labels" in err and f"wrote 3 cases to {out}" in err
    for name in NAMES:
        path = out / name / f"{name}-t1n-inserted.nii.gz"
        _check_result(path, cases / name, name)
        assert np.allclose(nib.load(str(path)).affine, nib.load(str(cases / name / f"{name}-t1n.nii.gz")).affine)
    header = nib.load(str(out / NAMES[0] / f"{NAMES[0]}-t1n-inserted.nii.gz")).header["descrip"].tobytes()
    assert b"t1n from t1n,seg" in header
    [run] = json.loads((out / "cwdm_provenance.json").read_text())["runs"].values()
    assert run["checkpoints"]["t1n"]["task"]["insertion"] == {"margin": [1, 2]}
    before = {p: p.read_bytes() for p in out.rglob("*.nii.gz")}
    assert cli(["sample", "--data_dir", str(cases), "--model_path", str(model), "--output_dir", str(out), *FAST]) == 0
    assert "wrote 0 cases" in capsys.readouterr().err and before == {p: p.read_bytes() for p in out.rglob("*.nii.gz")}


def test_ensemble_in_place_writes_a_std_map_zero_outside_the_region(cases, model, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(cases, data)
    assert cli(["sample", "--data_dir", str(data), "--model_path", str(model), "--output_dir", str(data), *FAST,
                "--ensemble", "2"]) == 0
    assert "beside the inputs" in capsys.readouterr().err
    for name in NAMES:
        result, region = _check_result(data / name / f"{name}-t1n-inserted.nii.gz", data / name, name)
        std = _raw(data / name / f"{name}-t1n-inserted_std.nii.gz")
        assert std.dtype == result.dtype and np.all(std[~region] == 0) and std[region].max() > 0


def test_api_gives_what_sample_writes_and_the_labels_reach_the_network(cases, model, tmp_path):
    from cwdm import Insertion

    out = tmp_path / "cli"
    assert cli(["sample", "--data_dir", str(cases), "--model_path", str(model), "--output_dir", str(out), *FAST]) == 0
    ins = Insertion(model, sampler="ddim", steps=2, device="cpu")
    name, folder = NAMES[2], cases / NAMES[2]
    single = ins.infer_single(t1n=folder / f"{name}-t1n.nii.gz", labels=str(folder / f"{name}-labels.nii.gz"),
                              mask=folder / f"{name}-mask.nii.gz", output_file=tmp_path / "api" / "a.nii.gz")
    assert _raw(single).tobytes() == _raw(out / name / f"{name}-t1n-inserted.nii.gz").tobytes()
    written = ins.infer_batch(cases, tmp_path / "batch")
    assert sorted(written) == NAMES
    for case, path in written.items():
        assert path == tmp_path / "batch" / case / f"{case}-t1n-inserted.nii.gz"
        assert _raw(path).tobytes() == _raw(out / case / path.name).tobytes()
    # the same scan, region and noise (same case name), another drawing: another fill, the same outside
    drawing = _raw(folder / f"{name}-labels.nii.gz")
    other = np.where(drawing > 0, 1, 0).astype(np.uint8)  # all necrotic core
    _save(other, nib.load(str(folder / f"{name}-labels.nii.gz")).affine, tmp_path / "other-labels.nii.gz")
    second = ins.infer_single(t1n=folder / f"{name}-t1n.nii.gz", labels=tmp_path / "other-labels.nii.gz",
                              mask=folder / f"{name}-mask.nii.gz", output_file=tmp_path / "api" / "b.nii.gz")
    a, b = _raw(single), _raw(second)
    region = _raw(folder / f"{name}-mask.nii.gz") == 1
    assert np.array_equal(a[~region], b[~region]) and not np.allclose(a[region], b[region])
    _save(np.zeros_like(drawing), nib.load(str(folder / f"{name}-labels.nii.gz")).affine, tmp_path / "none.nii.gz")
    healthy = ins.infer_single(t1n=folder / f"{name}-t1n.nii.gz", labels=tmp_path / "none.nii.gz",  # a healthy fill
                               mask=folder / f"{name}-mask.nii.gz", output_file=tmp_path / "api" / "c.nii.gz")
    c = _raw(healthy)
    assert np.array_equal(c[~region], a[~region]) and not np.allclose(c[region], a[region])
    with pytest.raises(CwdmError, match="output_file= .*already exists"):
        ins.infer_single(t1n=folder / f"{name}-t1n.nii.gz", labels=folder / f"{name}-labels.nii.gz", output_file=single)
    with pytest.raises(CwdmError, match="labels= .*file does not exist"):
        ins.infer_single(t1n=folder / f"{name}-t1n.nii.gz", labels=tmp_path / "nope.nii.gz",
                         output_file=tmp_path / "x.nii.gz")


def test_other_checkpoints_are_refused(model, tmp_path, make_brats_root, capsys):
    from conftest import make_checkpoint

    from cwdm import Inpainting, Insertion

    with pytest.raises(CwdmError, match="not an insertion checkpoint .it synthesizes t2f from t1n, t1c, t2w"):
        Insertion(make_checkpoint(tmp_path / "t2f.pt"), device="cpu")
    with pytest.raises(CwdmError, match="not an inpainting checkpoint .it synthesizes insertion: t1n"):
        Inpainting(model, device="cpu")
    data = make_brats_root(cases=1, missing={"BraTS-GLI-00000-000": ["t1n"]})
    assert cli(["auto", "--data_dir", str(data), "--model", f"t1n={model}", *FAST]) == 1
    assert "an insertion checkpoint completes no missing modality" in capsys.readouterr().err


def _bad_cases(cases, root):
    """Copies of case 1 made unusable one way each (and case 1 itself, good): case -> (file, expected problem)."""
    name = NAMES[1]
    src = cases / name
    labels = _raw(src / f"{name}-labels.nii.gz")
    affine = nib.load(str(src / f"{name}-labels.nii.gz")).affine
    region = region_of(labels, _raw(src / f"{name}-t1n.nii.gz") != 0, 1)
    bad = {"B-values": ("labels", np.where(labels == 3, 4, labels), r"labels \[4\] are not in the declared set"),
           "B-shape": ("labels", labels[:-1], "shape 29x30x20 differs from the t1n B-shape-t1n.nii.gz"),
           "B-empty": ("labels", np.zeros_like(labels), "no voxel is labelled 1, 2 or 3: nothing to insert"),
           "B-mask": ("mask", (region & (labels != 2)).astype(np.uint8),
                      "labelled voxels of B-mask-labels.nii.gz lie outside"),
           "B-maskvalues": ("mask", region.astype(np.uint8) * 2, r"a mask holds 0 and 1, found other values \(2\)")}
    shutil.copytree(src, root / name)
    for case, (part, array, _) in bad.items():
        folder = root / case
        folder.mkdir(parents=True)
        shutil.copy(src / f"{name}-t1n.nii.gz", folder / f"{case}-t1n.nii.gz")
        _save(labels, affine, folder / f"{case}-labels.nii.gz")
        _save(array, affine, folder / f"{case}-{part}.nii.gz")
    return {case: (root / case / f"{case}-{part}.nii.gz", message) for case, (part, _, message) in bad.items()}


def test_bad_cases_are_one_line_each_and_nothing_is_written(cases, model, tmp_path, capsys):
    from cwdm import Insertion

    bad = _bad_cases(cases, tmp_path / "data")
    inputs = {p: p.read_bytes() for p in (tmp_path / "data").rglob("*.nii.gz")}
    out = tmp_path / "out"
    assert cli(["sample", "--data_dir", str(tmp_path / "data"), "--model_path", str(model), "--output_dir", str(out),
                *FAST]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert "Traceback" not in "\n".join(lines)
    for case, (path, message) in bad.items():
        [line] = [ln for ln in lines if ln.startswith(f"skipping {case}: ")]
        assert line.startswith(f"skipping {case}: {path}: ")
        assert re.search(message, line), line
        assert not (out / case).exists()
    assert "5 unusable" in lines[-1] and (out / NAMES[1] / f"{NAMES[1]}-t1n-inserted.nii.gz").is_file()
    ins = Insertion(model, sampler="ddim", steps=2, device="cpu")
    for case, (path, message) in bad.items():
        folder = tmp_path / "data" / case
        mask = folder / f"{case}-mask.nii.gz"
        with pytest.raises(CwdmError, match=message) as info:
            ins.infer_single(t1n=folder / f"{case}-t1n.nii.gz", labels=folder / f"{case}-labels.nii.gz",
                             mask=mask if mask.exists() else None, output_file=tmp_path / "api" / "r.nii.gz")
        assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)
    assert not (tmp_path / "api" / "r.nii.gz").exists()
    assert inputs == {p: p.read_bytes() for p in (tmp_path / "data").rglob("*.nii.gz")}  # inputs untouched


def test_a_distilled_insertion_student_samples_with_its_recorded_sampler(phantom, cases, model, tmp_path):
    from cwdm import Insertion
    from cwdm.commands.distill import DistillConfig, run as distill

    assert distill(DistillConfig(teacher=model, data_dir=phantom, run_dir=tmp_path / "s", student_steps=1,
                                 teacher_steps=2, max_steps=1, num_workers=0, progress=False, tensorboard=False)) == 0
    student = checkpoint_files(tmp_path / "s")[-1]
    chosen = Insertion(student, device="cpu").pipeline.options
    assert (chosen.sampler, chosen.steps) == ("ddim_trailing", 1)
    asked = Insertion(student, sampler="ddim", steps=3, device="cpu").pipeline.options
    assert (asked.sampler, asked.steps) == ("ddim", 3)  # an explicit choice wins
    name, folder = NAMES[2], cases / NAMES[2]
    out = Insertion(student, device="cpu").infer_single(
        t1n=folder / f"{name}-t1n.nii.gz", labels=folder / f"{name}-labels.nii.gz",
        mask=folder / f"{name}-mask.nii.gz", output_file=tmp_path / "o" / "a.nii.gz")
    _check_result(out, folder, name)

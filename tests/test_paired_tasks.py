"""Paired tasks other than BraSyn, through the command line: any modality names, one to three
conditions, label-map conditions (mask-conditioned generation, edited masks), bad label maps."""

import json
import re

import nibabel as nib
import numpy as np
import pytest
from conftest import FAST, write_brats_root

from cwdm.data.cases import discover_cases
from cwdm.model.checkpoint import read_checkpoint
from cwdm.cli import main as cli
from cwdm.data.datasets import InferenceDataset
from cwdm.errors import CwdmError
from cwdm.data.masks import brain_of, grow_tumour, move_tumour, remove_tumour, write_brain_masks, write_edited_case
from cwdm.data.nifti_io import load_nifti
from cwdm.task import Task

TINY = ["--num_channels", "8", "--channel_mult", "1", "2", "--num_res_blocks", "1", "--num_groups", "4"]
QUIET = ["--num_workers", "0", "--progress", "False", "--tensorboard", "False"]
SHAPE = (24, 32, 16)  # 96 x 128 x 64 at downsample 4: not a cube


def _write_labels(root, name: str, values_of) -> None:
    """Write ``<case>-<name>.nii.gz`` (uint8) into every case of ``root``: ``values_of(brain)``."""
    for case in sorted(p for p in root.iterdir() if p.is_dir()):
        first = sorted(case.glob("*.nii.gz"))[0]
        img = nib.load(str(first))
        brain = np.asarray(img.dataobj) != 0
        nib.save(nib.Nifti1Image(values_of(brain).astype(np.uint8), img.affine), str(case / f"{case.name}-{name}.nii.gz"))


def _train(data, run, *flags) -> int:
    return cli(["train", "--data_dir", str(data), "--run_dir", str(run), "--max_steps", "1", *TINY, *QUIET, *flags])


def _checkpoint(run):
    return sorted((run / "checkpoints").glob("*.pt"))[-1]


@pytest.mark.parametrize("modalities,flags,task,shape,in_channels", [
    (["ct", "mr"], ["--contr", "mr"], Task.default("mr", ("ct", "mr")), (22, 30, 14), 16),  # CT -> MR
    (["mr", "pet"], ["--contr", "pet"], Task.default("pet", ("mr", "pet")), SHAPE, 16),      # MR -> PET
    (["ct", "mr", "pet"], ["--contr", "pet"], Task.default("pet", ("ct", "mr", "pet")), SHAPE, 24),
    (["ct", "mr", "us", "pet"], ["--contr", "pet", "--conditions", "mr", "us", "ct"],
     Task.default("pet", ("ct", "mr", "us", "pet"), ["mr", "us", "ct"]), SHAPE, 32),
    (["ct", "mr", "pet", "organs"], ["--contr", "pet", "--conditions", "ct", "mr", "organs",
                                     "--label_maps", "organs=1,2"],  # a label map of 2 labels: 2 channels
     Task.default("pet", ("ct", "mr", "pet", "organs"), ["ct", "mr", "organs"], {"organs": (1, 2)}), SHAPE, 40),
])
def test_any_names_one_two_three_conditions(tmp_path, capsys, modalities, flags, task, shape, in_channels):
    images = [m for m in modalities if m != "organs"]
    data = write_brats_root(tmp_path / "data", cases=2, shape=shape, modalities=images, seg=False)
    if "organs" in modalities:
        _write_labels(data, "organs", lambda brain: brain * (1 + (np.indices(brain.shape)[0] > shape[0] // 2)))
    run = tmp_path / "run"
    assert _train(data, run, "--modalities", *modalities, *flags) == 0
    assert Task.from_dict(json.loads((run / "config.json").read_text())["task"]) == task
    ckpt = _checkpoint(run)
    assert read_checkpoint(ckpt)["model_config"]["in_channels"] == task.in_channels == in_channels
    out = tmp_path / "out"
    capsys.readouterr()
    assert cli(["sample", "--data_dir", str(data), "--model_path", str(ckpt), "--output_dir", str(out),
                "--num_groups", "4", *FAST]) == 0  # the task (names, conditions) comes from the checkpoint
    evaluate = capsys.readouterr().err.strip().splitlines()[-1].partition("next: ")[2]
    assert evaluate == f"cwdm evaluate --pred_dir {out} --ref_dir {data} --modalities {' '.join(modalities)}"
    assert cli(evaluate.split()[1:] + ["--no-montage", "--progress", "False"]) == 0  # the next step works
    assert len(json.loads((out / "evaluation" / "summary.json").read_text())["problems"]) == 0
    for case in discover_cases(data, modalities):
        result = out / case.name / f"{case.prefix}-{task.target}.nii.gz"
        vol, _ = load_nifti(result)
        ref = nib.load(str(case.files[task.condition_names[0]]))
        assert vol.shape == shape and np.allclose(nib.load(str(result)).affine, ref.affine)
        assert np.all(vol[np.asarray(ref.dataobj) == 0] == 0)  # zero outside the first image condition


@pytest.fixture
def mask_data(tmp_path):
    """Three 24x32x16 BraTS-layout cases with seg (one label per case) and a brain mask each."""
    data = write_brats_root(tmp_path / "data", cases=3, shape=SHAPE)
    write_brain_masks(data)
    return data


MASK_ONLY = ["--contr", "t1c", "--modalities", "t1n", "t1c", "t2w", "t2f", "brain", "--conditions", "seg", "brain",
             "--label_maps", "seg=1,2,3", "--label_maps", "brain=1"]


def test_label_conditioned_model_synthesizes_an_edited_mask(tmp_path, mask_data):
    run = tmp_path / "run"
    assert _train(mask_data, run, *MASK_ONLY, "--max_steps", "3", "--lr", "1e-3", "--ema_rate", "0") == 0
    ckpt = _checkpoint(run)
    task = Task.from_dict(read_checkpoint(ckpt)["task"])
    assert task.label_maps == {"seg": (1, 2, 3), "brain": (1,)} and task.in_channels == 8 * (1 + 4)
    case = discover_cases(mask_data, task.modalities)[0]
    seg, brain = load_nifti(case.seg)[0], brain_of(case)
    results = {}
    for edit, labels in (("original", seg), ("removed", remove_tumour(seg)), ("grown", grow_tumour(seg, 2, brain))):
        # each edit is a folder of its own holding the same case name, so every synthesis draws the same noise
        folder = write_edited_case(case, labels, tmp_path / edit, case.name, keep=["brain"])
        assert sorted(p.name for p in folder.iterdir()) == [f"{case.name}-brain.nii.gz", f"{case.name}-seg.nii.gz"]
        out = tmp_path / f"out_{edit}"
        assert cli(["sample", "--data_dir", str(tmp_path / edit), "--model_path", str(ckpt), "--output_dir", str(out),
                    "--num_groups", "4", *FAST]) == 0
        results[edit] = load_nifti(out / case.name / f"{case.name}-t1c.nii.gz")[0]
    for edit in ("removed", "grown"):
        assert results[edit].shape == SHAPE and not np.allclose(results[edit], results["original"], atol=1e-4)
    for vol in results.values():  # label maps only: zero where every label map is background (outside the brain)
        assert np.all(vol[~brain] == 0) and np.any(vol[brain] != 0)


def test_post_processing_mask_of_label_tasks(mask_data):
    modalities = ("t1n", "t1c", "t2w", "t2f", "brain")
    cases = discover_cases(mask_data, modalities)
    seg_first = Task.default("t1c", modalities, ["seg", "t1n"], {"seg": (1, 2, 3)})
    item = InferenceDataset(cases[:1], seg_first, divisor=4)[0]
    assert item["first_input"].equal(item["conditions"][3])  # t1n, after the three seg channels
    masks_only = Task.default("t1c", modalities, ["seg", "brain"],
                              {"seg": (1, 2, 3), "brain": (1,)})
    item = InferenceDataset(cases[:1], masks_only, divisor=4)[0]
    assert item["first_input"].equal((item["conditions"].amax(0) > 0).float())
    assert item["first_input"].equal(item["conditions"][3])  # the brain mask holds the tumour
    assert item["reference"].endswith("-seg.nii.gz")


def _break_seg(case, value) -> None:
    img = nib.load(str(case.seg))
    seg = np.asarray(img.dataobj).astype(np.float32)
    if value == "shape":
        seg = seg[:, :-2]
    else:
        seg[seg > 0] = value
    nib.save(nib.Nifti1Image(seg, img.affine), str(case.seg))


@pytest.mark.parametrize("value,message", [(4, r"labels \[4\] are not in the declared set \[1, 2, 3\]"),
                                           (2.5, "a label map must hold whole numbers"),
                                           ("shape", r"shape 24x30x16 differs from .*-t1n.nii.gz \(24x32x16\)")])
def test_bad_label_maps_are_refused_through_the_cli(tmp_path, mask_data, capsys, value, message):
    case = discover_cases(mask_data)[1]
    _break_seg(case, value)
    capsys.readouterr()
    assert _train(mask_data, tmp_path / "run", "--contr", "t1c", "--conditions", "seg", "t1n",
                  "--label_maps", "seg=1,2,3") == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(case.seg) in err
    assert err.startswith("cwdm train: error: 1 of 3 cases are unusable: ")
    assert re.search(message, err)
    assert not (tmp_path / "run" / "checkpoints").exists()  # refused before any training
    assert cli(["check", str(mask_data), "--label_maps", "seg=1,2,3"]) == 1
    assert str(case.seg) in capsys.readouterr().out


def test_sample_skips_a_case_with_a_bad_label_map(tmp_path, mask_data, capsys):
    run = tmp_path / "run"
    assert _train(mask_data, run, "--contr", "t1c", "--conditions", "seg", "t1n", "--label_maps", "seg=1,2,3") == 0
    bad = discover_cases(mask_data)[0]
    _break_seg(bad, 7)
    capsys.readouterr()
    out = tmp_path / "out"
    assert cli(["sample", "--data_dir", str(mask_data), "--model_path", str(_checkpoint(run)), "--output_dir",
                str(out), "--num_groups", "4", *FAST]) == 1
    err = capsys.readouterr().err
    assert f"skipping {bad.name}: {bad.seg}: labels [7] are not in the declared set [1, 2, 3]" in err
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == [c.name for c in discover_cases(mask_data)[1:]]


def test_exported_label_task_samples_like_its_training_checkpoint(tmp_path, mask_data):
    run = tmp_path / "run"
    assert _train(mask_data, run, "--contr", "t1c", "--conditions", "seg", "t1n", "--label_maps", "seg=1,2,3") == 0
    assert cli(["export", str(run), str(tmp_path / "m.pt")]) == 0  # keeps the task (see cwdm.commands.export)
    assert Task.from_dict(read_checkpoint(tmp_path / "m.pt")["task"]).label_maps == {"seg": (1, 2, 3)}
    for name, model in (("ckpt", _checkpoint(run)), ("export", tmp_path / "m.pt")):
        assert cli(["sample", "--data_dir", str(mask_data), "--model_path", str(model), "--output_dir",
                    str(tmp_path / name), "--num_groups", "4", *FAST]) == 0
    case = discover_cases(mask_data)[0]
    written = [load_nifti(tmp_path / name / case.name / f"{case.prefix}-t1c.nii.gz")[0] for name in ("ckpt", "export")]
    assert np.array_equal(*written)


def test_worker_errors_keep_their_one_line_message():
    text = ("Caught CwdmError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
            "  File \"x.py\", line 1, in f\n    raise CwdmError(...)\ncwdm.errors.CwdmError: a/b-seg.nii.gz: labels [4] "
            "are not in the declared set [1, 2, 3] (0 = background)\n")
    assert str(CwdmError(message=text)) == "a/b-seg.nii.gz: labels [4] are not in the declared set [1, 2, 3] (0 = background)"
    assert str(CwdmError("two\nlines")) == "two lines"


def test_tumour_edits_stay_in_the_brain():
    brain = np.zeros((12, 10, 8), dtype=bool)
    brain[1:11, 1:9, 1:7] = True
    seg = np.zeros((12, 10, 8), dtype=np.uint8)
    seg[2:4, 3:5, 3:5] = 3
    seg[2, 3, 3] = 1
    moved = move_tumour(seg, (6, 0, 0), brain)
    assert moved[8, 3, 3] == 1 and (moved == 3).sum() == 7 and (moved > 0).sum() == 8
    assert (move_tumour(seg, (-2, 0, 0), brain) > 0).sum() == 4  # the part pushed out of the brain is dropped
    grown = grow_tumour(seg, 1, brain)
    assert np.array_equal(grown[seg > 0], seg[seg > 0]) and set(np.unique(grown[(grown > 0) & (seg == 0)])) == {2}
    assert not np.any(grown[~brain]) and (grown > 0).sum() > (seg > 0).sum()
    assert not remove_tumour(seg).any()
    with pytest.raises(ValueError, match="whole numbers"):
        move_tumour(seg + 0.5, (1, 0, 0))

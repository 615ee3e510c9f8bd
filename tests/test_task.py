"""The task spec (cwdm/task.py) and the places that read it: checkpoints, datasets, train, sample, auto."""

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import FAST, make_checkpoint

from cwdm.naming import MODALITIES
from cwdm.model.checkpoint import checkpoint_dict, load_model, read_checkpoint
from cwdm.cli import main as cli
from cwdm.data.datasets import InferenceDataset, PairedVolumeDataset
from cwdm.data.cases import discover_cases
from cwdm.errors import CwdmError
from cwdm.task import IMAGE, LABEL, Condition, Task, check_network, parse_labels
from cwdm.model.unet import UNet, UNetConfig

TINY_FLAGS = ["--num_channels", "8", "--channel_mult", "1", "2", "--num_res_blocks", "1", "--num_groups", "4"]


@pytest.mark.parametrize("target,conds", [("t1n", ("t1c", "t2w", "t2f")), ("t1c", ("t1n", "t2w", "t2f")),
                                          ("t2w", ("t1n", "t1c", "t2f")), ("t2f", ("t1n", "t1c", "t2w"))])
def test_default_task_is_the_released_layout(target, conds):
    task = Task.default(target)
    assert task.condition_names == conds and task.modalities == MODALITIES
    assert task.in_channels == 32 and task.condition_channels == 3 and task.is_default
    assert task.describe() == f"{target} from {', '.join(conds)}"
    assert Task.from_dict(json.loads(json.dumps(task.to_dict()))) == task


@pytest.mark.parametrize("conditions,labels,channels", [
    (["t1n"], {}, 1),
    (["t2w", "t1n"], {}, 2),
    (["seg"], {"seg": (1, 2, 3)}, 3),
    (["seg", "t1n"], {"seg": (1, 2, 3)}, 4),
    (["t1n", "t2w", "t2f", "seg"], {"seg": (2,)}, 4),
])
def test_chosen_conditions_and_label_maps(conditions, labels, channels):
    task = Task.default("t1c", MODALITIES, conditions, labels)
    assert list(task.condition_names) == conditions and task.condition_channels == channels
    assert task.in_channels == 8 * (1 + channels) and not task.is_default
    kinds = [LABEL if c in labels else IMAGE for c in conditions]
    assert [c.kind for c in task.conditions] == kinds
    assert Task.from_dict(task.to_dict()) == task


def test_non_brats_names():
    task = Task.default("ct", ("mr", "ct"))
    assert task.condition_names == ("mr",) and task.in_channels == 16 and task.is_default


@pytest.mark.parametrize("make,message", [
    (lambda: Task.default("flair"), "target 'flair' is not one of the modalities"),
    (lambda: Task.default("t1c", conditions=["t1c", "t1n"]), "the target t1c is also a condition"),
    (lambda: Task.default("t1c", conditions=["t1n", "t1n"]), "repeat a name"),
    (lambda: Task.default("t1c", conditions=["pd"]), "image condition pd is not one of the modalities"),
    (lambda: Task.default("t1c", conditions=["t1n"], labels={"seg": (1,)}), "label maps .'seg'. are not among"),
    (lambda: Task.default("t1c", conditions=["seg"], labels={"seg": (0, 1)}), "distinct non-zero labels"),
    (lambda: Task("t1c", (Condition("t1n", "mask"),)), "unknown kind 'mask'"),
    (lambda: Task("t1c", ()), "no conditions"),
    (lambda: Task.from_dict({"target": "t1c"}, "x.pt"), "x.pt: malformed task spec"),
])
def test_invalid_tasks_are_one_line_errors(make, message):
    with pytest.raises(CwdmError, match=message) as err:
        make()
    assert "\n" not in str(err.value)


def test_parse_labels():
    assert parse_labels(["seg=1,2,4", "mask=1"]) == {"seg": (1, 2, 4), "mask": (1,)}
    for bad in ("seg", "seg=", "seg=a", "=1"):
        with pytest.raises(CwdmError, match="expected NAME=L1,L2"):
            parse_labels([bad])


def test_check_network_names_both_sides():
    check_network(Task.default("t1c"), 32, "x")
    with pytest.raises(CwdmError, match=r"x: the network takes 16 input channels \(1 condition volumes\), but the "
                                          r"task t1c from t1n, t2w, t2f gives 32 \(3\)"):
        check_network(Task.default("t1c"), 16, "x")


def _tiny(in_channels: int) -> tuple:
    cfg = UNetConfig(model_channels=8, channel_mult=(1, 2), num_res_blocks=1, num_groups=4, in_channels=in_channels)
    return cfg, UNet(cfg).state_dict()


def test_checkpoint_stores_the_task_and_reads_older_files(tmp_path):
    task = Task.default("t1c", MODALITIES, ["seg", "t1n"], {"seg": (1, 2, 3)})
    cfg, sd = _tiny(task.in_channels)
    torch.save(checkpoint_dict(cfg, sd, task=task, step=1), tmp_path / "new.pt")
    assert load_model(tmp_path / "new.pt").task == task
    old = checkpoint_dict(*_tiny(32), step=1)
    old.update(task=None, target="t2w", modalities=list(MODALITIES))  # written before the task spec existed
    torch.save(old, tmp_path / "old.pt")
    assert load_model(tmp_path / "old.pt").task == Task.default("t2w")
    with pytest.raises(CwdmError, match="checkpoint: the network takes 32 input channels"):
        checkpoint_dict(*_tiny(32), task=task)


def _write_seg(case, values: np.ndarray) -> None:
    img = nib.load(str(case.files["t1n"]))
    nib.save(nib.Nifti1Image(values.astype(np.float32), img.affine), str(case.seg))


def test_label_map_conditions_are_one_hot_and_never_scaled(make_brats_root):
    root = make_brats_root(cases=1, shape=(16, 16, 16))
    case = discover_cases(root)[0]
    seg = np.zeros((16, 16, 16))
    seg[2:5, 3:6, 4:7], seg[8:10, 8:10, 8:10] = 3, 1
    _write_seg(case, seg)
    task = Task.default("t1c", MODALITIES, ["t1n", "seg"], {"seg": (1, 2, 3)})
    target, cond = PairedVolumeDataset([case], task, divisor=8)[0]
    assert cond.shape == (4, 16, 16, 16) and target.shape == (1, 16, 16, 16)
    for k, label in enumerate((1, 2, 3)):
        assert torch.equal(cond[1 + k], torch.from_numpy((seg == label).astype(np.float32)))
    assert float(cond[0].max()) == 1.0  # the image condition is clipped and scaled as before
    item = InferenceDataset([case], task, divisor=8)[0]
    assert item["reference"] == str(case.files["t1n"]) and torch.equal(item["conditions"], cond)


@pytest.mark.parametrize("value,message", [(4, r"labels \[4\] are not in the declared set \[1, 2, 3\]"),
                                           (1.5, "must hold whole numbers")])
def test_bad_label_maps_are_refused_in_one_line(make_brats_root, value, message):
    root = make_brats_root(cases=1, shape=(16, 16, 16))
    case = discover_cases(root)[0]
    seg = np.zeros((16, 16, 16))
    seg[4:6, 4:6, 4:6] = value
    _write_seg(case, seg)
    task = Task.default("t1c", MODALITIES, ["seg"], {"seg": (1, 2, 3)})
    with pytest.raises(CwdmError, match=message) as err:
        PairedVolumeDataset([case], task, divisor=8)[0]
    assert str(case.seg) in str(err.value) and "\n" not in str(err.value)


def test_missing_label_map_is_a_missing_required_modality(make_brats_root):
    root = make_brats_root(cases=1, shape=(16, 16, 16), seg=False)
    task = Task.default("t1c", MODALITIES, ["seg"], {"seg": (1, 2, 3)})
    with pytest.raises(CwdmError, match="missing required modality seg"):
        PairedVolumeDataset(discover_cases(root), task, divisor=8)


def test_train_with_chosen_conditions_then_sample(make_brats_root, tmp_path):
    data = make_brats_root(cases=2, shape=(16, 16, 16))
    run = tmp_path / "run"
    assert cli(["train", "--data_dir", str(data), "--contr", "t1c", "--conditions", "t2w", "t1n",
                "--run_dir", str(run), "--max_steps", "1", "--num_workers", "0", "--progress", "False",
                "--tensorboard", "False", *TINY_FLAGS]) == 0
    stored = json.loads((run / "config.json").read_text())["task"]
    assert Task.from_dict(stored) == Task.default("t1c", MODALITIES, ["t2w", "t1n"])
    ckpt = sorted((run / "checkpoints").glob("*.pt"))[-1]
    assert read_checkpoint(ckpt)["model_config"]["in_channels"] == 24
    out = tmp_path / "out"
    assert cli(["sample", "--data_dir", str(data), "--model_path", str(ckpt), "--output_dir", str(out), *FAST]) == 0
    assert len(list(out.glob("*/*-t1c.nii.gz"))) == 2
    # a resume may not change the task
    assert cli(["train", "--data_dir", str(data), "--contr", "t1c", "--conditions", "t1n", "--run_dir", str(run),
                "--resume", "auto", "--max_steps", "2", "--num_workers", "0", "--progress", "False"]) == 1


def test_auto_takes_models_by_modality(make_brats_root, tmp_path, capsys):
    data = make_brats_root(cases=2, shape=(16, 16, 16), missing={"BraTS-GLI-00000-000": ["t2f"],
                                                               "BraTS-GLI-00001-000": ["t1n"]})
    t2f = make_checkpoint(tmp_path / "any_name.pt", target="t2f")
    t1n = make_checkpoint(tmp_path / "other.pt", target="t1n", seed=1)
    out = tmp_path / "out"
    assert cli(["auto", "--data_dir", str(data), "--output_dir", str(out), "--model", f"t2f={t2f}",
                "--model", str(t1n), *FAST]) == 0  # the second one's modality is read from its task
    assert (out / "BraTS-GLI-00000-000" / "BraTS-GLI-00000-000-t2f.nii.gz").is_file()
    assert (out / "BraTS-GLI-00001-000" / "BraTS-GLI-00001-000-t1n.nii.gz").is_file()
    assert cli(["auto", "--data_dir", str(data), "--output_dir", str(tmp_path / "o2"),
                "--model", f"t1n={t2f}", *FAST]) == 1
    assert "trained to synthesize t2f, not t1n" in capsys.readouterr().err
    assert cli(["auto", "--data_dir", str(data), "--model", f"t2f={t2f}", "--model", f"t2f={t1n}", *FAST]) == 1
    assert "two checkpoints for t2f" in capsys.readouterr().err

"""``cwdm export``: a bare state_dict only when it describes the network completely (cwdm/commands/export.py)."""

import torch

from cwdm.model.checkpoint import checkpoint_dict, load_model, read_checkpoint
from cwdm.cli import main as cli
from cwdm.task import Task
from cwdm.model.unet import UNet, UNetConfig
from conftest import FAST


def training_checkpoint(path, num_groups, channels=8):
    """A cwdm training checkpoint (raw and EMA weights, step 7) of a small t2f network."""
    torch.manual_seed(0)
    cfg = UNetConfig(model_channels=channels, channel_mult=(1, 2), num_res_blocks=1, num_groups=num_groups,
                     in_channels=32)
    model = UNet(cfg)
    ema = {k: v + 0.5 for k, v in model.state_dict().items()}
    torch.save(checkpoint_dict(cfg, model.state_dict(), ema, task=Task.default("t2f"), step=7,
                               optimizer={"state": {}}), path)
    return path, ema


def test_auto_keeps_num_groups_other_than_released(tmp_path, capsys, make_brats_root):
    ckpt, ema = training_checkpoint(tmp_path / "ckpt.pt", num_groups=4)
    assert cli(["export", str(ckpt), str(tmp_path / "brats_t2f.pt")]) == 0
    line = capsys.readouterr().out.strip()
    assert "cwdm checkpoint" in line and "num_groups 4 is not the released 32" in line and "--num_groups" not in \
        line.rpartition("next: ")[2]
    obj = read_checkpoint(tmp_path / "brats_t2f.pt")
    assert obj["model_config"]["num_groups"] == 4 and obj["step"] == 7 and "optimizer" not in obj
    loaded = load_model(tmp_path / "brats_t2f.pt")  # no network flags at all
    assert loaded.config.num_groups == 4 and loaded.target == "t2f"
    assert all(torch.equal(loaded.model.state_dict()[k], v) for k, v in ema.items())
    # sample and auto (--models_dir, by its name) take it without --num_groups
    data = make_brats_root(cases=1)
    assert cli(["sample", "--data_dir", str(data), "--model_path", str(tmp_path / "brats_t2f.pt"),
                "--output_dir", str(tmp_path / "s"), *FAST]) == 0
    assert (tmp_path / "s" / "BraTS-GLI-00000-000" / "BraTS-GLI-00000-000-t2f.nii.gz").is_file()
    data = make_brats_root(cases=1, missing={"BraTS-GLI-00000-000": ["t2f"]})
    assert cli(["auto", "--data_dir", str(data), "--models_dir", str(tmp_path), "--output_dir",
                str(tmp_path / "a"), *FAST]) == 0
    assert (tmp_path / "a" / "BraTS-GLI-00000-000" / "BraTS-GLI-00000-000-t2f.nii.gz").is_file()


def test_state_dict_format_says_what_loading_needs(tmp_path, capsys):
    ckpt, ema = training_checkpoint(tmp_path / "ckpt.pt", num_groups=4)
    assert cli(["export", str(ckpt), str(tmp_path / "bare.pt"), "--format", "state_dict"]) == 0
    line = capsys.readouterr().out.strip()
    assert "bare state_dict, loading it needs --num_groups 4" in line and line.endswith("--num_groups 4")
    bare = torch.load(tmp_path / "bare.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in bare.values()) and torch.equal(bare["out.2.weight"],
                                                                                  ema["out.2.weight"])


def test_released_groups_give_the_bare_state_dict(tmp_path, capsys):
    ckpt, ema = training_checkpoint(tmp_path / "ckpt.pt", num_groups=32, channels=32)
    assert cli(["export", str(ckpt), str(tmp_path / "bare.pt")]) == 0
    assert "(bare state_dict:" in capsys.readouterr().out
    bare = torch.load(tmp_path / "bare.pt", weights_only=True)
    assert sorted(bare) == sorted(ema) and all(torch.equal(bare[k], v) for k, v in ema.items())

import json

import pytest
import torch

from cwdm.model.checkpoint import FORMAT, FORMAT_VERSION, checkpoint_dict, infer_config, load_model
from cwdm.errors import CwdmError
from cwdm.task import Task
from cwdm.model.unet import RELEASED_CONFIG, UNet, UNetConfig
from conftest import REF, npz, tiny_config

TINY = UNetConfig(**tiny_config())


def test_bare_released_state_dict_with_config():
    loaded = load_model(REF / "unet_tiny.pt", config=TINY)
    assert loaded.kind == "released"
    ref = npz("unet_tiny_io")
    with torch.no_grad():
        y = loaded.model(torch.from_numpy(ref["x"]), torch.from_numpy(ref["t"]))
    assert (y - torch.from_numpy(ref["y"])).abs().max() < 1e-4
    assert not loaded.model.training


def test_bare_state_dict_with_released_default_config_is_refused_clearly():
    # the released configuration given explicitly: every contradiction in one line
    with pytest.raises(CwdmError) as info:
        load_model(REF / "unet_tiny.pt", config=UNetConfig())
    msg = str(info.value)
    assert "\n" not in msg
    assert "checkpoint has model_channels 16, config expects 64" in msg
    assert "checkpoint has channel_mult 1 2, config expects 1 2 2 4 4" in msg
    assert "checkpoint has num_res_blocks 1, config expects 2" in msg
    # nothing given: the network is read from the file; only num_groups (default 32) must fit
    with pytest.raises(CwdmError, match=r"unet_tiny.pt: .*divisible by num_groups \(32\).*pass --num_groups"):
        load_model(REF / "unet_tiny.pt")


def test_in_channels_mismatch_message(tmp_path):
    cfg = UNetConfig(**{**tiny_config(), "in_channels": 24})
    with pytest.raises(CwdmError, match=r"checkpoint has in_channels 32, config expects 24"):
        load_model(REF / "unet_tiny.pt", config=cfg)


def test_structure_mismatch_is_one_line(tmp_path):
    cfg = UNetConfig(**{**tiny_config(), "num_res_blocks": 2, "additive_skips": True})
    with pytest.raises(CwdmError) as info:
        load_model(REF / "unet_tiny.pt", config=cfg)
    msg = str(info.value)
    assert "\n" not in msg and "unet_tiny.pt" in msg
    assert "checkpoint has num_res_blocks 1, config expects 2" in msg
    assert "checkpoint has additive_skips False, config expects True" in msg


def test_tensors_that_are_not_a_unet_are_refused(tmp_path):
    sd = UNet(TINY).state_dict()
    del sd["out.2.weight"]
    torch.save(sd, tmp_path / "cut.pt")
    with pytest.raises(CwdmError, match=r"cut.pt: not a cWDM U-Net state_dict .*out.2.weight"):
        load_model(tmp_path / "cut.pt")


# --- bare state_dicts: the network is read from the tensors ---------------------------

def test_released_layout_is_inferred():
    layout = json.loads((REF / "unet_full_layout.json").read_text())
    sd = {k: torch.empty(v, device="meta") for k, v in layout.items()}
    assert infer_config(sd) == RELEASED_CONFIG
    assert infer_config(sd, num_groups=16).num_groups == 16


def test_tiny_reference_is_inferred_and_runs_with_only_num_groups():
    # the user says only what the file cannot: num_groups
    loaded = load_model(REF / "unet_tiny.pt", config=UNetConfig(num_groups=8), given={"num_groups"})
    assert loaded.config == TINY
    ref = npz("unet_tiny_io")
    with torch.no_grad():
        y = loaded.model(torch.from_numpy(ref["x"]), torch.from_numpy(ref["t"]))
    assert (y - torch.from_numpy(ref["y"])).abs().max() < 1e-4


@pytest.mark.parametrize("mult,blocks,additive,conditions", [((1, 2), 1, False, 3), ((1, 2, 4), 2, True, 1),
                                                             ((2, 2), 3, False, 2), ((1,), 1, True, 3)])
def test_inference_of_other_layouts(mult, blocks, additive, conditions):
    cfg = UNetConfig(model_channels=8, channel_mult=mult, num_res_blocks=blocks, additive_skips=additive,
                     in_channels=8 * (1 + conditions), num_groups=4)
    with torch.device("meta"):
        sd = UNet(cfg).state_dict()
    assert infer_config(sd, num_groups=4) == cfg


def test_explicit_flags_that_contradict_the_file_are_listed_together():
    flags = UNetConfig(model_channels=32, channel_mult=(1, 2), num_res_blocks=3, num_groups=8, in_channels=24)
    with pytest.raises(CwdmError) as info:
        load_model(REF / "unet_tiny.pt", config=flags, given={"model_channels", "channel_mult", "num_res_blocks"})
    msg = str(info.value)
    assert "checkpoint has model_channels 16, config expects 32" in msg
    assert "checkpoint has num_res_blocks 1, config expects 3" in msg
    assert "checkpoint has in_channels 32, config expects 24 (the network takes 3 conditions" in msg
    assert "channel_mult" not in msg  # given, but it agrees


def test_cwdm_checkpoint_uses_stored_config_and_ema(tmp_path):
    model = UNet(TINY)
    ema = UNet(TINY)
    for p in ema.parameters():
        torch.nn.init.constant_(p, 0.01)
    path = tmp_path / "ckpt.pt"
    torch.save(checkpoint_dict(TINY, model.state_dict(), ema.state_dict(), task=Task.default("t2f"), step=7), path)
    loaded = load_model(path)  # no config given: read from the file
    assert loaded.kind == "cwdm" and loaded.target == "t2f" and loaded.config == TINY
    assert loaded.meta["step"] == 7
    assert torch.equal(loaded.model.out[2].bias, ema.out[2].bias)
    raw = load_model(path, ema=False)
    assert torch.equal(raw.model.out[2].bias, model.out[2].bias)


def test_newer_format_refused(tmp_path):
    path = tmp_path / "future.pt"
    state = checkpoint_dict(TINY, {})
    assert state["format"] == FORMAT and state["version"] == FORMAT_VERSION
    torch.save({**state, "version": FORMAT_VERSION + 1}, path)
    with pytest.raises(CwdmError, match="newer"):
        load_model(path)


@pytest.mark.parametrize("content,match", [
    (b"not a checkpoint", "text file"),
    (b"https://example.org/brats_t2f_1200000.pt\n", "text file"),  # once a KeyError traceback in torch.load
    (b"version https://git-lfs.github.com/spec/v1\noid sha256:ab\n", "Git LFS pointer"),
    (b"<!DOCTYPE html><html><body>404</body></html>", "HTML"),
    (b"", "empty"),
    (None, "not found"),
])
def test_bad_files(tmp_path, content, match):
    path = tmp_path / "bad.pt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CwdmError, match=match):
        load_model(path, config=TINY)


def test_truncated_checkpoint(tmp_path):
    good = tmp_path / "good.pt"
    torch.save(UNet(TINY).state_dict(), good)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CwdmError, match="truncated or damaged"):
        load_model(bad, config=TINY)


def test_pickled_code_is_not_executed(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("executed",))

    path = tmp_path / "evil.pt"
    torch.save({"x": Evil()}, path)
    with pytest.raises(CwdmError, match="refuses to unpickle"):
        load_model(path, config=TINY)

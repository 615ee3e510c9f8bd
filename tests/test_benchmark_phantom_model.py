"""Checks of the phantom benchmarks' shared parts (``benchmarks/phantom_model.py``) and of the packing
of a GPU-trained model (``benchmarks/device_model.py``); imported by path: benchmarks are not a package."""

from __future__ import annotations

import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from cwdm.model.checkpoint import checkpoint_dict, load_model, read_checkpoint
from cwdm.model.unet import UNet, UNetConfig, random_network
from cwdm.task import Task
from conftest import tiny_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import device_model  # noqa: E402
import phantom_model  # noqa: E402


def _volumes(folder: Path) -> dict:
    return {p.relative_to(folder): np.asarray(nib.load(p).dataobj) for p in sorted(folder.rglob("*.nii.gz"))}


def test_sets_made_by_several_processes_equal_one_process(tmp_path):
    kwargs = dict(ambiguous=True, detail_draws=2, progress=False)
    phantom_model.make_sets(tmp_path / "one", 3, 0, 8, start=5, workers=1, **kwargs)
    phantom_model.make_sets(tmp_path / "two", 3, 0, 8, start=5, workers=2, **kwargs)
    one, two = _volumes(tmp_path / "one"), _volumes(tmp_path / "two")
    assert len(one) == 3 * 2 * 5  # subjects 5-7, two draws, four contrasts and seg
    assert {p.parts[0] for p in one} == {f"BraTS-GLI-{i:05d}-{d:03d}" for i in (5, 6, 7) for d in (0, 1)}
    assert one.keys() == two.keys()
    for key in one:
        np.testing.assert_array_equal(one[key], two[key])


def test_checkpoint_step():
    assert phantom_model.checkpoint_step(Path("run/checkpoints/ckpt_00032043.pt")) == 32043
    with pytest.raises(ValueError, match="not a training checkpoint"):
        phantom_model.checkpoint_step(Path("run/model.pt"))


def test_machine_names_the_cpu_without_a_gpu():
    text = phantom_model.machine("cuda" if not torch.cuda.is_available() else "cpu")
    assert f"torch {torch.__version__}" in text and "threads" in text


def _training_checkpoint(run: Path, step: int) -> dict:
    cfg = UNetConfig(**tiny_config())
    model, ema = UNet(cfg), random_network(cfg, seed=3)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.zeros(1, cfg.in_channels, 8, 8, 8), torch.zeros(1, dtype=torch.long)).sum().backward()
    optimizer.step()
    state = checkpoint_dict(cfg, model.state_dict(), ema.state_dict(), task=Task.default("t1c"), step=step,
                            optimizer=optimizer.state_dict())
    (run / "checkpoints").mkdir(parents=True)
    torch.save(state, run / "checkpoints" / f"ckpt_{step:08d}.pt")
    return state


def test_packed_model_is_the_ema_in_float16_and_unpacks_for_load_model(tmp_path):
    state = _training_checkpoint(tmp_path / "run", 12)
    assert device_model.pack(tmp_path / "run", tmp_path / "p.pt").name == "ckpt_00000012.pt"
    packed = read_checkpoint(tmp_path / "p.pt")
    assert not set(device_model.DROPPED) & set(packed) and packed["step"] == 12
    assert all(v.dtype == torch.float16 for v in packed["ema"].values() if v.is_floating_point())
    # the weights are stored once: the file is about half of one float32 copy
    float32_bytes = sum(v.numel() * 4 for v in state["ema"].values())
    assert (tmp_path / "p.pt").stat().st_size < 0.7 * float32_bytes

    device_model.unpack(tmp_path / "p.pt", tmp_path / "m.pt")
    loaded = load_model(tmp_path / "m.pt")
    assert loaded.meta["step"] == 12 and loaded.target == "t1c"
    for name, value in loaded.model.state_dict().items():
        want = state["ema"][name]  # the EMA, not the raw weights, rounded to float16
        assert value.dtype == want.dtype
        torch.testing.assert_close(value, want.half().to(want.dtype), rtol=0, atol=0)
        torch.testing.assert_close(value, want, rtol=1e-3, atol=1e-4)


def test_pack_refuses_a_run_without_checkpoints(tmp_path):
    (tmp_path / "run").mkdir()
    with pytest.raises(SystemExit, match="no checkpoint to pack"):
        device_model.pack(tmp_path / "run", tmp_path / "p.pt")
    assert not (tmp_path / "p.pt").exists()

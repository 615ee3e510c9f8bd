import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cwdm.model.checkpoint import load_model, read_checkpoint
from cwdm.cli import main as cli
from cwdm.model.diffusion import linear_schedule, training_loss
from cwdm.errors import CwdmError
from cwdm.commands.export import export_state_dict
from cwdm.training.config import TrainConfig
from cwdm.training.loop import train
from cwdm.training.state import DataOrder, checkpoint_files
from cwdm.model.unet import UNet, UNetConfig

TINY = dict(model_channels=8, channel_mult=(1, 2), num_res_blocks=1, num_groups=4)
TINY_FLAGS = ["--num_channels", "8", "--channel_mult", "1", "2", "--num_res_blocks", "1", "--num_groups", "4"]


def cfg_for(data, run_dir, **kw):
    base = dict(data_dir=data, contr="t2f", run_dir=run_dir, num_workers=0, progress=False, lr=1e-3,
                log_interval=2, image_interval=2, save_interval=1000, **TINY)
    base.update(kw)
    return TrainConfig(**base)


def weights(path, key="model"):
    return read_checkpoint(path)[key]


def test_steps_lower_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    cfg = UNetConfig(in_channels=32, **TINY)
    model = UNet(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0)
    x0, cond = torch.rand(2, 8, 4, 4, 4), torch.rand(2, 24, 4, 4, 4)
    t, noise = torch.tensor([100, 700]), torch.randn(2, 8, 4, 4, 4)
    sched = linear_schedule()
    first = None
    for _ in range(30):
        loss, _, _ = training_loss(model, sched, x0, cond, t, noise)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first


def test_data_order_resumes_and_shards():
    full = DataOrder(5, seed=3)
    it = iter(full)
    stream = [next(it) for _ in range(12)]
    resumed = DataOrder(5, seed=3)
    resumed.advance(7)
    it2 = iter(resumed)
    assert [next(it2) for _ in range(5)] == stream[7:]
    r0, r1 = DataOrder(5, seed=3, rank=0, world=2), DataOrder(5, seed=3, rank=1, world=2)
    assert len(r0) == len(r1) == 3
    assert set(r0.epoch_indices(0)) | set(r1.epoch_indices(0)) == set(range(5))


def test_checkpoint_round_trip_and_export(brats_root, tmp_path):
    run_dir = tmp_path / "run"
    assert train(cfg_for(brats_root, run_dir, max_steps=3)) == 0
    ckpts = checkpoint_files(run_dir)
    assert [p.name for p in ckpts] == ["ckpt_00000003.pt"]
    state = read_checkpoint(ckpts[-1])
    assert state["step"] == 3 and state["target"] == "t2f" and state["conditions"] == ["t1n", "t1c", "t2w"]
    assert (run_dir / "config.json").is_file() and list((run_dir / "tb").iterdir())
    loaded = load_model(ckpts[-1])
    assert loaded.kind == "cwdm" and loaded.config.model_channels == 8
    out = export_state_dict(ckpts[-1], tmp_path / "bare.pt", format="state_dict")
    bare = torch.load(out, weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in bare.values())
    model = UNet(loaded.config)
    model.load_state_dict(bare, strict=True)  # loads into the network built from the config
    with pytest.raises(CwdmError, match="would replace the training checkpoint"):
        export_state_dict(ckpts[-1], ckpts[-1], overwrite=True)
    assert read_checkpoint(ckpts[-1])["step"] == 3
    for k, v in state["ema"].items():
        assert torch.equal(bare[k], v)


def test_exact_resume_matches_uninterrupted_run(make_brats_root, tmp_path):
    data = make_brats_root(cases=3)
    assert train(cfg_for(data, tmp_path / "a", max_steps=6)) == 0
    assert train(cfg_for(data, tmp_path / "b", max_steps=4)) == 0  # 3 cases: crosses an epoch boundary
    assert train(cfg_for(data, tmp_path / "b", max_steps=6, resume="auto")) == 0
    a, b = checkpoint_files(tmp_path / "a")[-1], checkpoint_files(tmp_path / "b")[-1]
    for key in ("model", "ema"):
        wa, wb = weights(a, key), weights(b, key)
        assert all(torch.equal(wa[k], wb[k]) for k in wa), key
    assert read_checkpoint(b)["data_order"] == read_checkpoint(a)["data_order"]


def test_existing_run_is_refused_without_resume(brats_root, tmp_path):
    train(cfg_for(brats_root, tmp_path / "r", max_steps=1))
    with pytest.raises(CwdmError, match="already holds a run"):
        train(cfg_for(brats_root, tmp_path / "r", max_steps=2))


def test_resume_with_conflicting_architecture_is_refused(brats_root, tmp_path):
    train(cfg_for(brats_root, tmp_path / "r", max_steps=1))
    with pytest.raises(CwdmError, match="model_channels 8"):
        train(cfg_for(brats_root, tmp_path / "r", max_steps=2, resume="auto", model_channels=16))


def test_bad_training_set_lists_all_bad_cases(make_brats_root, tmp_path):
    data = make_brats_root(cases=4, missing={"BraTS-GLI-00001-000": ["t2f"], "BraTS-GLI-00003-000": ["t1c"]})
    with pytest.raises(CwdmError) as info:
        train(cfg_for(data, tmp_path / "r", max_steps=1))
    msg = str(info.value)
    assert "BraTS-GLI-00001-000" in msg and "BraTS-GLI-00003-000" in msg and "t2f" in msg and "t1c" in msg
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_cli_flags_in_reference_spelling(brats_root, tmp_path):
    rc = cli(["train", "--data_dir", str(brats_root), "--contr", "t1c", "--run_dir", str(tmp_path / "c"),
              "--max_steps", "2", "--num_workers", "0", "--progress=False", "--additive_skips=True",
              "--save_interval", "1", *TINY_FLAGS])
    assert rc == 0
    assert len(checkpoint_files(tmp_path / "c")) == 2
    assert read_checkpoint(checkpoint_files(tmp_path / "c")[-1])["model_config"]["additive_skips"] is True


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1]) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    return env


@pytest.mark.slow
def test_sigterm_leaves_a_loadable_checkpoint(brats_root, tmp_path):
    run_dir = tmp_path / "sig"
    cmd = [sys.executable, "-m", "cwdm", "train", "--data_dir", str(brats_root), "--contr", "t2f",
           "--run_dir", str(run_dir), "--max_steps", "100000", "--num_workers", "0", "--progress", "False",
           "--log_interval", "1", *TINY_FLAGS]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while not (run_dir / "tb").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err.decode()
    assert f"continue with: cwdm train --run_dir {run_dir} --resume auto" in err.decode()  # how to resume
    ckpts = checkpoint_files(run_dir)
    assert len(ckpts) == 1
    assert load_model(ckpts[0]).meta["step"] >= 1
    assert not [p for p in (run_dir / "checkpoints").iterdir() if p.name.startswith(".")]


@pytest.mark.slow
def test_ddp_two_gloo_processes_only_rank0_writes(brats_root, tmp_path):
    run_dir = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
           "-m", "cwdm", "train", "--data_dir", str(brats_root), "--contr", "t2f", "--run_dir", str(run_dir),
           "--max_steps", "3", "--num_workers", "0", "--progress", "False", "--device", "cpu", *TINY_FLAGS]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [p.name for p in checkpoint_files(run_dir)] == ["ckpt_00000003.pt"]
    assert len(list((run_dir / "tb").iterdir())) == 1
    assert proc.stderr.count("cwdm train: new run") == 1
    state = read_checkpoint(checkpoint_files(run_dir)[-1])
    # two ranks with one sample each per step: the shared data order advanced over 3 steps
    assert state["data_order"] == {"epoch": 1, "offset": 1}


def test_resume_keeps_the_runs_settings_unless_flags_are_given(brats_root, tmp_path, capsys):
    run_dir = tmp_path / "r"
    base = ["train", "--data_dir", str(brats_root), "--contr", "t2f", "--run_dir", str(run_dir),
            "--num_workers", "0", "--progress", "False"]
    assert cli(base + TINY_FLAGS + ["--lr", "2e-4", "--ema_rate", "0.9", "--max_steps", "2"]) == 0
    # resume with neither the network nor the optimization flags: all come from the checkpoint
    assert cli(base + ["--max_steps", "3", "--resume", "auto"]) == 0
    state = read_checkpoint(checkpoint_files(run_dir)[-1])
    assert state["step"] == 3
    assert state["train_config"]["lr"] == 2e-4 and state["train_config"]["ema_rate"] == 0.9
    assert state["optimizer"]["param_groups"][0]["lr"] == 2e-4
    capsys.readouterr()
    assert cli(base + ["--max_steps", "4", "--resume", "auto", "--lr", "1e-4"]) == 0
    assert "lr 0.0002 -> 0.0001" in capsys.readouterr().err
    assert read_checkpoint(checkpoint_files(run_dir)[-1])["optimizer"]["param_groups"][0]["lr"] == 1e-4


def test_resume_when_already_done_changes_nothing(brats_root, tmp_path, capsys):
    run_dir = tmp_path / "r"
    train(cfg_for(brats_root, run_dir, max_steps=2))
    before = (run_dir / "config.json").read_text()
    capsys.readouterr()
    assert train(cfg_for(brats_root, run_dir, max_steps=1, resume="auto")) == 0
    assert "nothing to do" in capsys.readouterr().err
    assert (run_dir / "config.json").read_text() == before
    assert [p.name for p in checkpoint_files(run_dir)] == ["ckpt_00000002.pt"]


def test_new_run_from_a_bare_state_dict(brats_root, tmp_path):
    train(cfg_for(brats_root, tmp_path / "a", max_steps=2))
    bare = export_state_dict(checkpoint_files(tmp_path / "a")[-1], tmp_path / "bare.pt", format="state_dict")
    assert train(cfg_for(brats_root, tmp_path / "b", max_steps=1, resume=str(bare), lr=1e-12)) == 0
    state = read_checkpoint(checkpoint_files(tmp_path / "b")[-1])
    assert state["step"] == 1
    init = torch.load(bare, weights_only=True)
    # with a negligible learning rate the weights are still those of the state_dict
    assert all(torch.allclose(state["model"][k], init[k], atol=1e-6) for k in init)
    with pytest.raises(CwdmError, match="bare state_dict"):
        train(cfg_for(brats_root, tmp_path / "b", max_steps=3, resume=str(bare)))


@pytest.mark.parametrize("field,value,message", [
    ("save_interval", 0, "--save_interval"), ("batch_size", 0, "--batch_size"), ("lr", -1.0, "--lr"),
    ("contr", "pd", "--contr pd"), ("max_steps", 0, "--max_steps")])
def test_bad_values_refused_before_anything_is_written(brats_root, tmp_path, field, value, message):
    with pytest.raises(CwdmError, match=message):
        train(cfg_for(brats_root, tmp_path / "r", **{"max_steps": 1, field: value}))
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("workers", [0, 1])
def test_bad_voxels_found_during_training_save_and_give_one_line(make_brats_root, tmp_path, workers):
    import nibabel as nib
    import numpy as np

    data = make_brats_root(cases=2)
    bad = data / "BraTS-GLI-00001-000" / "BraTS-GLI-00001-000-t1c.nii.gz"
    img = nib.load(str(bad))
    vol = np.asarray(img.dataobj).copy()
    vol[3, 3, 3] = np.nan
    nib.save(nib.Nifti1Image(vol, img.affine), str(bad))
    with pytest.raises(CwdmError) as info:
        train(cfg_for(data, tmp_path / "r", max_steps=10, num_workers=workers))
    msg = str(info.value)
    assert "BraTS-GLI-00001-000-t1c.nii.gz" in msg and "checkpoint saved" in msg
    assert "Traceback" not in msg and "\n" not in msg
    assert checkpoint_files(tmp_path / "r")


def test_lr_anneal_steps_decays_linearly_and_stops_there(brats_root, tmp_path):
    cfg = cfg_for(brats_root, tmp_path / "r", max_steps=100, lr_anneal_steps=4, lr=1e-3)
    assert [cfg.lr_at(s) for s in range(4)] == pytest.approx([1e-3, 7.5e-4, 5e-4, 2.5e-4])
    assert train(cfg) == 0
    [ckpt] = checkpoint_files(tmp_path / "r")
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert state["step"] == 4  # the reference's meaning: the step limit as well
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(2.5e-4)  # the lr of the last step


def test_lr_anneal_steps_must_not_be_negative(brats_root, tmp_path):
    with pytest.raises(CwdmError, match="lr_anneal_steps"):
        train(cfg_for(brats_root, tmp_path / "r", lr_anneal_steps=-1))


def test_resume_step_starts_a_bare_state_dict_run_there(brats_root, tmp_path, capsys):
    """The reference's --resume_step: the step count of the weights; drives the counter, the
    lr annealing and the stop."""
    train(cfg_for(brats_root, tmp_path / "a", max_steps=2))
    bare = export_state_dict(checkpoint_files(tmp_path / "a")[-1], tmp_path / "bare.pt", format="state_dict")
    cfg = cfg_for(brats_root, tmp_path / "b", max_steps=100, lr_anneal_steps=8, lr=1e-3, resume=str(bare),
                  resume_step=6)
    assert train(cfg) == 0
    [ckpt] = checkpoint_files(tmp_path / "b")
    state = read_checkpoint(ckpt)
    assert state["step"] == 8  # steps 6 and 7 trained, stop at lr_anneal_steps
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-3 * (1 - 7 / 8))
    assert "step 6 from --resume_step" in capsys.readouterr().err
    # already at the limit: nothing to do
    assert train(cfg_for(brats_root, tmp_path / "c", max_steps=5, resume=str(bare), resume_step=5)) == 0
    assert "nothing to do" in capsys.readouterr().err and not checkpoint_files(tmp_path / "c")
    # without weights the step count means nothing
    with pytest.raises(CwdmError, match="--resume_step 3 needs"):
        train(cfg_for(brats_root, tmp_path / "d", max_steps=5, resume_step=3))


def test_resume_step_of_a_cwdm_checkpoint_is_its_stored_step(brats_root, tmp_path, capsys):
    run_dir = tmp_path / "r"
    train(cfg_for(brats_root, run_dir, max_steps=2))
    capsys.readouterr()
    assert train(cfg_for(brats_root, run_dir, max_steps=3, resume="auto", resume_step=50)) == 0
    assert "--resume_step 50 ignored" in capsys.readouterr().err
    assert read_checkpoint(checkpoint_files(run_dir)[-1])["step"] == 3


def test_tensorboard_off_and_elsewhere_in_reference_spelling(brats_root, tmp_path):
    base = ["train", "--data_dir", str(brats_root), "--contr", "t2f", *TINY_FLAGS, "--max_steps", "2",
            "--num_workers", "0", "--progress", "False", "--log_interval", "1", "--image_interval", "1"]
    assert cli([*base, "--run_dir", str(tmp_path / "off"), "--use_tensorboard", "False"]) == 0
    assert checkpoint_files(tmp_path / "off") and not (tmp_path / "off" / "tb").exists()
    assert cli([*base, "--run_dir", str(tmp_path / "on"), "--tensorboard_path", str(tmp_path / "logs")]) == 0
    assert list((tmp_path / "logs").glob("events.out.tfevents.*")) and not (tmp_path / "on" / "tb").exists()
    assert cli([*base, "--run_dir", str(tmp_path / "default")]) == 0
    assert list((tmp_path / "default" / "tb").glob("events.out.tfevents.*"))


# --- a run that died before its first save, full disks, --compile True, stale temporaries -----------

def _lines(capsys):
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return err.strip().splitlines()


def _first_run_without_checkpoint(data, run_dir):
    """A run folder as a process killed before its first save leaves it: config.json (and tb/), no checkpoint."""
    assert cli(["train", "--data_dir", str(data), "--contr", "t2f", "--run_dir", str(run_dir), "--lr", "2e-4",
                "--num_workers", "0", "--progress", "False", "--max_steps", "1", *TINY_FLAGS]) == 0
    import shutil

    shutil.rmtree(run_dir / "checkpoints")
    return json.loads((run_dir / "config.json").read_text())


def test_resume_auto_without_a_checkpoint_restarts_the_runs_own_settings(brats_root, tmp_path, capsys):
    run_dir = tmp_path / "r"
    before = _first_run_without_checkpoint(brats_root, run_dir)
    capsys.readouterr()
    # neither --data_dir nor --contr nor the network: the defaults (t1n, data/training) must not be used
    assert cli(["train", "--run_dir", str(run_dir), "--resume", "auto", "--max_steps", "2", "--num_workers", "0",
                "--progress", "False"]) == 0
    err = "\n".join(_lines(capsys))
    assert f"{run_dir} holds no checkpoint" in err and "again from step 0" in err
    state = read_checkpoint(checkpoint_files(run_dir)[-1])
    assert state["step"] == 2 and state["target"] == "t2f"  # trained from step 0, on the run's task
    assert state["train_config"]["lr"] == 2e-4 and state["model_config"]["model_channels"] == 8
    after = json.loads((run_dir / "config.json").read_text())
    assert after["task"] == before["task"]
    assert {k: v for k, v in after["train"].items() if k not in ("max_steps", "resume")} == \
        {k: v for k, v in before["train"].items() if k not in ("max_steps", "resume")}


def test_resume_auto_without_a_checkpoint_may_not_change_the_task(brats_root, tmp_path, capsys):
    run_dir = tmp_path / "r"
    _first_run_without_checkpoint(brats_root, run_dir)
    before = (run_dir / "config.json").read_text()
    capsys.readouterr()
    assert cli(["train", "--run_dir", str(run_dir), "--resume", "auto", "--contr", "t1c", "--max_steps", "2"]) == 1
    assert "the run was trained with contr t2f, but t1c was given" in _lines(capsys)[-1]
    assert (run_dir / "config.json").read_text() == before and not checkpoint_files(run_dir)


def test_resume_auto_with_neither_checkpoint_nor_config_refuses(brats_root, tmp_path):
    run_dir = tmp_path / "r"
    (run_dir / "tb").mkdir(parents=True)
    with pytest.raises(CwdmError, match="holds neither a checkpoint nor config.json.*without --resume"):
        train(cfg_for(brats_root, run_dir, max_steps=1, resume="auto"))
    assert [p.name for p in run_dir.iterdir()] == ["tb"]
    # a folder with nothing in it yet: --resume auto starts the new run (run.sh's default RESUME=auto)
    assert train(cfg_for(brats_root, tmp_path / "fresh", max_steps=1, resume="auto")) == 0


def test_full_disk_at_a_checkpoint_save_is_one_line_without_a_partial_file(brats_root, tmp_path, monkeypatch,
                                                                          capsys):
    real_save, calls = torch.save, []

    def fills_up(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            return real_save(obj, f, *args, **kwargs)
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", fills_up)
    run_dir = tmp_path / "r"
    assert cli(["train", "--data_dir", str(brats_root), "--contr", "t2f", "--run_dir", str(run_dir),
                "--max_steps", "3", "--save_interval", "1", "--num_workers", "0", "--progress", "False",
                *TINY_FLAGS]) == 1
    last = _lines(capsys)[-1]
    assert last.startswith(f"cwdm train: error: {run_dir / 'checkpoints' / 'ckpt_00000002.pt'}: cannot write "
                           f"(No space left on device")
    assert "latest saved checkpoint is" in last and "ckpt_00000001.pt" in last and "--resume auto" in last
    assert [p.name for p in (run_dir / "checkpoints").iterdir()] == ["ckpt_00000001.pt"]  # nothing partial
    assert read_checkpoint(run_dir / "checkpoints" / "ckpt_00000001.pt")["step"] == 1


def test_full_disk_writing_config_json_leaves_no_run_folder(brats_root, tmp_path, monkeypatch, capsys):
    from types import SimpleNamespace

    from cwdm.training import log as train_log

    def full(obj, fh, **kwargs):
        fh.write('{"train": {')
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(train_log, "json", SimpleNamespace(dump=full))
    run_dir = tmp_path / "r"
    assert cli(["train", "--data_dir", str(brats_root), "--contr", "t2f", "--run_dir", str(run_dir),
                "--max_steps", "1", "--num_workers", "0", "--progress", "False", *TINY_FLAGS]) == 1
    [line] = _lines(capsys)
    assert f"{run_dir / 'config.json'}: cannot write (No space left on device" in line
    assert "was removed again" in line
    assert not run_dir.exists()


def test_compile_true_without_a_compiler_stops_at_start_without_a_run_folder(brats_root, tmp_path, monkeypatch,
                                                                            capsys):
    from torch._dynamo.exc import BackendCompilerFailed
    from torch._inductor.exc import InvalidCxxCompiler

    def no_compiler(net, *args, **kwargs):
        def compiled(*a, **k):
            raise BackendCompilerFailed(lambda *x: None, InvalidCxxCompiler(), None)
        return compiled

    monkeypatch.setattr(torch, "compile", no_compiler)
    run_dir, tb = tmp_path / "r", tmp_path / "logs"
    assert cli(["train", "--data_dir", str(brats_root), "--contr", "t2f", "--run_dir", str(run_dir),
                "--tensorboard_dir", str(tb), "--compile", "True", "--max_steps", "2", "--num_workers", "0",
                "--progress", "False", *TINY_FLAGS]) == 1
    last = _lines(capsys)[-1]
    assert last.startswith("cwdm train: error: torch.compile failed (InvalidCxxCompiler: No working C++ compiler")
    assert "--compile False" in last and "removed" in last
    assert not run_dir.exists() and not tb.exists()
    # an existing run stopped the same way keeps its folder and checkpoints
    monkeypatch.undo()
    train(cfg_for(brats_root, run_dir, max_steps=1))
    monkeypatch.setattr(torch, "compile", no_compiler)
    with pytest.raises(CwdmError, match="torch.compile failed"):
        train(cfg_for(brats_root, run_dir, max_steps=2, resume="auto", compile=True))
    assert [p.name for p in checkpoint_files(run_dir)] == ["ckpt_00000001.pt"]


def test_stale_temporary_of_a_killed_save_is_removed_by_the_next_run(brats_root, tmp_path, capsys):
    from cwdm import writes

    run_dir = tmp_path / "r"
    train(cfg_for(brats_root, run_dir, max_steps=1))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    folder = run_dir / "checkpoints"
    stale = folder / f".cwdm-tmp-{dead.pid}-ckpt_00000002.pt.a1b2c3d4.tmp.pt"
    other = folder / ".notes"
    for p in (stale, other):
        p.write_bytes(b"PK")
        past = writes._PROCESS_START - 600  # before this process started
        os.utime(p, (past, past))
    capsys.readouterr()
    assert train(cfg_for(brats_root, run_dir, max_steps=2, resume="auto")) == 0
    assert not stale.exists() and other.exists()
    assert sum("removed 1 temporary file" in line and stale.name in line for line in _lines(capsys)) == 1

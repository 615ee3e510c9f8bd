"""What the commands tell their user: device, expected cost, estimates, next command, how to resume."""

import shlex

import pytest
import torch

import cwdm.inference.synthesis
import cwdm.commands.train
from cwdm.cli import main as cli
from cwdm.feedback import RunClock, cpu_sampling_warning, cpu_training_warning, duration
from test_sample import FAST, make_checkpoint
from test_train import TINY_FLAGS as TRAIN_TINY


def test_sample_says_device_estimate_and_next_command(make_brats_root, tmp_path, capsys):
    data = make_brats_root(cases=2)
    ckpt = make_checkpoint(tmp_path / "t2f.pt")
    out = tmp_path / "my results"
    assert cli(["sample", "--data_dir", str(data), "--model_path", str(ckpt), "--output_dir", str(out), *FAST]) == 0
    lines = capsys.readouterr().err.strip().splitlines()
    assert sum(line.startswith("device: cpu") for line in lines) == 1
    estimate = [line for line in lines if line.startswith("first network call took")]
    assert len(estimate) == 1 and "per case" in estimate[0] and "for the 2 cases" in estimate[0]
    last = lines[-1]
    assert last.startswith(f"wrote 2 cases to {out}")
    command = shlex.split(last.partition("next: ")[2])  # a command that can be pasted (quoted path)
    assert command == ["cwdm", "evaluate", "--pred_dir", str(out), "--ref_dir", str(data)]


def test_released_size_on_cpu_is_announced():
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    text = cpu_sampling_warning(cpu, 64, (224, 224, 160), 1000, 3)
    assert "33-51 s per network call" in text and "9.2 h to 14.2 h per case" in text and "ddim" in text
    assert cpu_sampling_warning(cpu, 64, (240, 240, 160), 10, 1) is not None
    assert cpu_sampling_warning(gpu, 64, (224, 224, 160), 1000, 3) is None
    assert cpu_sampling_warning(cpu, 16, (224, 224, 160), 1000, 3) is None  # a small network
    assert cpu_sampling_warning(cpu, 64, (64, 64, 64), 1000, 3) is None  # a small grid
    text = cpu_training_warning(cpu, 64, (64, 64, 64), 1, 1000)
    assert "4.36 s per step at 64x64x64" in text and "about 4.4 s per step" in text and "73 min for 1000" in text
    assert cpu_training_warning(cpu, 16, (64, 64, 64), 1, 1000) is None
    assert cpu_training_warning(gpu, 64, (64, 64, 64), 1, 1000) is None
    assert [duration(s) for s in (0.25, 42, 600, 7200, 3 * 86400)] == ["0.25 s", "42 s", "10 min", "2.0 h", "3.0 days"]


def test_released_size_training_on_cpu_warns_before_the_first_step(brats_root, tmp_path, capsys):
    """The warning used to be lost (the grid was read from a training set's missing .target)."""
    from cwdm.feedback import SMALL_NETWORK_FLAGS

    run_dir = tmp_path / "run"
    assert cli(["train", "--data_dir", str(brats_root), "--contr", "t2f", "--run_dir", str(run_dir), "--max_steps", "3",
                "--num_workers", "0", "--progress", "False", "--num_channels", "64", "--channel_mult", "1", "2",
                "--num_res_blocks", "1", "--num_groups", "8", "--device", "cpu"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    warnings = [i for i, line in enumerate(err) if line.startswith("warning: training the released-size network")]
    assert len(warnings) == 1
    saved = [i for i, line in enumerate(err) if line.startswith("saved ")]
    assert warnings[0] < saved[0]  # before training, not after
    line = err[warnings[0]]
    assert "on 24x24x16 x 1" in line and "for 3 steps" in line and line.endswith(SMALL_NETWORK_FLAGS)


def test_train_prints_readable_settings_and_the_next_command(brats_root, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert cli(["train", "--data_dir", str(brats_root), "--contr", "flair", "--run_dir", str(run_dir),
                "--max_steps", "2", "--num_workers", "0", "--progress", "False", *TRAIN_TINY]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    start = err.index("settings:")
    block = err[start + 1:start + 6]
    assert [line.split(":")[0].strip() for line in block] == ["data", "network", "optimization", "saving", "hardware"]
    assert len({len(line) - len(line[line.index(":") + 1:].lstrip()) for line in block}) == 1  # aligned values
    assert all(len(line) < 200 and "{" not in line for line in block)
    assert "model_channels: 8" in block[1] and "lr: 1e-05" in block[2]
    assert sum(line.startswith("device: cpu") for line in err) == 1
    assert err[-1].startswith(f"cwdm train: {run_dir} trained to step 2")
    assert f"next: cwdm export {run_dir} brats_t2f.pt" in err[-1]


def test_ctrl_c_during_sample_says_how_to_continue(make_brats_root, tmp_path, capsys, monkeypatch):
    data = make_brats_root(cases=1)
    ckpt = make_checkpoint(tmp_path / "t2f.pt")

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cwdm.inference.synthesis.Synthesizer, "__call__", interrupted)
    args = ["sample", "--data_dir", str(data), "--model_path", str(ckpt), "--output_dir", str(tmp_path / "o"), *FAST]
    assert cli(args) == 130
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("cwdm sample: interrupted; to continue, rerun the same command")
    assert shlex.split(last.partition("skipped): ")[2]) == ["cwdm", *args]


def test_ctrl_c_during_train_says_resume_auto(brats_root, tmp_path, capsys, monkeypatch):
    def interrupted(cfg):
        raise KeyboardInterrupt

    monkeypatch.setattr(cwdm.commands.train, "train", interrupted)
    assert cli(["train", "--data_dir", str(brats_root), "--contr", "t2f", "--run_dir", str(tmp_path / "r")]) == 130
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"continue from the last saved checkpoint with: cwdm train --run_dir {tmp_path / 'r'} "
                        f"--resume auto")


@pytest.mark.parametrize("command", ["export", "dropout", "phantom", "check", "evaluate"])
def test_every_command_ends_with_what_to_do_next(command, tmp_path, make_brats_root, capsys):
    data = make_brats_root(cases=2)
    ckpt = make_checkpoint(tmp_path / "t2f.pt")
    args = {"export": [str(ckpt), str(tmp_path / "bare.pt")], "dropout": [str(data), str(tmp_path / "pv")],
            "phantom": [str(tmp_path / "ph"), "--cases", "1", "--downsample", "8"], "check": [str(data)],
            "evaluate": ["--pred_dir", str(data), "--ref_dir", str(make_brats_root(cases=2)), "--montage", "False",
                         "--progress", "False"]}[command]
    cli([command, *args])
    out = capsys.readouterr().out.strip().splitlines()
    assert "next: " in out[-1] and ("cwdm " in out[-1].partition("next: ")[2])


@pytest.mark.parametrize("compiling", [False, True])
def test_run_clock_estimates_from_a_call_without_compilation(compiling, monkeypatch):
    now = [100.0]
    monkeypatch.setattr("cwdm.feedback.time.monotonic", lambda: now[0])
    lines = []
    clock = RunClock(cases=4, calls_per_case=10, write=lines.append, compiling=compiling)
    clock.batch_started(2)
    for took in (80.0, 4.0, 4.0):  # the first call compiles when `compiling`
        now[0] += took
        clock.network_call()
    if compiling:
        assert lines[0] == "compiling the network and its first call took 80 s (once per run)"
        assert lines[1].startswith("second network call took 4 s: about 20 s per case, 80 s for the 4 cases")
    else:
        assert lines == [lines[0]] and lines[0].startswith("first network call took 80 s: about 7 min per case")
    assert len(lines) == 1 + compiling
    assert clock.batch_seconds() == pytest.approx(88.0 / 2)


@pytest.mark.slow
def test_sample_with_compile_says_so_and_estimates_after_compiling(make_brats_root, tmp_path, capsys):
    data = make_brats_root(cases=2)
    ckpt = make_checkpoint(tmp_path / "t2f.pt")
    argv = ["sample", "--data_dir", str(data), "--model_path", str(ckpt), "--output_dir", str(tmp_path / "out"), *FAST]
    assert cli([*argv, "--compile", "True"]) == 0
    lines = capsys.readouterr().err.strip().splitlines()
    assert sum(line.startswith("compiling the network before its first call (--compile True") for line in lines) == 1
    assert sum(line.startswith("compiling the network and its first call took") for line in lines) == 1
    assert sum(line.startswith("second network call took") for line in lines) == 1
    assert not any(line.startswith("first network call took") for line in lines)

"""cwdm distill: the targets, the run (exact resume, Ctrl-C, errors) and sampling a student."""

import copy
import hashlib
import json
import os
import signal

import pytest
import torch

import cwdm
from cwdm.cli import main as cli
from cwdm.commands.distill import DistillConfig, run as distill
from cwdm.commands.export import export_state_dict
from cwdm.errors import CwdmError
from cwdm.model.checkpoint import load_model, read_checkpoint
from cwdm.model.diffusion import ddim_step, linear_schedule
from cwdm.model.prediction import Prediction, X0
from cwdm.model.samplers import SAMPLERS
from cwdm.model.unet import UNet, UNetConfig
from cwdm.training.distill import (DistillStep, ddim_x0_target, student_loss, student_timesteps, teacher_timesteps)
from cwdm.training.state import checkpoint_files
from conftest import make_checkpoint, write_brats_root

TINY = dict(model_channels=8, channel_mult=(1, 2), num_res_blocks=1, num_groups=4)
QUICK = ["--num_workers", "0", "--progress", "False", "--tensorboard", "False", "--lr", "1e-3"]


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cfg_for(teacher, data, run_dir, **kw):
    base = dict(teacher=teacher, data_dir=data, run_dir=run_dir, student_steps=2, teacher_steps=3, max_steps=2,
                lr=1e-3, num_workers=0, progress=False, tensorboard=False)
    base.update(kw)
    return DistillConfig(**base)


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    """A 2-call student of a tiny random t2f teacher, distilled 2 steps: (teacher, its sha256 before, data, run)."""
    root = tmp_path_factory.mktemp("distill")
    data = write_brats_root(root / "data", cases=2, missing={"BraTS-GLI-00001-000": ["t2f"]})  # targets unused
    teacher = make_checkpoint(root / "teacher.pt", target="t2f")
    before = sha(teacher)
    assert cli(["distill", "--teacher", str(teacher), "--data_dir", str(data), "--run_dir", str(root / "run"),
                "--student_steps", "2", "--teacher_steps", "3", "--max_steps", "2", *QUICK]) == 0
    return teacher, before, data, root / "run"


class Calls:
    """Counts the network's calls (and their timesteps) while patched into UNet.forward."""

    def __init__(self, monkeypatch):
        self.timesteps, real = [], UNet.forward

        def counted(net, x, t):
            self.timesteps.append(int(t[0]))
            return real(net, x, t)

        monkeypatch.setattr(UNet, "forward", counted)


# --- the targets -------------------------------------------------------------------------------------

@pytest.mark.parametrize("t,s", [(999, 499), (999, 0), (499, 0), (300, 299)])
def test_one_ddim_step_with_the_x0_target_lands_on_the_given_state(t, s):
    g = torch.Generator().manual_seed(t)
    x_t, x_s = (torch.randn((2, 8, 3, 3, 3), generator=g, dtype=torch.float64) for _ in range(2))
    x0 = ddim_x0_target(x_t, x_s, t, s)
    landed = ddim_step(lambda x, tt: x0, linear_schedule(), x_t, t, s)["sample"]
    torch.testing.assert_close(landed, x_s, rtol=0, atol=1e-10)
    # and the x0 a DDIM step used is the one the target recovers
    stepped = ddim_step(lambda x, tt: x_s, linear_schedule(), x_t, t, s)["sample"]
    torch.testing.assert_close(ddim_x0_target(x_t, stepped, t, s), x_s, rtol=0, atol=1e-9)
    with pytest.raises(ValueError, match="earlier timestep"):
        ddim_x0_target(x_t, x_s, s, t)


def test_timesteps_of_student_and_teacher():
    assert student_timesteps(1) == [999] and student_timesteps(2) == [999, 499]
    assert student_timesteps(2) == SAMPLERS["ddim_trailing"].timesteps(2)
    for n in (1, 2, 5, 20):  # one student call: the teacher is the plain ddim sampler
        assert teacher_timesteps([999], n) == SAMPLERS["ddim"].timesteps(n)
    ts = teacher_timesteps([999, 499], 20)
    assert len(ts) == 20 and 499 in ts and ts[0] == 999 and ts[-1] == 0 and all(a > b for a, b in zip(ts, ts[1:]))
    assert [t for t in ts if t not in SAMPLERS["ddim"].timesteps(20)] == [499]  # only the nearest one moved
    assert teacher_timesteps([999, 499], 2) == [999, 499]
    with pytest.raises(CwdmError, match="too few teacher steps"):
        teacher_timesteps([999, 998], 2)


@pytest.mark.parametrize("steps", [1, 2])
@pytest.mark.parametrize("prediction", [X0, Prediction("edm", (0.3, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.03))])
def test_the_construction_is_exact(steps, prediction):
    """A student identical to an (unclipped) teacher, K = teacher_steps: its outputs are the targets."""
    torch.manual_seed(0)
    teacher = UNet(UNetConfig(in_channels=32, **TINY))
    with torch.no_grad():  # no zero-initialized output layer: the network's output depends on its input
        for p in teacher.parameters():
            torch.nn.init.normal_(p, std=0.1)
    student = copy.deepcopy(teacher).eval()
    cond = torch.rand((2, 24, 4, 4, 4))
    exact = DistillStep(teacher, prediction, steps, steps, clip=False)
    inputs, targets = exact.targets(cond, torch.Generator().manual_seed(1), bf16=False)
    assert len(inputs) == len(targets) == steps  # the first input is z, the step generator's first draw
    assert torch.equal(inputs[0], torch.randn((2, 8, 4, 4, 4), generator=torch.Generator().manual_seed(1)))
    with torch.no_grad():
        loss, per_subband, x0 = student_loss(student, cond, inputs, targets, exact.student, prediction)
    assert per_subband.shape == (8,) and x0.shape == (2 * steps, 8, 4, 4, 4)
    assert float(loss) < 1e-10
    # the student's K calls do not follow the teacher's 4 steps (a wrong target would not tell them apart)
    longer = DistillStep(teacher, prediction, steps, 4, clip=False)
    inputs, targets = longer.targets(cond, torch.Generator().manual_seed(1), bf16=False)
    with torch.no_grad():
        assert float(student_loss(student, cond, inputs, targets, longer.student, prediction)[0]) > 1e-6


def test_steps_bring_the_student_to_the_teachers_samples():
    """On a fixed batch and noise, distillation steps move the 1-call student onto the teacher's 4-step
    samples (the loss falls), through the training loop's optimizer and EMA."""
    from cwdm.training.state import EMA, TrainingParts

    torch.manual_seed(0)
    teacher = UNet(UNetConfig(in_channels=32, **TINY))
    with torch.no_grad():
        for p in teacher.parameters():
            torch.nn.init.normal_(p, std=0.1)
    model = copy.deepcopy(teacher).train()
    parts = TrainingParts(model, model, EMA(model, 0.9), torch.optim.AdamW(model.parameters(), lr=3e-3),
                          torch.Generator())
    step, cond, losses = DistillStep(teacher, X0, 1, 4, clip=False), torch.rand((2, 3, 8, 8, 8)), []
    for _ in range(15):
        parts.generator.manual_seed(7)  # the same z every step
        loss, _, x0 = step(parts, None, torch.zeros((2, 0, 8, 8, 8)), cond, bf16=False)
        losses.append(float(loss.detach()))
    assert parts.step == 15 and x0.shape == (2, 8, 4, 4, 4)
    assert losses[-1] < 0.2 * losses[0]
    assert all(not p.requires_grad for p in teacher.parameters()) and not teacher.training


# --- the run -------------------------------------------------------------------------------------------

def test_the_student_records_its_sampler_and_its_teacher(student):
    teacher, before, data, run = student
    assert sha(teacher) == before  # the teacher was never written
    state = read_checkpoint(checkpoint_files(run)[-1])
    assert state["step"] == 2 and state["sampler"] == {"name": "ddim_trailing", "steps": 2}
    origin = state["distilled_from"]
    assert origin["sha256"] == before and origin["teacher_steps"] == 3 and origin["student_timesteps"] == [999, 499]
    assert origin["teacher_timesteps"] == [999, 499, 0]
    assert state["distill_config"]["student_steps"] == 2 and state["target"] == "t2f"
    assert json.loads((run / "config.json").read_text())["distill_config"] == state["distill_config"]
    first = read_checkpoint(teacher)
    assert state["model_config"] == first["model_config"]
    assert any(not torch.equal(state["model"][k], first["ema"][k]) for k in first["ema"])  # it was trained


def test_exact_resume(tmp_path):
    data = write_brats_root(tmp_path / "data", cases=3)
    teacher = make_checkpoint(tmp_path / "teacher.pt")
    assert distill(cfg_for(teacher, data, tmp_path / "a", max_steps=4)) == 0
    assert distill(cfg_for(teacher, data, tmp_path / "b", max_steps=2)) == 0
    assert distill(DistillConfig(run_dir=tmp_path / "b", resume="auto", max_steps=4, num_workers=0,
                                 progress=False, tensorboard=False)) == 0  # everything else from the run
    a, b = read_checkpoint(checkpoint_files(tmp_path / "a")[-1]), read_checkpoint(checkpoint_files(tmp_path / "b")[-1])
    assert a["step"] == b["step"] == 4 and a["data_order"] == b["data_order"]
    for key in ("model", "ema"):
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key


def test_ctrl_c_saves_and_says_how_to_continue(tmp_path, monkeypatch, capsys):
    data = write_brats_root(tmp_path / "data", cases=2)
    teacher = make_checkpoint(tmp_path / "teacher.pt")
    real = DistillStep.__call__

    def interrupted(self, *args, **kwargs):
        out = real(self, *args, **kwargs)
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C during the first step
        return out

    monkeypatch.setattr(DistillStep, "__call__", interrupted)
    run = tmp_path / "run"
    assert distill(cfg_for(teacher, data, run, max_steps=100)) == 128 + signal.SIGINT
    assert [read_checkpoint(p)["step"] for p in checkpoint_files(run)] == [1]
    assert f"continue with: cwdm distill --run_dir {run} --resume auto" in capsys.readouterr().err


@pytest.mark.parametrize("change,message", [
    (["--student_steps", "1"], "the run was trained with student_steps 2, but 1 was given"),
    (["--teacher", "OTHER"], "not the teacher the run started from")])
def test_resume_keeps_student_and_teacher(student, tmp_path, capsys, change, message):
    teacher, _, data, run = student
    other = make_checkpoint(tmp_path / "other.pt", seed=5)
    change = [str(other) if c == "OTHER" else c for c in change]
    assert cli(["distill", "--run_dir", str(run), "--resume", "auto", "--max_steps", "3", *change, *QUICK]) == 1
    assert message in capsys.readouterr().err
    assert read_checkpoint(checkpoint_files(run)[-1])["step"] == 2


def test_a_run_that_died_before_its_first_save_restarts_with_its_settings(tmp_path, capsys):
    import shutil

    data = write_brats_root(tmp_path / "data", cases=2)
    run = tmp_path / "run"
    assert distill(cfg_for(make_checkpoint(tmp_path / "teacher.pt"), data, run, max_steps=1, teacher_steps=5)) == 0
    shutil.rmtree(run / "checkpoints")
    capsys.readouterr()
    assert cli(["distill", "--run_dir", str(run), "--resume", "auto", "--max_steps", "1", *QUICK]) == 0
    assert f"{run} holds no checkpoint" in capsys.readouterr().err
    state = read_checkpoint(checkpoint_files(run)[-1])
    assert state["distilled_from"]["teacher_steps"] == 5 and state["sampler"]["steps"] == 2


def test_cwdm_train_does_not_continue_a_distillation_run(student):
    from cwdm.training.config import TrainConfig
    from cwdm.training.loop import train

    run = student[3]
    with pytest.raises(CwdmError, match="a checkpoint of a distillation run; continue it with cwdm distill"):
        train(TrainConfig(run_dir=run, resume="auto", data_dir=student[2], contr="t2f", num_workers=0, **TINY))


def test_a_released_state_dict_teacher(tmp_path):
    data = write_brats_root(tmp_path / "data", cases=2)
    bare = export_state_dict(make_checkpoint(tmp_path / "t.pt", target="t1c"), tmp_path / "brats_t1c_bare.pt",
                             format="state_dict")
    assert distill(cfg_for(bare, data, tmp_path / "run", student_steps=1, max_steps=1, num_groups=4)) == 0
    state = read_checkpoint(checkpoint_files(tmp_path / "run")[-1])
    assert state["target"] == "t1c" and state["sampler"] == {"name": "ddim_trailing", "steps": 1}  # task from the name


@pytest.mark.parametrize("contr,prediction", [("any", "x0"), ("t2f", "edm")])
def test_unified_and_edm_teachers_give_students_of_their_kind(tmp_path, contr, prediction):
    from cwdm.training.config import TrainConfig
    from cwdm.training.loop import train

    data = write_brats_root(tmp_path / "data", cases=2)
    assert train(TrainConfig(data_dir=data, contr=contr, prediction=prediction, run_dir=tmp_path / "t", max_steps=1,
                             num_workers=0, progress=False, tensorboard=False, **TINY)) == 0
    teacher = read_checkpoint(checkpoint_files(tmp_path / "t")[-1])
    assert distill(cfg_for(checkpoint_files(tmp_path / "t")[-1], data, tmp_path / "s", max_steps=1)) == 0
    state = read_checkpoint(checkpoint_files(tmp_path / "s")[-1])
    assert state["task"] == teacher["task"] and state.get("prediction") == teacher.get("prediction")
    assert state["sampler"] == {"name": "ddim_trailing", "steps": 2}


def test_an_inpainting_teacher_gives_a_student_that_fills_in_its_calls(tmp_path, monkeypatch):
    from conftest import write_inpainting_root
    from cwdm.training.config import TrainConfig
    from cwdm.training.loop import train

    cases = write_inpainting_root(tmp_path / "cases")
    assert train(TrainConfig(data_dir=cases, inpainting=True, run_dir=tmp_path / "t", max_steps=1, num_workers=0,
                             progress=False, tensorboard=False, **TINY)) == 0
    assert distill(cfg_for(checkpoint_files(tmp_path / "t")[-1], cases, tmp_path / "s", student_steps=1,
                           max_steps=1)) == 0
    student = checkpoint_files(tmp_path / "s")[-1]
    assert read_checkpoint(student)["task"]["inpainting"] is True
    calls = Calls(monkeypatch)
    assert cli(["sample", "--data_dir", str(cases), "--model_path", str(student), "--output_dir", str(tmp_path / "o"),
                "--progress", "False", "--num_workers", "0"]) == 0
    assert calls.timesteps == [999, 999]  # two cases, one call each
    assert len(list((tmp_path / "o").glob("*-t1n-inference.nii.gz"))) == 2


@pytest.mark.parametrize("args,message", [
    (["--teacher", "{root}/none.pt"], "none.pt: teacher checkpoint not found"),
    (["--teacher", "{root}/notes.pt"], "notes.pt: not a PyTorch checkpoint: it is a text file"),
    (["--teacher", "{teacher}", "--student_steps", "3"], "--student_steps must be 1 or 2, got 3"),
    (["--teacher", "{teacher}", "--student_steps", "2", "--teacher_steps", "1"], "--teacher_steps must be in 2..1000"),
    (["--teacher", "{teacher}", "--data_dir", "{root}/nocond"],
     "the teacher takes t1n, t1c, t2w: 1 of 1 case is unusable: "),
    (["--teacher", "{student}"], "a distilled student (it samples with ddim_trailing in 2 calls)"),
])
def test_errors_are_one_line_and_write_nothing(student, tmp_path, capsys, args, message):
    teacher = make_checkpoint(tmp_path / "teacher.pt")
    (tmp_path / "notes.pt").write_text("not weights\n")
    write_brats_root(tmp_path / "nocond", cases=1, missing={"BraTS-GLI-00000-000": ["t1n"]})
    names = dict(root=tmp_path, teacher=teacher, student=checkpoint_files(student[3])[-1])
    args = [a.format(**names) for a in args]
    run = tmp_path / "run"
    assert cli(["distill", *(["--data_dir", str(student[2])] if "--data_dir" not in args else []), *args,
                "--run_dir", str(run), "--max_steps", "1", *QUICK]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("cwdm distill: error: ") and message in lines[-1], lines
    assert "Traceback" not in "\n".join(lines) and not run.exists()


# --- sampling a student --------------------------------------------------------------------------------

def test_sample_uses_the_recorded_sampler_unless_one_is_given(student, tmp_path, monkeypatch, capsys):
    _, _, data, run = student
    ckpt = checkpoint_files(run)[-1]
    calls = Calls(monkeypatch)
    base = ["sample", "--data_dir", str(data), "--model_path", str(ckpt), "--progress", "False", "--num_workers", "0"]
    assert cli(base + ["--output_dir", str(tmp_path / "own")]) == 0
    assert calls.timesteps == [999, 499] * 2  # two cases, the student's 2 calls each
    err = capsys.readouterr().err
    assert "sampling with the sampler the checkpoint records, ddim_trailing with 2 steps (2 network calls per case)" \
        in err and "with ddim_trailing (2 network calls per case" in err
    record = json.loads((tmp_path / "own" / "cwdm_provenance.json").read_text())
    [settings] = [r["settings"] for r in record["runs"].values()]
    assert (settings["sampler"], settings["sampling_steps"]) == ("ddim_trailing", 2)
    calls.timesteps.clear()
    assert cli(base + ["--output_dir", str(tmp_path / "given"), "--sampler", "ddpm", "--sampling_steps", "3"]) == 0
    assert calls.timesteps == [999, 500, 0] * 2 and "records" not in capsys.readouterr().err
    calls.timesteps.clear()  # the same folder without flags: its results were made otherwise
    assert cli(base + ["--output_dir", str(tmp_path / "given")]) == 1
    assert "sampler ddpm -> ddim_trailing" in capsys.readouterr().err and not calls.timesteps


def test_auto_and_the_api_use_the_recorded_sampler(student, tmp_path, monkeypatch, capsys):
    _, _, data, run = student
    ckpt = checkpoint_files(run)[-1]
    calls = Calls(monkeypatch)
    assert cli(["auto", "--data_dir", str(data), "--model", f"t2f={ckpt}", "--output_dir", str(tmp_path / "auto"),
                "--progress", "False", "--num_workers", "0"]) == 0
    assert calls.timesteps == [999, 499] and "ddim_trailing with 2 steps" in capsys.readouterr().err
    calls.timesteps.clear()
    written = cwdm.MissingModality(models={"t2f": ckpt}, device="cpu").infer_batch(data, tmp_path / "api")
    assert list(written) == ["BraTS-GLI-00001-000"] and calls.timesteps == [999, 499]
    calls.timesteps.clear()
    cwdm.MissingModality(models={"t2f": ckpt}, device="cpu", sampler="ddpm", steps=3).infer_batch(data, tmp_path / "b")
    assert calls.timesteps == [999, 500, 0]
    # one run, one sampler: a student and a checkpoint that records none need a choice
    other = make_checkpoint(tmp_path / "t1c.pt", target="t1c")
    missing = write_brats_root(tmp_path / "two", cases=2, missing={"BraTS-GLI-00000-000": ["t2f"],
                                                                   "BraTS-GLI-00001-000": ["t1c"]})
    assert cli(["auto", "--data_dir", str(missing), "--model", f"t2f={ckpt}", "--model", f"t1c={other}",
                "--progress", "False", "--num_workers", "0", "--output_dir", str(tmp_path / "mixed")]) == 1
    assert "the checkpoints record different samplers" in capsys.readouterr().err.strip().splitlines()[-1]


def test_export_keeps_the_sampler(student, tmp_path, capsys):
    _, _, _, run = student
    state = read_checkpoint(checkpoint_files(run)[-1])
    for fmt in ("cwdm", "auto"):
        out = export_state_dict(run, tmp_path / f"{fmt}.pt", format=fmt)
        exported = read_checkpoint(out)
        assert exported["sampler"] == state["sampler"] and exported["distilled_from"] == state["distilled_from"]
        assert "optimizer" not in exported and load_model(out).meta["sampler"] == state["sampler"]
    capsys.readouterr()
    bare = export_state_dict(run, tmp_path / "bare.pt", format="state_dict")
    assert all(isinstance(v, torch.Tensor) for v in torch.load(bare, weights_only=True).values())
    assert "--sampler ddim_trailing --sampling_steps 2" in capsys.readouterr().out

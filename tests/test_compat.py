import os
import subprocess
import sys
from pathlib import Path

import pytest

from cwdm.commands.compat import translate
from cwdm.errors import CwdmError
from cwdm.training.state import checkpoint_files

ROOT = Path(__file__).resolve().parents[1]


def test_reference_train_command_translates():
    notes = []
    argv = ["--dataset=brats", "--num_channels=64", "--dims=3", "--learn_sigma=False", "--predict_xstart=True",
            "--channel_mult=1,2,2,4,4", "--contr=t1n", "--additive_skips=False", "--lr=1e-5",
            "--resume_checkpoint", "x.pt", "--devices", "0"]
    out = translate("train", argv, note=notes.append)
    assert out == ["train", "--num_channels=64", "--channel_mult=1,2,2,4,4", "--contr=t1n",
                   "--additive_skips=False", "--lr=1e-5", "--resume_checkpoint=x.pt"]
    assert any("--dataset" in n for n in notes) and any("--devices" in n for n in notes)


def test_use_ddim_and_zero_steps():
    assert translate("sample", ["--use_ddim=True", "--sampling_steps=50"], note=lambda m: None) == \
        ["sample", "--sampler", "ddim", "--sampling_steps=50"]
    assert translate("sample", ["--use_ddim=False", "--sampling_steps=0"], note=lambda m: None) == ["sample"]


@pytest.mark.parametrize("flag", ["--dims=2", "--learn_sigma=True", "--noise_schedule=cosine", "--use_freq=True"])
def test_unsupported_model_variants_refused(flag):
    with pytest.raises(CwdmError, match="not supported"):
        translate("train", [flag])


def _env(**kw):
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update({k: str(v) for k, v in kw.items()})
    return env


@pytest.mark.slow
def test_shim_script_runs_train(brats_root, tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "train.py"), "--dims=3", "--dataset=brats",
                           f"--data_dir={brats_root}", "--contr=t2w", f"--run_dir={run_dir}", "--num_channels=32",
                           "--channel_mult=1", "--num_res_blocks=1", "--max_steps=1", "--num_workers=0",
                           "--progress=False"], env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(checkpoint_files(run_dir)) == 1


def _hostile_bin(tmp_path, entry_point=None):
    """A bin folder whose `python`/`python3` are not the interpreter with cwdm (they fail loudly),
    optionally with a `cwdm` entry point as pip writes it (``entry_point`` is its text)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in ("python", "python3"):
        fake = bin_dir / name
        fake.write_text("#!/bin/sh\necho \"wrong python: $0\" >&2\nexit 97\n")
        fake.chmod(0o755)
    if entry_point is not None:
        (bin_dir / "cwdm").write_text(entry_point)
        (bin_dir / "cwdm").chmod(0o755)
    return f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin"


PIP_ENTRY = "from cwdm.cli import main\nimport sys\nsys.exit(main())\n"
SH_LAUNCHER = "#!/bin/sh\n" + "'" * 3 + "exec' \"{exe}\" \"$0\" \"$@\"\n' " + "'" * 3 + "\n"  # pip, long paths


@pytest.mark.slow
def test_run_sh_train_then_sample(brats_root, tmp_path):
    """No environment activated: python/python3 on PATH are wrong ones; run.sh must use the
    interpreter of the installed `cwdm` command (train) or the PYTHON setting (sample)."""
    common = dict(CHANNELS=16, CHANNEL_MULT="1 2", NUM_RES_BLOCKS=1, NUM_GROUPS=8, DATA_DIR=brats_root, RUN_DIR=tmp_path / "run", CONTR="t1c",
                  ITERATIONS=2, SAVE_INTERVAL=2)
    path = _hostile_bin(tmp_path, f"#!{sys.executable}\n" + PIP_ENTRY)
    proc = subprocess.run(["bash", str(ROOT / "run.sh")], env=_env(MODE="train", PATH=path, **common),
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"+ {sys.executable} -m cwdm train" in proc.stderr
    ckpt = checkpoint_files(tmp_path / "run")[-1]
    path = _hostile_bin(tmp_path / "other")  # no cwdm command at all: the PYTHON setting decides
    proc = subprocess.run(["bash", str(ROOT / "run.sh")],
                          env=_env(MODE="sample", VAL_DIR=brats_root, MODEL_PATH=ckpt, OUTPUT_DIR=tmp_path / "out",
                                   SAMPLER="ddim", SAMPLING_STEPS=2, PATH=path, PYTHON=sys.executable, **common),
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "out" / "BraTS-GLI-00000-000" / "BraTS-GLI-00000-000-t1c.nii.gz").is_file()
    assert f"+ {sys.executable} -m cwdm sample" in proc.stderr


@pytest.mark.parametrize("launcher", ["shebang", "env", "sh", "none"])
def test_run_sh_python_of_the_entry_point(tmp_path, launcher):
    """The entry-point forms pip writes; without a cwdm command run.sh falls back to python3 and
    says in one line that it cannot import cwdm."""
    entry = {"shebang": f"#!{sys.executable}\n" + PIP_ENTRY,
             "env": f"#!/usr/bin/env {sys.executable}\n" + PIP_ENTRY,
             "sh": SH_LAUNCHER.format(exe=sys.executable) + PIP_ENTRY,
             "none": None}[launcher]
    env = _env(MODE="evaluate", PATH=_hostile_bin(tmp_path, entry), OUTPUT_DIR=tmp_path / "nope",
               VAL_DIR=tmp_path / "nope2")
    proc = subprocess.run(["bash", str(ROOT / "run.sh")], env=env, capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    if launcher == "none":
        assert proc.returncode == 2 and "'python3' cannot import cwdm" in proc.stderr
        assert "+ " not in proc.stderr
        return
    # the right interpreter ran cwdm: a one-line user error about the missing folder
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert f"+ {sys.executable} -m cwdm evaluate" in proc.stderr and "does not exist" in proc.stderr


def test_auto_drops_contr():
    notes = []
    assert translate("auto", ["--contr=t2f", "--data_dir=x"], note=notes.append) == ["auto", "--data_dir=x"]
    assert notes and "--contr" in notes[0]


def test_sample_auto_model_path_and_output_dir(tmp_path):
    notes = []
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    out = translate("auto", ["--data_dir=d", f"--model_path={folder}", "--output_dir", "res", "--contr=t2f"],
                    note=notes.append)
    assert out == ["auto", "--data_dir=d", f"--models_dir={folder}"]
    assert any("--output_dir res is ignored" in n and "case folder" in n for n in notes)
    one = folder / "flair_gen.pt"
    one.write_bytes(b"x")
    with pytest.raises(CwdmError, match="one checkpoint per contrast.*--model_t1n"):
        translate("auto", [f"--model_path={one}"], note=lambda m: None)
    with pytest.raises(CwdmError, match="no such folder"):
        translate("auto", [f"--model_path={tmp_path / 'nowhere'}"], note=lambda m: None)
    # the other commands keep --model_path / --output_dir as they are
    assert translate("sample", [f"--model_path={one}", "--output_dir=r"], note=lambda m: None) == \
        ["sample", f"--model_path={one}", "--output_dir=r"]


def test_sample_auto_shim_writes_into_the_case_folders(make_brats_root, tmp_path):
    from conftest import make_checkpoint

    data = make_brats_root(cases=2, missing={"BraTS-GLI-00001-000": ["t1c"]})
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    make_checkpoint(folder / "brats_t1c_1200000.pt", target="t1c")
    results = tmp_path / "results"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "sample_auto.py"), f"--data_dir={data}",
                           f"--model_path={folder}", f"--output_dir={results}", "--dims=3", "--use_ddim=True",
                           "--sampling_steps=2", "--contr=t1c", "--progress=False", "--num_workers=0"],
                          env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (data / "BraTS-GLI-00001-000" / "BraTS-GLI-00001-000-t1c.nii.gz").is_file()
    assert not results.exists()
    assert f"into the case folders of {data}" in proc.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("mode,command", [("training", "train"), ("sampling", "sample")])
def test_run_sh_reference_mode_names(tmp_path, mode, command):
    proc = subprocess.run(["bash", str(ROOT / "run.sh")],
                          env=_env(MODE=mode, DATA_DIR=tmp_path / "none", VAL_DIR=tmp_path / "none",
                                   MODEL_PATH=tmp_path / "m.pt", RUN_DIR=tmp_path / "run", OUTPUT_DIR=tmp_path / "o"),
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert f" -m cwdm {command} " in proc.stderr
    assert proc.returncode == 1 and "unknown MODE" not in proc.stderr


@pytest.mark.parametrize("seg_dir", ["", "my segs"])
def test_run_sh_evaluate_passes_seg_dir_only_when_set(tmp_path, seg_dir):
    proc = subprocess.run(["bash", str(ROOT / "run.sh")],
                          env=_env(MODE="evaluate", OUTPUT_DIR=tmp_path / "none", VAL_DIR=tmp_path / "ref",
                                   SEG_DIR=seg_dir), capture_output=True, text=True, timeout=120, cwd=tmp_path)
    command = proc.stderr.splitlines()[0]
    assert " -m cwdm evaluate --pred_dir " in command
    assert command.endswith(f"--seg_dir {seg_dir}") if seg_dir else "--seg_dir" not in command
    assert proc.returncode == 1


def test_reference_training_flags_pass_through():
    notes = []
    argv = ["--resume_checkpoint=w.pt", "--resume_step=1200000", "--schedule_sampler=uniform",
            "--use_tensorboard=False", "--tensorboard_path", "logs/tb"]
    assert translate("train", argv, note=notes.append) == \
        ["train", "--resume_checkpoint=w.pt", "--resume_step=1200000", "--use_tensorboard=False",
         "--tensorboard_path=logs/tb"]
    assert any("--tensorboard_path logs/tb" in n and "--run_dir" in n for n in notes)
    # the reference's run.sh always passes these: empty path = default folder, step 0 = none
    assert translate("train", ["--resume_step=0", "--tensorboard_path="], note=lambda m: None) == \
        ["train", "--resume_step=0"]


def test_schedule_sampler_other_than_uniform_refused():
    with pytest.raises(CwdmError, match="--schedule_sampler loss-second-moment is not supported: cwdm draws "
                                        "timesteps uniformly"):
        translate("train", ["--schedule_sampler=loss-second-moment"])


@pytest.mark.parametrize("mode,command,error", [
    ("train", "--inpainting True --mask_weight 3", "data folder does not exist"),
    ("sample", "--model_path", "checkpoint file not found")])
def test_run_sh_task_inpainting(tmp_path, mode, command, error):
    """TASK=inpainting: train passes --inpainting True (and MASK_WEIGHT) to a run folder of its own; sample
    passes no target (the checkpoint says it); neither passes --contr (the task's target is t1n)."""
    proc = subprocess.run(["bash", str(ROOT / "run.sh")],
                          env=_env(MODE=mode, TASK="inpainting", CONTR="t2f", MASK_WEIGHT=3, DATA_DIR=tmp_path / "none",
                                   VAL_DIR=tmp_path / "none", MODEL_PATH=tmp_path / "m.pt"),
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    line = proc.stderr.splitlines()[0]
    assert f" -m cwdm {mode} " in line and command in line and "--contr" not in line
    assert mode != "train" or "--run_dir ./runs/inpainting " in line
    assert proc.returncode == 1 and error in proc.stderr  # the flags were taken: the error is the missing input
    bad = subprocess.run(["bash", str(ROOT / "run.sh")], env=_env(MODE=mode, TASK="inpaint"), capture_output=True,
                         text=True, timeout=120, cwd=tmp_path)
    assert bad.returncode == 2 and "unknown TASK 'inpaint' (synthesis, inpainting)" in bad.stderr


@pytest.mark.slow
def test_run_sh_inpainting_train_then_sample(tmp_path):
    from conftest import write_inpainting_root

    data = write_inpainting_root(tmp_path / "cases")
    common = dict(TASK="inpainting", CHANNELS=8, CHANNEL_MULT="1 2", NUM_RES_BLOCKS=1, NUM_GROUPS=4, ITERATIONS=2,
                  SAVE_INTERVAL=2, LR="1e-3", PYTHON=sys.executable)
    proc = subprocess.run(["bash", str(ROOT / "run.sh")], env=_env(MODE="train", DATA_DIR=data, **common),
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ckpt = checkpoint_files(tmp_path / "runs" / "inpainting")[-1]
    proc = subprocess.run(["bash", str(ROOT / "run.sh")],
                          env=_env(MODE="sample", VAL_DIR=data, MODEL_PATH=ckpt, OUTPUT_DIR=tmp_path / "out", SAMPLER="ddim",
                                   SAMPLING_STEPS=2, **common), capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "out" / "BraTS-GLI-00000-000-t1n-inference.nii.gz").is_file()


def _known_flags(command: str, line: str):
    """The flags of the ``+ ...`` line run.sh printed, parsed by ``cwdm <command>``'s own parser."""
    from cwdm.cli import build_parser

    words = line.split()
    parser, _ = build_parser(command)
    args, extras = parser.parse_known_args(words[words.index(command) + 1:])
    assert not extras, extras
    return args


def test_run_sh_distill_and_sampling_without_a_sampler(tmp_path):
    """MODE=distill runs cwdm distill with flags it knows (here a missing teacher: one line, status 1);
    sampling without SAMPLER / SAMPLING_STEPS passes neither, so a student's recorded sampler applies."""
    env = dict(MODEL_PATH=tmp_path / "teacher.pt", DATA_DIR=tmp_path / "data", VAL_DIR=tmp_path / "val",
               OUTPUT_DIR=tmp_path / "out", STUDENT_STEPS=2, TEACHER_STEPS=8, DISTILL_ITERATIONS=50)
    proc = subprocess.run(["bash", str(ROOT / "run.sh")], env=_env(MODE="distill", **env), capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)
    line = proc.stderr.splitlines()[0]
    args = _known_flags("distill", line)
    assert (args.teacher, args.student_steps, args.teacher_steps, args.max_steps) == (tmp_path / "teacher.pt", 2, 8, 50)
    assert args.run_dir == Path("./runs/t1n_distill2") and args.resume == "auto"
    assert proc.returncode == 1 and "teacher.pt: teacher checkpoint not found" in proc.stderr.splitlines()[-1]
    proc = subprocess.run(["bash", str(ROOT / "run.sh")], env=_env(MODE="sample", **env), capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)
    line = proc.stderr.splitlines()[0]
    args = _known_flags("sample", line)
    assert "--sampler" not in line and "--sampling_steps" not in line and args.ensemble == 1 and proc.returncode == 1

import json
from pathlib import Path

import numpy as np
import pytest

from cwdm.evaluation.baseline import fit_linear_baseline, predict_linear_baseline
from cwdm.data.cases import discover_cases
from cwdm.commands.demo import DemoConfig, run_demo


def test_linear_baseline_recovers_an_exact_linear_relation(make_brats_root, tmp_path):
    import nibabel as nib

    root = make_brats_root(cases=2)
    # make t2f an exact affine function of the normalized conditions
    from cwdm.data.preprocess import clip_and_normalize

    for case in discover_cases(root):
        conds = [clip_and_normalize(np.asarray(nib.load(str(case.files[m])).dataobj)) for m in ("t1n", "t1c", "t2w")]
        mask = conds[0] > 0
        t2f = np.where(mask, 0.2 * conds[0] + 0.3 * conds[1] + 0.1 * conds[2] + 0.05, 0).astype(np.float32)
        img = nib.load(str(case.files["t2f"]))
        nib.save(nib.Nifti1Image(t2f, img.affine), str(case.files["t2f"]))
    cases = discover_cases(root)
    coef = fit_linear_baseline(cases, "t2f")
    # normalization rescales the target, so compare predictions, not raw weights
    pred = predict_linear_baseline(cases[0], "t2f", coef)
    truth = clip_and_normalize(np.asarray(nib.load(str(cases[0].files["t2f"])).dataobj))
    assert np.abs(pred - truth).max() < 1e-2
    assert len(coef) == 4


def _reduced(out, **kw):
    kw.setdefault("max_steps", 3)
    return DemoConfig(out=out, train_cases=2, test_cases=1, downsample=8, num_channels=8, channel_mult=(1, 2),
                      num_groups=4, batch_size=1, sampling_steps=2, num_workers=0, progress=False, **kw)


@pytest.mark.slow
def test_reduced_demo_end_to_end(tmp_path):
    cfg = _reduced(tmp_path / "demo")
    summary = run_demo(cfg)
    out = tmp_path / "demo"
    assert summary["train_steps"] == 3 and not summary["cut_by_time_cap"]
    for method in ("cwdm", "baseline"):
        assert 0 < summary[method]["ssim"] <= 1
        assert 0 <= summary[method]["mae_tumor"] <= 1 and 0 <= summary[method]["mae_non_tumor"] <= 1
    report = (out / "report.md").read_text()
    assert "linear regression baseline" in report and "| cwdm" in report and "MAE tumour" in report
    assert "CUT SHORT" not in report and "![montage](montage.png)" in report
    assert json.loads((out / "summary.json").read_text())["target"] == "t2f"
    assert (out / "synthesis" / "BraTS-GLI-00002-000" / "BraTS-GLI-00002-000-t2f.nii.gz").is_file()
    assert (out / "montage.png").stat().st_size > 10_000
    assert list((out / "evaluation" / "cwdm" / "montages").glob("*.png"))
    # a finished demo rerun with its settings redoes nothing and gives the same summary
    stamp = (out / "report.md").stat().st_mtime_ns
    assert run_demo(cfg) == json.loads((out / "summary.json").read_text())
    assert (out / "report.md").stat().st_mtime_ns == stamp


@pytest.mark.slow
def test_same_seed_gives_identical_metrics(tmp_path):
    first = run_demo(_reduced(tmp_path / "a"))
    second = run_demo(_reduced(tmp_path / "b"))
    assert first["cwdm"] == second["cwdm"] and first["baseline"] == second["baseline"]
    other = run_demo(_reduced(tmp_path / "c", seed=1))
    assert other["cwdm"] != first["cwdm"]  # the seed really reaches data, training and sampling


def test_time_cap_is_reported_as_a_meaningless_verdict(tmp_path):
    cfg = _reduced(tmp_path / "demo", max_minutes=1e-6, max_steps=1000)
    summary = run_demo(cfg)
    steps = summary["train_steps"]
    assert summary["cut_by_time_cap"] and steps < 1000
    report = (tmp_path / "demo" / "report.md").read_text()
    assert f"CUT SHORT** by --max_minutes 1e-06 after {steps} of 1000 steps" in report
    assert "the comparison below means nothing" in report
    assert f"Verdict (meaningless: training cut short at step {steps}): cwdm " in report
    assert "but NOT on" not in report.replace("but NOT on ", "", 1)  # never "but NOT ... but NOT"


@pytest.mark.parametrize("ssim, tumour, outside, sentence", [
    (True, True, True, "cwdm beats the baseline on SSIM, MAE inside the tumour and MAE outside the tumour."),
    (True, True, False, "cwdm beats the baseline on SSIM and MAE inside the tumour, but NOT on MAE outside the "
                        "tumour."),
    (True, False, True, "cwdm beats the baseline on SSIM and MAE outside the tumour, but NOT on MAE inside the "
                        "tumour."),
    (True, False, False, "cwdm beats the baseline on SSIM, but NOT on MAE inside the tumour or MAE outside the "
                         "tumour."),
    (False, True, True, "cwdm beats the baseline on MAE inside the tumour and MAE outside the tumour, but NOT on "
                        "SSIM."),
    (False, True, False, "cwdm beats the baseline on MAE inside the tumour, but NOT on SSIM or MAE outside the "
                         "tumour."),
    (False, False, True, "cwdm beats the baseline on MAE outside the tumour, but NOT on SSIM or MAE inside the "
                         "tumour."),
    (False, False, False, "cwdm does NOT beat the baseline on SSIM, MAE inside the tumour or MAE outside the "
                          "tumour."),
])
def test_verdict_sentence_for_every_combination(ssim, tumour, outside, sentence):
    from cwdm.commands.demo_report import verdict_sentence, verdicts

    assert verdict_sentence({"ssim": ssim, "mae_tumor": tumour, "mae_non_tumor": outside}) == sentence
    cwdm = {"ssim": 0.9 if ssim else 0.8, "mae_tumor": 0.1 if tumour else 0.3, "mae_non_tumor": 0.1 if outside else 0.3}
    base = {"ssim": 0.85, "mae_tumor": 0.2, "mae_non_tumor": 0.2}
    assert verdicts(cwdm, base) == {"ssim": ssim, "mae_tumor": tumour, "mae_non_tumor": outside}


def test_train_spellings_are_the_demo_flags_and_old_ones_aliases():
    from cwdm.cli import build_parser
    from cwdm.config import from_args

    parser, module = build_parser("demo")
    new = from_args(module.CONFIG, parser.parse_args(["--num_channels", "8", "--max_steps", "5", "--max_minutes", "2",
                                                      "--output_dir", "x"]))
    old = from_args(module.CONFIG, parser.parse_args(["--model_channels", "8", "--train_steps", "5",
                                                      "--train_minutes", "2", "--out", "x"]))
    assert new == old == DemoConfig(out=Path("x"), num_channels=8, max_steps=5, max_minutes=2.0)
    text = parser.format_help()
    assert "--num_channels" in text and "--max_steps" in text and "--max_minutes" in text


def _tiny_flags(out):
    return ["--output_dir", str(out), "--train_cases", "2", "--test_cases", "1", "--downsample", "8",
            "--num_channels", "8", "--channel_mult", "1", "2", "--num_groups", "4", "--batch_size", "1",
            "--max_steps", "4", "--sampling_steps", "2", "--num_workers", "0", "--progress", "False"]


def _mtimes(folder):
    return {p: p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_interrupted_demo_continues_where_it_stopped(tmp_path, monkeypatch, capsys):
    """Ctrl-C in training, then in synthesis: each rerun of the same command keeps what was finished, and the
    result is the uninterrupted demo's."""
    import os
    import shlex
    import signal

    import cwdm.commands.demo
    import cwdm.training.log
    from cwdm.cli import main

    out = tmp_path / "my demo"
    flags = _tiny_flags(out)
    original_step = cwdm.training.log.TrainLogger.step

    def ctrl_c_at_step_2(self, step, *args, **kwargs):
        original_step(self, step, *args, **kwargs)
        if step == 2:
            os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C sends; the training library saves and stops

    with monkeypatch.context() as m:
        m.setattr(cwdm.training.log.TrainLogger, "step", ctrl_c_at_step_2)
        assert main(["demo", *flags]) == 130
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("cwdm demo: interrupted") and "cwdm train" not in last
    assert shlex.split(last.partition("continue with: ")[2]) == ["cwdm", "demo", *flags]
    assert [p.name for p in (out / "run" / "checkpoints").iterdir()] == ["ckpt_00000002.pt"]
    data = _mtimes(out / "data")
    assert len(data) == 3 * 5  # 3 cases, 4 contrasts and seg each

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(cwdm.commands.demo, "_synthesize", interrupted)
        assert main(["demo", *flags]) == 130
    err = capsys.readouterr().err
    assert "[demo] phantom data: kept" in err and "at step 2" in err  # training resumed from its checkpoint
    ckpt = out / "run" / "checkpoints" / "ckpt_00000004.pt"
    trained = ckpt.stat().st_mtime_ns

    assert main(["demo", *flags]) == 0
    err = capsys.readouterr().err
    assert "[demo] training: kept" in err and "[demo] synthesis:" in err
    assert ckpt.stat().st_mtime_ns == trained and _mtimes(out / "data") == data
    summary = json.loads((out / "summary.json").read_text())
    assert summary["train_steps"] == 4 and not summary["cut_by_time_cap"]
    assert "CUT SHORT" not in (out / "report.md").read_text()

    straight = run_demo(_reduced(tmp_path / "straight", max_steps=4))
    assert summary["cwdm"] == straight["cwdm"] and summary["baseline"] == straight["baseline"]


def test_other_settings_on_a_demo_folder_are_refused(tmp_path, capsys):
    from cwdm.cli import main
    from cwdm.commands.demo import DemoState, _settings

    out = tmp_path / "demo"
    out.mkdir()
    cfg = _reduced(out, max_steps=4)
    DemoState(out, _settings(cfg)).mark("started")
    before = _mtimes(out)
    assert main(["demo", *_tiny_flags(out), "--seed", "1", "--max_steps", "5"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "other settings: --seed 0 (now 1), --max_steps 4 (now 5)" in err and "--overwrite" in err
    assert _mtimes(out) == before
    (out / "unrelated.txt").write_text("x")
    (out / "demo_state.json").unlink()
    assert main(["demo", *_tiny_flags(out)]) == 1
    assert "already exists and is not empty" in capsys.readouterr().err

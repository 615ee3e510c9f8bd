"""``cwdm demo``: the whole pipeline on embedded data, on a CPU, in minutes.

1. builds a small BraTS-like phantom set (downsampled) from the shipped
   ICBM152 templates: training cases and held-out test cases;
2. trains a small cWDM for the target contrast for a fixed number of steps
   (``--train_steps``; ``--train_minutes`` is an optional cap, and the report
   says when it cut training short);
3. synthesizes the held-out targets with a fast sampler;
4. fits a voxel-wise linear regression baseline on the training cases;
5. evaluates both against the true targets (the challenge's SSIM, PSNR, MSE,
   and MAE inside / outside the tumour) and writes ``report.md`` with the
   table and a montage of one case: conditions, reference, cwdm and baseline
   syntheses and their error maps, sliced through the tumour.

Everything goes into ``--out`` (default ``cwdm-demo``). Data, initialization,
data order, timesteps, noise and sampling all come from ``--seed``, so the
same commit and seed give the same numbers on the same software stack
whatever the machine's speed. The defaults take under 10 minutes on 2 idle
CPU cores.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from . import MODALITIES
from .errors import CwdmError

HELP = "phantom data -> small model -> synthesis -> evaluation report, on CPU"


@dataclass
class DemoConfig:
    out: Path = field(default=Path("cwdm-demo"), metadata={"help": "output folder"})
    target: str = field(default="t2f", metadata={"help": "contrast to synthesize"})
    train_cases: int = field(default=64, metadata={"help": "phantom training cases"})
    test_cases: int = field(default=4, metadata={"help": "held-out phantom cases"})
    downsample: int = field(default=4, metadata={"help": "phantom downsampling factor (4: 60x60x39)"})
    seed: int = field(default=0, metadata={"help": "seed of data, training and sampling"})
    model_channels: int = field(default=16, metadata={"help": "base channels of the demo network"})
    channel_mult: Tuple[int, ...] = field(default=(1, 2, 2), metadata={"help": "channel multipliers"})
    num_res_blocks: int = field(default=1, metadata={"help": "residual blocks per level"})
    num_groups: int = field(default=8, metadata={"help": "GroupNorm groups"})
    batch_size: int = field(default=2, metadata={"help": "training batch size"})
    lr: float = field(default=2e-4, metadata={"help": "learning rate (higher than released: short run)"})
    lr_anneal: bool = field(default=False, metadata={"help": "decay the learning rate linearly to 0 over the "
                                                             "training steps (measured worse here)"})
    ema_rate: float = field(default=0.99, metadata={"help": "EMA rate (short run)"})
    train_steps: int = field(default=1400, metadata={"help": "training steps (fixed: results do not depend "
                                                              "on the machine's speed)"})
    train_minutes: Optional[float] = field(default=None, metadata={
        "help": "optional training time cap in minutes (the report says when it cut training short)"})
    sampler: str = field(default="ddim", metadata={"help": "sampler for the test cases"})
    sampling_steps: int = field(default=10, metadata={"help": "network calls per case"})
    num_workers: int = field(default=1, metadata={"help": "DataLoader workers"})
    overwrite: bool = field(default=False, metadata={"help": "replace an existing demo folder"})
    progress: bool = field(default=True, metadata={"help": "show progress bars"})


CONFIG = DemoConfig


def _prepare_out(cfg: DemoConfig) -> Path:
    out = Path(cfg.out)
    if out.exists() and any(out.iterdir()):
        if not cfg.overwrite:
            raise CwdmError(f"{out} already exists and is not empty (use --overwrite or another --out)")
        if not (out / "report.md").exists() and not (out / "data").exists():
            raise CwdmError(f"{out} does not look like a cwdm demo folder; refusing to delete it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def run_demo(cfg: DemoConfig) -> dict:
    """Run the demo; returns the summary dict that is also written to ``summary.json``."""
    from .baseline import fit_linear_baseline, write_baseline
    from .data import discover_cases
    from .phantom_set import make_phantom_set
    from .scoring import evaluate_dirs

    if cfg.target not in MODALITIES:
        raise CwdmError(f"--target must be one of {', '.join(MODALITIES)}, got {cfg.target}")
    out = _prepare_out(cfg)
    times = {}

    def step(name: str, t0: float) -> None:
        times[name] = round(time.monotonic() - t0, 1)
        print(f"[demo] {name}: {times[name]:.1f} s", file=sys.stderr)

    t0 = time.monotonic()
    make_phantom_set(out / "data" / "train", cfg.train_cases, cfg.seed, cfg.downsample, progress=cfg.progress)
    make_phantom_set(out / "data" / "test", cfg.test_cases, cfg.seed, cfg.downsample, start=cfg.train_cases,
                     progress=cfg.progress)
    step("phantom data", t0)

    t0 = time.monotonic()
    ckpt = _train(cfg, out / "data" / "train", out / "run")
    step("training", t0)

    t0 = time.monotonic()
    _synthesize(cfg, ckpt, out / "data" / "test", out / "synthesis")
    step("synthesis", t0)

    t0 = time.monotonic()
    coef = fit_linear_baseline(discover_cases(out / "data" / "train"), cfg.target)
    write_baseline(discover_cases(out / "data" / "test"), cfg.target, coef, out / "baseline")
    step("baseline", t0)

    t0 = time.monotonic()
    _, model_summary = evaluate_dirs(out / "synthesis", out / "data" / "test", out / "evaluation" / "cwdm",
                                     progress=False, verbose=False)
    _, base_summary = evaluate_dirs(out / "baseline", out / "data" / "test", out / "evaluation" / "baseline",
                                    montage=False, progress=False, verbose=False)
    step("evaluation", t0)

    from .checkpoint import read_checkpoint

    steps_done = int(read_checkpoint(ckpt)["step"])
    summary = {"target": cfg.target, "train_steps": steps_done, "planned_steps": cfg.train_steps,
               "cut_by_time_cap": steps_done < cfg.train_steps, "checkpoint": str(ckpt),
               "sampler": f"{cfg.sampler} {cfg.sampling_steps}", "seconds": times,
               "cwdm": _means(model_summary), "baseline": _means(base_summary),
               "baseline_coefficients": [float(c) for c in coef], "config": _cfg_dict(cfg)}
    summary["cwdm_beats_baseline"] = _verdicts(summary)  # ssim, mae_tumor, mae_non_tumor
    summary["cwdm_beats_baseline_ssim"] = summary["cwdm_beats_baseline"]["ssim"]
    summary["montage"] = _comparison_montage(out, cfg)
    _write_report(out, cfg, summary)
    return summary


def _train(cfg: DemoConfig, data_dir: Path, run_dir: Path) -> Path:
    """Train the demo network with the training library (what ``cwdm train`` runs).

    Args:
        cfg: the demo's settings.
        data_dir: the training cases.
        run_dir: the training run's folder.

    Returns:
        The last checkpoint written.
    """
    from .train_config import TrainConfig
    from .train_state import latest_checkpoint
    from .training import train

    tcfg = TrainConfig(data_dir=data_dir, contr=cfg.target, run_dir=run_dir,
                       model_channels=cfg.model_channels, channel_mult=cfg.channel_mult,
                       num_res_blocks=cfg.num_res_blocks, num_groups=cfg.num_groups, batch_size=cfg.batch_size,
                       lr=cfg.lr, ema_rate=cfg.ema_rate, max_steps=cfg.train_steps, max_minutes=cfg.train_minutes,
                       lr_anneal_steps=cfg.train_steps if cfg.lr_anneal else 0,
                       seed=cfg.seed, save_interval=10 ** 9, log_interval=25, image_interval=200,
                       num_workers=cfg.num_workers, progress=cfg.progress)
    status = train(tcfg)
    if status:
        raise CwdmError(f"training stopped early (status {status})")
    return latest_checkpoint(run_dir)


def _synthesize(cfg: DemoConfig, ckpt: Path, data_dir: Path, out_dir: Path) -> List[str]:
    """Synthesize the target of every held-out case with the trained checkpoint.

    The files are those ``cwdm sample`` writes with the same settings (the inference library's
    pipeline), without its provenance record and messages.

    Args:
        cfg: the demo's settings (sampler, steps, seed, progress).
        ckpt: the trained cwdm checkpoint (it names its target).
        data_dir: the held-out cases.
        out_dir: where ``<case>/<case>-<target>.nii.gz`` go.

    Returns:
        The names of the cases written.
    """
    from .data import discover_cases
    from .flags import ModelFlags, SamplingFlags
    from .inference import paired_paths, progress_bar, resolve_model, synthesize_cases, usable_cases
    from .runtime import select_device
    from .synthesis import Synthesizer

    flags = SamplingFlags(sampler=cfg.sampler, sampling_steps=cfg.sampling_steps, seed=cfg.seed)
    options = flags.options()
    options.validate()
    device = select_device(flags.device)
    loaded, task = resolve_model(ckpt, None, MODALITIES, ModelFlags(), flags.ema, device)
    synth = Synthesizer(loaded, task, device, options)
    cases = usable_cases(discover_cases(data_dir, task.modalities), task.condition_names, loaded.config.image_divisor,
                         lambda msg: print(f"[demo] {msg}", file=sys.stderr))
    with progress_bar(len(cases) * options.calls_per_case, cfg.progress, f"synthesis {task.target}") as bar:
        return synthesize_cases(synth, cases,
                                lambda it: paired_paths(out_dir, it["name"], it["prefix"], task.target),
                                postprocess_on=flags.postprocess, bar=bar)


def _means(summary: dict) -> dict:
    overall = summary["overall"]
    return {k: overall[k]["mean"] for k in REPORTED if k in overall}


REPORTED = ("ssim", "ssim_tumor", "ssim_non_tumor", "psnr", "mse", "mae", "mae_tumor", "mae_non_tumor")


def _comparison_montage(out: Path, cfg: DemoConfig) -> Optional[str]:
    """``montage.png``: the first held-out case's conditions, reference, cwdm and baseline syntheses and
    both |error| maps (brain only, one colour scale), sliced through the tumour's centre, as
    ``cwdm evaluate`` draws and scores them."""
    from .data import discover_cases
    from .evaluate_report import write_pair_montage
    from .metrics import brain_mask, reference_on_prediction_scale
    from .nifti_io import load_nifti

    cases = discover_cases(out / "data" / "test")
    if not cases:
        return None
    case = cases[0]
    vols = {m: load_nifti(case.files[m])[0] for m in MODALITIES}
    seg = load_nifti(case.seg)[0] if case.seg is not None else None
    preds = {name: load_nifti(out / folder / case.name / f"{case.prefix}-{cfg.target}.nii.gz")[0]
             for name, folder in (("cwdm", "synthesis"), ("baseline", "baseline"))}
    ref, _ = reference_on_prediction_scale(preds["cwdm"], vols[cfg.target])  # as `cwdm evaluate` scores it
    path = out / "montage.png"
    write_pair_montage(path, case.name, cfg.target, MODALITIES, vols, ref, preds, brain_mask(*vols.values()),
                       seg=seg, title=f"{case.name}: {cfg.target} synthesized from the other three")
    return path.name


def _cfg_dict(cfg: DemoConfig) -> dict:
    from .config import to_dict

    return to_dict(cfg)


def _verdicts(summary: dict) -> Dict[str, bool]:
    c, b = summary["cwdm"], summary["baseline"]
    return {"ssim": c["ssim"] > b["ssim"], "mae_tumor": c.get("mae_tumor", 1.0) < b.get("mae_tumor", 0.0),
            "mae_non_tumor": c.get("mae_non_tumor", 1.0) < b.get("mae_non_tumor", 0.0)}


def _write_report(out: Path, cfg: DemoConfig, summary: dict) -> None:
    from .nifti_io import atomic_write

    nan = float("nan")
    rows = [("cwdm (" + summary["sampler"] + " calls)", summary["cwdm"]),
            ("linear regression baseline", summary["baseline"])]
    trained = (f"{summary['train_steps']} training steps ({summary['seconds']['training']:.0f} s on this machine)")
    if summary["cut_by_time_cap"]:
        trained += (f", CUT SHORT by --train_minutes {cfg.train_minutes:g} before the planned "
                    f"{summary['planned_steps']}: these numbers are not the demo's reproducible result")
    lines = [f"# cwdm demo: synthesizing {cfg.target} from the other three contrasts", "",
             f"{cfg.train_cases} training and {cfg.test_cases} held-out BraTS-like phantom cases "
             f"(downsample {cfg.downsample}); {trained}.", "",
             "| method | SSIM | SSIM tumour | SSIM non-tumour | PSNR (dB) | MSE | MAE tumour | MAE brain outside tumour |",
             "|---|---|---|---|---|---|---|---|"]
    for name, m in rows:
        lines.append(f"| {name} | {m.get('ssim', nan):.4f} | {m.get('ssim_tumor', nan):.4f} | "
                     f"{m.get('ssim_non_tumor', nan):.4f} | {m.get('psnr', nan):.2f} | {m.get('mse', nan):.5f} | "
                     f"{m.get('mae_tumor', nan):.4f} | {m.get('mae_non_tumor', nan):.4f} |")
    v = summary["cwdm_beats_baseline"]
    lines += ["", "SSIM columns: the BraSyn challenge's definitions; PSNR / MSE / MAE: the target's 0.5/99.5 % "
              "percentile scale, over the brain (MAE tumour: seg > 0; outside: brain without the tumour).", "",
              f"cwdm {'beats' if v['ssim'] else 'does NOT beat'} the baseline on SSIM, "
              f"{'and' if v['mae_tumor'] else 'but NOT'} on MAE inside the tumour, "
              f"{'and' if v['mae_non_tumor'] else 'but NOT'} on MAE outside it.", "",
              "Per-case metrics: `evaluation/cwdm/metrics.csv`, `evaluation/baseline/metrics.csv`.", ""]
    if summary.get("montage"):
        lines += [f"![montage]({summary['montage']})", ""]
    lines += ["Timings (s): " + ", ".join(f"{k} {t}" for k, t in summary["seconds"].items()), ""]
    with atomic_write(out / "report.md") as fh:
        fh.write("\n".join(lines))
    with atomic_write(out / "summary.json") as fh:
        json.dump(summary, fh, indent=2)


def run(cfg: DemoConfig) -> int:
    t0 = time.monotonic()
    summary = run_demo(cfg)
    total = time.monotonic() - t0
    c, b = summary["cwdm"], summary["baseline"]
    cut = " (training CUT SHORT by the time cap)" if summary["cut_by_time_cap"] else ""
    print(f"cwdm demo finished in {total:.0f} s after {summary['train_steps']} training steps{cut}: "
          f"SSIM cwdm {c['ssim']:.4f} vs baseline {b['ssim']:.4f}; PSNR {c['psnr']:.2f} vs {b['psnr']:.2f} dB; "
          f"MAE tumour {c['mae_tumor']:.4f} vs {b['mae_tumor']:.4f}, outside {c['mae_non_tumor']:.4f} vs "
          f"{b['mae_non_tumor']:.4f}")
    print(f"report: {Path(cfg.out) / 'report.md'}")
    return 0

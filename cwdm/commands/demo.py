"""``cwdm demo``: the whole pipeline on embedded data, on a CPU, in minutes.

1. builds a small BraTS-like phantom set (downsampled) from the shipped
   ICBM152 templates: training cases and held-out test cases;
2. trains a small cWDM for the target contrast for a fixed number of steps
   (``--max_steps``; ``--max_minutes`` is an optional cap, and the report
   says when it cut training short: its verdict then means nothing);
3. synthesizes the held-out targets with a fast sampler;
4. fits a voxel-wise linear regression baseline on the training cases;
5. evaluates both against the true targets (the challenge's SSIM, PSNR, MSE,
   and MAE inside / outside the tumour) and writes ``report.md`` with the
   table and a montage of one case: conditions, reference, cwdm and baseline
   syntheses and their error maps, sliced through the tumour.

Everything goes into ``--output_dir`` (alias ``--out``, default ``cwdm-demo``). Data, initialization,
data order, timesteps, noise and sampling all come from ``--seed``, so the
same commit and seed give the same numbers on the same software stack
whatever the machine's speed. The defaults take under 10 minutes on 2 idle
CPU cores.

The demo can be interrupted (Ctrl-C) and continued: ``demo_state.json`` in the
output folder holds its settings and the parts already finished. Rerunning
``cwdm demo`` with the same settings on that folder keeps the phantom data,
resumes training from the run's latest checkpoint (exactly: the result is the
uninterrupted run's) and skips every finished part; other settings are refused
in one line (``--overwrite`` starts over).
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from ..naming import MODALITIES
from ..errors import CwdmError

HELP = "phantom data -> small model -> synthesis -> evaluation report, on CPU (rerun it to continue)"


@dataclass
class DemoConfig:
    out: Path = field(default=Path("cwdm-demo"), metadata={"help": "output folder"})
    target: str = field(default="t2f", metadata={"help": "contrast to synthesize"})
    train_cases: int = field(default=64, metadata={"help": "phantom training cases"})
    test_cases: int = field(default=4, metadata={"help": "held-out phantom cases"})
    downsample: int = field(default=4, metadata={"help": "phantom downsampling factor (4: 60x60x39)"})
    seed: int = field(default=0, metadata={"help": "seed of data, training and sampling"})
    num_channels: int = field(default=16, metadata={"help": "base channels of the demo network"})
    channel_mult: Tuple[int, ...] = field(default=(1, 2, 2), metadata={"help": "channel multipliers"})
    num_res_blocks: int = field(default=1, metadata={"help": "residual blocks per level"})
    num_groups: int = field(default=8, metadata={"help": "GroupNorm groups"})
    batch_size: int = field(default=2, metadata={"help": "training batch size"})
    lr: float = field(default=2e-4, metadata={"help": "learning rate (higher than released: short run)"})
    lr_anneal: bool = field(default=False, metadata={"help": "decay the learning rate linearly to 0 over the "
                                                             "training steps (measured worse here)"})
    ema_rate: float = field(default=0.99, metadata={"help": "EMA rate (short run)"})
    max_steps: int = field(default=1400, metadata={"help": "training steps (fixed: results do not depend "
                                                            "on the machine's speed)"})
    max_minutes: Optional[float] = field(default=None, metadata={
        "help": "optional cap on this session's training minutes (the report then says its verdict means "
                "nothing; rerun to continue training)"})
    sampler: str = field(default="ddim", metadata={"help": "sampler for the test cases"})
    sampling_steps: int = field(default=10, metadata={"help": "network calls per case"})
    num_workers: int = field(default=1, metadata={"help": "DataLoader workers"})
    overwrite: bool = field(default=False, metadata={"help": "start over in an existing demo folder"})
    progress: bool = field(default=True, metadata={"help": "show progress bars"})


CONFIG = DemoConfig
# what it writes (checked before it starts): (config field, "dir" or "file", the flag messages name)
DESTINATIONS = [("out", "dir", "output_dir")]
# train's spellings are the demo's; the demo's former names stay as aliases; --output_dir is every
# command's spelling of the output folder
ALIASES = {"num_channels": ["model_channels"], "max_steps": ["train_steps"], "max_minutes": ["train_minutes"],
           "out": ["output_dir"]}

STATE_NAME = "demo_state.json"
# settings that change no result: a continued demo may differ in them
FREE_SETTINGS = ("out", "overwrite", "progress", "num_workers", "max_minutes")


def _settings(cfg: DemoConfig) -> dict:
    """The result-determining settings, as ``demo_state.json`` stores them."""
    from ..config import to_dict

    return json.loads(json.dumps({k: v for k, v in to_dict(cfg).items() if k not in FREE_SETTINGS}))


class DemoState:
    """``demo_state.json``: the demo's settings and, per finished part, what it was made from."""

    def __init__(self, out: Path, settings: dict, stages: Optional[dict] = None):
        self.path = out / STATE_NAME
        self.settings = settings
        self.stages: Dict[str, dict] = dict(stages or {})

    @classmethod
    def read(cls, out: Path) -> Optional["DemoState"]:
        """The state stored in ``out`` (None when there is none or it cannot be read)."""
        try:
            data = json.loads((out / STATE_NAME).read_text())
            return cls(out, dict(data["settings"]), dict(data["stages"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def done(self, stage: str, step: Optional[int] = None) -> Optional[dict]:
        """The record of a finished part (made from checkpoint ``step`` when given), else None."""
        record = self.stages.get(stage)
        if record is None or (step is not None and record.get("step") != step):
            return None
        return record

    def mark(self, stage: str, **record) -> None:
        """Record a finished part (atomically)."""
        from ..writes import atomic_write

        self.stages[stage] = record
        with atomic_write(self.path) as fh:
            json.dump({"settings": self.settings, "stages": self.stages}, fh, indent=2)


def _differences(old: dict, new: dict) -> str:
    """``--seed 0 (now 1), --max_steps 1400 (now 3)``."""
    keys = [k for k in new if old.get(k) != new[k]] + [k for k in old if k not in new]
    show = lambda v: " ".join(map(str, v)) if isinstance(v, list) else str(v)  # noqa: E731
    return ", ".join(f"--{k} {show(old.get(k))} (now {show(new.get(k))})" for k in keys)


def _prepare_out(cfg: DemoConfig) -> DemoState:
    """The demo folder's state: a fresh one, or the stored one of a demo with the same settings."""
    out = Path(cfg.out)
    settings = _settings(cfg)
    if out.exists() and any(out.iterdir()):
        stored = DemoState.read(out)
        if cfg.overwrite:
            if stored is None and not (out / "report.md").exists() and not (out / "data").exists():
                raise CwdmError(f"{out} does not look like a cwdm demo folder; refusing to delete it")
            shutil.rmtree(out)
        elif stored is None:
            raise CwdmError(f"{out} already exists and is not empty, without a {STATE_NAME} of a demo to "
                            f"continue (use --overwrite or another --output_dir)")
        elif stored.settings != settings:
            raise CwdmError(f"{out} holds a demo made with other settings: {_differences(stored.settings, settings)}; "
                            f"rerun with its settings to continue it, or use --overwrite or another --output_dir")
        else:
            return stored
    out.mkdir(parents=True, exist_ok=True)
    state = DemoState(out, settings)
    state.mark("started")
    return state


def _fresh(path: Path) -> Path:
    """``path`` emptied (a part that did not finish is redone from scratch)."""
    if path.exists():
        shutil.rmtree(path)
    return path


def _check_data(out: Path, cfg: DemoConfig) -> None:
    """Kept phantom data must still hold the demo's cases."""
    from ..data.cases import discover_cases

    for part, expected in (("train", cfg.train_cases), ("test", cfg.test_cases)):
        found = len(discover_cases(out / "data" / part)) if (out / "data" / part).is_dir() else 0
        if found != expected:
            raise CwdmError(f"{out / 'data' / part}: {found} cases, but the demo made {expected} (the folder "
                            f"changed since); use --overwrite to start over")


def _checkpoint_step(path: Optional[Path]) -> int:
    return int(path.stem.rpartition("_")[2]) if path is not None else 0


def run_demo(cfg: DemoConfig) -> dict:
    """Run (or continue) the demo; returns the summary dict that is also written to ``summary.json``.

    Raises:
        KeyboardInterrupt: training was stopped by a signal (its checkpoint saved); rerun to continue.
    """
    from ..evaluation.baseline import fit_linear_baseline, write_baseline
    from ..data.cases import discover_cases
    from ..phantom.sets import make_phantom_set
    from ..evaluation.scoring import evaluate_dirs
    from ..training.state import latest_checkpoint

    if cfg.target not in MODALITIES:
        raise CwdmError(f"--target must be one of {', '.join(MODALITIES)}, got {cfg.target}")
    state = _prepare_out(cfg)
    out = Path(cfg.out)
    train_dir, test_dir = out / "data" / "train", out / "data" / "test"

    def finish(name: str, t0: float, **record) -> None:
        seconds = round(time.monotonic() - t0, 1)
        print(f"[demo] {name}: {seconds:.1f} s", file=sys.stderr)
        state.mark(name, seconds=seconds, **record)

    def kept(name: str) -> None:
        print(f"[demo] {name}: kept from the earlier run", file=sys.stderr)

    if state.done("phantom data"):
        _check_data(out, cfg)
        kept("phantom data")
    else:
        t0 = time.monotonic()
        _fresh(out / "data")
        make_phantom_set(train_dir, cfg.train_cases, cfg.seed, cfg.downsample, progress=cfg.progress)
        make_phantom_set(test_dir, cfg.test_cases, cfg.seed, cfg.downsample, start=cfg.train_cases,
                         progress=cfg.progress)
        finish("phantom data", t0)

    ckpt = latest_checkpoint(out / "run")
    earlier = (state.done("training") or {}).get("seconds", 0.0)
    if _checkpoint_step(ckpt) >= cfg.max_steps:
        kept("training")
    else:
        t0 = time.monotonic() - earlier  # training time adds up over the sessions
        ckpt = _train(cfg, train_dir, out / "run")
        finish("training", t0, step=_checkpoint_step(ckpt))
    step = _checkpoint_step(ckpt)

    if state.done("synthesis", step):
        kept("synthesis")
    else:
        t0 = time.monotonic()
        _synthesize(cfg, ckpt, test_dir, _fresh(out / "synthesis"))
        finish("synthesis", t0, step=step)

    if state.done("baseline"):
        kept("baseline")
        coef = state.done("baseline")["coefficients"]
    else:
        t0 = time.monotonic()
        coef = [float(c) for c in fit_linear_baseline(discover_cases(train_dir), cfg.target)]
        write_baseline(discover_cases(test_dir), cfg.target, coef, _fresh(out / "baseline"))
        finish("baseline", t0, coefficients=coef)

    scores = state.done("evaluation", step)
    if scores:
        kept("evaluation")
    else:
        t0 = time.monotonic()
        _, model_summary = evaluate_dirs(out / "synthesis", test_dir, out / "evaluation" / "cwdm",
                                         progress=False, verbose=False)
        _, base_summary = evaluate_dirs(out / "baseline", test_dir, out / "evaluation" / "baseline",
                                        montage=False, progress=False, verbose=False)
        scores = {"cwdm": _means(model_summary), "baseline": _means(base_summary)}
        finish("evaluation", t0, step=step, **scores)

    if state.done("report", step) and (out / "summary.json").is_file():
        kept("report")
        return json.loads((out / "summary.json").read_text())
    return _summarize(cfg, state, ckpt, step, scores, coef)


def _summarize(cfg: DemoConfig, state: DemoState, ckpt: Path, step: int, scores: dict, coef: list) -> dict:
    """Build the summary, the montage and the report, and mark the report done."""
    from ..config import to_dict
    from .demo_report import verdicts, write_report

    out = Path(cfg.out)
    times = {name: state.stages.get(name, {}).get("seconds", 0.0)
             for name in ("phantom data", "training", "synthesis", "baseline", "evaluation")}
    summary = {"target": cfg.target, "train_steps": step, "planned_steps": cfg.max_steps,
               "cut_by_time_cap": step < cfg.max_steps, "checkpoint": str(ckpt),
               "sampler": f"{cfg.sampler} {cfg.sampling_steps}", "seconds": times,
               "cwdm": scores["cwdm"], "baseline": scores["baseline"],
               "baseline_coefficients": coef, "config": to_dict(cfg)}
    summary["cwdm_beats_baseline"] = verdicts(scores["cwdm"], scores["baseline"])  # ssim, mae_tumor, mae_non_tumor
    summary["cwdm_beats_baseline_ssim"] = summary["cwdm_beats_baseline"]["ssim"]
    summary["montage"] = _comparison_montage(out, cfg)
    write_report(out, cfg, summary)
    state.mark("report", step=step)
    return summary


def _train(cfg: DemoConfig, data_dir: Path, run_dir: Path) -> Path:
    """Train the demo network with the training library (what ``cwdm train`` runs), continuing the
    run's latest checkpoint when there is one (``--resume auto``).

    Args:
        cfg: the demo's settings.
        data_dir: the training cases.
        run_dir: the training run's folder.

    Returns:
        The last checkpoint written.

    Raises:
        KeyboardInterrupt: stopped by Ctrl-C / SIGTERM (the checkpoint of the step reached is saved).
    """
    from ..training.config import TrainConfig
    from ..training.state import latest_checkpoint
    from ..training.loop import train

    tcfg = TrainConfig(data_dir=data_dir, contr=cfg.target, run_dir=run_dir, resume="auto",
                       model_channels=cfg.num_channels, channel_mult=cfg.channel_mult,
                       num_res_blocks=cfg.num_res_blocks, num_groups=cfg.num_groups, batch_size=cfg.batch_size,
                       lr=cfg.lr, ema_rate=cfg.ema_rate, max_steps=cfg.max_steps, max_minutes=cfg.max_minutes,
                       lr_anneal_steps=cfg.max_steps if cfg.lr_anneal else 0,
                       seed=cfg.seed, save_interval=10 ** 9, log_interval=25, image_interval=200,
                       num_workers=cfg.num_workers, progress=cfg.progress,
                       # every setting is the demo's: a continued run takes none from its checkpoint
                       # (not the time cap either)
                       flags_given=frozenset(f.name for f in fields(TrainConfig) if f.name != "flags_given"))
    status = train(tcfg, continue_with="the same cwdm demo command (its last line says it)")
    if status in (130, 143):  # a signal: the library saved the step reached
        raise KeyboardInterrupt
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
    from ..inference.flags import ModelFlags, SamplingFlags
    from ..inference.pipeline import Pipeline
    from ..runtime import select_device

    flags = SamplingFlags(sampler=cfg.sampler, sampling_steps=cfg.sampling_steps, seed=cfg.seed)
    pipeline = Pipeline({}, flags.options(), select_device(flags.device), ModelFlags(), command="sample",
                        ema=flags.ema, postprocess=flags.postprocess, progress=cfg.progress, record=False,
                        say=lambda msg: print(f"[demo] {msg}", file=sys.stderr), bar="synthesis")
    plan, _ = pipeline.paired(data_dir, out_dir, ckpt, None)
    result = pipeline.run(plan)
    for line in result.degenerate:
        raise CwdmError(line)
    return [name for name, _, _ in result.written]


def _means(summary: dict) -> dict:
    overall = summary["overall"]
    return {k: overall[k]["mean"] for k in REPORTED if k in overall}


REPORTED = ("ssim", "ssim_tumor", "ssim_non_tumor", "psnr", "mse", "mae", "mae_tumor", "mae_non_tumor")


def _comparison_montage(out: Path, cfg: DemoConfig) -> Optional[str]:
    """``montage.png``: the first held-out case's conditions, reference, cwdm and baseline syntheses and
    both |error| maps (brain only, one colour scale), sliced through the tumour's centre, as
    ``cwdm evaluate`` draws and scores them."""
    from ..data.cases import discover_cases
    from ..evaluation.report import write_pair_montage
    from ..evaluation.metrics import brain_mask, reference_on_prediction_scale
    from ..data.nifti_io import load_nifti

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


def run(cfg: DemoConfig) -> int:
    t0 = time.monotonic()
    summary = run_demo(cfg)
    total = time.monotonic() - t0
    c, b = summary["cwdm"], summary["baseline"]
    cut = (f" (CUT SHORT by --max_minutes at step {summary['train_steps']} of {summary['planned_steps']}: "
           f"the comparison means nothing; rerun to continue training)") if summary["cut_by_time_cap"] else ""
    print(f"cwdm demo finished in {total:.0f} s after {summary['train_steps']} training steps{cut}: "
          f"SSIM cwdm {c['ssim']:.4f} vs baseline {b['ssim']:.4f}; PSNR {c['psnr']:.2f} vs {b['psnr']:.2f} dB; "
          f"MAE tumour {c['mae_tumor']:.4f} vs {b['mae_tumor']:.4f}, outside {c['mae_non_tumor']:.4f} vs "
          f"{b['mae_non_tumor']:.4f}")
    print(f"report: {Path(cfg.out) / 'report.md'}")
    return 0

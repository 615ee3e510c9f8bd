#!/usr/bin/env python
"""Samplers, ensembles and uncertainty where the target is ambiguous (a benchmark, not a test).

    python benchmarks/ambiguity.py --out cwdm-ambiguity --docs docs

On the ambiguous phantom (``cwdm phantom --ambiguous True``: t1c's rim enhancement pattern and
vessels, t2w's perivascular spaces and t2f's white-matter lesions are drawn independently of the
other contrasts), one t1c model is trained with the demo's network, then every sampler setting
synthesizes the held-out cases with the same seed and is scored:

- ``cwdm evaluate``'s metrics: the challenge's SSIM, PSNR, the realism ratio, and, for ensembles,
  the calibration of the std map (correlation with the error, sparsification area);
- Dice (ET, TC, WT) of a small phantom segmenter (``benchmarks/phantom_segmenter.py``, trained
  on complete training cases) run on the completed cases;
- the mean ensemble std inside t1c's detail regions (all, the tumour rim, the vessels) and outside them
  (brain only);
- "rim enhanced": the share of the rim (where the plain case enhances) that the synthesis shows
  enhancing, above :data:`ENHANCED` on the network's [0, 1] scale (for an ensemble: its mean). The
  phantom's rim is 0.45-0.70 there where it does not enhance and 0.95-1.0 where it does (the held-out
  cases, measured), so the threshold splits the two; the acquired t1c's share is in the last row,
  the exact sampler's (the mean over its draws) in the row "phantom's own spread".

The row "phantom's own spread" is what an exact sampler's ensemble std would be: the spread of the
held-out subjects' true t1c over 16 other detail draws, plus the acquisition noise (the noise is
independent ambiguity too, so even an exact sampler spreads outside the detail).

The run-to-run noise is the spread of the ``--noise`` setting over ``--noise_seeds`` extra seeds.
Every stage keeps its output and is skipped when rerun: a stopped run continues where it stopped.
Writes ``OUT/ambiguity.csv``, ``OUT/ambiguity.md`` and ``OUT/ambiguity.png`` (copied to
``--docs``). Settings are ``NAME:STEPS`` or ``NAME:STEPSxK`` for an ensemble of K samples.

Distilled students of the model (``cwdm distill --teacher OUT/run/checkpoints/ckpt_<step>.pt``) are
scored with ``--students 1=PATH 2=PATH`` (K network calls = PATH): each is sampled with the sampler
its checkpoint records (no sampler flags, as ``cwdm sample`` then does), alone and as the ensembles
of ``--student_ensembles``, in rows ``student 1 call``, ``student 2 calls x10`` ...; their cached
results are keyed by the checkpoint's sha256, so a new student is scored anew.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cwdm.openmp import configure  # noqa: E402  (before torch loads: cwdm.openmp says why)

configure()

from phantom_model import DEMO_NETWORK, checkpoint_step, machine, make_sets, train_demo_network  # noqa: E402

TARGET = "t1c"
DEFAULT = ["ddpm:1000", "ddim:100", "ddim:20", "ddim:10", "ddim:5", "regression:1",
           "ddim:10x4", "ddim:10x10"]
METRICS = ["ssim", "psnr", "hf_energy_ratio", "std_error_corr", "ause"]
DICE = ["dice_et", "dice_tc", "dice_wt"]
ENHANCED = 0.8  # "rim enhanced": t1c above this on the [0, 1] scale (module docstring)
THREADS = 2
DEVICE = "cpu"  # of the t1c model's training and sampling (--device)


def parse(spec: str):
    name, _, rest = spec.partition(":")
    steps, _, k = rest.partition("x")
    return name, int(steps or 1), int(k or 1)


def make_data(out: Path, a) -> tuple:
    """Training and held-out cases of the ambiguous phantom (remade when their settings change)."""
    train, test = out / "data" / "train", out / "data" / "test"
    done = out / "data" / "done"
    made = {"train_cases": a.train_cases, "test_cases": a.test_cases, "seed": a.seed, "downsample": a.downsample,
            "detail_draws": a.detail_draws}
    if a.more_subjects:
        made["more_subjects"] = a.more_subjects
    text = done.read_text() if done.exists() else None
    # an empty marker is from before the settings were recorded: the default one detail draw
    recorded = None if text is None else json.loads(text) if text else dict(made, detail_draws=1)
    if recorded != made:
        for folder in (train, test):
            shutil.rmtree(folder, ignore_errors=True)
        make_sets(train, a.train_cases, a.seed, a.downsample, workers=a.workers, ambiguous=True, progress=True,
                  detail_draws=a.detail_draws)
        if a.more_subjects:  # one draw each, numbered after the held-out subjects
            make_sets(train, a.more_subjects, a.seed, a.downsample, start=a.train_cases + a.test_cases,
                      workers=a.workers, ambiguous=True, progress=True)
        make_sets(test, a.test_cases, a.seed, a.downsample, start=a.train_cases, workers=a.workers,
                  ambiguous=True, progress=True)
        done.write_text(json.dumps(made))
    return train, test


def network(a) -> dict:
    """The network and batch flags (the demo's by default: :data:`phantom_model.DEMO_NETWORK`)."""
    return {"model_channels": a.model_channels, "channel_mult": tuple(a.channel_mult),
            "num_res_blocks": a.num_res_blocks, "batch_size": a.batch_size}


def train_model(out: Path, train_dir: Path, a) -> Path:
    """The t1c model: ``a.steps`` steps (or ``a.train_minutes``), continued when the run has a checkpoint."""
    extra = {"sigma_data": tuple(a.sigma_data)} if a.prediction == "edm" and a.sigma_data else {}
    return train_demo_network(out / "run", a.steps, a.seed, a.lr, network=network(a), device=a.device,
                              minutes=a.train_minutes, workers=a.workers, data_dir=train_dir, contr=TARGET,
                              prediction=a.prediction, timestep_power=a.timestep_power, **extra)


def detail_masks(a) -> dict:
    """{case name: {"detail", "rim", "vessels", "brain"}} bool masks of the held-out cases, regenerated
    from their seed: t1c's detail, split into the tumour rim (where the plain case enhances: the
    enhancement is patchy there, so the model cannot know where; the rim itself shows in the other
    contrasts) and the vessels (whose place nothing shows)."""
    from cwdm.phantom.anatomy import generate_case
    from cwdm.phantom.sets import case_name

    masks = {}
    for index in range(a.train_cases, a.train_cases + a.test_cases):
        case = generate_case(a.seed, index, a.downsample, ambiguous=True)
        brain = case[TARGET] != 0
        detail = case["details"][TARGET] & brain
        rim = detail & (generate_case(a.seed, index, a.downsample)["seg"] == 3)
        masks[case_name(index)] = {"detail": detail, "rim": rim, "vessels": detail & ~rim, "brain": brain}
    return masks


def _volume(path: Path) -> np.ndarray:
    return np.asarray(nib.load(path).dataobj, dtype=np.float64)


REGIONS = ("detail", "rim", "vessels", "elsewhere")


def detail_means(volume_of, masks: dict) -> dict:
    """Mean of a per-case (X, Y, Z) map ``volume_of(case name)`` in each of :data:`REGIONS` (t1c's
    detail, its rim and vessels, the rest of the brain), each averaged over the cases of ``masks``."""
    means = {region: [] for region in REGIONS}
    for name, m in masks.items():
        values = volume_of(name)
        for region in REGIONS:
            mask = m["brain"] & ~m["detail"] if region == "elsewhere" else m[region]
            if mask.any():
                means[region].append(values[mask].mean())
    return {region: float(np.mean(v)) for region, v in means.items()}


def rim_enhanced(volume_of, masks: dict) -> float:
    """Share of the rim's voxels where the (X, Y, Z) t1c ``volume_of(case name)`` is above
    :data:`ENHANCED`, averaged over the cases of ``masks``."""
    return float(np.mean([(volume_of(name)[m["rim"]] > ENHANCED).mean() for name, m in masks.items()]))


def synthesized(folder: Path):
    """``case name -> (X, Y, Z)`` t1c a folder of cases holds (a results folder, or the test cases')."""
    return lambda name: _volume(folder / name / f"{name}-{TARGET}.nii.gz")


def acquired(test_dir: Path):
    """``case name -> (X, Y, Z)`` acquired t1c of the test cases on the network's [0, 1] scale."""
    from cwdm.data.preprocess import clip_and_normalize

    return lambda name: clip_and_normalize(synthesized(test_dir)(name))


def cached(folder: Path, masks: dict):
    """The row a results folder caches, with "rim enhanced" added where it was scored before that
    column (from the volumes it keeps), or None when it has no row."""
    path = folder / "row.json"
    if not path.exists():
        return None
    row = json.loads(path.read_text())
    if "rim_enhanced" not in row:
        row["rim_enhanced"] = rim_enhanced(synthesized(folder), masks)
        path.write_text(json.dumps(row))
    return row


def score(folder: Path, row: dict, seconds: float, test_dir: Path, out: Path, segmenter, masks: dict) -> dict:
    """Segment the cases completed with ``folder``'s t1c, score them and complete ``row`` (cached in
    ``folder/row.json``): ``cwdm evaluate``'s metrics and Dice, the mean |error| (network scale) inside
    t1c's detail and elsewhere, and for an ensemble the mean std there."""
    from cwdm.evaluation.scoring import evaluate_dirs
    import phantom_segmenter as seg

    seg_dir = out / "segmentations" / folder.name
    seg.predict_folder(segmenter, test_dir, seg_dir, replace={TARGET: folder}, threads=THREADS, overwrite=True)
    rows, summary = evaluate_dirs(folder, test_dir, folder / "evaluation", montage=False, progress=False,
                                  verbose=False, seg_dir=seg_dir)
    row.update(seconds_per_case=round(seconds / max(len(rows), 1), 2), cases=len(rows))
    for key in METRICS + DICE:
        value = summary["overall"].get(key, {}).get("mean")
        row[key] = None if value is None or not np.isfinite(value) else float(value)

    mine, truth = synthesized(folder), acquired(test_dir)
    row["rim_enhanced"] = rim_enhanced(mine, masks)
    row.update({f"mae_{region}": v for region, v in
                detail_means(lambda name: np.abs(mine(name) - truth(name)), masks).items()})
    if row["ensemble"] > 1:
        stds = detail_means(lambda name: _volume(folder / name / f"{name}-{TARGET}_std.nii.gz"), masks)
        row.update({f"std_{region}": v for region, v in stds.items()})
    (folder / "row.json").write_text(json.dumps(row))
    print(json.dumps(row), flush=True)
    return row


def run_setting(spec: str, seed: int, ckpt: Path, test_dir: Path, out: Path, segmenter, masks: dict) -> dict:
    """Sample one setting and :func:`score` it (or read its cached row)."""
    from cwdm.commands.sample import SampleConfig, sample

    name, steps, k = parse(spec)
    folder = out / "results" / f"{spec.replace(':', '_')}_seed{seed}"
    if (row := cached(folder, masks)) is not None:
        return row
    t0 = time.perf_counter()
    sample(SampleConfig(data_dir=test_dir, model_path=ckpt, output_dir=folder, sampler=name,
                        sampling_steps=steps, ensemble=k, seed=seed, overwrite=True, num_workers=0,
                        progress=False, device=DEVICE))
    row = {"setting": spec, "seed": seed, "sampler": name, "steps": steps, "ensemble": k,
           "calls_per_case": 1 if name == "regression" else steps}  # the K members share each call
    return score(folder, row, time.perf_counter() - t0, test_dir, out, segmenter, masks)


def run_student(calls: int, path: Path, ensemble: int, seed: int, test_dir: Path, out: Path, segmenter,
                masks: dict) -> dict:
    """Sample a distilled student (``calls`` network calls) with the sampler it records and :func:`score` it
    (or read its cached row)."""
    from cwdm.commands.sample import SampleConfig, sample
    from cwdm.inference.provenance import sha256_file
    from cwdm.model.checkpoint import read_checkpoint, stored_sampler
    from cwdm.model.samplers import network_calls

    state = read_checkpoint(path)
    recorded = stored_sampler(state, str(path))
    if recorded is None or network_calls(recorded["name"], recorded["steps"]) != calls:
        raise SystemExit(f"--students {calls}={path}: not a student of {calls} network calls (it records "
                         f"{recorded or 'no sampler'})")
    setting = f"student {calls} call{'s' if calls > 1 else ''}" + (f" x{ensemble}" if ensemble > 1 else "")
    folder = out / "results" / f"student{calls}_x{ensemble}_{sha256_file(path)[:12]}_seed{seed}"
    if (row := cached(folder, masks)) is not None:
        return row
    teacher = (state.get("distilled_from") or {}).get("teacher")
    if teacher is None or not Path(teacher).resolve().is_relative_to((out / "run").resolve()):
        print(f"warning: {path} was distilled from {teacher}, not from a checkpoint of {out / 'run'}", flush=True)
    t0 = time.perf_counter()
    sample(SampleConfig(data_dir=test_dir, model_path=path, output_dir=folder, ensemble=ensemble, seed=seed,
                        overwrite=True, num_workers=0, progress=False, device=DEVICE))  # its recorded sampler
    row = {"setting": setting, "seed": seed, "sampler": recorded["name"], "steps": recorded["steps"],
           "ensemble": ensemble, "calls_per_case": calls, "checkpoint": str(path)}
    return score(folder, row, time.perf_counter() - t0, test_dir, out, segmenter, masks)


def parse_students(entries: list) -> list:
    """``["1=PATH", "2=PATH"]`` -> ``[(1, Path), (2, Path)]``."""
    out = []
    for entry in entries:
        calls, sep, path = entry.partition("=")
        if not sep or calls not in ("1", "2") or not Path(path).is_file():
            raise SystemExit(f"--students {entry}: expected K=PATH with K 1 or 2 and PATH a checkpoint file")
        out.append((int(calls), Path(path)))
    return out


def baseline_row(train_dir: Path, test_dir: Path, out: Path, segmenter, masks: dict) -> dict:
    """The voxel-wise linear regression of the target on the three other contrasts (fit on training cases)."""
    from cwdm.data.cases import discover_cases
    from cwdm.evaluation.baseline import fit_linear_baseline, write_baseline

    folder = out / "results" / "linear_baseline"
    if (row := cached(folder, masks)) is not None:
        return row
    shutil.rmtree(folder, ignore_errors=True)
    t0 = time.perf_counter()
    coef = fit_linear_baseline(discover_cases(train_dir), TARGET)
    write_baseline(discover_cases(test_dir), TARGET, coef, folder)
    row = {"setting": "linear baseline", "seed": 0, "sampler": "linear", "steps": 0, "ensemble": 1,
           "calls_per_case": 0}
    return score(folder, row, time.perf_counter() - t0, test_dir, out, segmenter, masks)


def posterior_row(a, masks: dict, draws: int = 16) -> dict:
    """What an exact sampler's ensemble std would be: the spread of the phantom's own t1c over
    ``draws`` other detail draws of each held-out subject (``detail_seed`` 1 .. draws; the truth is
    draw 0), on the network's [0, 1] scale, with the acquisition noise added in quadrature (the
    draws of one subject share their noise, so its variance is measured once per case against the
    same case generated with ``noise=False``)."""
    from cwdm.data.preprocess import clip_and_normalize
    from cwdm.phantom.anatomy import generate_case
    from cwdm.phantom.sets import case_name

    def t1c(index, detail_seed=0, noise=True):
        case = generate_case(a.seed, index, a.downsample, ambiguous=True, detail_seed=detail_seed, noise=noise)
        return clip_and_normalize(case[TARGET].astype(np.float64))

    std, shares = {}, []
    for index in range(a.train_cases, a.train_cases + a.test_cases):
        brain = masks[case_name(index)]["brain"]
        noisy, quiet = t1c(index), t1c(index, noise=False)
        others = np.stack([t1c(index, d, noise=False) for d in range(1, draws + 1)])
        std[case_name(index)] = np.sqrt(others.var(0, ddof=1) + np.var((noisy - quiet)[brain]))
        shares.append((others[:, masks[case_name(index)]["rim"]] > ENHANCED).mean())
    row = {"setting": f"phantom's own spread x{draws}", "seed": a.seed, "sampler": "posterior", "steps": 0,
           "ensemble": draws, "calls_per_case": 0}
    row.update({f"std_{region}": v for region, v in detail_means(std.__getitem__, masks).items()})
    row["rim_enhanced"] = float(np.mean(shares))  # over the draws (noise-free) and the cases
    return row


def complete_row(test_dir: Path, out: Path, segmenter, masks: dict) -> dict:
    """Dice of the segmenter on the acquired held-out cases, the ceiling any completion is measured
    against, and the acquired t1c's "rim enhanced"."""
    import phantom_segmenter as seg

    seg_dir = out / "segmentations" / "acquired"
    seg.predict_folder(segmenter, test_dir, seg_dir, threads=THREADS, overwrite=True)
    scores = seg.dice_scores(seg_dir, test_dir)["mean"]
    return {"setting": "acquired t1c", "sampler": "none", "rim_enhanced": rim_enhanced(acquired(test_dir), masks),
            **{k: scores[k.split("_")[1].upper()] for k in DICE}}


def noise_of(rows: list, setting: str) -> dict:
    """Run-to-run spread (sample std over seeds) of each metric of one setting."""
    same = [r for r in rows if r["setting"] == setting]
    out = {}
    regional = [f"{kind}_{region}" for kind in ("std", "mae") for region in REGIONS]
    for key in METRICS + DICE + ["rim_enhanced"] + regional:
        values = [r[key] for r in same if r.get(key) is not None]
        if len(values) >= 2:
            out[key] = statistics.stdev(values)
    return out


def table(rows: list, noise: dict, ceiling: dict, head: str) -> str:
    cols = [("setting", "setting"), ("calls_per_case", "calls"), ("seconds_per_case", "s / case"),
            ("ssim", "SSIM"), ("psnr", "PSNR"), ("hf_energy_ratio", "realism"), ("dice_et", "Dice ET"),
            ("dice_tc", "Dice TC"), ("dice_wt", "Dice WT"), ("rim_enhanced", "rim enhanced"),
            ("mae_detail", "MAE detail"),
            ("mae_elsewhere", "MAE elsewhere"), ("std_detail", "std detail"), ("std_rim", "std rim"),
            ("std_vessels", "std vessels"), ("std_elsewhere", "std elsewhere"),
            ("std_error_corr", "corr(std, err)"), ("ause", "AUSE")]

    def fmt(v):
        if v is None or v == "":
            return ""
        if isinstance(v, str):
            return v
        if isinstance(v, int):
            return str(v)
        return f"{v:.2f}" if abs(v) >= 10 else f"{v:.4g}"

    lines = [head, "", "| " + " | ".join(c[1] for c in cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(fmt(r.get(k)) for k, _ in cols) + " |")
    lines.append("| run-to-run std | | | " + " | ".join(fmt(noise.get(k)) for k, _ in cols[3:]) + " |")
    lines.append("| acquired t1c (segmenter's ceiling) | | | " + " | ".join(
        fmt(ceiling.get(k)) if k in DICE + ["rim_enhanced"] else "" for k, _ in cols[3:]) + " |")
    return "\n".join(lines) + "\n"


def plot(rows: list, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("psnr", "PSNR (dB)"), ("hf_energy_ratio", "realism (high-frequency energy ratio)"),
              ("dice_et", "Dice ET of the phantom segmenter"), ("std_detail", "mean ensemble std")]
    fig, axes = plt.subplots(1, 4, figsize=(18, 4))
    for ax, (key, label) in zip(axes, panels):
        for r in rows:
            if r.get(key) is None or r["sampler"] in ("linear", "posterior"):
                continue
            x = r["calls_per_case"]
            marker = {"ddpm": "s", "ddim": "o", "regression": "^"}.get(r["sampler"], "x")
            ax.scatter(x, r[key], marker=marker, color="tab:red" if r["ensemble"] > 1 else "tab:blue")
            ax.annotate(r["setting"], (x, r[key]), fontsize=7, xytext=(3, 3), textcoords="offset points")
            if key == "std_detail":
                ax.scatter(x, r["std_elsewhere"], marker=marker, color="tab:gray")
                if r.get("std_rim") is not None:
                    ax.scatter(x, r["std_rim"], marker=marker, color="tab:purple")
        exact = [r for r in rows if r["sampler"] == "posterior"]
        if key == "std_detail" and exact:
            for region, color in (("detail", "tab:red"), ("rim", "tab:purple"), ("elsewhere", "tab:gray")):
                ax.axhline(exact[0][f"std_{region}"], color=color, ls=":", lw=1)
            ax.plot([], [], color="k", ls=":", lw=1, label="the phantom's own spread")
            ax.legend(fontsize=7)
        base = [r for r in rows if r["sampler"] == "linear" and r.get(key) is not None]
        if base:
            ax.axhline(base[0][key], color="tab:green", ls="--", lw=1, label="linear baseline")
            ax.legend(fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel("network calls per case")
        ax.set_title(label if key != "std_detail" else "ensemble std: detail (red), its rim (purple), elsewhere (gray)",
                     fontsize=9)
        ax.grid(alpha=0.3)
    fig.suptitle("ambiguous phantom, t1c: samplers against network calls (red: ensembles)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("cwdm-ambiguity"))
    p.add_argument("--docs", type=Path, default=None, help="copy the CSV, table and plot here")
    p.add_argument("--train_cases", type=int, default=64)
    p.add_argument("--test_cases", type=int, default=4)
    p.add_argument("--detail_draws", type=int, default=1,
                   help="training cases per subject, each with its own detail draw (cwdm phantom --detail_draws)")
    p.add_argument("--downsample", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--more_subjects", type=int, default=0,
                   help="training subjects added with one detail draw each (numbered after the held-out ones)")
    p.add_argument("--steps", type=int, default=5000, help="training steps of the t1c model")
    p.add_argument("--train_minutes", type=float, default=None,
                   help="also stop training after this wall time (the model is then the step it reached)")
    p.add_argument("--model_channels", type=int, default=DEMO_NETWORK["model_channels"])
    p.add_argument("--channel_mult", type=int, nargs="+", default=list(DEMO_NETWORK["channel_mult"]))
    p.add_argument("--num_res_blocks", type=int, default=DEMO_NETWORK["num_res_blocks"])
    p.add_argument("--batch_size", type=int, default=DEMO_NETWORK["batch_size"])
    p.add_argument("--device", default="cpu", help="of the t1c model's training and sampling (cpu, cuda)")
    p.add_argument("--workers", type=int, default=1, help="processes making the phantom and loading its cases")
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--prediction", choices=["x0", "edm"], default="edm",
                   help="the model's output (cwdm train --prediction; x0: the first measurement, which ignores x_t)")
    p.add_argument("--sigma_data", type=float, nargs="*", default=[],
                   help="edm: the data scale, 1 value or 8 (cwdm train --sigma_data; none: measured per subband)")
    p.add_argument("--timestep_power", type=float, default=1.0, help="cwdm train --timestep_power")
    p.add_argument("--segmenter_steps", type=int, default=800)
    p.add_argument("--settings", nargs="+", default=DEFAULT)
    p.add_argument("--students", nargs="*", default=[], metavar="K=PATH",
                   help="distilled students of the model to score (K: its network calls, 1 or 2)")
    p.add_argument("--student_ensembles", type=int, nargs="+", default=[1, 10],
                   help="ensemble sizes each student is scored with")
    p.add_argument("--noise", default="ddim:10x4", help="the setting rerun with other seeds")
    p.add_argument("--noise_seeds", type=int, nargs="*", default=[1, 2])
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args()
    students = parse_students(a.students)
    import torch
    import phantom_segmenter as seg

    global THREADS, DEVICE
    THREADS, DEVICE = a.threads or torch.get_num_threads(), a.device
    torch.set_num_threads(THREADS)
    out = a.out
    out.mkdir(parents=True, exist_ok=True)
    train_dir, test_dir = make_data(out, a)
    t0 = time.perf_counter()
    ckpt = train_model(out, train_dir, a)
    print(f"model: {ckpt} ({time.perf_counter() - t0:.0f} s this run)", flush=True)
    segmenter = out / "segmenter.pt"
    if not segmenter.exists():
        seg.train_segmenter(train_dir, segmenter, steps=a.segmenter_steps, seed=a.seed, threads=THREADS)
    masks = detail_masks(a)
    ceiling = complete_row(test_dir, out, segmenter, masks)
    rows = [baseline_row(train_dir, test_dir, out, segmenter, masks), posterior_row(a, masks)]
    rows += [run_setting(spec, a.seed, ckpt, test_dir, out, segmenter, masks) for spec in a.settings]
    rows += [run_student(calls, path, k, a.seed, test_dir, out, segmenter, masks)
             for calls, path in students for k in a.student_ensembles]
    repeats = [run_setting(a.noise, s, ckpt, test_dir, out, segmenter, masks) for s in a.noise_seeds]
    noise = noise_of([r for r in rows if r["setting"] == a.noise] + repeats, a.noise)
    with open(out / "ambiguity.csv", "w", newline="") as fh:
        keys = list(dict.fromkeys(k for r in rows + repeats for k in r))
        writer = csv.DictWriter(fh, fieldnames=keys + ["machine"])
        writer.writeheader()
        for r in rows + repeats:
            writer.writerow({**r, "machine": machine(a.device)})
    net = "" if network(a) == {k: v for k, v in DEMO_NETWORK.items() if k != "num_groups"} else (
        f" --model_channels {a.model_channels} --channel_mult {' '.join(map(str, a.channel_mult))} "
        f"--num_res_blocks {a.num_res_blocks} --batch_size {a.batch_size}")
    more = f" + {a.more_subjects} subjects of one draw" if a.more_subjects else ""
    head = (f"Ambiguous phantom, target t1c, {a.test_cases} held-out cases, seed {a.seed}; training "
            f"{a.train_cases} subjects x {a.detail_draws} detail draws{more}; model "
            f"{checkpoint_step(ckpt)} steps{net}, --prediction {a.prediction}"
            + (f" --sigma_data {' '.join(map(str, a.sigma_data))}" if a.prediction == "edm" and a.sigma_data else "")
            + f" --timestep_power {a.timestep_power:g} --lr {a.lr:g}; machine: {machine(a.device)}; run-to-run "
            f"std: {a.noise} over seeds {[a.seed] + list(a.noise_seeds)}.")
    (out / "ambiguity.md").write_text(table(rows, noise, ceiling, head))
    plot(rows, out / "ambiguity.png")
    print((out / "ambiguity.md").read_text())
    if a.docs:
        for name in ("ambiguity.csv", "ambiguity.md", "ambiguity.png"):
            shutil.copy(out / name, a.docs / name)


if __name__ == "__main__":
    main()

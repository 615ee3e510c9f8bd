#!/usr/bin/env python
"""Mask-conditioned generation on phantom data at demo scale (a benchmark, not a test).

    python benchmarks/mask_conditioned.py --out cwdm-mask --docs docs --threads 2

1. Phantom data as ``cwdm demo`` makes it (64 training and 4 held-out cases,
   downsample 4, seed 0), plus a brain mask per case (``<case>-brain.nii.gz``,
   :func:`cwdm.data.masks.write_brain_masks`): a brain mask is not a BraTS file, so
   the mask-only task names it among its modalities.
2. Trains two t1c models with the demo's network and optimizer settings
   (:class:`cwdm.commands.demo.DemoConfig`): **mask only** (conditions ``seg`` and
   ``brain``, both label maps) and **mask + t1n** (``seg`` and ``t1n``).
3. Synthesizes the held-out cases with ``cwdm sample`` (ddim, 10 calls) and
   scores them with ``cwdm evaluate``'s metrics (the BraSyn challenge's SSIM,
   PSNR, MAE inside / outside the tumour) against two baselines fitted on the
   training cases, on the network's [0, 1] scale: the **per-label mean**
   (the mean t1c of each seg label and of the brain outside the tumour) and
   the **per-label linear** fit ``t1c = a * t1n + b`` in each of those regions.
4. The edit use: one held-out case's tumour mask is moved (mirrored to the
   other hemisphere), grown by 2 voxels of edema and removed; each edited mask
   is synthesized by both models (the same noise for every edit: each edit is a
   folder of its own holding the same case name) and drawn as
   ``mask_edit.png``: rows original / moved / grown / removed; columns the mask,
   the two syntheses and, per edit, how much the mask-only synthesis changed
   against the one from the original mask (the true t1c in the first row).

Writes ``mask_conditioned.csv`` (one row per method), ``mask_edit.csv`` (how
local each edit's change is) and ``mask_edit.png`` into ``--docs`` (default:
``--out``), and prints the tables. ``--train_steps`` / ``--train_cases`` make a
quick smoke run.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
import time
from pathlib import Path

import numpy as np

TARGET = "t1c"
LABELS = (1, 2, 3)
BRAIN = "brain"
MODALITIES_WITH_BRAIN = ("t1n", "t1c", "t2w", "t2f", BRAIN)
MODELS = {  # name -> (conditions, label maps, modalities)
    "mask only": (("seg", BRAIN), ("seg=1,2,3", f"{BRAIN}=1"), MODALITIES_WITH_BRAIN),
    "mask + t1n": (("seg", "t1n"), ("seg=1,2,3",), MODALITIES_WITH_BRAIN[:4]),
}
EDIT_KEEP = (BRAIN, "t1n")  # the inputs of both models besides the seg
REPORTED = ("ssim", "ssim_tumor", "ssim_non_tumor", "psnr", "mae_tumor", "mae_non_tumor",
            "ssim_tumor_region", "ssim_non_tumor_region")


def say(msg: str) -> None:
    print(f"[mask benchmark] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- data

def make_data(out: Path, demo, train_cases: int, test_cases: int) -> tuple:
    from cwdm.data.masks import write_brain_masks
    from cwdm.phantom.sets import make_phantom_set

    train, test = out / "data" / "train", out / "data" / "test"
    for folder, n, start in ((train, train_cases, 0), (test, test_cases, train_cases)):
        make_phantom_set(folder, n, demo.seed, demo.downsample, start=start, progress=False)
        write_brain_masks(folder)
    return train, test


# --------------------------------------------------------------------------- models

def train_model(name: str, data: Path, run_dir: Path, demo, steps: int) -> Path:
    """Train one t1c model with the demo's settings; returns its last checkpoint."""
    from cwdm.training.config import TrainConfig
    from cwdm.training.state import latest_checkpoint
    from cwdm.training.loop import train

    conditions, label_maps, modalities = MODELS[name]
    cfg = TrainConfig(data_dir=data, contr=TARGET, modalities=modalities, conditions=conditions,
                      label_maps=label_maps, run_dir=run_dir, model_channels=demo.num_channels,
                      channel_mult=demo.channel_mult, num_res_blocks=demo.num_res_blocks,
                      num_groups=demo.num_groups, batch_size=demo.batch_size, lr=demo.lr, ema_rate=demo.ema_rate,
                      max_steps=steps, seed=demo.seed, save_interval=10 ** 9, log_interval=25,
                      image_interval=0, num_workers=demo.num_workers, progress=False, tensorboard=False)
    status = train(cfg)
    if status:
        raise SystemExit(f"training {name} stopped with status {status}")
    return latest_checkpoint(run_dir)


def synthesize(ckpt: Path, data: Path, out: Path, demo) -> float:
    """``cwdm sample`` of every case of ``data``; returns the wall seconds."""
    from cwdm.commands.sample import SampleConfig, sample

    t0 = time.perf_counter()
    status = sample(SampleConfig(data_dir=data, model_path=ckpt, output_dir=out, sampler=demo.sampler,
                                 sampling_steps=demo.sampling_steps, seed=demo.seed, num_groups=demo.num_groups,
                                 overwrite=True, num_workers=0, progress=False))
    if status:
        raise SystemExit(f"cwdm sample {ckpt} on {data} exited {status}")
    return time.perf_counter() - t0


# --------------------------------------------------------------------------- baselines

def _regions(case) -> tuple:
    """(brain mask, seg) of a case, as booleans / integers."""
    from cwdm.data.nifti_io import load_nifti

    brain = load_nifti(case.path(BRAIN))[0] > 0
    seg = np.rint(load_nifti(case.seg)[0]).astype(np.int16)
    return brain, seg


def _region_masks(brain: np.ndarray, seg: np.ndarray) -> dict:
    """Region name -> boolean mask: each seg label, and the brain outside the tumour."""
    masks = {f"label {lab}": seg == lab for lab in LABELS}
    masks["brain outside tumour"] = brain & (seg == 0)
    return masks


def fit_baselines(cases) -> dict:
    """Per region: the mean normalized t1c, and the least-squares ``(a, b)`` of ``t1c = a t1n + b``."""
    from cwdm.data.nifti_io import load_nifti
    from cwdm.data.preprocess import clip_and_normalize

    sums: dict = {}
    for case in cases:
        brain, seg = _regions(case)
        t1c = clip_and_normalize(load_nifti(case.files[TARGET])[0])
        t1n = clip_and_normalize(load_nifti(case.files["t1n"])[0])
        for region, m in _region_masks(brain, seg).items():
            x, y = t1n[m], t1c[m]
            acc = sums.setdefault(region, np.zeros(5))  # n, sum y, sum x, sum xx, sum xy
            acc += (x.size, y.sum(), x.sum(), (x * x).sum(), (x * y).sum())
    overall = sum(acc[1] for acc in sums.values()) / max(sum(acc[0] for acc in sums.values()), 1)
    fit = {}
    for region, (n, sy, sx, sxx, sxy) in sums.items():
        mean = sy / n if n else overall
        var = sxx - sx * sx / n if n else 0.0
        a = (sxy - sx * sy / n) / var if var > 1e-12 else 0.0
        fit[region] = {"mean": float(mean), "a": float(a), "b": float(mean - a * (sx / n if n else 0.0))}
    return fit


def write_baseline(cases, fit: dict, kind: str, out: Path) -> None:
    """``out/<case>/<case>-t1c.nii.gz`` of the per-label ``mean`` or ``linear`` baseline."""
    from cwdm.data.nifti_io import load_nifti, save_nifti_like
    from cwdm.data.preprocess import clip_and_normalize

    for case in cases:
        brain, seg = _regions(case)
        pred = np.zeros(seg.shape, dtype=np.float32)
        t1n = clip_and_normalize(load_nifti(case.files["t1n"])[0]) if kind == "linear" else None
        for region, m in _region_masks(brain, seg).items():
            f = fit[region]
            pred[m] = f["mean"] if t1n is None else np.clip(f["a"] * t1n[m] + f["b"], 0.0, 1.0)
        (out / case.name).mkdir(parents=True, exist_ok=True)
        save_nifti_like(pred, case.path(BRAIN), out / case.name / f"{case.prefix}-{TARGET}.nii.gz", overwrite=True)


# --------------------------------------------------------------------------- scoring

def score(pred_dir: Path, test: Path, out: Path) -> dict:
    """Mean (and SSIM std) of ``cwdm evaluate``'s metrics over the held-out cases."""
    from cwdm.evaluation.scoring import evaluate_dirs

    rows, summary = evaluate_dirs(pred_dir, test, out, montage=False, progress=False, verbose=False)
    overall = summary["overall"]
    result = {k: overall[k]["mean"] for k in REPORTED if k in overall}
    result["ssim_std"] = overall["ssim"]["std"]
    result["cases"] = len(rows)
    return result


# --------------------------------------------------------------------------- the edit use

def edits_of(case) -> dict:
    """Edit name -> the case's tumour mask after that edit (original, moved, grown, removed)."""
    from cwdm.data.masks import grow_tumour, move_tumour, remove_tumour

    brain, seg = _regions(case)
    tumour = np.argwhere(seg > 0)
    centre_x = tumour[:, 0].mean()
    brain_x = np.argwhere(brain)[:, 0]
    mid = (brain_x.min() + brain_x.max()) / 2.0
    shift_x = int(round(2 * (mid - centre_x)))  # mirror to the other hemisphere
    if abs(shift_x) < np.ptp(tumour[:, 0]) + 2:   # a tumour near the midline: move it by its width instead
        shift_x = int(np.sign(mid - centre_x) or 1) * int(np.ptp(tumour[:, 0]) + 2)
    moved = move_tumour(seg, (shift_x, 0, 0), brain)
    kept = int((moved > 0).sum()) / max(int((seg > 0).sum()), 1)
    say(f"edit 'moved': {shift_x:+d} voxels along x, {100 * kept:.0f} % of the tumour voxels stay in the brain")
    return {"original": seg, f"moved ({shift_x:+d} x)": moved, "grown (+2 edema)": grow_tumour(seg, 2, brain),
            "removed": remove_tumour(seg)}


def run_edits(case, ckpts: dict, out: Path, demo) -> tuple:
    """Synthesize every edit with both models; returns (edit -> model -> volume, edit -> seg)."""
    from cwdm.data.cases import discover_cases
    from cwdm.data.masks import write_edited_case
    from cwdm.data.nifti_io import load_nifti

    edits = edits_of(case)
    volumes: dict = {}
    for k, (edit, seg) in enumerate(edits.items()):
        data = out / "data" / f"edit{k}"
        if data.exists():
            shutil.rmtree(data)
        write_edited_case(case, seg, data, case.name, keep=EDIT_KEEP)  # the same name: the same noise
        [edited] = discover_cases(data, MODALITIES_WITH_BRAIN)
        volumes[edit] = {}
        for model, ckpt in ckpts.items():
            result = out / "synthesis" / f"edit{k}_{model.replace(' ', '').replace('+', '_')}"
            synthesize(ckpt, data, result, demo)
            volumes[edit][model] = load_nifti(result / edited.name / f"{edited.prefix}-{TARGET}.nii.gz")[0]
    return volumes, edits


def edit_locality(volumes: dict, edits: dict, brain: np.ndarray) -> list:
    """Per edit and model: mean |change| against the original synthesis where the mask changed, and elsewhere."""
    original = next(iter(edits))
    rows = []
    for edit, seg in list(edits.items())[1:]:
        changed = seg != edits[original]
        for model, vol in volumes[edit].items():
            diff = np.abs(vol - volumes[original][model])
            rows.append({"edit": edit, "model": model, "edited_voxels": int(changed.sum()),
                         "mean_abs_change_edited": float(diff[changed].mean()) if changed.any() else float("nan"),
                         "mean_abs_change_rest_of_brain": float(diff[brain & ~changed].mean())})
    return rows


def draw_edits(path: Path, case_name: str, volumes: dict, edits: dict, brain: np.ndarray, truth: np.ndarray) -> None:
    """``mask_edit.png``: one row per edit, axial slice through the original tumour's centre."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure

    from cwdm.evaluation.montage import mask_centroid, mid_slices
    from cwdm.data.preprocess import clip_and_normalize

    original = next(iter(edits))
    centre = mask_centroid(edits[original] > 0)
    models = list(next(iter(volumes.values())))
    axial = lambda v: mid_slices(v, centre)["axial"]  # noqa: E731
    labels_cmap = ListedColormap(["#000000", "#505050", "#ff4040", "#ffd000", "#40a0ff"])  # bg, brain, 1, 2, 3
    ncols = 2 + len(models)
    fig = Figure(figsize=(2.6 * ncols, 2.6 * len(edits) + 0.6))
    FigureCanvasAgg(fig)
    fig.patch.set_facecolor("black")
    axes = fig.subplots(len(edits), ncols, squeeze=False)
    for i, (edit, seg) in enumerate(edits.items()):
        panels = [("mask: " + edit, axial(np.where(seg > 0, seg + 1, brain.astype(np.int16))),
                   dict(cmap=labels_cmap, vmin=-0.5, vmax=4.5))]
        panels += [(f"t1c from {m}", axial(volumes[edit][m]), dict(cmap="gray", vmin=0, vmax=1)) for m in models]
        if i == 0:
            panels.append(("true t1c (scaled to [0, 1])", axial(clip_and_normalize(truth)),
                           dict(cmap="gray", vmin=0, vmax=1)))
        else:
            change = np.abs(volumes[edit][models[0]] - volumes[original][models[0]])
            panels.append((f"|change|, {models[0]} (0..0.5)", axial(change), dict(cmap="magma", vmin=0, vmax=0.5)))
        for j, (title, image, kwargs) in enumerate(panels):
            ax = axes[i][j]
            ax.imshow(image, interpolation="nearest", **kwargs)
            ax.set_title(title, color="white", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"{case_name} (held out): edited tumour masks (red necrosis, yellow edema, blue enhancing) "
                 f"and the t1c synthesized from them", color="white", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90, facecolor=fig.get_facecolor())


# --------------------------------------------------------------------------- driver

def write_csv(path: Path, rows: list) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def fmt(value, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def main() -> None:
    from cwdm.data.cases import discover_cases
    from cwdm.commands.demo import DemoConfig
    from cwdm.data.nifti_io import load_nifti

    demo = DemoConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("cwdm-mask"), help="work folder (replaced)")
    p.add_argument("--docs", type=Path, default=None, help="where the CSVs and the PNG go (default --out)")
    p.add_argument("--train_steps", type=int, default=demo.max_steps)
    p.add_argument("--train_cases", type=int, default=demo.train_cases)
    p.add_argument("--test_cases", type=int, default=demo.test_cases)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    a = p.parse_args()
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    if a.out.exists():
        shutil.rmtree(a.out)
    a.out.mkdir(parents=True)
    docs = a.docs or a.out
    docs.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    times = {}

    t0 = time.perf_counter()
    train, test = make_data(a.out, demo, a.train_cases, a.test_cases)
    times["phantom data and brain masks"] = time.perf_counter() - t0
    say(f"data: {a.train_cases} training and {a.test_cases} held-out cases in {times['phantom data and brain masks']:.0f} s")

    rows, ckpts = [], {}
    for name, (conditions, label_maps, _) in MODELS.items():
        t0 = time.perf_counter()
        ckpts[name] = train_model(name, train, a.out / "runs" / name.replace(" ", "").replace("+", "_"), demo,
                                  a.train_steps)
        train_s = time.perf_counter() - t0
        folder = a.out / "synthesis" / name.replace(" ", "").replace("+", "_")
        sample_s = synthesize(ckpts[name], test, folder, demo)
        row = {"method": f"cwdm, {name}", "conditions": " ".join(conditions),
               "label_maps": " ".join(label_maps), "train_steps": a.train_steps}
        row.update(score(folder, test, a.out / "evaluation" / folder.name))
        row.update(train_seconds=round(train_s, 1), synthesis_seconds_per_case=round(sample_s / a.test_cases, 2))
        rows.append(row)
        say(f"{name}: SSIM {row['ssim']:.4f}, trained in {train_s:.0f} s, sampled in {sample_s:.1f} s")

    t0 = time.perf_counter()
    train_cases = discover_cases(train, MODALITIES_WITH_BRAIN)
    test_cases = discover_cases(test, MODALITIES_WITH_BRAIN)
    fit = fit_baselines(train_cases)
    fit_s = time.perf_counter() - t0
    for kind, conditions, label in (("mean", "seg brain", "per-label mean"),
                                    ("linear", "seg t1n", "per-label linear in t1n")):
        t0 = time.perf_counter()
        folder = a.out / "baseline" / kind
        write_baseline(test_cases, fit, kind, folder)
        predict_s = time.perf_counter() - t0
        row = {"method": f"baseline, {label}", "conditions": conditions, "label_maps": "", "train_steps": 0}
        row.update(score(folder, test, a.out / "evaluation" / f"baseline_{kind}"))
        row.update(train_seconds=round(fit_s, 1), synthesis_seconds_per_case=round(predict_s / a.test_cases, 2))
        rows.append(row)

    t0 = time.perf_counter()
    case = test_cases[0]
    volumes, edits = run_edits(case, ckpts, a.out, demo)
    brain, _ = _regions(case)
    local = edit_locality(volumes, edits, brain)
    draw_edits(docs / "mask_edit.png", case.name, volumes, edits, brain, load_nifti(case.files[TARGET])[0])
    times["edits"] = time.perf_counter() - t0

    write_csv(docs / "mask_conditioned.csv", rows)
    write_csv(docs / "mask_edit.csv", local)
    total = time.perf_counter() - t_start
    print(f"\nt1c on {a.test_cases} held-out phantom cases (downsample {demo.downsample}), "
          f"{torch.get_num_threads()} torch threads; total {total:.0f} s\n")
    print("| method | conditions | SSIM | SSIM std | PSNR (dB) | MAE tumour | MAE outside tumour | "
          "training / fit (s) | synthesis (s / case) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['conditions']} | {fmt(r['ssim'])} | {fmt(r['ssim_std'])} | "
              f"{fmt(r['psnr'], 2)} | {fmt(r['mae_tumor'])} | {fmt(r['mae_non_tumor'])} | "
              f"{r['train_seconds']} | {r['synthesis_seconds_per_case']} |")
    print(f"\nedits of {case.name} (mean |change| of the synthesis against the one from the original mask):\n")
    print("| edit | model | edited voxels | where the mask changed | rest of the brain |")
    print("|---|---|---|---|---|")
    for r in local:
        print(f"| {r['edit']} | {r['model']} | {r['edited_voxels']} | {fmt(r['mean_abs_change_edited'])} | "
              f"{fmt(r['mean_abs_change_rest_of_brain'])} |")
    print(f"\nedits: {times['edits']:.0f} s; wrote {docs / 'mask_conditioned.csv'}, {docs / 'mask_edit.csv'}, "
          f"{docs / 'mask_edit.png'}")


if __name__ == "__main__":
    main()

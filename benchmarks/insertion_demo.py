#!/usr/bin/env python
"""Tumour insertion on phantom cases: train an insertion model, draw two tumours, insert them (a walk-through).

    python benchmarks/insertion_demo.py --out cwdm-insertion --docs docs       # 3000 steps
    python benchmarks/insertion_demo.py --out /tmp/ins --steps 20              # a smoke run

1. Phantom cases (``make_phantom_set``, BraTS layout with ``seg``; ``--train_cases`` at ``--downsample``)
   and one held-out case.
2. An insertion model with the demo's network (16 channels (1, 2, 2), 1 res block, 8 groups; batch 2,
   lr 2e-4, EMA 0.999; ``cwdm train --insertion True --insertion_margin 1 2``), ``--steps`` steps. Rerunning
   continues the run (``--resume auto``); a run at ``--steps`` already is not trained further.
3. Two drawings in the held-out case's healthy tissue, away from its tumour (a t1n with the tumour
   removed does not exist): a ball of edema (2) with an enhancing ring (3) and a necrotic core (1)
   (:func:`cwdm.data.insertion.ball_drawing`), a large one where there is most room and a smaller one
   elsewhere. Each is inserted with :class:`cwdm.Insertion` (``--sampler``, ``--sampling_steps``), the
   region being the drawing dilated by the sampling margin.
4. ``OUT/insertion.png`` (copied to ``--docs``): a row per drawing; columns: the input t1n, the drawing
   over it, the result (the region outlined); axial slices through the drawing's centre. The settings and
   times go to stdout.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from dataclasses import fields
from pathlib import Path

import nibabel as nib
import numpy as np

from cwdm.openmp import configure  # before torch loads (cwdm.openmp says why)

configure()

COLOURS = {1: "#3b7dd8", 2: "#f2d13d", 3: "#e0413a"}
"""Label colours of the figure: necrotic core, edema, enhancing tumour."""
NAMES = {1: "necrotic core", 2: "edema", 3: "enhancing"}


def make_data(out: Path, a) -> tuple:
    """Training cases and the held-out case (BraTS layout, with seg); made once."""
    from cwdm.phantom.sets import make_phantom_set

    train, held = out / "data" / "train", out / "data" / "held_out"
    if not (out / "data" / "done").exists():
        for folder in (train, held):
            shutil.rmtree(folder, ignore_errors=True)
        make_phantom_set(train, a.train_cases, a.seed, a.downsample, progress=True)
        make_phantom_set(held, 1, a.seed, a.downsample, start=a.train_cases, progress=False)
        (out / "data" / "done").write_text("")
    return train, next(p for p in sorted(held.iterdir()) if p.is_dir())


def train_model(out: Path, train_dir: Path, a) -> tuple:
    """Train (or continue) the insertion model to ``a.steps``; returns (checkpoint, seconds of this call)."""
    from cwdm.training.config import TrainConfig
    from cwdm.training.loop import train
    from cwdm.training.state import latest_checkpoint

    run = out / "run"
    cfg = TrainConfig(data_dir=train_dir, insertion=True, insertion_margin=tuple(a.margin),
                      insertion_healthy=a.healthy, mask_weight=a.mask_weight, run_dir=run, resume="auto",
                      model_channels=16, channel_mult=(1, 2, 2), num_res_blocks=1, num_groups=8, batch_size=2,
                      lr=2e-4, ema_rate=0.999, max_steps=a.steps, seed=a.seed, save_interval=500,
                      log_interval=50, image_interval=0, num_workers=1, progress=True, device=a.device,
                      flags_given=frozenset(f.name for f in fields(TrainConfig) if f.name != "flags_given"))
    t0 = time.perf_counter()
    status = train(cfg)
    if status:
        raise SystemExit(f"training stopped (status {status}); rerun the same command to continue")
    return latest_checkpoint(run), time.perf_counter() - t0


def places(t1n: np.ndarray, seg: np.ndarray, radii, margin: int) -> list:
    """A centre per radius in healthy brain: the voxel with the most room (distance to the brain's edge
    and to the tumour, and to the drawings placed before), which must exceed radius + margin."""
    from scipy import ndimage

    room = np.minimum(ndimage.distance_transform_edt(t1n != 0), ndimage.distance_transform_edt(seg == 0))
    centres = []
    for radius in radii:
        free = room.copy()
        for (c, r) in centres:
            grid = np.meshgrid(*(np.arange(n) for n in t1n.shape), indexing="ij")
            free = np.minimum(free, np.sqrt(sum((g - x) ** 2 for g, x in zip(grid, c))) - r)
        best = np.unravel_index(int(np.argmax(free)), free.shape)
        if free[best] <= radius + margin:
            raise SystemExit(f"no room for a drawing of radius {radius} in the held-out case (most: "
                             f"{free[best]:.1f} voxels); use smaller --radii")
        centres.append((best, radius))
    return centres


def write_drawings(out: Path, case: Path, a) -> list:
    """Case folders ``OUT/drawings/<drawing>/`` with the held-out t1n and one drawing each."""
    from cwdm.data.insertion import ball_drawing

    name = case.name
    img = nib.load(str(case / f"{name}-t1n.nii.gz"))
    t1n, seg = np.asarray(img.dataobj), np.asarray(nib.load(str(case / f"{name}-seg.nii.gz")).dataobj)
    folders = []
    for k, (centre, radius) in enumerate(places(t1n, seg, a.radii, max(a.margin))):
        folder = out / "drawings" / f"{name}-{'ab'[k]}"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(case / f"{name}-t1n.nii.gz", folder / f"{folder.name}-t1n.nii.gz")
        drawing = ball_drawing(t1n.shape, centre, radius)
        nib.save(nib.Nifti1Image(drawing, img.affine), str(folder / f"{folder.name}-labels.nii.gz"))
        folders.append((folder, centre, radius))
    return folders


def figure(path: Path, rows: list) -> None:
    """Rows (title, t1n, drawing, result, region, centre): input, drawing over it, result (region outlined)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    from cwdm.evaluation.montage import mid_slices

    fig = Figure(figsize=(9, 3.1 * len(rows) + 0.5), dpi=110)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(rows), 3, squeeze=False)
    labels_map = ListedColormap([COLOURS[v] for v in (1, 2, 3)])
    for i, (title, t1n, drawing, result, region, centre) in enumerate(rows):
        view = {k: mid_slices(v, centre)["axial"] for k, v in
                dict(t1n=t1n, drawing=drawing, result=result, region=region.astype(np.float32)).items()}
        lo, hi = np.percentile(t1n[t1n != 0], [0.5, 99.5])
        for j, (column, ax) in enumerate(zip(("input t1n", "drawn labels", "result"), axes[i])):
            ax.imshow(view["result" if j == 2 else "t1n"], cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
            if j == 1:
                shown = np.ma.masked_equal(view["drawing"], 0)
                ax.imshow(shown, cmap=labels_map, vmin=0.5, vmax=3.5, alpha=0.75, interpolation="nearest")
            if j == 2:
                ax.contour(view["region"], levels=[0.5], colors="#40c0ff", linewidths=0.7)
            ax.set_title(f"{title}: {column}" if j == 0 else column, fontsize=9)
            ax.set_axis_off()
    fig.legend(handles=[Patch(color=COLOURS[v], label=f"{v} {NAMES[v]}") for v in (1, 2, 3)] +
               [Patch(facecolor="none", edgecolor="#40c0ff", label="region rewritten")],
               loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(str(path))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("cwdm-insertion"))
    p.add_argument("--docs", type=Path, default=None, help="copy insertion.png here")
    p.add_argument("--train_cases", type=int, default=64)
    p.add_argument("--downsample", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--margin", type=int, nargs=2, default=[1, 2], help="--insertion_margin of training (voxels)")
    p.add_argument("--healthy", type=float, default=0.2, help="--insertion_healthy of training")
    p.add_argument("--mask_weight", type=float, default=3.0)
    p.add_argument("--radii", type=float, nargs=2, default=[6.0, 4.0], help="the two drawings' radii (voxels)")
    p.add_argument("--sampler", default="ddim")
    p.add_argument("--sampling_steps", type=int, default=10)
    p.add_argument("--device", default="auto")
    a = p.parse_args()
    from cwdm import Insertion
    from cwdm.data.insertion import region_of, sampling_margin

    out = a.out
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    train_dir, held = make_data(out, a)
    data_seconds = time.perf_counter() - t0
    ckpt, train_seconds = train_model(out, train_dir, a)
    ins = Insertion(ckpt, sampler=a.sampler, steps=a.sampling_steps, seed=a.seed, device=a.device)
    rows, seconds = [], []
    for folder, centre, radius in write_drawings(out, held, a):
        t1n_path, labels_path = folder / f"{folder.name}-t1n.nii.gz", folder / f"{folder.name}-labels.nii.gz"
        t1 = time.perf_counter()
        result = ins.infer_single(t1n=t1n_path, labels=labels_path, output_file=folder /
                                  f"{folder.name}-t1n-inserted.nii.gz", overwrite=True)
        seconds.append(time.perf_counter() - t1)
        t1n = np.asarray(nib.load(str(t1n_path)).dataobj, dtype=np.float64)
        drawing = np.asarray(nib.load(str(labels_path)).dataobj)
        region = region_of(drawing, t1n != 0, sampling_margin(a.margin))
        rows.append((f"radius {radius:g}", t1n, drawing, np.asarray(nib.load(str(result)).dataobj, dtype=np.float64),
                     region, centre))
    figure(out / "insertion.png", rows)
    if a.docs:
        a.docs.mkdir(parents=True, exist_ok=True)
        shutil.copy(out / "insertion.png", a.docs / "insertion.png")
    print(f"insertion demo: {a.train_cases} phantom training cases (downsample {a.downsample}, seed {a.seed}; "
          f"made in {data_seconds:.0f} s), held-out case {held.name}")
    print(f"model: {ckpt} ({a.steps} steps; 16 channels (1, 2, 2), 1 res block, 8 groups, batch 2, lr 2e-4, "
          f"EMA 0.999, --insertion_margin {a.margin[0]} {a.margin[1]}, --insertion_healthy {a.healthy}, "
          f"--mask_weight {a.mask_weight}); training this call: {train_seconds:.0f} s")
    print(f"insertion: {a.sampler} {a.sampling_steps} steps, region = drawing dilated by "
          f"{sampling_margin(a.margin)} voxels; {', '.join(f'{s:.1f} s' for s in seconds)} for the two drawings")
    print(f"wrote {out / 'insertion.png'}" + (f" (copied to {a.docs / 'insertion.png'})" if a.docs else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())

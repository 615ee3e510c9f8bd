#!/usr/bin/env python
"""Inpainting on phantom cases: cwdm against a non-learned 3D fill (a benchmark, not a test).

    python benchmarks/inpainting_phantom.py --out cwdm-inpainting --docs docs

Phantom cases (``make_phantom_set``; ``--train_cases`` for training, ``--test_cases`` held out) are
turned into the challenge's layout by ``cwdm inpaint-data`` (a healthy region voided per held-out
case, seed ``--seed``). One inpainting model is trained with the demo's network
(``cwdm train --inpainting True``), then each held-out case is filled by

- **harmonic fill**: the solution of Laplace's equation inside the mask (6-neighbour stencil) with the
  voided image's voxels around it as boundary values: the smoothest fill, no learning;
- **mean fill**: the mean of the brain voxels outside the mask;
- cwdm with each ``--settings`` sampler (``NAME:STEPS``).

Every fill is scored with ``cwdm evaluate`` (the inpainting challenge's SSIM, PSNR, PSNR with range
1, MSE in ``mask-healthy``). Every stage keeps its output and is skipped when rerun. Writes
``OUT/inpainting.csv``, ``OUT/inpainting.md`` and ``OUT/inpainting.png`` (a montage through the mask of
one case; copied to ``--docs``).
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cwdm.openmp import configure  # noqa: E402  (before torch loads: cwdm.openmp says why)

configure()

from phantom_model import machine, train_demo_network  # noqa: E402

DEFAULT = ["ddim:10", "ddim:2", "regression:1"]
METRICS = ["ssim", "psnr", "psnr_01", "mse"]


def make_data(out: Path, a) -> tuple:
    """Phantom training cases (BraTS layout: the inpainting trainer draws its own regions) and held-out
    cases in the challenge's layout."""
    from cwdm.commands.inpaint_data import make_inpainting_set
    from cwdm.phantom.sets import make_phantom_set

    train, full, test = out / "data" / "train", out / "data" / "test_full", out / "data" / "test"
    if not (out / "data" / "done").exists():
        for folder in (train, full, test):
            shutil.rmtree(folder, ignore_errors=True)
        make_phantom_set(train, a.train_cases, a.seed, a.downsample, progress=True)
        make_phantom_set(full, a.test_cases, a.seed, a.downsample, start=a.train_cases, progress=True)
        make_inpainting_set(full, test, seed=a.seed)
        (out / "data" / "done").write_text("")
    return train, test


def train_model(out: Path, train_dir: Path, a) -> Path:
    return train_demo_network(out / "run", a.steps, a.seed, a.lr, data_dir=train_dir, inpainting=True,
                              mask_weight=a.mask_weight)


def harmonic_fill(voided: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Solve Laplace's equation inside ``mask`` (bool (X, Y, Z)) with ``voided``'s voxels outside as boundary
    values (6 neighbours; the volume's border counts as its own value): returns the filled (X, Y, Z) float64."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import spsolve

    vol = voided.astype(np.float64)
    inside = np.flatnonzero(mask)
    number = -np.ones(mask.size, dtype=np.int64)
    number[inside] = np.arange(inside.size)
    coords = np.array(np.unravel_index(inside, mask.shape))
    rows, cols, vals = [np.arange(inside.size)], [np.arange(inside.size)], [np.zeros(inside.size)]
    rhs = np.zeros(inside.size)
    for axis in range(3):
        for step in (-1, 1):
            nb = coords.copy()
            nb[axis] += step
            ok = (nb[axis] >= 0) & (nb[axis] < mask.shape[axis])
            flat = np.ravel_multi_index(tuple(np.where(ok, nb, coords)), mask.shape)
            vals[0] = vals[0] + ok  # each neighbour inside the grid adds 1 on the diagonal
            unknown = ok & (number[flat] >= 0)
            rows.append(np.flatnonzero(unknown))
            cols.append(number[flat[unknown]])
            vals.append(-np.ones(int(unknown.sum())))
            known = ok & (number[flat] < 0)
            rhs[known] += vol.ravel()[flat[known]]
    a = coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                   shape=(inside.size, inside.size)).tocsr()
    out = vol.copy()
    out.ravel()[inside] = spsolve(a, rhs)
    return out


def write_fill(case, folder: Path, fill) -> None:
    """Write ``fill(voided, mask)`` for ``case`` as the challenge names it (outside the mask: the voided voxels)."""
    from cwdm.data.inpainting import MASK, VOIDED, result_path

    img = nib.load(case.path(VOIDED))
    voided = np.asarray(img.dataobj)
    mask = np.asarray(nib.load(case.path(MASK)).dataobj) > 0
    filled = np.where(mask, fill(voided, mask), voided).astype(np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(filled, img.affine), result_path(case, folder))


def score(folder: Path, test_dir: Path, row: dict, seconds: float) -> dict:
    from cwdm.evaluation.inpainting_scoring import evaluate_inpainting_dirs

    rows, summary = evaluate_inpainting_dirs(folder, test_dir, folder / "evaluation", progress=False, verbose=False)
    row.update(seconds_per_case=round(seconds / max(len(rows), 1), 2), cases=len(rows))
    for key in METRICS:
        row[key] = summary["overall"].get(key, {}).get("mean")
    (folder / "row.json").write_text(json.dumps(row))
    print(json.dumps(row), flush=True)
    return row


def baseline_row(name: str, fill, test_dir: Path, out: Path) -> dict:
    from cwdm.data.inpainting import discover_inpainting_cases

    folder = out / "results" / name.replace(" ", "_")
    if (folder / "row.json").exists():
        return json.loads((folder / "row.json").read_text())
    t0 = time.perf_counter()
    for case in discover_inpainting_cases(test_dir):
        write_fill(case, folder, fill)
    return score(folder, test_dir, {"setting": name, "calls_per_case": 0}, time.perf_counter() - t0)


def cwdm_row(spec: str, ckpt: Path, test_dir: Path, out: Path, seed: int) -> dict:
    from cwdm.commands.sample import SampleConfig, sample

    name, _, steps = spec.partition(":")
    folder = out / "results" / spec.replace(":", "_")
    if (folder / "row.json").exists():
        return json.loads((folder / "row.json").read_text())
    t0 = time.perf_counter()
    sample(SampleConfig(data_dir=test_dir, model_path=ckpt, output_dir=folder, sampler=name,
                        sampling_steps=int(steps or 1), seed=seed, overwrite=True, num_workers=0, progress=False,
                        device="cpu"))
    row = {"setting": f"cwdm {spec}", "calls_per_case": 1 if name == "regression" else int(steps or 1)}
    return score(folder, test_dir, row, time.perf_counter() - t0)


def montage(out: Path, test_dir: Path, settings: list) -> None:
    from cwdm.data.inpainting import IMAGE, MASK, VOIDED, discover_inpainting_cases, result_path
    from cwdm.evaluation.montage import mask_centroid, save_montage

    case = discover_inpainting_cases(test_dir)[0]
    load = lambda p: np.asarray(nib.load(p).dataobj, dtype=np.float64)  # noqa: E731
    mask = load(case.path(MASK)) > 0
    columns = [("voided t1n", load(case.path(VOIDED))), ("acquired t1n", load(case.path(IMAGE)))]
    for name in ["harmonic_fill", *[s.replace(":", "_") for s in settings]]:
        columns.append((name.replace("_", " "), load(result_path(case, out / "results" / name))))
    lo, hi = np.percentile(columns[1][1], [0.5, 99.5])
    columns = [(t, v, {"vmin": lo, "vmax": hi}) for t, v in columns]
    save_montage(out / "inpainting.png", columns, center=mask_centroid(mask),
                 title=f"{case.name}: slices through the centre of the filled region")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("cwdm-inpainting"))
    p.add_argument("--docs", type=Path, default=None)
    p.add_argument("--train_cases", type=int, default=64)
    p.add_argument("--test_cases", type=int, default=8)
    p.add_argument("--downsample", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--mask_weight", type=float, default=3.0)
    p.add_argument("--settings", nargs="+", default=DEFAULT)
    a = p.parse_args()
    out = a.out
    out.mkdir(parents=True, exist_ok=True)
    train_dir, test_dir = make_data(out, a)
    ckpt = train_model(out, train_dir, a)
    rows = [baseline_row("harmonic fill", harmonic_fill, test_dir, out),
            baseline_row("mean fill", lambda v, m: np.full(v.shape, v[(v != 0) & ~m].mean()), test_dir, out)]
    rows += [cwdm_row(spec, ckpt, test_dir, out, a.seed) for spec in a.settings]
    montage(out, test_dir, a.settings)
    with open(out / "inpainting.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["setting", "calls_per_case", "seconds_per_case", "cases", *METRICS,
                                                "machine"])
        writer.writeheader()
        for r in rows:
            writer.writerow({**{k: r.get(k) for k in writer.fieldnames}, "machine": machine()})
    head = (f"Phantom inpainting, {a.test_cases} held-out cases (downsample {a.downsample}, seed {a.seed}); model "
            f"{a.steps} steps, --mask_weight {a.mask_weight}; machine: {machine()}. Scores: the inpainting "
            f"challenge's, in mask-healthy.")
    lines = [head, "", "| fill | calls | s / case | SSIM | PSNR | PSNR (range 1) | MSE |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['setting']} | {r['calls_per_case']} | {r['seconds_per_case']} | {r['ssim']:.4f} | "
                     f"{r['psnr']:.2f} | {r['psnr_01']:.2f} | {r['mse']:.5f} |")
    (out / "inpainting.md").write_text("\n".join(lines) + "\n")
    print((out / "inpainting.md").read_text())
    if a.docs:
        for name in ("inpainting.csv", "inpainting.md", "inpainting.png"):
            shutil.copy(out / name, a.docs / name)


if __name__ == "__main__":
    sys.exit(main())

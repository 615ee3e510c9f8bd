#!/usr/bin/env python
"""How ambiguous the ambiguous phantom is: a linear synthesis's error inside vs outside the detail.

    python benchmarks/phantom_ambiguity.py --docs docs

1. Cases 0-23 of seed 0 at downsample 4 (the grid of ``cwdm demo`` and the
   benchmarks), each twice: the ambiguous phantom (``cwdm phantom --ambiguous``)
   and the plain phantom of the same subjects, which is identical outside the
   detail masks.
2. For each target contrast, the voxel-wise linear baseline of ``cwdm demo``
   (:mod:`cwdm.evaluation.baseline`: the target as an affine function of the
   other three contrasts at the same voxel) is fitted on cases 0-19 and
   predicts cases 20-23, on the network's [0, 1] scale
   (:func:`cwdm.data.preprocess.clip_and_normalize`); the same on the plain set.
3. The mean absolute error over the brain voxels of the 4 held-out cases
   (pooled) inside the target's detail mask and in the rest of the brain, on
   the ambiguous set and, at the same voxels, on the plain set; and, inside the
   mask, the error of the **detail-blind** prediction: the plain case taken as
   the synthesis of the ambiguous one, right everywhere but in the detail (what
   a model that reproduces the plain phantom perfectly would make; outside the
   mask it differs only through the [0, 1] scaling of each volume by its own
   quantiles). t1c is also split into its rim (enhancing or not) and its
   vessels.

Writes ``phantom_ambiguity.csv`` and ``phantom_ambiguous.png`` (one held-out
case: the contrasts without and with detail, the difference and the masks) into
``--docs`` and prints the table in markdown.
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FIELDS = ("target", "region", "voxels_per_case", "mae_region", "mae_rest", "mae_region_plain", "mae_rest_plain",
          "mae_region_blind", "mae_rest_blind")


def say(msg: str) -> None:
    print(f"[ambiguity] {msg}", file=sys.stderr, flush=True)


def make_sets(root: Path, cases: int, seed: int, downsample: int) -> dict:
    """Write both sets under ``root``; returns per case ``{"details": masks, "rim": plain label 3}``."""
    from cwdm.phantom.anatomy import generate_case
    from cwdm.phantom.sets import case_name, write_case

    regions = {}
    for index in range(cases):
        plain = generate_case(seed, index, downsample)
        amb = generate_case(seed, index, downsample, ambiguous=True)
        write_case(plain, root / "plain", case_name(index))
        write_case(amb, root / "ambiguous", case_name(index))
        regions[case_name(index)] = {"details": amb["details"], "rim": plain["seg"] == 3}
    return regions


def region_masks(target: str, info: dict) -> dict:
    """The regions reported for ``target``: name -> bool (X, Y, Z) mask (t1n has none)."""
    if target not in info["details"]:
        return {}
    mask = info["details"][target]
    if target != "t1c":
        return {"detail": mask}
    return {"detail": mask, "rim": mask & info["rim"], "vessels": mask & ~info["rim"]}


def errors(root: Path, regions: dict, target: str, train: int, blind: bool = False) -> dict:
    """The baseline's absolute errors on the held-out cases: region -> [sum, voxels], ``"rest"`` outside the detail.

    ``blind``: instead, the errors of the plain case (``root/../plain``) taken as the prediction.
    """
    from cwdm.data.cases import discover_cases
    from cwdm.data.nifti_io import load_nifti
    from cwdm.data.preprocess import clip_and_normalize
    from cwdm.evaluation.baseline import fit_linear_baseline, predict_linear_baseline

    cases = discover_cases(root)
    coef = None if blind else fit_linear_baseline(cases[:train], target)
    sums = {}
    for case in cases[train:]:
        ref = clip_and_normalize(load_nifti(case.files[target])[0])
        brain = load_nifti(case.files["t1n"])[0] > 0
        if blind:
            pred = clip_and_normalize(load_nifti(root.parent / "plain" / case.name / case.files[target].name)[0])
        else:
            pred = predict_linear_baseline(case, target, coef)
        err = np.abs(pred - ref)
        masks = region_masks(target, regions[case.name])
        masks["rest"] = ~masks["detail"] if masks else np.ones_like(brain)
        for name, mask in masks.items():
            inside = mask & brain
            sums.setdefault(name, np.zeros(2))[:] += [err[inside].sum(), inside.sum()]
    return sums


def picture(root: Path, regions: dict, name: str, path: Path) -> None:
    """Rows: plain, ambiguous, their difference with the detail mask outlined; one axial slice per column."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from cwdm.data.nifti_io import load_nifti

    def volume(kind, key):
        return load_nifti(root / kind / name / f"{name}-{key}.nii.gz")[0]

    details = regions[name]["details"]
    columns = ("t1n", "t1c", "t2w", "t2f", "seg")
    fig = Figure(figsize=(12.5, 7.8))
    FigureCanvasAgg(fig)
    axes = fig.subplots(3, len(columns))
    for col, key in enumerate(columns):
        mask = details.get("t1c" if key in ("t1n", "seg") else key)
        z = int(np.argmax(mask.sum((0, 1))))
        plain, amb = volume("plain", key), volume("ambiguous", key)
        if key == "seg":
            images = [(plain, "viridis", 0, 3), (amb, "viridis", 0, 3), (amb - plain, "coolwarm", -2, 2)]
        else:
            top = float(np.percentile(plain[plain > 0], 99.5))
            images = [(plain, "gray", 0, top), (amb, "gray", 0, top), (amb - plain, "coolwarm", -top / 4, top / 4)]
        for row, (img, cmap, lo, hi) in enumerate(images):
            ax = axes[row, col]
            ax.imshow(img[:, :, z].T, cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest")
            if row == 2 and key != "t1n":
                ax.contour(mask[:, :, z].T.astype(float), levels=[0.5], colors="gold", linewidths=0.7)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(f"{key} (slice {z})")
        for row, label in enumerate(("plain", "ambiguous", "difference, mask")):
            axes[row, 0].set_ylabel(label)
    fig.suptitle(f"{name}: plain vs ambiguous phantom (outlined: the contrast's detail mask; "
                 "t1n and seg at the t1c slice)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def main(argv=None) -> int:
    from cwdm.naming import MODALITIES
    from cwdm.phantom.sets import case_name

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=Path, default=Path("docs"))
    ap.add_argument("--cases", type=int, default=24)
    ap.add_argument("--train", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--downsample", type=int, default=4)
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    rows = []
    with tempfile.TemporaryDirectory(prefix="cwdm-ambiguity-") as tmp:
        root = Path(tmp)
        regions = make_sets(root, args.cases, args.seed, args.downsample)
        say(f"{2 * args.cases} cases in {time.monotonic() - t0:.1f} s")
        held_out = args.cases - args.train
        for target in MODALITIES:
            amb, plain = (errors(root / kind, regions, target, args.train) for kind in ("ambiguous", "plain"))
            blind = errors(root / "ambiguous", regions, target, args.train, blind=True)
            for region in [r for r in amb if r != "rest"] or ["none"]:
                a, p = amb.get(region, (0, 0)), plain.get(region, (0, 0))
                rows.append({"target": target, "region": region, "voxels_per_case": round(a[1] / held_out, 1),
                             "mae_region": round(a[0] / a[1], 4) if a[1] else "",
                             "mae_rest": round(amb["rest"][0] / amb["rest"][1], 4),
                             "mae_region_plain": round(p[0] / p[1], 4) if p[1] else "",
                             "mae_rest_plain": round(plain["rest"][0] / plain["rest"][1], 4),
                             "mae_region_blind": round(blind[region][0] / a[1], 4) if a[1] else "",
                             "mae_rest_blind": round(blind["rest"][0] / blind["rest"][1], 4)})
        args.docs.mkdir(parents=True, exist_ok=True)
        picture(root, regions, case_name(args.train), args.docs / "phantom_ambiguous.png")
    with open(args.docs / "phantom_ambiguity.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    print("| target | region | voxels per case | MAE in region | MAE rest of brain | plain: MAE in region "
          "| plain: MAE rest | detail-blind: MAE in region | detail-blind: MAE rest |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(str(r[k]) if r[k] != "" else "-" for k in FIELDS) + " |")
    say(f"wrote {args.docs / 'phantom_ambiguity.csv'} and {args.docs / 'phantom_ambiguous.png'} "
        f"in {time.monotonic() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Quality against network calls for every sampler, on one trained model (a benchmark, not a test).

    python benchmarks/sampler_quality.py --checkpoint runs/t2f/checkpoints/ckpt_00005000.pt \
        --data_dir cwdm-bench/data/test --out cwdm-bench/samplers

Runs ``cwdm sample`` for each sampler setting on the same cases and seed,
evaluates each with ``cwdm evaluate``'s metrics (BraSyn SSIM, PSNR) and writes
``samplers.csv`` (one row per setting: calls per case, seconds per case, mean
SSIM / PSNR / MSE) and ``samplers.png`` (SSIM and PSNR against network calls).
Settings are ``NAME:STEPS`` or ``NAME:STEPSxK`` for an ensemble of K samples.
"""

import argparse
import csv
import json
import time
from pathlib import Path

DEFAULT = ["ddpm:1000", "ddim:100", "ddim:50", "ddim:20", "ddim:10", "ddim:5", "regression:1",
           "ddim:5x2", "regression:1x4", "regression:1x10", "ddim:10x4"]


def parse(spec: str):
    name, _, rest = spec.partition(":")
    steps, _, k = rest.partition("x")
    return name, int(steps or 1), int(k or 1)


def main():
    from cwdm.evaluation.scoring import evaluate_dirs
    from cwdm.commands.sample import SampleConfig, sample

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data_dir", required=True, help="cases with their true target")
    p.add_argument("--out", required=True)
    p.add_argument("--settings", nargs="+", default=DEFAULT)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eta", type=float, default=0.0)
    p.add_argument("--device", default="auto")
    p.add_argument("--replot", action="store_true", help="only redraw samplers.png from samplers.csv in --out")
    a = p.parse_args()
    if a.replot:
        with open(Path(a.out) / "samplers.csv", newline="") as fh:
            rows = [{k: (v if k in ("setting", "sampler") else float(v)) for k, v in r.items()}
                    for r in csv.DictReader(fh)]
        plot(rows, Path(a.out) / "samplers.png")
        return
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for spec in a.settings:
        name, steps, k = parse(spec)
        folder = out / spec.replace(":", "_")
        t0 = time.perf_counter()
        sample(SampleConfig(data_dir=Path(a.data_dir), model_path=Path(a.checkpoint), output_dir=folder,
                            sampler=name, sampling_steps=steps, ensemble=k, eta=a.eta, seed=a.seed,
                            overwrite=True, num_workers=0, progress=False, device=a.device))
        seconds = time.perf_counter() - t0
        erows, summary = evaluate_dirs(folder, a.data_dir, folder / "evaluation", montage=False,
                                       progress=False, verbose=False)
        overall = summary["overall"]
        row = {"setting": spec, "sampler": name, "steps": steps, "ensemble": k,
               "calls_per_case": 1 if name == "regression" else steps,  # the K members share each call
               "seconds_per_case": round(seconds / max(len(erows), 1), 2), "cases": len(erows),
               "ssim": overall["ssim"]["mean"], "ssim_std": overall["ssim"]["std"],
               "psnr": overall["psnr"]["mean"], "mse": overall["mse"]["mean"],
               "mae_tumor": overall["mae_tumor"]["mean"], "mae_non_tumor": overall["mae_non_tumor"]["mean"]}
        rows.append(row)
        print(json.dumps(row), flush=True)
    with open(out / "samplers.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot(rows, out / "samplers.png")


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, label in ((axes[0], "ssim", "SSIM"), (axes[1], "psnr", "PSNR (dB)")):
        for r in rows:
            marker = {"ddpm": "s", "ddim": "o", "regression": "^"}[r["sampler"]]
            color = "tab:red" if r["ensemble"] > 1 else "tab:blue"
            ax.scatter(r["calls_per_case"], r[key], marker=marker, color=color)
            ax.annotate(r["setting"], (r["calls_per_case"], r[key]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
        ax.set_xscale("log")
        ax.ticklabel_format(axis="y", useOffset=False)
        ax.set_xlabel("network calls per case")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    fig.suptitle("sampler quality against network calls (red: ensembles)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()

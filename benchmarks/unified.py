#!/usr/bin/env python
"""One unified network against four per-contrast networks, at equal total training steps (a benchmark).

    python benchmarks/unified.py --out unified_bench                 # demo scale, ~1.5 h on 2 CPU cores
    python benchmarks/unified.py --out unified_bench --device cuda   # minutes on a GPU
    python benchmarks/unified.py --out x --steps 20 --test_cases 2   # a smoke run

Phantom data at the demo's scale (``cwdm demo``'s network, data and sampler:
64 training cases, downsample 4, 16 channels (1, 2, 2), 1 res block, batch 2,
lr 2e-4, EMA 0.99, ddim 10). Trained with cwdm's training library:

* four per-contrast models (``--contr t1n`` ...), ``--steps`` each;
* a unified model (``--contr any``), 4 x ``--steps`` (the sum of the four);
* a unified model trained with ``--drop_conditions``, 4 x ``--steps``.

Each synthesizes every target of the held-out cases with the same sampler;
the drop-conditions model also from every subset of the other modalities
(one, two or three modalities missing, the target included). Scores are
``cwdm evaluate``'s: SSIM with the challenge's definition and PSNR (target
percentiles), mean over the held-out cases. Writes ``OUT/unified.csv``,
``OUT/unified.md`` (tables) and ``OUT/unified.png``; models already trained
in ``OUT`` are reused, so an interrupted run continues.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from cwdm.naming import MODALITIES
from cwdm.data.cases import discover_cases
from cwdm.model.checkpoint import load_model
from cwdm.inference.steps import paired_paths, synthesize_cases
from cwdm.phantom.sets import make_phantom_set
from cwdm.evaluation.scoring import evaluate_dirs
from cwdm.inference.synthesis import SamplingOptions, Synthesizer
from cwdm.training.config import TrainConfig
from cwdm.training.state import latest_checkpoint
from cwdm.training.loop import train

NETWORK = dict(model_channels=16, channel_mult=(1, 2, 2), num_res_blocks=1, num_groups=8)


def make_data(out: Path, a) -> tuple:
    """The phantom training and held-out sets (made once)."""
    train_dir, test_dir = out / "data" / "train", out / "data" / "test"
    if not train_dir.exists():
        make_phantom_set(train_dir, a.train_cases, a.seed, a.downsample, progress=False)
        make_phantom_set(test_dir, a.test_cases, a.seed, a.downsample, start=a.train_cases, progress=False)
    return train_dir, test_dir


def train_model(out: Path, name: str, contr: str, steps: int, drop: bool, train_dir: Path, a) -> dict:
    """Train one model (or reuse a finished one); returns its checkpoint, steps and wall seconds."""
    run_dir = out / "runs" / name
    info_path = run_dir / "bench.json"
    if info_path.exists():
        return json.loads(info_path.read_text())
    cfg = TrainConfig(data_dir=train_dir, contr=contr, drop_conditions=drop, run_dir=run_dir, batch_size=2,
                      lr=2e-4, ema_rate=0.99, max_steps=steps, seed=a.seed, save_interval=10 ** 9,
                      log_interval=100, image_interval=0, num_workers=a.num_workers, progress=False,
                      tensorboard=False, device=a.device, **NETWORK)
    start = time.perf_counter()
    if train(cfg) != 0:
        raise SystemExit(f"training {name} failed")
    info = {"name": name, "checkpoint": str(latest_checkpoint(run_dir)), "steps": steps,
            "seconds": round(time.perf_counter() - start, 1)}
    info_path.write_text(json.dumps(info))
    print(f"trained {name}: {steps} steps in {info['seconds']} s", file=sys.stderr, flush=True)
    return info


def synthesize(checkpoint: str, target: str, inputs: tuple, test_dir: Path, folder: Path, a) -> None:
    """Synthesize ``target`` of every held-out case from ``inputs`` only, into ``folder``."""
    if folder.exists():
        return
    device = torch.device(a.device)
    loaded = load_model(checkpoint, device="cpu")
    options = SamplingOptions(sampler="ddim", steps=a.sampling_steps, seed=a.seed)
    synth = Synthesizer(loaded, loaded.task, device, options)
    cases = [replace(c, files={m: p for m, p in c.files.items() if m in inputs}) for c in discover_cases(test_dir)]
    tmp = folder.with_name(folder.name + ".partial")
    synthesize_cases(synth, cases, lambda it: paired_paths(tmp, it["name"], it["prefix"], target), target=target,
                     overwrite=True)
    tmp.rename(folder)


def score(folder: Path, test_dir: Path, target: str) -> dict:
    """Mean SSIM (challenge definition) and PSNR of ``folder``'s syntheses of ``target``."""
    rows, summary = evaluate_dirs(folder, test_dir, folder.with_name(folder.name + "-eval"), montage=False,
                                  progress=False, targets=[target], verbose=False)
    overall = summary["overall"]
    return {"ssim": overall["ssim"]["mean"], "psnr": overall["psnr"]["mean"], "cases": len(rows)}


def runs_of(a) -> list:
    """(name, contr, steps, drop) of every model of the comparison."""
    runs = [(f"per-contrast-{m}", m, a.steps, False) for m in MODALITIES]
    runs.append(("unified", "any", 4 * a.steps, False))
    if not a.skip_drop:
        runs.append(("unified-drop", "any", 4 * a.steps, True))
    return [r for r in runs if not a.models or r[0] in a.models]


def evaluations(models: dict) -> list:
    """(model, target, inputs) of every synthesis to score."""
    jobs = []
    for target in MODALITIES:
        others = tuple(m for m in MODALITIES if m != target)
        jobs += [(name, target, others) for name in (f"per-contrast-{target}", "unified") if name in models]
        if "unified-drop" in models:
            for k in (3, 2, 1):
                jobs += [("unified-drop", target, inputs) for inputs in itertools.combinations(others, k)]
    return jobs


def write_reports(out: Path, rows: list, models: dict, a) -> None:
    """CSV of every score, a Markdown table per comparison, and a plot."""
    with open(out / "unified.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    full = {(r["model"].split("-")[0] + ("-drop" if r["model"] == "unified-drop" else ""), r["target"]): r
            for r in rows if r["missing"] == 1}
    lines = [f"# Unified vs per-contrast ({a.device}, phantom, downsample {a.downsample}, "
             f"{a.test_cases} held-out cases, ddim {a.sampling_steps})", ""]
    if models:
        lines += ["| model | training steps | wall s |", "|---|---|---|"]
        lines += [f"| {m['name']} | {m['steps']} | {m['seconds']} |" for m in models.values()] + [""]
    lines += ["| target | per-contrast SSIM | unified SSIM | unified-drop SSIM | per-contrast PSNR | "
                  "unified PSNR | unified-drop PSNR |", "|---|---|---|---|---|---|---|"]
    for t in MODALITIES:
        cells = [full.get((k, t)) for k in ("per", "unified", "unified-drop")]
        lines.append(f"| {t} | " + " | ".join(f"{c['ssim']:.4f}" if c else "-" for c in cells) + " | "
                     + " | ".join(f"{c['psnr']:.2f}" if c else "-" for c in cells) + " |")
    drop = [r for r in rows if r["model"] == "unified-drop"]
    if drop:
        lines += ["", "unified-drop, mean over the input subsets:", "",
                  "| target | 1 missing SSIM | 2 missing SSIM | 3 missing SSIM | 1 missing PSNR | 2 missing PSNR "
                  "| 3 missing PSNR |", "|---|---|---|---|---|---|---|"]
        for t in MODALITIES:
            by = {k: [r for r in drop if r["target"] == t and r["missing"] == k] for k in (1, 2, 3)}
            mean = {k: (sum(r["ssim"] for r in v) / len(v), sum(r["psnr"] for r in v) / len(v))
                    for k, v in by.items() if v}
            lines.append(f"| {t} | " + " | ".join(f"{mean[k][0]:.4f}" for k in mean) + " | "
                         + " | ".join(f"{mean[k][1]:.2f}" for k in mean) + " |")
    (out / "unified.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    try:
        plot(out, full, drop)
    except ImportError as exc:  # matplotlib missing: the tables are still written
        print(f"note: no plot ({exc})", file=sys.stderr)


def plot(out: Path, full: dict, drop: list) -> None:
    """``unified.png``: SSIM per target of the three models, and of unified-drop by number missing."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    x = range(len(MODALITIES))
    for i, key in enumerate(("per", "unified", "unified-drop")):
        vals = [full[(key, t)]["ssim"] if (key, t) in full else float("nan") for t in MODALITIES]
        axes[0].bar([v + 0.27 * (i - 1) for v in x], vals, width=0.27, label=key.replace("per", "per-contrast"))
    axes[0].set_xticks(list(x), MODALITIES)
    axes[0].set_ylabel("SSIM (challenge)")
    shown = [r["ssim"] for r in full.values()]
    axes[0].set_ylim(min(shown) - 0.01 if shown else 0.5, 1.0)
    axes[0].legend(fontsize=8)
    axes[0].set_title("one modality missing")
    for t in MODALITIES:
        means = [sum(r["ssim"] for r in drop if r["target"] == t and r["missing"] == k)
                 / max(1, sum(1 for r in drop if r["target"] == t and r["missing"] == k)) for k in (1, 2, 3)]
        if drop:
            axes[1].plot([1, 2, 3], means, marker="o", label=t)
    axes[1].set_xticks([1, 2, 3])
    axes[1].set_xlabel("modalities missing (target included)")
    axes[1].set_title("unified-drop")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "unified.png", dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("unified_bench"))
    p.add_argument("--steps", type=int, default=1400, help="steps per per-contrast model (unified: 4x)")
    p.add_argument("--train_cases", type=int, default=64)
    p.add_argument("--test_cases", type=int, default=8)
    p.add_argument("--downsample", type=int, default=4)
    p.add_argument("--sampling_steps", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num_workers", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--skip_drop", action="store_true", help="leave out the drop-conditions model")
    p.add_argument("--models", nargs="*", default=[], help="only these runs (e.g. unified-drop; default: all)")
    p.add_argument("--report", type=Path, nargs="*", default=[],
                   help="only write the tables and plot of these unified.csv files (e.g. runs on two machines)")
    p.add_argument("--data_only", action="store_true", help="only write the phantom data (to carry it elsewhere)")
    a = p.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    if a.report:
        rows = [dict(r, missing=int(r["missing"]), ssim=float(r["ssim"]), psnr=float(r["psnr"]))
                for path in a.report for r in csv.DictReader(open(path))]
        write_reports(a.out, rows, {}, a)
        return 0
    train_dir, test_dir = make_data(a.out, a)
    if a.data_only:
        return 0
    models = {name: train_model(a.out, name, contr, steps, drop, train_dir, a)
              for name, contr, steps, drop in runs_of(a)}
    rows = []
    for model, target, inputs in evaluations(models):
        folder = a.out / "pred" / f"{model}__{target}__{'-'.join(inputs)}"
        synthesize(models[model]["checkpoint"], target, inputs, test_dir, folder, a)
        rows.append({"model": model, "target": target, "inputs": " ".join(inputs),
                     "missing": len(MODALITIES) - len(inputs), **score(folder, test_dir, target)})
    write_reports(a.out, rows, models, a)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""GPU readiness check: every CUDA path of cwdm, measured in one run (a benchmark, not a test).

    python benchmarks/gpu_check.py --out gpu_check          # full size, released config
    python benchmarks/gpu_check.py --size 64 64 64 --quick  # a smoke run

On a CUDA machine, with the released network configuration (64 channels,
(1,2,2,4,4), 2 res blocks, 3 conditions) and random *non-zero* weights (no
released weights are available here, so accuracy numbers are numerical
differences between paths, not synthesis quality):

* one network call at full size (224 x 224 x 160 -> 112 x 112 x 80 subbands)
  for each inference path: fp32 exact (TF32 off, contiguous: the reference's
  arithmetic), fp32 with TF32 (PyTorch's cuDNN default), channels-last, bf16
  autocast, and torch.compile: median seconds per call, peak memory, and the
  max abs difference of the raw output against fp32 exact;
* a ddim-10 synthesis of one full-size phantom case per path: seconds per
  case, SSIM of the synthesis against fp32 exact's synthesis, and the change
  of the synthesis' SSIM against the phantom's true target;
* a training step (forward, backward, AdamW, EMA) at full size, batch 1,
  bf16, plain / gradient checkpointing / additive skips / fp32: median
  seconds per step and peak memory;
* the commands themselves on CUDA (``cwdm train`` with bf16 and compile,
  ``cwdm sample``) on a small phantom set.

Writes ``OUT/gpu_check.json`` and ``OUT/gpu_check.md`` (one table) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch
from torchmetrics.functional.image import structural_similarity_index_measure as tm_ssim

from cwdm.model.checkpoint import LoadedModel
from cwdm.model.diffusion import linear_schedule
from cwdm.evaluation.metrics import brasyn_normalize
from cwdm.phantom.anatomy import generate_case
from cwdm.data.preprocess import grid_for, prepare_volume
from cwdm.runtime import precision
from cwdm.inference.synthesis import SamplingOptions, Synthesizer, postprocess
from cwdm.task import Task
from cwdm.training.loop import train_step
from cwdm.training.state import EMA, TrainingParts
from cwdm.model.unet import RELEASED_CONFIG, UNetConfig, random_network  # noqa: F401 (per_case, bench_inference import it from here)
from cwdm.model.wavelet import to_subbands

CONDITIONS = ("t1n", "t1c", "t2w")
TARGET = "t2f"


DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, repeats: int, warmup: int = 1) -> list:
    """Seconds of each of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return times


def peak_mib() -> float:
    return torch.cuda.max_memory_allocated() / 2 ** 20 if DEVICE.type == "cuda" else 0.0


def reset_peak() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.reset_peak_memory_stats()


def phantom_inputs(downsample, device):
    """One phantom case in the model grid: conditions (1, 3, X, Y, Z), target (X, Y, Z).

    ``downsample=1``: the full BraTS size, 240x240x155 -> model grid 224x224x160."""
    case = generate_case(seed=0, index=0, downsample=downsample)
    grid = grid_for(case[TARGET].shape, RELEASED_CONFIG.image_divisor)
    vols = {m: prepare_volume(case[m], grid) for m in CONDITIONS + (TARGET,)}
    cond = torch.from_numpy(np.stack([vols[m] for m in CONDITIONS]))[None].to(device)
    return cond, vols[TARGET]


PATHS = {  # name: (precision, channels_last, compile) -> cwdm sample --precision/--channels_last/--compile
    "fp32 exact (cwdm default, = reference)": ("fp32", False, False),
    "tf32": ("tf32", False, False),
    "fp32 channels-last": ("fp32", True, False),
    "bf16 autocast": ("bf16", False, False),
    "bf16 channels-last": ("bf16", True, False),
    "bf16 compile": ("bf16", False, True),
}


def inference_rows(model, cond, target, args, device):
    """Per-call and per-case (ddim 10, through cwdm's Synthesizer) numbers of each inference path."""
    rows, ref_out, ref_syn = [], None, None
    g = torch.Generator(device=device).manual_seed(1)
    cond_sb = to_subbands(cond)
    x = torch.randn(1, 8, *cond_sb.shape[2:], device=device, generator=g)
    t = torch.tensor([500], device=device)
    mask = torch.from_numpy(target > 0).to(device)
    loaded = LoadedModel(model=model, config=RELEASED_CONFIG, kind="released", task=Task.default(TARGET))
    for name, (prec, cl, comp) in PATHS.items():
        if args.quick and comp:
            continue
        row = {"path": name}
        try:
            opts = SamplingOptions(sampler="ddim", steps=10, precision=prec, channels_last=cl, compile=comp)
            synth = Synthesizer(loaded, loaded.task, device, opts)
            xin = torch.cat([x, cond_sb], 1).contiguous(memory_format=synth.format)
            net = synth.network(comp)
            reset_peak()
            with torch.inference_mode(), precision(device, prec):
                t0 = time.perf_counter()
                out = net(xin, t).float()
                sync()
                row["first_call_s"] = round(time.perf_counter() - t0, 2)
                times = timed(lambda: net(xin, t), args.repeats)
            row["s_per_call"] = round(statistics.median(times), 4)
            row["peak_mib_call"] = round(peak_mib())
            if ref_out is None:
                ref_out = out
                row["output_abs_max"] = float(out.abs().max())
            row["max_abs_diff_vs_fp32"] = float((out - ref_out).abs().max())
            t0 = time.perf_counter()
            synth(cond.cpu(), ["case"])
            row["ddim10_first_case_s"] = round(time.perf_counter() - t0, 3)
            t0 = time.perf_counter()
            syn = synth(cond.cpu(), ["case"])[0][0].to(device)
            row["ddim10_s_per_case"] = round(time.perf_counter() - t0, 3)
            syn = postprocess(syn, cond[0, 0])
            if ref_syn is None:
                ref_syn = syn
            row["ssim_vs_fp32_synthesis"] = float(tm_ssim(syn[None, None], ref_syn[None, None], data_range=1.0))
            tgt = torch.from_numpy(brasyn_normalize(target)).to(device)[None, None]
            pred = torch.from_numpy(brasyn_normalize(syn.cpu().numpy())).to(device)[None, None]
            row["ssim_vs_target"] = float(tm_ssim(pred, tgt))
            row["mae_in_brain_vs_fp32"] = float((syn - ref_syn).abs()[mask].mean())
        except Exception as exc:  # one failing path must not hide the others
            row["error"] = f"{type(exc).__name__}: {exc}"[:300]
            traceback.print_exc()
        rows.append(row)
        print(json.dumps(row), flush=True)
    ref = rows[0].get("ssim_vs_target")
    for row in rows:
        if ref is not None and "ssim_vs_target" in row:
            row["ssim_vs_target_change"] = row["ssim_vs_target"] - ref
    return rows


TRAIN_VARIANTS = {  # name: (bf16, use_checkpoint, additive_skips, channels_last)
    "bf16 (cwdm default)": (True, False, False, False),
    "bf16 channels-last": (True, False, False, True),
    "bf16 + grad checkpoint": (True, True, False, False),
    "bf16 + additive skips": (True, False, True, False),
    "fp32 (TF32 off)": (False, False, False, False),
}


def training_rows(args, device, size):
    rows = []
    sched = linear_schedule()
    for name, (bf16, ckpt, additive, cl) in TRAIN_VARIANTS.items():
        row = {"training": name}
        try:
            cfg = UNetConfig(additive_skips=additive)
            fmt = torch.channels_last_3d if cl else torch.contiguous_format
            model = random_network(cfg, 0, use_checkpoint=ckpt).to(device, memory_format=fmt)
            model.train()
            g = torch.Generator(device=device).manual_seed(0)
            parts = TrainingParts(model, model, EMA(model, 0.9999),
                                  torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0), g)
            target = torch.rand(1, 1, *size, device=device, generator=g)
            cond = torch.rand(1, 3, *size, device=device, generator=g)
            reset_peak()
            with precision(device, "fp32"):  # TF32 off: "fp32" means fp32; bf16 rows autocast inside
                times = timed(lambda: train_step(parts, sched, target, cond, bf16, fmt), args.repeats, warmup=2)
            row["s_per_step"] = round(statistics.median(times), 4)
            row["peak_mib_step"] = round(peak_mib())
            model = parts = None  # frees the GPU memory (pyflakes misreads a del of a name the lambda uses)
        except Exception as exc:
            row["error"] = f"{type(exc).__name__}: {exc}"[:300]
            traceback.print_exc()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def command_rows(device):
    """The CLI's own CUDA paths on a small phantom set: train (bf16, compile) then sample."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data, run = Path(tmp, "data"), Path(tmp, "run")
        net = ["--model_channels", "16", "--channel_mult", "1", "2", "2", "--num_res_blocks", "1",
               "--num_groups", "8"]
        sample = ["sample", "--data_dir", str(data), "--contr", "t2f", "--model_path",
                  str(run / "checkpoints" / "ckpt_00000030.pt"), "--sampler", "ddim", "--sampling_steps", "10",
                  "--device", device.type, "--progress", "False"]
        steps = [
            ("cwdm phantom", ["phantom", str(data), "--cases", "3", "--downsample", "4"]),
            ("cwdm train (bf16, 30 steps)", ["train", "--data_dir", str(data), "--contr", "t2f", "--run_dir",
                                             str(run), "--max_steps", "30", "--save_interval", "30",
                                             "--device", device.type, "--progress", "False",
                                             "--batch_size", "2", "--num_workers", "0", *net]),
            ("cwdm sample (fp32 exact, ddim 10)", [*sample, "--output_dir", str(Path(tmp, "out1"))]),
            ("cwdm sample (bf16, compile, ensemble 2)", [*sample, "--output_dir", str(Path(tmp, "out2")),
                                                         "--precision", "bf16", "--compile", "True",
                                                         "--ensemble", "2"]),
        ]
        for name, argv in steps:
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "cwdm", *argv], capture_output=True, text=True)
            row = {"command": name, "rc": proc.returncode, "seconds": round(time.perf_counter() - t0, 1)}
            if proc.returncode:
                row["stderr_tail"] = proc.stderr[-600:]
            rows.append(row)
            print(json.dumps(row), flush=True)
            if proc.returncode:
                break
    return rows


def table(result) -> str:
    lines = [f"GPU: {result['gpu']}, torch {result['torch']}, cuDNN {result['cudnn']}, "
             f"size {'x'.join(map(str, result['size']))}, released config, random non-zero weights "
             f"(fp32 output max |y| = {result['inference'][0].get('output_abs_max', float('nan')) if result['inference'] else float('nan'):.3g})", "",
             "| inference path | s/call | first call s | peak MiB | max abs diff vs fp32 | ddim-10 s/case "
             "| first case s | SSIM vs fp32 synthesis | SSIM-to-target change |",
             "|---|---|---|---|---|---|---|---|---|"]
    f = lambda r, k, fmt: (fmt.format(r[k]) if k in r else ("error" if "error" in r else "-"))  # noqa: E731
    for r in result["inference"]:
        lines.append(f"| {r['path']} | {f(r, 's_per_call', '{:.4f}')} | {f(r, 'first_call_s', '{:.1f}')} "
                     f"| {f(r, 'peak_mib_call', '{:.0f}')} | {f(r, 'max_abs_diff_vs_fp32', '{:.2e}')} "
                     f"| {f(r, 'ddim10_s_per_case', '{:.3f}')} | {f(r, 'ddim10_first_case_s', '{:.1f}')} "
                     f"| {f(r, 'ssim_vs_fp32_synthesis', '{:.6f}')} "
                     f"| {f(r, 'ssim_vs_target_change', '{:+.2e}')} |")
    lines += ["", "| training step (batch 1) | s/step | peak MiB |", "|---|---|---|"]
    for r in result["training"]:
        lines.append(f"| {r['training']} | {f(r, 's_per_step', '{:.4f}')} | {f(r, 'peak_mib_step', '{:.0f}')} |")
    lines += ["", "| command | exit code | seconds |", "|---|---|---|"]
    for r in result["commands"]:
        lines.append(f"| {r['command']} | {r['rc']} | {r['seconds']} |")
    return "\n".join(lines) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("gpu_check"))
    p.add_argument("--downsample", type=int, default=1, help="phantom grid factor (1 = full BraTS size)")
    p.add_argument("--cpu_smoke", action="store_true", help="run on CPU (to check the script, not to measure)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="skip torch.compile")
    p.add_argument("--skip", nargs="*", default=[], choices=["inference", "training", "commands"])
    args = p.parse_args()
    if DEVICE.type != "cuda" and not args.cpu_smoke:
        raise SystemExit("gpu_check needs a CUDA GPU (none is available; --cpu_smoke checks the script on CPU)")
    device = DEVICE
    args.out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    cond, target = phantom_inputs(args.downsample, device)
    size = list(cond.shape[2:])
    result = {"gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu (smoke run)",
              "torch": torch.__version__, "cudnn": torch.backends.cudnn.version(), "size": size,
              "inference": [], "training": [], "commands": []}
    if "inference" not in args.skip:
        model = random_network(RELEASED_CONFIG, 0).to(device).eval()
        result["inference"] = inference_rows(model, cond, target, args, device)
        del model
    if "training" not in args.skip:
        result["training"] = training_rows(args, device, size)
    if "commands" not in args.skip:
        result["commands"] = command_rows(device)
    result["total_s"] = round(time.perf_counter() - t_start, 1)
    (args.out / "gpu_check.json").write_text(json.dumps(result, indent=1))
    text = table(result)
    (args.out / "gpu_check.md").write_text(text)
    print(text)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()

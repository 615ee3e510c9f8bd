#!/usr/bin/env python
"""Seconds per network call and per case for each sampler (a benchmark, not a test).

    python benchmarks/bench_samplers.py --size 224 224 160                      # released network, random weights
    python benchmarks/bench_samplers.py --checkpoint run/ckpt.pt --size 56 56 40  # a trained cwdm checkpoint

Times one network call (forward + x0 clip, inference mode, ``--precision`` as in
``cwdm sample``) and derives per-case time for ddpm 1000, ddim 100/50/20/10/5 and
regression; ``--full`` also runs the samplers end to end to check the
estimate (slow for 1000 steps on CPU).
"""

import argparse
import json
import time

import torch

from cwdm.model.checkpoint import load_model
from cwdm.model.diffusion import make_denoiser
from cwdm.runtime import PRECISIONS, memory_format, peak_memory_mb, precision, select_device
from cwdm.model.samplers import network_calls, run_sampler
from cwdm.model.unet import RELEASED_CONFIG, UNet
from cwdm.model.wavelet import to_subbands

SAMPLERS = [("ddpm", 1000), ("ddim", 100), ("ddim", 50), ("ddim", 20), ("ddim", 10), ("ddim", 5), ("regression", 1)]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--size", type=int, nargs=3, default=[224, 224, 160])
    p.add_argument("--device", default="auto")
    p.add_argument("--calls", type=int, default=3, help="timed network calls")
    p.add_argument("--precision", default="fp32", choices=PRECISIONS, help="as cwdm sample --precision")
    p.add_argument("--full", action="store_true", help="also time whole samplers (except ddpm 1000 on CPU)")
    a = p.parse_args()
    device = select_device(a.device)
    if a.checkpoint:
        model = load_model(a.checkpoint).model
    else:
        model = UNet(RELEASED_CONFIG)
    model.to(device, memory_format=memory_format(device)).eval()
    g = torch.Generator(device=device).manual_seed(0)
    cond = to_subbands(torch.rand(1, 3, *a.size, device=device, generator=g))
    den = make_denoiser(model, cond)
    x = torch.randn(1, 8, *cond.shape[2:], device=device, generator=g)
    t = torch.tensor([500], device=device)
    with torch.inference_mode(), precision(device, a.precision):
        den(x, t)  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        for _ in range(a.calls):
            den(x, t)
        if device.type == "cuda":
            torch.cuda.synchronize()
        per_call = (time.perf_counter() - t0) / a.calls
    rows = []
    for name, steps in SAMPLERS:
        row = {"sampler": name, "steps": steps, "calls": network_calls(name, steps),
               "estimated_s_per_case": round(per_call * network_calls(name, steps), 2)}
        if a.full and not (name == "ddpm" and device.type == "cpu"):
            with torch.inference_mode(), precision(device, a.precision):
                t0 = time.perf_counter()
                run_sampler(name, den, x.shape, torch.Generator(device=device).manual_seed(1), steps=steps,
                            device=device)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                row["measured_s_per_case"] = round(time.perf_counter() - t0, 2)
        rows.append(row)
    print(json.dumps({"device": str(device), "threads": torch.get_num_threads(), "size": a.size,
                      "seconds_per_call": round(per_call, 4), "peak_gpu_memory_mb": round(peak_memory_mb(device), 1),
                      "samplers": rows}, indent=1))


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Training throughput and peak memory of one configuration (a benchmark, not a test).

    python benchmarks/bench_train.py --size 224 224 160 --channels 64 --mult 1 2 2 4 4 --steps 5
    python benchmarks/bench_train.py --size 56 56 40 --channels 16 --mult 1 2 2 --res_blocks 1 --device cpu

Measures full training steps (wavelet transform, noising, forward, backward,
AdamW, EMA) on random volumes, after warm-up steps; bf16 autocast and
channels-last on CUDA, fp32 on CPU, as ``cwdm train`` does.
"""

import argparse
import json
import resource
import time

import torch

from cwdm.model.diffusion import linear_schedule
from cwdm.runtime import memory_format, peak_memory_mb, select_device
from cwdm.training.loop import train_step
from cwdm.training.state import EMA, TrainingParts
from cwdm.model.unet import UNet, UNetConfig


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, nargs=3, default=[224, 224, 160])
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--mult", type=int, nargs="+", default=[1, 2, 2, 4, 4])
    p.add_argument("--res_blocks", type=int, default=2)
    p.add_argument("--groups", type=int, default=32)
    p.add_argument("--batch_size", type=int, default=1)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--additive_skips", action="store_true")
    p.add_argument("--grad_checkpoint", action="store_true")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--fp32", action="store_true", help="no bf16 autocast on CUDA")
    a = p.parse_args()
    device = select_device(a.device)
    cfg = UNetConfig(model_channels=a.channels, channel_mult=tuple(a.mult), num_res_blocks=a.res_blocks,
                     additive_skips=a.additive_skips, num_groups=a.groups)
    model = UNet(cfg, use_checkpoint=a.grad_checkpoint)
    model.to(device, memory_format=memory_format(device)).train()
    g = torch.Generator(device=device).manual_seed(0)
    parts = TrainingParts(model, torch.compile(model) if a.compile else model, EMA(model, 0.9999),
                          torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0), g)
    sched = linear_schedule()
    target = torch.rand(a.batch_size, 1, *a.size, device=device, generator=g)
    cond = torch.rand(a.batch_size, 3, *a.size, device=device, generator=g)

    def one_step():
        train_step(parts, sched, target, cond, bf16=not a.fp32, layout=memory_format(device))

    for _ in range(a.warmup):
        one_step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for _ in range(a.steps):
        one_step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / a.steps
    result = {"device": str(device), "name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "threads": torch.get_num_threads(), "size": a.size, "channels": a.channels, "mult": a.mult,
              "res_blocks": a.res_blocks, "batch_size": a.batch_size, "additive_skips": a.additive_skips,
              "grad_checkpoint": a.grad_checkpoint, "compile": a.compile,
              "params_m": round(sum(q.numel() for q in model.parameters()) / 1e6, 2),
              "seconds_per_step": round(dt, 4), "steps_per_s": round(1 / dt, 3),
              "peak_gpu_memory_mb": round(peak_memory_mb(device), 1),
              "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Per-call inference time of the released network for each execution option (a benchmark, not a test).

    python benchmarks/bench_inference.py                      # reduced grid 128x128x96 (subbands 64x64x48)
    python benchmarks/bench_inference.py --size 224 224 160   # the full BraTS grid (about 40 s per call on 2 cores)

The reference's cost is the eager fp32 forward on contiguous tensors under
``torch.no_grad``; every option is timed against it *in the same run*,
interleaved (reference, option A, option B, ..., then again), and reported
as the median of ``--runs`` calls and as a ratio to the reference's median.
Each option's output is compared with the reference's (max abs difference).
``--profile`` adds the share of one reference call spent inside the 3D
convolutions (torch.profiler), i.e. how much a perfect implementation of
everything else could save. Prints one JSON object and a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from cwdm.model.diffusion import clip_x0
from cwdm.runtime import compile_network
from gpu_check import random_network  # the benchmarks folder is on sys.path when a script in it runs
from per_case import DEFAULT_RUNS, per_case
from cwdm.model.unet import RELEASED_CONFIG, UNet


def build(seed: int = 0) -> UNet:
    """The released configuration with every layer random (as ``gpu_check.py`` builds it)."""
    return random_network(RELEASED_CONFIG, seed).eval()


OPTIONS = ("inference_mode", "channels_last", "bf16", "compile", "compile_frozen")
"""What ``--options`` may name (the reference is always timed)."""


def options(model: UNet, x: torch.Tensor, t: torch.Tensor, chosen):
    """name -> zero-argument callable running one network call (with the x0 clip, as sampling does)."""
    def reference():
        with torch.no_grad():
            return clip_x0(model(x, t))

    def inference_mode():
        with torch.inference_mode():
            return clip_x0(model(x, t))

    def bf16_autocast():
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            return clip_x0(model(x, t).float())

    opts = {"eager fp32 contiguous, no_grad (= reference)": reference}
    if "inference_mode" in chosen:
        opts["inference_mode"] = inference_mode
    if "channels_last" in chosen:
        cl_model = build().to(memory_format=torch.channels_last_3d)
        cl_model.load_state_dict(model.state_dict())
        x_cl = x.contiguous(memory_format=torch.channels_last_3d)

        def channels_last():
            with torch.inference_mode():
                return clip_x0(cl_model(x_cl, t)).contiguous()

        opts["channels-last 3D"] = channels_last
    if "bf16" in chosen:
        opts["bf16 autocast"] = bf16_autocast
    for key, name, net in (("compile", "torch.compile (inductor defaults)", lambda: torch.compile(build())),
                           ("compile_frozen", "torch.compile, frozen weights (cwdm --compile auto/True on a CPU)",
                            lambda: compile_network(build(), torch.device("cpu")))):
        if key in chosen:
            opts[name] = _compiled_call(net(), x, t)
    return opts


def _compiled_call(compiled, x: torch.Tensor, t: torch.Tensor):
    """One call of a compiled copy of the network (same weights: :func:`build` is seeded)."""
    def call():
        with torch.inference_mode():
            return clip_x0(compiled(x, t))

    return call


def conv_share(model: UNet, x: torch.Tensor, t: torch.Tensor) -> dict:
    """Self CPU time of one no_grad call split into convolutions and everything else (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad():
        model(x, t)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            clip_x0(model(x, t))
    total = conv = 0.0
    by_op = {}
    for ev in prof.key_averages():
        total += ev.self_cpu_time_total
        by_op[ev.key] = ev.self_cpu_time_total
        if "conv" in ev.key.lower():
            conv += ev.self_cpu_time_total
    top = sorted(by_op.items(), key=lambda kv: -kv[1])[:8]
    return {"conv_share": round(conv / total, 3) if total else None,
            "top_ops_ms": {k: round(v / 1000, 1) for k, v in top}}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, nargs=3, default=[128, 128, 96], help="image grid (subbands: half)")
    p.add_argument("--runs", type=int, default=3, help="timed calls per option (median reported)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    p.add_argument("--options", nargs="+", choices=OPTIONS, default=[o for o in OPTIONS if o != "compile"],
                   help="options timed against the reference (default: all but plain torch.compile)")
    p.add_argument("--per_case", action="store_true",
                   help="instead: wall time of `cwdm sample` on one full-size phantom case per run (per_case.py)")
    p.add_argument("--runs_per_case", nargs="+", default=list(DEFAULT_RUNS),
                   help="with --per_case: 'SAMPLER STEPS COMPILE' per run (COMPILE auto_cold: empty compile cache)")
    p.add_argument("--profile", action="store_true", help="report the convolutions' share of a call")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.per_case:
        per_case(a.size, a.threads, a.runs_per_case)
        return
    model = build()
    g = torch.Generator().manual_seed(1)
    sub = [s // 2 for s in a.size]
    x = torch.randn(1, RELEASED_CONFIG.in_channels, *sub, generator=g)
    t = torch.tensor([500])
    opts = options(model, x, t, a.options)
    ref_out, times, diffs, first = None, {k: [] for k in opts}, {}, {}
    for name, fn in opts.items():  # warm-up (and compilation), outputs compared once
        t0 = time.perf_counter()
        out = fn()
        first[name] = round(time.perf_counter() - t0, 2)
        ref_out = out if ref_out is None else ref_out
        diffs[name] = float((out - ref_out).abs().max())
    for _ in range(a.runs):  # interleaved: a busy spell slows every option alike
        for name, fn in opts.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    ref_name = next(iter(opts))
    ref_med = statistics.median(times[ref_name])
    rows = [{"option": k, "median_s": round(statistics.median(v), 3), "runs_s": [round(s, 3) for s in v],
             "time_ratio_vs_reference": round(statistics.median(v) / ref_med, 3),
             "first_call_s": first[k], "max_abs_diff": diffs[k]} for k, v in times.items()]
    result = {"machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
              "cpu": platform.processor() or "unknown", "size": a.size, "subbands": sub, "runs": a.runs,
              "rows": rows}
    if a.profile:
        result["profile"] = conv_share(model, x, t)
    print(json.dumps(result, indent=1))
    print(f"\n{result['machine']}; grid {'x'.join(map(str, a.size))}; median of {a.runs} interleaved calls\n")
    print("| option | s / call | time ratio vs reference | max abs diff |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['option']} | {r['median_s']:.3f} | {r['time_ratio_vs_reference']:.3f} | "
              f"{r['max_abs_diff']:.1e} |")


if __name__ == "__main__":
    main()

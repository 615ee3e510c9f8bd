#!/usr/bin/env python
"""Max absolute error of cwdm against every reference tensor, and Haar transform timing.

    python benchmarks/reference_check.py [--reference tests/data/reference]

Prints one line per reference quantity (the same comparisons the tests make,
with the measured error instead of a pass/fail), then the time of
``dwt3d`` + ``idwt3d`` on a 224x224x160 volume.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from cwdm.model.diffusion import ddpm_step, linear_schedule, make_denoiser, q_sample, training_loss
from cwdm.data.preprocess import clip_and_normalize
from cwdm.model.unet import UNet, UNetConfig
from cwdm.model.wavelet import dwt3d, idwt3d, to_subbands


def err(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--reference", default=str(Path(__file__).resolve().parents[1] / "tests" / "data" / "reference"))
    ref = Path(p.parse_args().reference)
    load = lambda name: {k: v for k, v in np.load(ref / f"{name}.npz").items()}  # noqa: E731
    T = torch.from_numpy
    out = {}
    d = load("haar_dwt")
    out["haar_dwt.bands"] = err(dwt3d(T(d["x"])), d["bands"])
    out["haar_dwt.idwt_out"] = err(idwt3d(T(d["idwt_in"])), d["idwt_out"])
    s = load("schedule_linear_1000")
    sched = linear_schedule()
    for k in s:
        out[f"schedule_linear_1000.{k}"] = err(getattr(sched, k), s[k])
    cfg = json.loads((ref / "unet_tiny_config.json").read_text())
    model = UNet(UNetConfig(**cfg))
    model.load_state_dict(torch.load(ref / "unet_tiny.pt", weights_only=True), strict=True)
    model.eval()
    d = load("unet_tiny_io")
    with torch.no_grad():
        out["unet_tiny_io.y"] = err(model(T(d["x"]), T(d["t"])), d["y"])
    d = load("training_loss_tiny")
    x0 = to_subbands(T(d["t2f"]))
    cond = to_subbands(torch.cat([T(d["t1n"]), T(d["t1c"]), T(d["t2w"])], 1))
    noise = dwt3d(T(d["noise_image"]))
    with torch.no_grad():
        _, per, pred = training_loss(model, sched, x0, cond, T(d["t"]), noise)
    out["training_loss_tiny.x_start_wav"] = err(x0, d["x_start_wav"])
    out["training_loss_tiny.x_t"] = err(q_sample(sched, x0, T(d["t"]), noise), d["x_t"])
    out["training_loss_tiny.model_output"] = err(pred, d["model_output"])
    out["training_loss_tiny.mse_wav"] = err(per, d["mse_wav"])
    d = load("reverse_step_tiny")
    out["reverse_step_tiny.cond"] = err(to_subbands(T(d["cond_images"])), d["cond"])
    den = make_denoiser(model, T(d["cond"]))
    for t in (999, 500, 10, 0):
        with torch.no_grad():
            r = ddpm_step(den, sched, T(d["x_t"]), torch.tensor([t]), T(d[f"t{t}_noise"]))
        for k in ("pred_xstart", "mean", "log_variance", "sample"):
            out[f"reverse_step_tiny.t{t}_{k}"] = err(r[k], d[f"t{t}_{k}"])
    d = load("clip_and_normalize")
    out["clip_and_normalize.normalized"] = err(clip_and_normalize(d["raw"]), d["normalized"])
    for k, v in out.items():
        print(f"{k:45s} max abs error {v:.3g}")
    x = torch.rand(1, 1, 224, 224, 160)
    idwt3d(dwt3d(x))
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        y = idwt3d(dwt3d(x))
        times.append(time.perf_counter() - t0)
    print(f"dwt3d+idwt3d 224x224x160 on CPU ({torch.get_num_threads()} threads): median "
          f"{np.median(times) * 1000:.0f} ms over 5 runs, round-trip error {err(y, x):.2g}")


if __name__ == "__main__":
    main()

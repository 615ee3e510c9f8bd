#!/usr/bin/env python
"""Does a trained t1c model read its noisy input, and does its ensemble spread where the target is ambiguous?
(a diagnostic, not a test)

    python benchmarks/noise_use.py [CHECKPOINT [stored|v [CASE ...]]]

CHECKPOINT defaults to the model ``benchmarks/ambiguity.py --out /work/bench/amb`` trains, read as
its checkpoint says (x0 or edm: :mod:`cwdm.model.prediction`; ``v``: the experiment
``benchmarks/experiments/v_prediction_train.py``, whose checkpoints do not say). For
held-out cases CASE (default 64 and 65) of the ambiguous phantom (seed 0, downsample 4) it prints the x0
estimate's error inside t1c's detail and elsewhere in the brain from the true t1c noised to
t = 0, 5, 25, 50, 200, 999, beside the error of x_t itself (rescaled by 1 / sqrt(abar_t)), which
a good estimate beats at every t (a model that reads x_t is nearly exact at t = 0; one that ignores it
predicts E[x0 | conditions] at every t), and its mean in the tumour rim (where the plain case enhances) where
the true t1c enhances (above 0.8) and where it does not (a model that learned the rim's two levels
separates them as soon as x_t shows them), then the std of 4-member ensembles of ddim 10 and ddpm 100 inside
and outside the detail, one member's error, the ensemble mean's error in the detail and the share of
the rim its members enhance (above 0.8, as ``benchmarks/ambiguity.py``'s "rim enhanced").
"""
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent / "experiments"))
from v_prediction_train import v_denoiser  # noqa: E402
from cwdm.model.checkpoint import load_model
from cwdm.model.diffusion import linear_schedule, q_sample, make_denoiser
from cwdm.model.wavelet import to_subbands, from_subbands
from cwdm.model.samplers import run_sampler
from cwdm.data.preprocess import grid_for, prepare_volume
from cwdm.phantom.anatomy import generate_case
torch.set_num_threads(2)
ENHANCED = 0.8  # "rim enhanced" above this, as benchmarks/ambiguity.py's ENHANCED
ckpt = sys.argv[1] if len(sys.argv) > 1 else "/work/bench/amb/run/checkpoints/ckpt_00005000.pt"
kind = sys.argv[2] if len(sys.argv) > 2 else "stored"  # v: read the output as v (the experiment)
m = load_model(ckpt); net = m.model
S = linear_schedule()
for index in [int(c) for c in sys.argv[3:]] or (64, 65):
    case = generate_case(0, index, 4, ambiguous=True)
    grid = grid_for(case["t1c"].shape, m.config.image_divisor)
    vol = lambda k: torch.from_numpy(prepare_volume(case[k].astype(np.float64), grid))[None, None]
    cond = torch.cat([to_subbands(vol(c)) for c in ("t1n", "t2w", "t2f")], 1)
    x0 = to_subbands(vol("t1c")); truth = from_subbands(x0)[0, 0]
    det = torch.from_numpy(grid.to_model(case["details"]["t1c"].astype(np.float32)) > 0.5)
    brain = torch.from_numpy(grid.to_model((case["t1c"] != 0).astype(np.float32)) > 0.5)
    rim = det & brain & torch.from_numpy(grid.to_model((generate_case(0, index, 4)["seg"] == 3).astype(np.float32)) > 0.5)
    lit, dark = rim & (truth > ENHANCED), rim & (truth <= ENHANCED)
    K = 4
    condK = cond.expand(K, *cond.shape[1:])
    den = v_denoiser(net, condK, S) if kind == "v" else make_denoiser(net, condK, prediction=m.prediction)
    with torch.no_grad():
        for t in (0, 5, 25, 50, 200, 999):
            xt = q_sample(S, x0.expand(K, *x0.shape[1:]), torch.full((K,), t), torch.randn((K, *x0.shape[1:]), generator=torch.Generator().manual_seed(t)))
            p = from_subbands(den(xt, torch.full((K,), t)))[:, 0]
            e = (p[0] - truth).abs()
            n = (from_subbands(xt / float(S.alphas_cumprod[t]) ** 0.5)[0, 0] - truth).abs()  # x_t as the estimate
            print(f"case {index} t={t:4d} MAE detail {e[det].mean():.4f} (x_t itself {n[det].mean():.4f}) elsewhere "
                  f"{e[brain & ~det].mean():.4f} ({n[brain & ~det].mean():.4f}); "
                  f"rim where it enhances {p[0][lit].mean():.2f} (truth {truth[lit].mean():.2f}), where not "
                  f"{p[0][dark].mean():.2f} (truth {truth[dark].mean():.2f})", flush=True)
        for name, steps in (("ddim", 10), ("ddpm", 100)):
            gens = [torch.Generator().manual_seed(1000 + k) for k in range(K)]
            out = from_subbands(run_sampler(name, den, x0.expand(K, *x0.shape[1:]).shape, gens, steps))[:, 0].clamp(0, 1)
            std = out.std(0, correction=1); mean = out.mean(0); e = (out[0] - truth).abs()
            print(f"case {index} {name} {steps} x{K}: std detail {std[det].mean():.5f} elsewhere {std[brain & ~det].mean():.5f} "
                  f"ratio {std[det].mean() / std[brain & ~det].mean():.2f}; one sample MAE detail {e[det].mean():.4f} elsewhere "
                  f"{e[brain & ~det].mean():.4f}; mean MAE detail {(mean - truth).abs()[det].mean():.4f}; rim enhanced "
                  f"{(out[:, rim] > ENHANCED).float().mean():.2f} (truth {(truth[rim] > ENHANCED).float().mean():.2f})", flush=True)

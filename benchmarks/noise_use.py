#!/usr/bin/env python
"""Does a trained model read its noisy input? (a diagnostic, not a test)

    python benchmarks/noise_use.py  # after benchmarks/ambiguity.py --out /work/bench/amb

For held-out case 64 of the ambiguous phantom (seed 0, downsample 4), noises the true t1c to
timestep t with two noises and prints the x0 prediction's error inside t1c's detail and elsewhere,
and how much the prediction changes with the noise. A model that uses x_t recovers the detail at
small t (error falls towards 0); one that ignores it predicts E[x0 | conditions] at every t.
"""
import sys
import numpy as np
import torch
from cwdm.model.checkpoint import load_model
from cwdm.model.diffusion import linear_schedule, q_sample, make_denoiser
from cwdm.model.wavelet import to_subbands, from_subbands
from cwdm.data.preprocess import grid_for, prepare_volume
from cwdm.phantom.anatomy import generate_case
torch.set_num_threads(2)
m = load_model(sys.argv[1] if len(sys.argv) > 1 else "/work/bench/amb/run/checkpoints/ckpt_00005000.pt")
print("task", m.task)
net = m.model
case = generate_case(0, 64, 4, ambiguous=True)
grid = grid_for(case["t1c"].shape, m.config.image_divisor)
vol = lambda k: torch.from_numpy(prepare_volume(case[k].astype(np.float64), grid))[None, None]
conds = [c for c in ("t1n", "t2w", "t2f")]
cond = torch.cat([to_subbands(vol(c)) for c in conds], 1)
x0 = to_subbands(vol("t1c"))
det = torch.from_numpy(grid.to_model(case["details"]["t1c"].astype(np.float32)) > 0.5)
brain = torch.from_numpy(grid.to_model((case["t1c"] != 0).astype(np.float32)) > 0.5)
S = linear_schedule()
den = make_denoiser(net, cond)
truth = from_subbands(x0)[0, 0]
with torch.no_grad():
    for t in [0, 10, 50, 100, 200, 400, 700, 999]:
        preds = []
        for s in range(2):
            g = torch.Generator().manual_seed(s)
            n = torch.randn(x0.shape, generator=g)
            xt = q_sample(S, x0, torch.tensor([t]), n)
            preds.append(from_subbands(den(xt, torch.tensor([t])))[0, 0])
        e = (preds[0] - truth).abs()
        d = (preds[0] - preds[1]).abs()
        print(f"t={t:4d} MAE detail {e[det].mean():.4f} elsewhere {e[brain & ~det].mean():.4f} | "
              f"|pred(noise0)-pred(noise1)| detail {d[det].mean():.5f} elsewhere {d[brain & ~det].mean():.5f}", flush=True)

"""Experiment (not a cwdm option yet): the ambiguity benchmark's t1c model trained with a v-prediction output.

    python benchmarks/experiments/v_prediction_train.py 3000   # after benchmarks/ambiguity.py --out /work/bench/amb
    python benchmarks/noise_use.py /work/bench/vexp/run/checkpoints/ckpt_00003000.pt v

The network's output F is read as v (x0 = sqrt(abar) x_t - sqrt(1 - abar) F), so its x0 estimate has a
skip from x_t, and the loss is the MSE of v = sqrt(abar) eps - sqrt(1 - abar) x0. It replaces the
training loop's loss function for this process only; the checkpoint does not record the
parameterization, so only ``benchmarks/noise_use.py CHECKPOINT v`` reads it correctly.
"""
import sys
import time
from dataclasses import fields
from pathlib import Path
import numpy as np
import torch
import cwdm.training.loop as loop
from cwdm.model.diffusion import extract, q_sample, clip_x0
from cwdm.training.config import TrainConfig
from cwdm.training.state import latest_checkpoint

def v_loss(model, schedule, x0, cond, t, noise):
    x_t = q_sample(schedule, x0, t, noise)
    a = extract(np.sqrt(schedule.alphas_cumprod), t, x0)
    s = extract(np.sqrt(1.0 - schedule.alphas_cumprod), t, x0)
    out = model(torch.cat([x_t, cond], dim=1), t).float()
    v = a * noise - s * x0
    per = ((out - v) ** 2).mean(dim=(0, 2, 3, 4))
    return per.mean(), per, a * x_t - s * out

def v_denoiser(model, cond, schedule):
    def den(x_t, t):
        out = model(torch.cat([x_t, cond.to(x_t.dtype)], dim=1), t).to(x_t.dtype)
        a = extract(np.sqrt(schedule.alphas_cumprod), t, x_t)
        s = extract(np.sqrt(1.0 - schedule.alphas_cumprod), t, x_t)
        return clip_x0(a * x_t - s * out)
    return den

if __name__ == "__main__":
    steps = int(sys.argv[1])
    loop.training_loss = v_loss
    run = Path("/work/bench/vexp/run")
    cfg = TrainConfig(data_dir=Path("/work/bench/amb/data/train"), contr="t1c", run_dir=run, resume="auto",
                      model_channels=16, channel_mult=(1, 2, 2), num_res_blocks=1, num_groups=8, batch_size=2,
                      lr=2e-4, ema_rate=0.999, max_steps=steps, seed=0, save_interval=500, log_interval=50,
                      image_interval=0, num_workers=1, progress=True,
                      flags_given=frozenset(f.name for f in fields(TrainConfig) if f.name != "flags_given"))
    t0 = time.time()
    print("status", loop.train(cfg), time.time() - t0, latest_checkpoint(run), flush=True)

"""Experiment: the ambiguity benchmark's t1c model trained with an EDM-style output (skip from x_t).

    python benchmarks/experiments/edm_train.py STEPS RUN_DIR

x0 = c_skip x_t + c_out F(c_in x_t, cond, t) with, per subband, a = sqrt(abar_t), b = sqrt(1 - abar_t),
v = a^2 s^2 + b^2, c_skip = a s^2 / v, c_out = s b / sqrt(v), c_in = 1 / sqrt(v) (s: the data's rms
per subband); loss: MSE of F against (x0 - c_skip x_t) / c_out. This is the math of
``cwdm train --prediction edm`` (:mod:`cwdm.model.prediction`) with these fixed ``sigma_data``, run
before the option existed; at the end each checkpoint gets the ``prediction`` entry that option writes,
so sampling reads it like any edm checkpoint.
"""
import sys
import time
from dataclasses import fields
from pathlib import Path
import numpy as np
import torch
import cwdm.training.loop as loop
from cwdm.model.diffusion import extract, q_sample
from cwdm.training.config import TrainConfig
from cwdm.training.state import latest_checkpoint

SIGMA = torch.tensor([0.29, 0.094, 0.087, 0.039, 0.10, 0.039, 0.040, 0.028]).view(1, 8, 1, 1, 1)


def coefficients(schedule, t, like):
    a = extract(np.sqrt(schedule.alphas_cumprod), t, like)
    b = extract(np.sqrt(1.0 - schedule.alphas_cumprod), t, like)
    s = SIGMA.to(like)
    v = a * a * s * s + b * b
    return a * s * s / v, s * b / v.sqrt(), 1.0 / v.sqrt()


def edm_loss(model, schedule, x0, cond, t, noise):
    x_t = q_sample(schedule, x0, t, noise)
    skip, out, inp = coefficients(schedule, t, x0)
    f = model(torch.cat([inp * x_t, cond], dim=1), t).float()
    per = ((f - (x0 - skip * x_t) / out) ** 2).mean(dim=(0, 2, 3, 4))
    return per.mean(), per, skip * x_t + out * f


if __name__ == "__main__":
    steps, run = int(sys.argv[1]), Path(sys.argv[2])
    loop.training_loss = edm_loss
    cfg = TrainConfig(data_dir=Path("/work/bench/amb/data/train"), contr="t1c", run_dir=run, resume="auto",
                      model_channels=16, channel_mult=(1, 2, 2), num_res_blocks=1, num_groups=8, batch_size=2,
                      lr=2e-4, ema_rate=0.999, max_steps=steps, seed=0, save_interval=500, log_interval=50,
                      image_interval=0, num_workers=1, progress=False,
                      flags_given=frozenset(f.name for f in fields(TrainConfig) if f.name != "flags_given"))
    t0 = time.time()
    status = loop.train(cfg)
    print("status", status, time.time() - t0, latest_checkpoint(run), flush=True)
    from cwdm.model.prediction import Prediction
    from cwdm.training.state import checkpoint_files
    for path in checkpoint_files(run):
        state = torch.load(path, map_location="cpu", weights_only=False)
        state["prediction"] = Prediction("edm", tuple(SIGMA.flatten().tolist())).to_dict()
        torch.save(state, path)

"""Samplers: pure functions over a denoiser ``(x_t, t) -> x0``.

Each sampler starts from standard normal noise of ``shape`` drawn from the
given ``torch.Generator`` (or a list of generators, one per batch item) and returns the final x0 estimate (B, 8, d, h, w)
in the model's wavelet domain. All randomness goes through ``generator``, so
the same seed gives bit-identical results on the same device.

* :func:`ddpm` -- ancestral sampling with the fixed "large" variance; with
  1000 steps it is the reference implementation's sampler.
* :func:`ddim` -- deterministic (``eta = 0``) or stochastic DDIM on any
  number of steps (timesteps from :func:`cwdm.diffusion.spaced_timesteps`).
* :func:`regression` -- one x0 prediction from pure noise at t = T - 1.

``callback(i, n)`` is called after each of the ``n`` network calls (for
progress bars).
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np
import torch

from .diffusion import Denoiser, Schedule, ddpm_step, linear_schedule, respace, spaced_timesteps

Callback = Optional[Callable[[int, int], None]]

SAMPLERS = ("ddpm", "ddim", "regression")


def _noise(shape: Sequence[int], generator, device, dtype) -> torch.Tensor:
    """Standard normal noise; ``generator`` is one Generator or a list with one per batch item
    (then each item's noise depends only on its own generator)."""
    if isinstance(generator, (list, tuple)):
        if len(generator) != shape[0]:
            raise ValueError(f"{len(generator)} generators for a batch of {shape[0]}")
        return torch.cat([torch.randn((1, *shape[1:]), generator=g, device=device, dtype=dtype)
                          for g in generator])
    return torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype)


def _batch_t(value: int, shape: Sequence[int], device) -> torch.Tensor:
    return torch.full((shape[0],), int(value), dtype=torch.long, device=device)


def ddpm(denoiser: Denoiser, shape: Sequence[int], generator: torch.Generator, steps: int = 1000,
         schedule: Schedule | None = None, device="cpu", dtype=torch.float32,
         callback: Callback = None) -> torch.Tensor:
    """Ancestral DDPM sampling, respaced to ``steps`` network calls.

    :param shape: (B, 8, d, h, w).
    :return: (B, 8, d, h, w) x0 estimate (the last step's sample, t = 0).
    """
    base = schedule or linear_schedule()
    sched = respace(base, spaced_timesteps(base.num_timesteps, steps))
    x = _noise(shape, generator, device, dtype)
    n = sched.num_timesteps
    for k, i in enumerate(reversed(range(n))):
        noise = _noise(shape, generator, device, dtype)
        x = ddpm_step(denoiser, sched, x, _batch_t(i, shape, device), noise)["sample"]
        if callback:
            callback(k + 1, n)
    return x


def ddim(denoiser: Denoiser, shape: Sequence[int], generator: torch.Generator, steps: int = 50,
         eta: float = 0.0, schedule: Schedule | None = None, device="cpu", dtype=torch.float32,
         callback: Callback = None) -> torch.Tensor:
    """DDIM sampling with ``steps`` network calls at :func:`spaced_timesteps`.

    Update from t to the previous kept timestep s (alpha-bar ``a_t``, ``a_s``;
    ``a_s = 1`` after the last call, so the result is the last x0 prediction):
    ``eps = (x_t - sqrt(a_t) x0) / sqrt(1 - a_t)``,
    ``sigma = eta * sqrt((1 - a_s) / (1 - a_t) * (1 - a_t / a_s))``,
    ``x_s = sqrt(a_s) x0 + sqrt(1 - a_s - sigma^2) eps + sigma z``.
    """
    base = schedule or linear_schedule()
    ts = spaced_timesteps(base.num_timesteps, steps)[::-1]
    ac = base.alphas_cumprod
    x = _noise(shape, generator, device, dtype)
    for k, t in enumerate(ts):
        a_t = float(ac[t])
        a_s = float(ac[ts[k + 1]]) if k + 1 < len(ts) else 1.0
        x0 = denoiser(x, _batch_t(t, shape, device))
        if a_s >= 1.0:
            x = x0
        else:
            eps = (x - np.sqrt(a_t) * x0) / np.sqrt(1.0 - a_t)
            sigma = eta * np.sqrt((1.0 - a_s) / (1.0 - a_t) * (1.0 - a_t / a_s))
            x = np.sqrt(a_s) * x0 + np.sqrt(max(1.0 - a_s - sigma ** 2, 0.0)) * eps
            if sigma > 0:
                x = x + sigma * _noise(shape, generator, device, dtype)
        if callback:
            callback(k + 1, len(ts))
    return x


def regression(denoiser: Denoiser, shape: Sequence[int], generator: torch.Generator,
               schedule: Schedule | None = None, device="cpu", dtype=torch.float32,
               callback: Callback = None) -> torch.Tensor:
    """One network call: the x0 prediction from pure noise at t = T - 1."""
    base = schedule or linear_schedule()
    x = _noise(shape, generator, device, dtype)
    x0 = denoiser(x, _batch_t(base.num_timesteps - 1, shape, device))
    if callback:
        callback(1, 1)
    return x0


def run_sampler(name: str, denoiser: Denoiser, shape: Sequence[int], generator: torch.Generator,
                steps: int = 1000, eta: float = 0.0, device="cpu", dtype=torch.float32,
                callback: Callback = None) -> torch.Tensor:
    """Dispatch by sampler name (``ddpm``, ``ddim`` or ``regression``)."""
    if name == "ddpm":
        return ddpm(denoiser, shape, generator, steps, device=device, dtype=dtype, callback=callback)
    if name == "ddim":
        return ddim(denoiser, shape, generator, steps, eta, device=device, dtype=dtype, callback=callback)
    if name == "regression":
        return regression(denoiser, shape, generator, device=device, dtype=dtype, callback=callback)
    raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")


def network_calls(name: str, steps: int) -> int:
    """Number of network calls a sampler makes per sample."""
    return 1 if name == "regression" else steps

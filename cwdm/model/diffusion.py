"""Gaussian diffusion in the model's wavelet domain: schedule, noising, loss, x0 clip, reverse step.

Conventions (the released models'):

* 1000 steps, linear betas from 1e-4 to 0.02; every schedule quantity is
  computed in float64 and cast to the working dtype only when gathered.
* The network predicts the clean subbands ``x0`` directly.
* Tensors in the wavelet domain have shape (B, 8, d, h, w) for the target and
  (B, 8K, d, h, w) for K conditions (see :mod:`cwdm.model.wavelet`).
* The reverse step uses the fixed "large" variance: ``posterior_variance[1]``
  followed by ``betas[1:]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import torch

from .prediction import X0, Prediction
from .wavelet import from_subbands, to_subbands

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``(x_t (B, 8, d, h, w), t (B,) long) -> x0 prediction (B, 8, d, h, w)``."""


@dataclass(frozen=True)
class Schedule:
    """Float64 diffusion schedule over ``num_timesteps`` steps.

    ``timestep_map[i]`` is the timestep of the trained model that step ``i`` of
    this (possibly respaced) schedule corresponds to; it is what the network
    sees. For the full schedule it is ``arange(num_timesteps)``.
    """

    betas: np.ndarray
    timestep_map: np.ndarray

    @property
    def num_timesteps(self) -> int:
        return int(self.betas.shape[0])

    @property
    def alphas_cumprod(self) -> np.ndarray:
        return np.cumprod(1.0 - self.betas)

    @property
    def alphas_cumprod_prev(self) -> np.ndarray:
        return np.append(1.0, self.alphas_cumprod[:-1])

    @property
    def posterior_variance(self) -> np.ndarray:
        ac = self.alphas_cumprod
        return self.betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - ac)

    @property
    def posterior_log_variance_clipped(self) -> np.ndarray:
        pv = self.posterior_variance
        return np.log(np.append(pv[1], pv[1:]))

    @property
    def posterior_mean_coef1(self) -> np.ndarray:
        return self.betas * np.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)

    @property
    def posterior_mean_coef2(self) -> np.ndarray:
        return (1.0 - self.alphas_cumprod_prev) * np.sqrt(1.0 - self.betas) / (1.0 - self.alphas_cumprod)

    @property
    def fixed_large_variance(self) -> np.ndarray:
        """The reverse-step variance of the released models (one step: its beta; t = 0 adds no noise)."""
        if self.num_timesteps == 1:
            return self.betas.copy()
        return np.append(self.posterior_variance[1], self.betas[1:])


def linear_schedule(num_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> Schedule:
    """The linear beta schedule (scaled as in the reference for other step counts)."""
    scale = 1000.0 / num_timesteps
    betas = np.linspace(scale * beta_start, scale * beta_end, num_timesteps, dtype=np.float64)
    return Schedule(betas=betas, timestep_map=np.arange(num_timesteps))


def spaced_timesteps(num_timesteps: int, steps: int) -> np.ndarray:
    """``steps`` timesteps evenly spread over [0, num_timesteps - 1], ascending.

    Both ends are included (``steps >= 2``): sampling starts at pure noise
    (t = T - 1) and its last network call is at t = 0. ``steps == 1`` gives
    ``[T - 1]`` (a single x0 prediction from noise).
    """
    if not 1 <= steps <= num_timesteps:
        raise ValueError(f"sampling steps must be in 1..{num_timesteps}, got {steps}")
    if steps == 1:
        return np.array([num_timesteps - 1])
    return np.round(np.linspace(0, num_timesteps - 1, steps)).astype(np.int64)


def respace(schedule: Schedule, timesteps: Sequence[int]) -> Schedule:
    """Schedule that visits only ``timesteps`` (ascending) of ``schedule``.

    The new betas keep the cumulative products at the kept timesteps, so a
    model trained on the full schedule can be sampled in fewer steps.
    """
    ts = np.asarray(sorted(set(int(t) for t in timesteps)), dtype=np.int64)
    if len(ts) == schedule.num_timesteps:
        return schedule
    ac = schedule.alphas_cumprod[ts]
    prev = np.append(1.0, ac[:-1])
    return Schedule(betas=1.0 - ac / prev, timestep_map=schedule.timestep_map[ts])


def extract(arr: np.ndarray, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Gather float64 ``arr[t]`` for a batch, cast to ``like``'s dtype, shaped (B, 1, 1, 1, 1)."""
    vals = torch.from_numpy(np.ascontiguousarray(arr)).to(t.device)[t.long()]
    return vals.to(like.dtype).view(-1, *([1] * (like.dim() - 1))).to(like.device)


def model_timesteps(schedule: Schedule, t: torch.Tensor) -> torch.Tensor:
    """Map step indices of a (respaced) schedule to the trained model's timesteps."""
    return torch.from_numpy(schedule.timestep_map).to(t.device)[t.long()]


def q_sample(schedule: Schedule, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Noise clean subbands ``x0`` (B, C, ...) to timestep ``t`` (B,) with ``noise`` like ``x0``."""
    return (extract(np.sqrt(schedule.alphas_cumprod), t, x0) * x0
            + extract(np.sqrt(1.0 - schedule.alphas_cumprod), t, x0) * noise)


def training_loss(model: torch.nn.Module, schedule: Schedule, x0: torch.Tensor, cond: torch.Tensor,
                  t: torch.Tensor, noise: torch.Tensor, prediction: Prediction = X0,
                  weight: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean squared error of the network's output against what ``prediction`` makes its target.

    Args:
        x0: (B, 8, d, h, w) clean target subbands (LLL / 3).
        cond: (B, 8K, d, h, w) condition subbands.
        t: (B,) timesteps.
        noise: (B, 8, d, h, w) standard normal noise (the orthonormal Haar
            transform of image-domain noise is such noise too).
        prediction: ``x0`` (the reference: the output is compared with ``x0``) or ``edm`` (the output
            ``F`` with ``(x0 - c_skip x_t) / c_out``; :mod:`cwdm.model.prediction`).
        weight: (B, 1, d, h, w) weight of each subband voxel's squared error (the same in all 8
            subbands; e.g. an inpainting region weighted more), or None: every voxel 1.

    Returns:
        ``(loss, per_subband (8,), x0 estimate (B, 8, d, h, w))``; loss is the mean of the
        8 per-subband mean squared errors (over batch and space; weighted: the mean of
        ``weight * error ** 2``).
    """
    x_t = q_sample(schedule, x0, t, noise)
    if prediction.is_x0:
        out = model(torch.cat([x_t, cond], dim=1), t)
        estimate, error = out, (out.float() - x0.float()) ** 2
    else:
        skip, scale, inp = prediction.coefficients(schedule.alphas_cumprod, t, x0)
        f = model(torch.cat([inp * x_t, cond], dim=1), t).float()
        estimate, error = skip * x_t + scale * f, (f - (x0.float() - skip * x_t) / scale) ** 2
    per_subband = (error if weight is None else error * weight.float()).mean(dim=(0, 2, 3, 4))
    return per_subband.mean(), per_subband, estimate


def region_weight(mask: torch.Tensor, weight: float) -> torch.Tensor:
    """Loss weights of an inpainting batch on the subband grid: ``1 + (weight - 1) m``, ``m`` the mask
    (B, 1, X, Y, Z) in {0, 1} max-pooled by 2 (a subband voxel counts as masked when any of its 2x2x2
    image voxels is); returns (B, 1, X/2, Y/2, Z/2)."""
    pooled = torch.nn.functional.max_pool3d(mask.float(), kernel_size=2)
    return 1.0 + (float(weight) - 1.0) * pooled


def clip_x0(x0: torch.Tensor) -> torch.Tensor:
    """Clip an x0 prediction in image space: inverse transform, clamp to [0, 1], forward transform.

    Args:
        x0: (B, 8, d, h, w) subbands; returns the same shape.
    """
    return to_subbands(from_subbands(x0).clamp(0.0, 1.0))


def make_denoiser(model: torch.nn.Module, cond: torch.Tensor, clip: bool = True,
                  prediction: Prediction = X0) -> Denoiser:
    """Wrap the network as a denoiser ``(x_t, t) -> x0`` for fixed conditions.

    Args:
        cond: (B, 8K, d, h, w) condition subbands, concatenated after x_t.
        clip: apply :func:`clip_x0` to every prediction (the reference does).
        prediction: what the network's output means (:mod:`cwdm.model.prediction`); an ``edm``
            output is turned into the x0 estimate with the trained schedule (:func:`linear_schedule`).
    ``t`` is the trained model's timestep (0 .. 999).
    """
    abar = None if prediction.is_x0 else linear_schedule().alphas_cumprod

    def denoise(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if abar is None:
            pred = model(torch.cat([x_t, cond.to(x_t.dtype)], dim=1), t).to(x_t.dtype)
        else:
            skip, out, inp = prediction.coefficients(abar, t, x_t)
            f = model(torch.cat([inp * x_t, cond.to(x_t.dtype)], dim=1), t).to(x_t.dtype)
            pred = skip * x_t + out * f
        return clip_x0(pred) if clip else pred

    return denoise


def posterior(schedule: Schedule, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Mean of q(x_{t-1} | x_t, x0)."""
    return extract(schedule.posterior_mean_coef1, t, x_t) * x0 + extract(schedule.posterior_mean_coef2, t, x_t) * x_t


def ddpm_step(denoiser: Denoiser, schedule: Schedule, x_t: torch.Tensor, t: torch.Tensor,
              noise: torch.Tensor) -> Dict[str, torch.Tensor]:
    """One ancestral reverse step with the fixed "large" variance.

    Args:
        t: (B,) step indices into ``schedule``; the denoiser is called with
            the trained model's timesteps ``schedule.timestep_map[t]``.
        noise: standard normal noise like ``x_t``; unused where t == 0.

    Returns:
        dict with ``sample`` (x_{t-1}), ``mean``, ``log_variance`` and ``pred_xstart``.
    """
    x0 = denoiser(x_t, model_timesteps(schedule, t))
    mean = posterior(schedule, x0, x_t, t)
    log_var = extract(np.log(schedule.fixed_large_variance), t, x_t).expand_as(x_t)
    nonzero = (t != 0).to(x_t.dtype).view(-1, *([1] * (x_t.dim() - 1)))
    sample = mean + nonzero * torch.exp(0.5 * log_var) * noise
    return {"sample": sample, "mean": mean, "log_variance": log_var, "pred_xstart": x0}


def ddim_step(denoiser: Denoiser, schedule: Schedule, x_t: torch.Tensor, t: int, s: Optional[int],
              eta: float = 0.0, noise: Optional[Callable[[], torch.Tensor]] = None) -> Dict[str, torch.Tensor]:
    """One DDIM step from timestep ``t`` to the earlier timestep ``s`` of ``schedule``.

    With alpha-bar ``a_t`` and ``a_s`` (``a_s = 1`` when ``s`` is None, the
    last step, which returns the x0 prediction itself):
    ``eps = (x_t - sqrt(a_t) x0) / sqrt(1 - a_t)``,
    ``sigma = eta * sqrt((1 - a_s) / (1 - a_t) * (1 - a_t / a_s))``,
    ``x_s = sqrt(a_s) x0 + sqrt(1 - a_s - sigma^2) eps + sigma z``.

    Args:
        x_t: (B, 8, d, h, w) sample at ``t``.
        t: timestep of ``x_t``; the denoiser is called with ``schedule.timestep_map[t]``.
        s: the next (smaller) timestep, or None after the last network call.
        eta: 0 is deterministic DDIM, 1 the DDPM-like amount of fresh noise.
        noise: called for standard normal noise like ``x_t`` (``z``), only when ``sigma > 0``.

    Returns:
        dict with ``sample`` (x_s, (B, 8, d, h, w)) and ``pred_xstart`` (x0, same shape).
    """
    ac = schedule.alphas_cumprod
    a_t = float(ac[t])
    a_s = float(ac[s]) if s is not None else 1.0
    t_batch = torch.full((x_t.shape[0],), int(t), dtype=torch.long, device=x_t.device)
    x0 = denoiser(x_t, model_timesteps(schedule, t_batch))
    if a_s >= 1.0:
        return {"sample": x0, "pred_xstart": x0}
    eps = (x_t - np.sqrt(a_t) * x0) / np.sqrt(1.0 - a_t)
    sigma = eta * np.sqrt((1.0 - a_s) / (1.0 - a_t) * (1.0 - a_t / a_s))
    sample = np.sqrt(a_s) * x0 + np.sqrt(max(1.0 - a_s - sigma ** 2, 0.0)) * eps
    if sigma > 0:
        if noise is None:
            raise ValueError("ddim_step with eta > 0 needs a noise source")
        sample = sample + sigma * noise()
    return {"sample": sample, "pred_xstart": x0}

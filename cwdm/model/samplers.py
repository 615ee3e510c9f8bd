"""Samplers: pure functions over a denoiser ``(x_t, t) -> x0``, composable as in k-diffusion.

Every sampler has the signature::

    sampler(denoiser, x, timesteps, *, noise=None, callback=None, schedule=None, **options) -> x0

* ``x``: (B, 8, d, h, w) starting sample at ``timesteps[0]`` (usually pure noise);
* ``timesteps``: the trained model's timesteps to visit, strictly decreasing
  (e.g. ``[999, 500, 0]``), one network call each;
* ``noise``: a zero-argument callable giving fresh standard normal noise like
  ``x`` for the stochastic steps (a :class:`NoiseSource`);
* ``callback``: called after every network call with a dict ``{"i": call
  index from 0, "t": timestep, "x": the sample after the step, "x0": the
  prediction}``.

It returns the final x0 estimate (B, 8, d, h, w) in the model's wavelet domain.

:data:`SAMPLERS` maps each sampler's name to its function, its default
timesteps for ``--sampling_steps`` and the options it takes (:class:`SamplerOption`:
keyword arguments of the function beyond the common ones); :func:`run_sampler` draws
the start from a :class:`NoiseSource` of per-item generators and runs a
sampler by name, so the same seed gives bit-identical results on the same device.

The registry is the only place that names a sampler or its options: the
sampling settings (:class:`cwdm.inference.synthesis.SamplingOptions`), their
command-line flags (:mod:`cwdm.inference.flags`) and the provenance record
(:mod:`cwdm.inference.provenance`) read it. A new sampler is a function here and
one entry in :data:`SAMPLERS`.

* ``ddpm``: ancestral sampling with the fixed "large" variance; with 1000
  steps it is the reference implementation's sampler.
* ``ddim``: deterministic (``eta = 0``) or stochastic DDIM.
* ``ddim_trailing``: DDIM over the "trailing" timesteps (Lin et al. 2024, "Common diffusion noise
  schedules and sample steps are flawed"): ``steps`` calls spaced by T / steps from T - 1 down,
  the last at T / steps - 1 rather than 0 (2 steps: 999, 499). What a distilled student
  (``cwdm distill``) was trained for and records in its checkpoint.
* ``regression``: one x0 prediction from pure noise at t = T - 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

import torch

from .diffusion import Denoiser, Schedule, ddim_step, ddpm_step, linear_schedule, respace, spaced_timesteps

StepCallback = Optional[Callable[[Dict[str, Any]], None]]
"""Receives ``{"i": int, "t": int, "x": (B, 8, d, h, w), "x0": (B, 8, d, h, w)}`` after each network call."""

Generators = Union[torch.Generator, Sequence[torch.Generator]]


class NoiseSource:
    """Standard normal tensors of ``shape`` (B, 8, d, h, w), one per call.

    ``generator`` is one Generator or a list with one per batch item; then
    item ``b``'s noise depends only on generator ``b``, so a case's result
    does not depend on the cases batched with it.
    """

    def __init__(self, shape: Sequence[int], generator: Generators, device="cpu", dtype=torch.float32):
        if isinstance(generator, (list, tuple)) and len(generator) != shape[0]:
            raise ValueError(f"{len(generator)} generators for a batch of {shape[0]}")
        self.shape, self.generator, self.device, self.dtype = tuple(shape), generator, device, dtype

    def __call__(self) -> torch.Tensor:
        if isinstance(self.generator, (list, tuple)):
            return torch.cat([torch.randn((1, *self.shape[1:]), generator=g, device=self.device, dtype=self.dtype)
                              for g in self.generator])
        return torch.randn(self.shape, generator=self.generator, device=self.device, dtype=self.dtype)


def _checked(timesteps: Sequence[int]) -> list:
    ts = [int(t) for t in timesteps]
    if not ts or any(a <= b for a, b in zip(ts, ts[1:])):
        raise ValueError(f"timesteps must be a non-empty, strictly decreasing list, got {ts}")
    return ts


def ddpm(denoiser: Denoiser, x: torch.Tensor, timesteps: Sequence[int], *, noise: Optional[Callable] = None,
         callback: StepCallback = None, schedule: Optional[Schedule] = None) -> torch.Tensor:
    """Ancestral DDPM sampling over ``timesteps`` (the schedule respaced to them).

    Args:
        x: (B, 8, d, h, w) start at ``timesteps[0]``.
        timesteps: strictly decreasing model timesteps; all 1000 give the reference sampler.
        noise: fresh noise like ``x``, drawn once per step (also at the last, where it is unused).

    Returns:
        (B, 8, d, h, w): the last step's sample (the posterior mean at the last timestep).
    """
    ts = _checked(timesteps)
    sched = respace(schedule or linear_schedule(), ts)
    noise = noise or (lambda: torch.randn_like(x))
    for i, k in enumerate(reversed(range(len(ts)))):
        step_index = torch.full((x.shape[0],), k, dtype=torch.long, device=x.device)
        out = ddpm_step(denoiser, sched, x, step_index, noise())
        x = out["sample"]
        if callback:
            callback({"i": i, "t": ts[i], "x": x, "x0": out["pred_xstart"]})
    return x


def ddim(denoiser: Denoiser, x: torch.Tensor, timesteps: Sequence[int], *, noise: Optional[Callable] = None,
         callback: StepCallback = None, schedule: Optional[Schedule] = None, eta: float = 0.0) -> torch.Tensor:
    """DDIM sampling over ``timesteps`` (:func:`cwdm.model.diffusion.ddim_step` between neighbours).

    Args:
        x: (B, 8, d, h, w) start at ``timesteps[0]``.
        timesteps: strictly decreasing model timesteps.
        noise: fresh noise like ``x``; drawn only for ``eta > 0``, before the last call.
        eta: 0 is deterministic.

    Returns:
        (B, 8, d, h, w): the x0 prediction of the last call.
    """
    ts = _checked(timesteps)
    base = schedule or linear_schedule()
    noise = noise or (lambda: torch.randn_like(x))
    for i, t in enumerate(ts):
        out = ddim_step(denoiser, base, x, t, ts[i + 1] if i + 1 < len(ts) else None, eta, noise)
        x = out["sample"]
        if callback:
            callback({"i": i, "t": t, "x": x, "x0": out["pred_xstart"]})
    return x


def regression(denoiser: Denoiser, x: torch.Tensor, timesteps: Sequence[int], *, noise: Optional[Callable] = None,
               callback: StepCallback = None, schedule: Optional[Schedule] = None) -> torch.Tensor:
    """One network call: the x0 prediction (B, 8, d, h, w) from ``x`` at ``timesteps[0]`` (the rest are ignored)."""
    t = _checked(timesteps)[0]
    x0 = denoiser(x, torch.full((x.shape[0],), t, dtype=torch.long, device=x.device))
    if callback:
        callback({"i": 0, "t": t, "x": x0, "x0": x0})
    return x0


def _spaced(steps: int, num_timesteps: int = 1000) -> list:
    """``steps`` timesteps from T - 1 down to 0 (:func:`cwdm.model.diffusion.spaced_timesteps`, reversed)."""
    return [int(t) for t in spaced_timesteps(num_timesteps, steps)[::-1]]


def _trailing(steps: int, num_timesteps: int = 1000) -> list:
    """``steps`` timesteps ``round(T (steps - i) / steps) - 1``, i = 0 .. steps - 1: from T - 1 down in
    even strides, the last at ``T / steps - 1`` (1: [999]; 2: [999, 499]; T: every timestep)."""
    if not 1 <= steps <= num_timesteps:
        raise ValueError(f"sampling steps must be in 1..{num_timesteps}, got {steps}")
    return [int(round(num_timesteps * (steps - i) / steps)) - 1 for i in range(steps)]


def _last(steps: int, num_timesteps: int = 1000) -> list:
    """Only T - 1, whatever ``steps``."""
    return [num_timesteps - 1]


@dataclass(frozen=True)
class SamplerOption:
    """An option a sampler takes: a keyword argument of its function, the flag ``--<name>`` and a
    result-determining setting of the provenance record (``None`` there for samplers without it).

    Samplers may share an option (the same declaration in each entry).
    """

    name: str
    default: float
    help: str
    minimum: Optional[float] = None  # smallest allowed value (inclusive), None: any

    def problem(self, value: Any) -> Optional[str]:
        """What is wrong with ``value`` for this option (e.g. ``"must be >= 0, got -1.0"``), or None."""
        if self.minimum is not None and value < self.minimum:
            return f"must be >= {self.minimum:g}, got {value}"
        return None


ETA = SamplerOption("eta", 0.0, "DDIM noise (0 = deterministic)", minimum=0)


@dataclass(frozen=True)
class Sampler:
    """A registry entry: the function, its timesteps for a number of steps, and its options."""

    fn: Callable[..., torch.Tensor]
    timesteps: Callable[[int], list]
    options: Tuple[SamplerOption, ...] = ()
    uses_steps: bool = True  # whether --sampling_steps means anything to it

    def network_calls(self, steps: int) -> int:
        return len(self.timesteps(steps))


SAMPLERS: Dict[str, Sampler] = {
    "ddpm": Sampler(ddpm, _spaced),
    "ddim": Sampler(ddim, _spaced, options=(ETA,)),
    "ddim_trailing": Sampler(ddim, _trailing, options=(ETA,)),
    "regression": Sampler(regression, _last, uses_steps=False),
}
"""Sampler name -> :class:`Sampler`: the ``--sampler`` choices, the options' fields, flags and checks."""

DEFAULT_SAMPLER = "ddpm"
"""The ``--sampler`` default: with 1000 steps, the reference implementation's sampler."""


def get_sampler(name: str, spelled: str = "sampler") -> Sampler:
    """The entry of sampler ``name``: the one check of a sampler name (ValueError naming ``spelled``,
    how the caller calls the setting, e.g. ``--sampler``, and the choices)."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown {spelled} {name!r}; choose one of {', '.join(SAMPLERS)}")
    return SAMPLERS[name]


def registry_options() -> Dict[str, SamplerOption]:
    """Every option of the registered samplers by name, in registry order (ValueError when two
    samplers declare one name differently)."""
    out: Dict[str, SamplerOption] = {}
    for name, sampler in SAMPLERS.items():
        for opt in sampler.options:
            if out.setdefault(opt.name, opt) != opt:
                raise ValueError(f"sampler {name!r} declares option {opt.name!r} unlike another sampler: {opt}")
    return out


def network_calls(name: str, steps: int) -> int:
    """Number of network calls sampler ``name`` makes per sample for ``steps``."""
    return get_sampler(name).network_calls(steps)


def run_sampler(name: str, denoiser: Denoiser, shape: Sequence[int], generator: Generators,
                steps: int = 1000, *, device="cpu", dtype=torch.float32, callback: StepCallback = None,
                timesteps: Optional[Sequence[int]] = None, **options: Any) -> torch.Tensor:
    """Run sampler ``name`` from noise: the start is the first draw of ``NoiseSource(shape, generator)``.

    Args:
        shape: (B, 8, d, h, w).
        generator: one Generator, or one per batch item.
        steps: network calls (``--sampling_steps``), unless ``timesteps`` are given.
        options: values of sampler options (:func:`registry_options`, e.g. ``eta=0.5``); the sampler
            gets those it declares (their defaults where not given), the others are ignored; a name
            no sampler declares is a TypeError.

    Returns:
        (B, 8, d, h, w) x0 estimate.
    """
    sampler = get_sampler(name)
    unknown = sorted(set(options) - set(registry_options()))
    if unknown:
        raise TypeError(f"run_sampler() got options no sampler takes: {', '.join(unknown)}")
    noise = NoiseSource(shape, generator, device, dtype)
    ts = list(timesteps) if timesteps is not None else sampler.timesteps(steps)
    chosen = {opt.name: options.get(opt.name, opt.default) for opt in sampler.options}
    return sampler.fn(denoiser, noise(), ts, noise=noise, callback=callback, **chosen)

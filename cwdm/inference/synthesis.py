"""Turning condition volumes into a synthesized target volume (shared by ``sample`` and ``auto``).

The :class:`Synthesizer` runs a sampler on a batch of cases in the model
grid; the post-processing functions reproduce what the reference applies to
its outputs. Reading and writing files is the callers' job.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from ..model.checkpoint import LoadedModel
from ..model.diffusion import make_denoiser
from ..errors import CwdmError, option
from ..runtime import (PRECISIONS, EagerFallback, compile_mode, compile_network, memory_format, precision,
                      wants_compile)
from ..model.samplers import DEFAULT_SAMPLER, SAMPLERS, get_sampler, network_calls, registry_options, run_sampler
from ..task import Task, check_network
from ..data.unified import condition_input
from ..model.wavelet import NUM_SUBBANDS, from_subbands

AUTO_THRESHOLD = 0.04
"""Values at or below this are zeroed when a missing modality is written back (reference)."""


OPTIONS_FIELD = "sampler_options"
""":class:`SamplingOptions`' field holding the samplers' own options: one flag per registry option
(:func:`cwdm.model.samplers.registry_options`), where the other fields are one flag each."""


@dataclass
class SamplingOptions:
    """How volumes are sampled: the one record of the sampling settings.

    Its fields are the synthesis commands' flags (:mod:`cwdm.inference.flags`, help and choices from
    the metadata; ``flag``: the flag's name where it differs), but ``sampler_options``: the values of
    the samplers' own options by name (``{"eta": 0.5}``), one flag each; an option not given takes
    the default the registry (:data:`cwdm.model.samplers.SAMPLERS`) declares.
    """

    sampler: str = field(default=DEFAULT_SAMPLER, metadata={"help": "sampler", "choices": SAMPLERS})
    steps: int = field(default=1000, metadata={"help": "network calls (ddpm 1000 = the reference)",
                                               "flag": "sampling_steps"})
    sampler_options: Dict[str, Any] = field(default_factory=dict, metadata={"help": "options of the samplers"})
    ensemble: int = field(default=1, metadata={"help": "average K samples and write a std map"})
    seed: int = field(default=0, metadata={"help": "seed (each case gets its own generator)"})
    clip_denoised: bool = field(default=True, metadata={"help": "clip each x0 prediction in image space"})
    precision: str = field(default="fp32", metadata={
        "help": "arithmetic on CUDA: fp32 (exact, the reference's numbers), tf32 or bf16 (faster, not exact)",
        "choices": list(PRECISIONS)})
    channels_last: bool = field(default=False, metadata={
        "help": "channels-last layout (not exact: 0.78-0.87x the time per call on a 2-core CPU, slower on an H100)"})
    compile: str = field(default="auto", metadata={
        "help": "torch.compile the network: auto (on a CPU when the run takes >= 20 full-size calls, e.g. ddpm: "
                "0.78-0.89x the time per call after ~80 s compiling, outputs within 3e-6 per call), True or False"})
    ensemble_batch: int = field(default=0, metadata={"help": "ensemble members per network call (0 = all)"})

    def validate(self) -> None:
        """One-line :class:`CwdmError` for a setting out of range; normalizes ``compile``."""
        if self.precision not in PRECISIONS:
            raise CwdmError(f"unknown {option('precision')} {self.precision!r}; choose one of {', '.join(PRECISIONS)}")
        self.compile = compile_mode(self.compile)
        if self.ensemble_batch < 0:
            raise CwdmError(f"{option('ensemble_batch')} must be >= 0 (0 = all members at once), got {self.ensemble_batch}")
        try:
            chosen = get_sampler(self.sampler, option("sampler"))
        except ValueError as exc:
            raise CwdmError(str(exc)) from None
        if chosen.uses_steps and not 1 <= self.steps <= 1000:
            raise CwdmError(f"{option('sampling_steps')} must be in 1..1000, got {self.steps}")
        if self.ensemble < 1:
            raise CwdmError(f"{option('ensemble')} must be at least 1, got {self.ensemble}")
        declared = registry_options()
        for name, value in self.sampler_options.items():
            if name not in declared:
                raise CwdmError(f"unknown sampler option {name!r}; the samplers take {', '.join(declared) or 'none'}")
            problem = declared[name].problem(value)
            if problem:
                raise CwdmError(f"{option(name)} {problem}")

    def sampler_settings(self) -> Dict[str, Any]:
        """The options the chosen sampler takes, by name: the given value or the registry's default
        (what :func:`cwdm.model.samplers.run_sampler` gets)."""
        return {opt.name: self.sampler_options.get(opt.name, opt.default) for opt in get_sampler(self.sampler).options}

    def member_chunks(self) -> List[List[int]]:
        """Ensemble member indices in the groups that share network calls: chunks of at most
        ``ensemble_batch`` members (0 = all members in one chunk)."""
        chunk = self.ensemble_batch or self.ensemble
        return [list(range(i, min(i + chunk, self.ensemble))) for i in range(0, self.ensemble, chunk)]

    @property
    def member_batches(self) -> int:
        """Batched passes per case (the number of :meth:`member_chunks`)."""
        return len(self.member_chunks())

    @property
    def calls_per_case(self) -> int:
        """Network calls per batch of cases (each call takes every member of a chunk at once)."""
        return network_calls(self.sampler, self.steps) * self.member_batches


def run_compiles(options: SamplingOptions, device: torch.device, cases: int, grid: Sequence[int]) -> bool:
    """Whether a run of ``cases`` cases on the image ``grid`` (X, Y, Z) compiles the network:
    ``options.compile``, where ``auto`` weighs the run's network calls x ensemble members x subband
    voxels (:func:`cwdm.runtime.wants_compile`)."""
    voxels = math.prod(int(s) // 2 for s in grid)
    calls = network_calls(options.sampler, options.steps) * options.ensemble * max(int(cases), 1)
    return wants_compile(options.compile, device, calls * voxels)


def case_generator(seed: int, name: str, member: int, device: torch.device) -> torch.Generator:
    """Generator of one case and ensemble member: depends only on (seed, case name, member)."""
    value = (int(seed) * 1_000_003 + zlib.crc32(name.encode()) * 101 + int(member)) % (2 ** 63 - 1)
    return torch.Generator(device=device).manual_seed(value)


class Synthesizer:
    """Sample target volumes from condition volumes with a loaded network.

    ``__call__(conditions (B, C, X, Y, Z), names) -> (mean (B, X, Y, Z), std (B, X, Y, Z) or None)``
    on CPU in float32, in the model grid and the [0, 1] intensity range
    (before post-processing). ``std`` is the voxel-wise standard deviation
    over the ensemble members (only when ``options.ensemble > 1``).

    The conditions' subbands are computed once per call; the ensemble members
    of all B cases run as one batch of B x members per network call (at most
    ``options.ensemble_batch`` members at a time when it is > 0). Each member
    draws its noise from its own :func:`case_generator`, so batching changes
    no result beyond float rounding.

    ``callback(i, n)``, if given, is called after each network call: ``i``
    calls of the ``n`` of the current chunk of members are done (progress bars).
    A unified model also takes ``identity`` (B, M), the one-hot target of each case.
    The network runs compiled when :func:`run_compiles` says so for a run of ``run_cases``
    cases (set by the caller; default 1) or of this call's B cases, whichever is more.

    Args:
        loaded: the network.
        task: what it maps (its ``in_channels`` must fit); C is ``task.condition_channels``.
        device: where it runs.
        options: sampler settings.
    """

    def __init__(self, loaded: LoadedModel, task: Task, device: torch.device, options: SamplingOptions):
        options.validate()
        check_network(task, loaded.config.in_channels, "checkpoint")
        self.task = task
        self.format = memory_format(device, options.channels_last)
        self.model = loaded.model.to(device, memory_format=self.format).eval()
        self.device, self.options = device, options
        self.prediction = loaded.prediction
        self.run_cases = 1  # cases the run will synthesize (the callers set it): decides --compile auto
        self._compiled = None

    def compiles(self, grid: Sequence[int], batch: int = 1) -> bool:
        """Whether cases on the image ``grid`` (X, Y, Z) run the compiled network: :func:`run_compiles`
        for ``run_cases`` cases, or for ``batch`` (this call's cases) when that is more."""
        return run_compiles(self.options, self.device, max(self.run_cases, batch), grid)

    def network(self, compiled: bool):
        """The eager network, or its compiled version (compiled once; under ``auto`` a failed compilation
        falls back to eager)."""
        if not compiled:
            return self.model
        if self._compiled is None:
            net = compile_network(self.model, self.device)
            self._compiled = net if self.options.compile == "True" else EagerFallback(self.model, net)
        return self._compiled

    @torch.inference_mode()
    def __call__(self, conditions: torch.Tensor, names: Sequence[str],
                 callback: Optional[Callable[[int, int], None]] = None,
                 identity: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        opt, device = self.options, self.device
        if (identity is not None) != self.task.is_unified:
            raise CwdmError("a unified model needs the target's identity; a per-contrast model takes none")
        calls = network_calls(opt.sampler, opt.steps)  # per chunk of members
        ident = identity.to(device, torch.float32) if identity is not None else None
        cond = condition_input(conditions.to(device, torch.float32), ident)  # (B, 8C [+ M], d, h, w), once
        samples: List[torch.Tensor] = []  # one (B, m, X, Y, Z) tensor per chunk of m members
        net = self.network(self.compiles(conditions.shape[2:], len(names)))
        for members in opt.member_chunks():
            m = len(members)
            rep = cond.repeat_interleave(m, dim=0).contiguous(memory_format=self.format)
            denoiser = make_denoiser(net, rep, clip=opt.clip_denoised, prediction=self.prediction)
            gens = [case_generator(opt.seed, n, k, device) for n in names for k in members]
            shape = (rep.shape[0], NUM_SUBBANDS, *rep.shape[2:])
            step_done = (lambda s: callback(s["i"] + 1, calls)) if callback else None
            with precision(device, opt.precision):
                x0 = run_sampler(opt.sampler, denoiser, shape, gens, steps=opt.steps, device=device,
                                 dtype=torch.float32, callback=step_done, **opt.sampler_settings())
            vol = from_subbands(x0.float())[:, 0].cpu()
            samples.append(vol.reshape(len(names), m, *vol.shape[1:]))
        stack = torch.cat(samples, dim=1)
        mean = stack.mean(dim=1)
        std = stack.std(dim=1, correction=1) if opt.ensemble > 1 else None
        return mean, std


def postprocess(volume: torch.Tensor, first_condition: torch.Tensor, threshold: Optional[float] = None,
                enabled: bool = True) -> torch.Tensor:
    """The reference's post-processing of a synthesized (X, Y, Z) volume in [0, 1].

    Clamp to [0, 1] and zero every voxel where ``first_condition`` (the first
    condition's normalized volume, same shape) is 0, i.e. outside the brain;
    with ``threshold`` (auto mode: :data:`AUTO_THRESHOLD`) also zero values at
    or below it. ``enabled=False`` returns ``volume`` unchanged.
    """
    if not enabled:
        return volume
    out = volume.clamp(0.0, 1.0)
    out = torch.where(first_condition == 0, torch.zeros_like(out), out)
    if threshold is not None:
        out = torch.where(out <= threshold, torch.zeros_like(out), out)
    return out


def degenerate(volume: torch.Tensor, first_condition: torch.Tensor, std: Optional[torch.Tensor] = None,
               threshold: Optional[float] = None, enabled: bool = True) -> Optional[str]:
    """What is wrong with a synthesized (X, Y, Z) volume that must not be written, or None.

    A volume is degenerate when the sample (or its ensemble ``std`` map) has NaN or Inf voxels, or
    when the volume as it would be written (:func:`postprocess` with the same arguments) is all zero,
    or constant inside the brain (where ``first_condition`` is not 0; everywhere if it is 0
    everywhere). A trained network never gives these; an undertrained or broken one does.

    Returns:
        e.g. ``"synthesized volume is all zero"``, to be reported with the file it was meant for.
    """
    for name, tensor in (("volume", volume), ("ensemble std map", std)):
        if tensor is not None and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            return f"synthesized {name} has {bad} NaN/Inf voxels of {tensor.numel()}"
    out = postprocess(volume, first_condition, threshold, enabled)
    if not bool(out.any()):
        return "synthesized volume is all zero"
    brain = first_condition != 0
    inside = out[brain] if bool(brain.any()) else out.flatten()
    low, high = float(inside.min()), float(inside.max())
    if low == high:
        return f"synthesized volume is constant ({low:.6g}) inside the brain"
    return None

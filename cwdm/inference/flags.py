"""Flags shared by the synthesis commands (``cwdm sample``, ``cwdm auto``) and the Python API.

:class:`SamplingFlags` holds how volumes are sampled and written,
:class:`ModelFlags` the network of a bare released state_dict. The commands'
configs derive from both; :mod:`cwdm.api` builds them directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import FrozenSet, Optional

from ..config import given_field
from ..runtime import PRECISIONS
from ..model.samplers import SAMPLERS
from .synthesis import SamplingOptions
from ..model.flags import NetworkFlags


@dataclass
class ModelFlags(NetworkFlags):
    """Network configuration of a bare released state_dict (cwdm checkpoints carry their own).

    ``flags_given``: the flags typed on the command line (:func:`cwdm.config.given_field`); those of
    the network are checked against a bare state_dict. None (the Python API): none.
    """

    flags_given: Optional[FrozenSet[str]] = given_field()


@dataclass
class SamplingFlags:
    """Sampler, ensemble, post-processing, device and progress settings of a synthesis run."""

    sampler: str = field(default="ddpm", metadata={"help": "sampler", "choices": list(SAMPLERS)})
    sampling_steps: int = field(default=1000, metadata={"help": "network calls (ddpm 1000 = the reference)"})
    eta: float = field(default=0.0, metadata={"help": "DDIM noise (0 = deterministic)"})
    ensemble: int = field(default=1, metadata={"help": "average K samples and write a std map"})
    num_samples: int = field(default=1, metadata={"help": "accepted for compatibility with the reference; unused"})
    seed: int = field(default=0, metadata={"help": "seed (each case gets its own generator)"})
    batch_size: int = field(default=1, metadata={"help": "cases per network call (same-shape cases)"})
    clip_denoised: bool = field(default=True, metadata={"help": "clip each x0 prediction in image space"})
    postprocess: bool = field(default=True, metadata={"help": "clamp and zero outside the brain (reference)"})
    ema: bool = field(default=True, metadata={"help": "use EMA weights of a cwdm checkpoint"})
    overwrite: bool = field(default=False, metadata={"help": "redo cases whose output exists"})
    continue_anyway: bool = field(default=False, metadata={
        "help": "add results to a folder whose recorded results were made with other settings "
                "(cwdm_provenance.json then lists both)"})
    num_workers: int = field(default=1, metadata={"help": "DataLoader workers reading cases"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda or cuda:N"})
    precision: str = field(default="fp32", metadata={
        "help": "arithmetic on CUDA: fp32 (exact, the reference's numbers), tf32 or bf16 (faster, not exact)",
        "choices": list(PRECISIONS)})
    channels_last: bool = field(default=False, metadata={
        "help": "channels-last layout (not exact: 0.78-0.87x the time per call on a 2-core CPU, slower on an H100)"})
    compile: str = field(default="auto", metadata={
        "help": "torch.compile the network: auto (on a CPU when the run takes >= 20 full-size calls, e.g. ddpm: "
                "0.78-0.89x the time per call after ~80 s compiling, outputs within 3e-6 per call), True or False"})
    ensemble_batch: int = field(default=0, metadata={"help": "ensemble members per network call (0 = all)"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})

    def options(self) -> SamplingOptions:
        """The sampler settings these flags choose.

        Returns:
            A :class:`cwdm.inference.synthesis.SamplingOptions` (not yet validated).
        """
        return SamplingOptions(sampler=self.sampler, steps=self.sampling_steps, eta=self.eta,
                               ensemble=self.ensemble, seed=self.seed, clip_denoised=self.clip_denoised,
                               precision=self.precision, channels_last=self.channels_last,
                               compile=self.compile, ensemble_batch=self.ensemble_batch)

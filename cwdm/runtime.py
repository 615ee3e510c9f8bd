"""Device, precision and multi-process set-up, in one place.

Every command picks its device through :func:`select_device` and wraps
network calls in :func:`autocast`; nothing else in cwdm calls ``.cuda()``.
Under ``torchrun`` (``WORLD_SIZE > 1``) :func:`init_distributed` starts the
process group (NCCL on CUDA, gloo on CPU) and pins each rank to its GPU.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .errors import CwdmError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def dist_from_env() -> DistInfo:
    """Rank information from the environment torchrun sets (single process otherwise)."""
    return DistInfo(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                    int(os.environ.get("LOCAL_RANK", 0)))


def select_device(name: str = "auto", info: DistInfo | None = None) -> torch.device:
    """``auto`` -> the rank's CUDA device when available, else CPU; ``cpu``/``cuda``/``cuda:N`` as given."""
    info = info or dist_from_env()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise CwdmError(f"--device {name} requested but no CUDA GPU is available (use --device cpu)")
        if name == "cuda":
            name = f"cuda:{info.local_rank}"
        device = torch.device(name)
        torch.cuda.set_device(device)
        return device
    if name != "cpu":
        raise CwdmError(f"unknown device {name!r} (use auto, cpu, cuda or cuda:N)")
    return torch.device("cpu")


def init_distributed(device: torch.device, info: DistInfo) -> None:
    """Start the process group when running under torchrun with several processes."""
    if info.enabled and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=info.rank, world_size=info.world_size)


def cleanup_distributed() -> None:
    """Wait for every rank (rank 0 may still be writing a checkpoint), then end the process group."""
    if dist.is_initialized():
        try:
            dist.barrier()
        finally:
            dist.destroy_process_group()


def agree_max(value: int, info: DistInfo, device: torch.device) -> int:
    """The largest ``value`` over all ranks (so every rank stops at the same step); ``value`` alone
    when not distributed."""
    if not info.enabled:
        return value
    t = torch.tensor([value], device=device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return int(t.item())


PRECISIONS = ("fp32", "tf32", "bf16")
"""Inference arithmetic: ``fp32`` exact float32 (TF32 off: the reference's numbers), ``tf32``
(TF32 tensor cores for convolutions and matmuls, CUDA), ``bf16`` (bf16 autocast, CUDA)."""


@contextlib.contextmanager
def precision(device: torch.device, name: str = "fp32"):
    """Run network calls in the block with the arithmetic ``name`` (one of :data:`PRECISIONS`).

    On CPU every choice runs plain float32 (bf16 is slower than fp32 on the CPUs measured).
    The global TF32 switches are restored on exit.
    """
    if name not in PRECISIONS:
        raise CwdmError(f"unknown precision {name!r}; choose one of {', '.join(PRECISIONS)}")
    if device.type != "cuda":
        yield
        return
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = name == "tf32"
    try:
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=name == "bf16"):
            yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def autocast(device: torch.device, enabled: bool = True):
    """bf16 autocast on CUDA (when ``enabled``), a no-op context on CPU."""
    if enabled and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def memory_format(device: torch.device, channels_last: bool = False) -> torch.memory_format:
    """channels-last for 3D convolutions when ``channels_last``, the default layout otherwise.

    Opt-in on every device: on an H100 at the released size it made inference slower
    (docs/gpu_check_h100.md); on a 2-core CPU it took 0.865x the time of a full-size call but moved
    the output by 2.5e-4 (README, Measured). ``device`` is kept for callers that choose by it.
    """
    return torch.channels_last_3d if channels_last else torch.contiguous_format


def peak_memory_mb(device: torch.device) -> float:
    """Peak allocated GPU memory in MiB (0 on CPU)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    return 0.0

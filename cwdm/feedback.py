"""What the long-running commands tell their user: device, expected cost, time estimates, next steps.

The CPU figures come from the README's "Measured" section (2 x86_64 cores,
PyTorch 2.13 CPU build): one call of the released network (64 channels) on
the full 224x224x160 grid took 33 to 51 s, one training step of it on a
64x64x64 crop (batch 1) about 4.4 s.
"""

from __future__ import annotations

import sys
import time
from typing import Callable, Optional, Sequence

import torch

FULL_GRID = 224 * 224 * 160
RELEASED_CHANNELS = 64
CPU_CALL_SECONDS = (33.0, 51.3)  # released network, one call on 224x224x160, measured range
CPU_STEP_SECONDS_64 = 4.36  # released network, one training step at 64x64x64, batch 1
SMALL_NETWORK_FLAGS = "--num_channels 16 --channel_mult 1 2 2 --num_res_blocks 1 --num_groups 8"


def device_line(device: torch.device) -> str:
    """``device: cuda:0 (NVIDIA H100, 79 GiB)`` or ``device: cpu (2 threads, no GPU found)``."""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"device: {device} ({props.name}, {props.total_memory / 2 ** 30:.0f} GiB)"
    gpu = "a GPU is available (--device cuda)" if torch.cuda.is_available() else "no GPU found"
    return f"device: cpu ({torch.get_num_threads()} threads, {gpu})"


def duration(seconds: float) -> str:
    """``0.9 s``, ``12 min``, ``3.4 h``, ``2.1 days``."""
    if seconds < 90:
        return f"{seconds:.2g} s" if seconds < 10 else f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def cpu_sampling_warning(device: torch.device, channels: int, grid: Sequence[int], calls_per_case: int,
                         cases: int) -> Optional[str]:
    """A warning before sampling the released-size network on the full grid on a CPU (else None)."""
    voxels = int(torch.Size(grid).numel())
    if device.type != "cpu" or channels < RELEASED_CHANNELS or voxels < FULL_GRID:
        return None
    lo, hi = (s * voxels / FULL_GRID for s in CPU_CALL_SECONDS)
    return (f"warning: the released-size network ({channels} channels) on the full {'x'.join(map(str, grid))} "
            f"grid runs on the CPU: about {lo:.0f}-{hi:.0f} s per network call (measured on 2 cores), "
            f"{calls_per_case} calls per case = {duration(lo * calls_per_case)} to {duration(hi * calls_per_case)} "
            f"per case, {cases} cases; use a GPU, or a fast sampler (--sampler ddim --sampling_steps 10: "
            f"{duration(10 * lo)}-{duration(10 * hi)} per case)")


def cpu_training_warning(device: torch.device, channels: int, grid: Sequence[int], batch_size: int,
                         steps: int) -> Optional[str]:
    """A warning before training a network of the released size on a CPU (else None): one line with the
    measured time per step, the estimate for ``steps`` and the small network's flags."""
    if device.type != "cpu" or channels < RELEASED_CHANNELS:
        return None
    voxels = int(torch.Size(grid).numel())
    per_step = CPU_STEP_SECONDS_64 * batch_size * voxels / 64 ** 3
    return (f"warning: training the released-size network ({channels} channels) on the CPU: measured "
            f"{CPU_STEP_SECONDS_64} s per step at 64x64x64 (batch 1), so about {duration(per_step)} per step on "
            f"{'x'.join(map(str, grid))} x {batch_size}, {duration(per_step * steps)} for {steps} steps; "
            f"full-size training needs a GPU; on a CPU train the demo's small network: {SMALL_NETWORK_FLAGS}")


class RunClock:
    """Times synthesis: one estimate line after the first network call, and seconds per case.

    ``batch_started(n)`` before a batch of ``n`` cases, ``network_call()`` after
    each network call, ``batch_seconds()`` when its results are written. With
    ``compiling`` (the first call compiles the network) the first call's time is
    reported as such and the estimate comes from the second call.
    """

    def __init__(self, cases: int, calls_per_case: int, write: Callable[[str], None], compiling: bool = False):
        self.cases, self.calls_per_case, self.write = cases, calls_per_case, write
        self.compiling, self.after_compile = compiling, False
        self.reported = False
        self.start = self.mark = 0.0
        self.size = 1

    def batch_started(self, size: int) -> None:
        self.start = self.mark = time.monotonic()
        self.size = max(size, 1)

    def network_call(self) -> None:
        if self.reported:
            return
        now = time.monotonic()
        took, self.mark = now - self.mark, now
        if self.compiling:
            self.compiling, self.after_compile = False, True
            self.write(f"compiling the network and its first call took {duration(took)} (once per run)")
            return
        self.reported = True
        per_case = took * self.calls_per_case / self.size
        which = "second" if self.after_compile else "first"
        self.write(f"{which} network call took {duration(took)}: about {duration(per_case)} per case, "
                   f"{duration(per_case * self.cases)} for the {self.cases} case{'s' * (self.cases != 1)} "
                   f"to do ({self.calls_per_case} calls per case; an estimate, the first call is the slowest)")

    def batch_seconds(self) -> float:
        """Seconds per case of the batch that just ended."""
        return (time.monotonic() - self.start) / self.size


def write_line(message: str) -> None:
    """A line on stderr that does not break a running progress bar."""
    from tqdm.auto import tqdm

    tqdm.write(message, file=sys.stderr)

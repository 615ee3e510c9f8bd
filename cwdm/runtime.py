"""Device, precision and multi-process set-up, in one place.

Every command picks its device through :func:`select_device` and wraps
network calls in :func:`autocast`; nothing else in cwdm calls ``.cuda()``.
Under ``torchrun`` (``WORLD_SIZE > 1``) :func:`init_distributed` starts the
process group (NCCL on CUDA, gloo on CPU) and pins each rank to its GPU.
"""

from __future__ import annotations

import contextlib
import os
import sys
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


COMPILE_MODES = ("auto", "True", "False")
"""``--compile`` choices of the synthesis commands: ``auto`` (the default: compile where it pays off,
see :func:`wants_compile`), ``True`` (always) and ``False`` (never: the eager network)."""

AUTO_COMPILE_WORK = 20 * 112 * 112 * 80
"""``--compile auto`` compiles on a CPU when a run takes at least this many network calls x subband
voxels: 20 calls on the full BraTS grid (112x112x80 subbands). Measured on a 2-core CPU (README,
Measured): a compiled full-size call takes 0.78x to 0.89x of its eager time, after a one-off
compilation of about 80 s (18 s from torch's compile cache), so one case of ddim 10 gains nothing
and ddpm, or ddim 10 on two or more cases, gains; regression, the demo and small volumes (the tests)
stay eager."""


def compile_mode(value) -> str:
    """``value`` (a :data:`COMPILE_MODES` string, any case, or a bool) as one of :data:`COMPILE_MODES`."""
    text = str(value).strip().lower()
    for mode, spellings in (("auto", ("auto",)), ("True", ("true", "1", "yes")), ("False", ("false", "0", "no"))):
        if text in spellings:
            return mode
    raise CwdmError(f"unknown --compile {value!r}; choose one of {', '.join(COMPILE_MODES)}")


def wants_compile(mode: str, device: torch.device, work: int) -> bool:
    """Whether to ``torch.compile`` a network that will make ``work`` network calls x subband voxels.

    ``auto`` compiles on a CPU only, when ``work`` reaches :data:`AUTO_COMPILE_WORK` (on CUDA the
    measured eager fp32 path is kept; ``True`` compiles there too).
    """
    mode = compile_mode(mode)
    if mode != "auto":
        return mode == "True"
    return device.type == "cpu" and work >= AUTO_COMPILE_WORK


def compile_network(model: torch.nn.Module, device: torch.device):
    """``torch.compile`` of an inference network; on a CPU with freezing (the weights become constants,
    so inductor prepacks them for oneDNN and fuses GroupNorm, SiLU and additions around the
    convolutions). Call it under ``torch.inference_mode`` only; ``model`` must not change afterwards.

    Compilation happens at the first call; when it fails (no C++ compiler, an inductor bug) that call
    raises :class:`CompileFailed`, one line (:class:`EagerFallback` runs eagerly instead)."""
    return StrictCompiled(torch.compile(model, options={"freezing": True} if device.type == "cpu" else None))


COMPILER_MODULES = ("torch._dynamo", "torch._inductor")
"""Where the exceptions of a failed compilation come from (others are the network's own errors)."""


def is_compiler_error(exc: BaseException) -> bool:
    """Whether ``exc`` comes from torch's compiler (:data:`COMPILER_MODULES`), not from the network."""
    return isinstance(exc, CompileFailed) or type(exc).__module__.startswith(COMPILER_MODULES)


def describe_compile_error(exc: BaseException) -> str:
    """``Kind: first line`` of a compiler exception; dynamo's ``BackendCompilerFailed`` is described by
    the backend's exception it wraps (``InvalidCxxCompiler: No working C++ compiler found ...``)."""
    if isinstance(exc, CompileFailed):
        return exc.cause
    inner = getattr(exc, "inner_exception", None)
    shown = inner if isinstance(inner, BaseException) else exc
    first = (str(shown).strip().splitlines() or [""])[0][:200]
    return f"{type(shown).__name__}: {first}" if first else type(shown).__name__


class CompileFailed(CwdmError):
    """``torch.compile`` failed where compilation was asked for (``--compile True``): one line, with
    the compiler's reason and the flag that runs without it."""

    def __init__(self, exc: BaseException, flag: str = "--compile False"):
        self.cause = describe_compile_error(exc)
        super().__init__(f"torch.compile failed ({self.cause}); a working C++ compiler is needed to compile "
                         f"the network: run it eagerly with {flag}")


class StrictCompiled:
    """A ``torch.compile``-d callable whose compiler errors are :class:`CompileFailed` (one line);
    the network's own errors propagate as they are."""

    def __init__(self, compiled):
        self.compiled = compiled

    def __call__(self, *args, **kwargs):
        try:
            return self.compiled(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - re-raised unless it comes from the compiler
            if is_compiler_error(exc) and not isinstance(exc, CompileFailed):
                raise CompileFailed(exc) from None
            raise


class EagerFallback:
    """A compiled network that runs ``model`` eagerly instead when compilation fails (no C++ compiler,
    an inductor bug): one line on stderr, then eager for good. Only errors raised by the compiler
    (:data:`COMPILER_MODULES`, :class:`CompileFailed`) fall back; the network's own errors propagate
    as they are."""

    def __init__(self, model: torch.nn.Module, compiled):
        self.model, self.compiled, self.failed = model, compiled, False

    def __call__(self, *args):
        if not self.failed:
            try:
                return self.compiled(*args)
            except Exception as exc:  # noqa: BLE001 - re-raised unless it comes from the compiler
                if not is_compiler_error(exc):
                    raise
                print(f"cwdm: torch.compile failed ({describe_compile_error(exc)}); running the network "
                      f"eagerly (--compile False skips the attempt)", file=sys.stderr)
                self.failed = True
        return self.model(*args)


def peak_memory_mb(device: torch.device) -> float:
    """Peak allocated GPU memory in MiB (0 on CPU)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    return 0.0

"""What the phantom benchmarks share: the machine's name, phantom sets made by several processes, and
a model trained on them, with the demo's network or a wider one, on the CPU or a GPU.

Imported by ``benchmarks/ambiguity.py`` and ``benchmarks/inpainting_phantom.py`` (after
:func:`cwdm.openmp.configure`, which must run before torch loads).
"""

from __future__ import annotations

import json
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import fields
from pathlib import Path
from typing import Optional


def _demo_network() -> dict:
    from cwdm.commands.demo import DemoConfig

    demo = DemoConfig()
    return {"model_channels": demo.num_channels, "channel_mult": tuple(demo.channel_mult),
            "num_res_blocks": demo.num_res_blocks, "num_groups": demo.num_groups, "batch_size": demo.batch_size}


DEMO_NETWORK = _demo_network()
"""The demo's network and batch (``cwdm demo``'s defaults), the default of every phantom benchmark."""


def machine(device: str = "cpu") -> str:
    """The processor (and the GPU, for a CUDA ``device``), torch's threads and torch's version."""
    import torch

    name = platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            name = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), name)
    except OSError:
        pass
    if device.startswith("cuda") and torch.cuda.is_available():
        name = f"{torch.cuda.get_device_name(torch.device(device))} with {name}"
    return f"{name}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def make_sets(folder: Path, cases: int, seed: int, downsample: int, start: int = 0, workers: int = 1,
              **kwargs) -> None:
    """``make_phantom_set(folder, cases, seed, downsample, start=start, **kwargs)`` with the subjects
    split over ``workers`` processes (each case depends only on its seed and index, so the files are
    those of one process)."""
    from cwdm.phantom.sets import make_phantom_set

    workers = max(1, min(int(workers), cases))
    if workers == 1:
        make_phantom_set(folder, cases, seed, downsample, start=start, **kwargs)
        return
    import multiprocessing

    bounds = [start + cases * k // workers for k in range(workers + 1)]
    kwargs["progress"] = False
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        jobs = [pool.submit(make_phantom_set, folder, hi - lo, seed, downsample, start=lo, **kwargs)
                for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo]
        for job in jobs:
            job.result()


def checkpoint_step(path: Path) -> int:
    """The training step of ``run/checkpoints/ckpt_<step>.pt``."""
    from cwdm.training.state import CKPT_PATTERN

    found = CKPT_PATTERN.match(Path(path).name)
    if found is None:
        raise ValueError(f"{path}: not a training checkpoint name (ckpt_<step>.pt)")
    return int(found.group(1))


def train_demo_network(run: Path, steps: int, seed: int, lr: float, network: Optional[dict] = None,
                       device: str = "cpu", minutes: Optional[float] = None, workers: int = 1, **task) -> Path:
    """Train a network for ``steps`` steps in ``run`` with the TrainConfig fields ``task`` (data, task,
    prediction ...) and return its last checkpoint.

    ``network``: the TrainConfig fields of the network and batch (default :data:`DEMO_NETWORK`: 16
    channels (1, 2, 2), 1 res block, 8 groups, batch 2; always EMA 0.999). ``minutes`` also stops
    the run after that wall time, and the run is then finished at the step it reached.
    ``workers``: data-loading processes. A stopped run continues when called again; a finished one
    (``run/done``) is returned as it is."""
    from cwdm.training.config import TrainConfig
    from cwdm.training.loop import train
    from cwdm.training.state import latest_checkpoint

    ckpt = latest_checkpoint(run) if run.exists() else None
    if ckpt is not None and (run / "done").exists():
        return ckpt
    net = {**DEMO_NETWORK, **(network or {})}
    net["channel_mult"] = tuple(net["channel_mult"])
    cfg = TrainConfig(run_dir=run, resume="auto", lr=lr, ema_rate=0.999, max_steps=steps, seed=seed,
                      save_interval=500, log_interval=50, image_interval=0, num_workers=workers, progress=True,
                      device=device, max_minutes=minutes, **net, **task,
                      flags_given=frozenset(f.name for f in fields(TrainConfig) if f.name != "flags_given"))
    t0 = time.perf_counter()
    status = train(cfg)
    if status:
        raise SystemExit(f"training stopped (status {status}); rerun the same command to continue")
    (run / "done").write_text(json.dumps({"seconds_this_run": round(time.perf_counter() - t0, 1)}))
    return latest_checkpoint(run)

"""``cwdm train``: train a cWDM for one target contrast, resumable, on CPU, one GPU or several.

Flags use the reference implementation's names where the concept is the same
(``--data_dir``, ``--contr``, ``--lr``, ``--batch_size``, ``--num_channels``,
``--channel_mult``, ``--num_res_blocks``, ``--save_interval``,
``--resume_checkpoint``, ``--additive_skips``). Under
``torchrun --nproc_per_node N`` it trains with DistributedDataParallel; only
rank 0 writes logs and checkpoints.
"""

from __future__ import annotations

import signal
import sys
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Optional, Tuple

import torch
from torch.utils.data import DataLoader

from . import MODALITIES
from .config import from_dict, to_dict
from .diffusion import linear_schedule, training_loss
from .errors import CwdmError
from .naming import canonical_contrast
from .nifti_io import check_destination
from .runtime import (autocast, cleanup_distributed, dist_from_env, init_distributed, memory_format,
                      select_device)
from .train_state import EMA, DataOrder, checkpoint_files, latest_checkpoint, save_checkpoint
from .unet import NetworkFlags, UNet, UNetConfig
from .wavelet import to_subbands

HELP = "train a conditional wavelet diffusion model for one target contrast"


@dataclass
class TrainConfig(NetworkFlags):
    data_dir: Path = field(default=Path("data/training"), metadata={"help": "BraTS-layout training folder"})
    contr: str = field(default="t1n", metadata={"help": "target contrast to synthesize"})
    modalities: Tuple[str, ...] = field(default=MODALITIES, metadata={"help": "modality names (canonical order)"})
    run_dir: Optional[Path] = field(default=None, metadata={"help": "run directory (default runs/<contr>)"})
    resume: Optional[str] = field(default=None, metadata={"help": "checkpoint path, or 'auto' for the run's latest"})
    use_checkpoint: bool = field(default=False, metadata={"help": "gradient checkpointing (less memory)"})
    # optimization
    lr: float = field(default=1e-5, metadata={"help": "AdamW learning rate"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    batch_size: int = field(default=1, metadata={"help": "volumes per step and process"})
    max_steps: int = field(default=1_200_000, metadata={"help": "stop after this many steps"})
    max_minutes: Optional[float] = field(default=None, metadata={"help": "also stop (and save) after this wall time"})
    ema_rate: float = field(default=0.9999, metadata={"help": "EMA decay of the kept weight average"})
    seed: int = field(default=0, metadata={"help": "seed of data order, timesteps and noise"})
    # bookkeeping
    save_interval: int = field(default=100_000, metadata={"help": "steps between checkpoints"})
    keep_last: int = field(default=3, metadata={"help": "checkpoints kept (0 = all)"})
    log_interval: int = field(default=100, metadata={"help": "steps between TensorBoard scalars"})
    image_interval: int = field(default=5000, metadata={"help": "steps between TensorBoard images (0 = never)"})
    num_workers: int = field(default=2, metadata={"help": "DataLoader worker processes"})
    check_data: str = field(default="header", metadata={
        "help": "validation before training: header (fast: files, shapes, affines), full (also every voxel), none",
        "choices": ["header", "full", "none"]})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda or cuda:N"})
    bf16: bool = field(default=True, metadata={"help": "bf16 autocast on CUDA (ignored on CPU)"})
    compile: bool = field(default=False, metadata={"help": "torch.compile the network (CUDA)"})
    channels_last: bool = field(default=False, metadata={
        "help": "channels-last layout on CUDA (0.65x the speed of the default on an H100)"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})

    def model_config(self) -> UNetConfig:
        return self.unet_config(len(self.modalities) - 1)


CONFIG = TrainConfig
ALIASES = {"model_channels": ["num_channels"], "resume": ["resume_checkpoint"], "max_steps": ["iterations"],
           "run_dir": ["out_dir"], "contr": ["target"]}
ARCH_FIELDS = ("contr", "modalities",
               *(f.name for f in fields(UNetConfig) if f.name in {g.name for g in fields(TrainConfig)}))
"""Settings a resume may not change: the target, the modalities (they fix ``in_channels``) and every
:class:`UNetConfig` field that is a training flag (they fix the tensors' shapes)."""


class StopFlag:
    """Turns SIGINT/SIGTERM into a request to save and stop after the current step."""

    def __init__(self):
        self.signal: Optional[int] = None
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signal is not None:  # second signal: give up at once
            raise KeyboardInterrupt
        self.signal = signum

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def resolve_resume(cfg: TrainConfig, run_dir: Path) -> Optional[Path]:
    """The checkpoint to resume from, or None for a fresh run (refusing to overwrite one)."""
    if cfg.resume in (None, ""):
        existing = checkpoint_files(run_dir)
        if existing:
            raise CwdmError(f"{run_dir} already holds a run (latest {existing[-1].name}); "
                            f"pass --resume auto to continue it or choose another --run_dir")
        return None
    if cfg.resume == "auto":
        return latest_checkpoint(run_dir)
    path = Path(cfg.resume)
    if not path.is_file():
        raise CwdmError(f"{path}: checkpoint to resume from not found")
    return path


def merge_resumed_config(cfg: TrainConfig, stored: dict, source: Path,
                         given: Optional[set] = None) -> Tuple[TrainConfig, list]:
    """The configuration of a resumed run, and notes on what the command line changed.

    Every setting comes from the checkpoint unless its flag was given on the
    command line (``given``; without it, a value different from the default
    counts as given). Architecture, target and modalities cannot change: a
    conflicting flag is an error.
    """
    old = from_dict(TrainConfig, stored)
    defaults = TrainConfig()
    if given is None:
        given = {f.name for f in fields(TrainConfig) if getattr(cfg, f.name) != getattr(defaults, f.name)}
    merged, notes = {}, []
    for f in fields(TrainConfig):
        name, mine, theirs = f.name, getattr(cfg, f.name), getattr(old, f.name)
        if name in ("resume", "run_dir") or (name in given and mine == theirs):
            continue
        if name not in given:
            merged[name] = theirs
        elif name in ARCH_FIELDS:
            raise CwdmError(f"{source}: the run was trained with {name} {theirs}, but {mine} was given")
        elif name not in ("max_steps", "max_minutes", "progress"):  # those change on every resume
            notes.append(f"{name} {theirs} -> {mine}")
    return replace(cfg, **merged), notes


def validate_config(cfg: TrainConfig) -> None:
    """One-line errors for values training cannot use."""
    rules = [(cfg.max_steps >= 1, "--max_steps must be at least 1"),
             (cfg.batch_size >= 1, "--batch_size must be at least 1"),
             (cfg.lr > 0, "--lr must be positive"),
             (cfg.weight_decay >= 0, "--weight_decay must be >= 0"),
             (0 <= cfg.ema_rate < 1, "--ema_rate must be in [0, 1)"),
             (cfg.save_interval >= 1, "--save_interval must be at least 1"),
             (cfg.log_interval >= 1, "--log_interval must be at least 1"),
             (cfg.image_interval >= 0, "--image_interval must be >= 0 (0 = never)"),
             (cfg.keep_last >= 0, "--keep_last must be >= 0 (0 = keep all)"),
             (cfg.num_workers >= 0, "--num_workers must be >= 0"),
             (cfg.max_minutes is None or cfg.max_minutes > 0, "--max_minutes must be positive"),
             (cfg.contr in cfg.modalities, f"--contr {cfg.contr} is not one of the modalities {list(cfg.modalities)}")]
    for ok, message in rules:
        if not ok:
            raise CwdmError(message)


def _build_data(cfg: TrainConfig, divisor: int, rank: int, world: int):
    from .data import PairedVolumeDataset, discover_cases

    cases = discover_cases(cfg.data_dir, cfg.modalities)
    dataset = PairedVolumeDataset(cases, cfg.contr, cfg.modalities, divisor, check=cfg.check_data,
                                  workers=max(1, cfg.num_workers))
    order = DataOrder(len(dataset), seed=cfg.seed, rank=rank, world=world)
    return dataset, order


def _loader(dataset, order: DataOrder, cfg: TrainConfig, device: torch.device):
    return DataLoader(dataset, batch_size=cfg.batch_size, sampler=order, num_workers=cfg.num_workers,
                      pin_memory=device.type == "cuda", persistent_workers=False, drop_last=False)


def train(cfg: TrainConfig) -> int:
    """Run training; returns the exit status (0 done, 130/143 stopped by a signal after saving)."""
    info = dist_from_env()
    device = select_device(cfg.device, info)
    init_distributed(device, info)
    try:
        # signals are caught from the start, so one arriving before the first step still saves cleanly
        with StopFlag() as stop:
            return _train(cfg, info, device, stop)
    finally:
        cleanup_distributed()


def _train(cfg: TrainConfig, info, device: torch.device, stop: StopFlag) -> int:
    from .train_log import TrainLogger

    from .checkpoint import check_state_dict, is_cwdm_checkpoint, read_checkpoint

    cfg.contr = canonical_contrast(cfg.contr, cfg.modalities)  # --contr flair -> t2f (BraTS 2021 names)
    validate_config(cfg)
    run_dir = Path(cfg.run_dir or Path("runs") / cfg.contr)
    check_destination(run_dir, "--run_dir")
    resume_path = resolve_resume(cfg, run_dir)
    state, init_weights, notes = None, None, []
    if resume_path is not None:
        state = read_checkpoint(resume_path)
        if is_cwdm_checkpoint(state):
            cfg, changed = merge_resumed_config(cfg, state["train_config"], resume_path, getattr(cfg, "_given", None))
            notes += [f"changed on resume: {c}" for c in changed]
            validate_config(cfg)
        else:  # a bare state_dict (e.g. released weights): fine-tune from it as a new run
            if checkpoint_files(run_dir):
                raise CwdmError(f"{resume_path} is a bare state_dict (weights only); starting a new run from it "
                                f"needs an empty --run_dir, but {run_dir} already holds a run")
            check_state_dict(state, cfg.model_config(), str(resume_path))
            init_weights, state = state, None
            notes.append(f"new run initialised from the weights of {resume_path} (bare state_dict: "
                         f"fresh optimizer, step 0)")
    mcfg = cfg.model_config()
    if state is not None and int(state["step"]) >= cfg.max_steps:
        if info.is_main:
            print(f"cwdm train: {resume_path} is already at step {state['step']} >= --max_steps {cfg.max_steps}; "
                  f"nothing to do (raise --max_steps to train longer)", file=sys.stderr)
        return 0
    dataset, order = _build_data(cfg, mcfg.image_divisor, info.rank, info.world_size)

    torch.manual_seed(cfg.seed)
    model = UNet(mcfg, use_checkpoint=cfg.use_checkpoint)
    ema = EMA(model, cfg.ema_rate)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator(device=device).manual_seed(cfg.seed * 1000 + info.rank)
    step = 0
    if init_weights is not None:
        model.load_state_dict(init_weights)
        ema.model.load_state_dict(init_weights)
    if state is not None:
        model.load_state_dict(state["model"])
        ema.model.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        order.load_state_dict(state["data_order"])
        gen.set_state(state["rng"]["generator"])
        torch.set_rng_state(state["rng"]["torch_cpu"])
        step = int(state["step"])
        for group in optimizer.param_groups:  # a changed --lr / --weight_decay applies from now on
            group["lr"], group["weight_decay"] = cfg.lr, cfg.weight_decay
    model.to(device, memory_format=memory_format(device, cfg.channels_last))
    ema.model.to(device)
    _move_optimizer(optimizer, device)
    net = model
    if info.enabled:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    if cfg.compile:
        net = torch.compile(net)
    schedule = linear_schedule()

    logger = TrainLogger(run_dir, cfg, mcfg, enabled=info.is_main, start_step=step, resumed_from=resume_path)
    for note in notes:
        logger.message(note)

    def snapshot() -> dict:
        return {"model_config": to_dict(mcfg), "train_config": to_dict(cfg), "target": cfg.contr,
                "modalities": list(cfg.modalities),
                "conditions": [m for m in cfg.modalities if m != cfg.contr], "step": step,
                "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "ema": {k: v.detach().cpu() for k, v in ema.model.state_dict().items()},
                "optimizer": _optimizer_to_cpu(optimizer.state_dict()), "data_order": order.state_dict(),
                "rng": {"generator": gen.get_state().cpu(), "torch_cpu": torch.get_rng_state()}}

    def save() -> None:
        if info.is_main:
            path = save_checkpoint(run_dir, snapshot(), step, cfg.keep_last)
            logger.saved(path)

    start = time.monotonic()
    status = 0
    batches = iter(_loader(dataset, order, cfg, device))
    model.train()
    while step < cfg.max_steps:
        try:
            target, cond = next(batches)
        except CwdmError as exc:  # a bad volume found while loading (also from a worker process)
            save()
            logger.close()
            text = str(exc)
            text = text.rpartition("CwdmError: ")[2] if "CwdmError: " in text else text
            raise CwdmError(f"{text.strip()} (checkpoint saved at step {step}; fix or remove the case, "
                            f"then continue with --resume auto)") from None
        target = target.to(device, non_blocking=True)
        cond = cond.to(device, non_blocking=True)
        x0 = to_subbands(target).contiguous(memory_format=memory_format(device, cfg.channels_last))
        c = to_subbands(cond).contiguous(memory_format=memory_format(device, cfg.channels_last))
        t = torch.randint(0, schedule.num_timesteps, (x0.shape[0],), device=device, generator=gen)
        noise = torch.randn(x0.shape, device=device, generator=gen)
        try:
            with autocast(device, cfg.bf16):
                loss, per_subband, pred = training_loss(net, schedule, x0, c, t, noise)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
        except torch.cuda.OutOfMemoryError:
            raise CwdmError(f"CUDA out of memory at batch size {cfg.batch_size}, volume "
                            f"{tuple(target.shape[2:])}: try --use_checkpoint True, --additive_skips True "
                            f"or a smaller --batch_size / --num_channels") from None
        optimizer.step()
        ema.update(model)
        order.advance(x0.shape[0])
        step += 1
        logger.step(step, loss, per_subband, optimizer.param_groups[0]["lr"], x0.shape[0] * info.world_size,
                    device, images=(cond, target, pred))
        signum = _agree(stop.signal or 0, info, device)
        if signum:
            save()
            status = 128 + signum
            logger.message(f"stopped by signal {signum} at step {step}; checkpoint saved")
            break
        out_of_time = cfg.max_minutes is not None and time.monotonic() - start > 60 * cfg.max_minutes
        if _agree(int(out_of_time), info, device):
            save()
            logger.message(f"time limit of {cfg.max_minutes} min reached at step {step}; checkpoint saved")
            break
        if step % cfg.save_interval == 0 or step == cfg.max_steps:
            save()
    logger.close()
    return status


def _agree(value: int, info, device: torch.device) -> int:
    """The largest ``value`` over all ranks, so every rank stops at the same step."""
    if not info.enabled:
        return value
    t = torch.tensor([value], device=device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return int(t.item())


def _optimizer_to_cpu(state: dict) -> dict:
    for s in state["state"].values():
        for k, v in s.items():
            if isinstance(v, torch.Tensor):
                s[k] = v.detach().cpu()
    return state


def _move_optimizer(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    for s in optimizer.state.values():
        for k, v in s.items():
            if isinstance(v, torch.Tensor) and k != "step":
                s[k] = v.to(device)


def run(cfg: TrainConfig) -> int:
    return train(cfg)

"""The training library under ``cwdm train`` (and ``cwdm demo``): resumable training on CPU, one GPU
or several.

* :func:`plan_run`: settle the run folder, what to resume from and the merged settings;
* :func:`build_parts`: network, EMA, optimizer and generator, fresh or restored;
* :func:`train_step`: one optimisation step (``benchmarks/bench_train.py`` times it);
* :func:`training_checkpoint`: the checkpoint dictionary of a run;
* :func:`train`: the whole run. Under ``torchrun --nproc_per_node N`` it trains
  with DistributedDataParallel; only rank 0 writes logs and checkpoints. A run
  that fails before its first step (``--compile True`` without a C++ compiler,
  a full disk) removes the run folder it created; ``--resume auto`` in a folder
  without a checkpoint starts the run of its ``config.json`` again from step 0
  (:func:`cwdm.training.resume.restart_settings`).

The training set and batches come from :mod:`cwdm.training.inputs`; the checkpoint a run continues
from, from :mod:`cwdm.training.resume`.

Other runs over the same machinery (``cwdm distill``: :mod:`cwdm.commands.distill`) pass
:func:`train` their own planner, whose :class:`RunPlan` names the command, the optimisation step,
the data and further checkpoint entries.
"""

from __future__ import annotations

import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from ..model.checkpoint import checkpoint_dict
from ..model.prediction import X0, Prediction
from ..config import to_dict
from ..model.diffusion import Schedule, linear_schedule, region_weight, training_loss
from ..errors import CwdmError
from ..naming import canonical_contrast
from ..writes import check_destination, remove_stale_temporaries
from ..runtime import (CompileFailed, agree_max, autocast, cleanup_distributed, dist_from_env, init_distributed,
                      is_compiler_error, memory_format, select_device)
from .state import (EMA, DataOrder, TrainingParts, checkpoint_files, latest_checkpoint, move_optimizer,
                          optimizer_to_cpu, save_checkpoint)
from .config import TrainConfig, merge_resumed_config, validate_config
from .inputs import SIGMA_CASES, build_data, make_loader, measure_sigma_data
from .resume import restart_settings, resolve_resume, resume_command
from ..model.unet import UNet
from ..data.unified import condition_input, draw_training_inputs
from ..model.wavelet import to_subbands


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


def train(cfg: TrainConfig, continue_with: Optional[str] = None,
          planner: Optional[Callable[[Any], "RunPlan"]] = None) -> int:
    """Run training; returns the exit status (0 done, 130/143 stopped by a signal after saving).

    ``continue_with`` is the command a stopped run's messages print to go on (default: this run's
    ``cwdm train --resume auto``; ``cwdm demo`` passes its own command line). ``planner`` turns ``cfg``
    (anything with a ``device``) into the :class:`RunPlan` (default :func:`plan_run`)."""
    info = dist_from_env()
    device = select_device(cfg.device, info)
    init_distributed(device, info)
    try:
        # signals are caught from the start, so one arriving before the first step still saves cleanly
        with StopFlag() as stop:
            return _train(cfg, info, device, stop, continue_with, planner or plan_run)
    finally:
        cleanup_distributed()


@dataclass
class RunPlan:
    """Where a training run starts from, settled before anything is built or written."""

    cfg: TrainConfig  # the run's settings (a resumed run's, with the flags given now)
    run_dir: Path
    resume_path: Optional[Path] = None  # the checkpoint or state_dict it starts from
    state: Optional[dict] = None  # a cwdm checkpoint: resume exactly
    init_weights: Optional[dict] = None  # a bare state_dict: a new run from these weights
    start_step: int = 0  # step a new run starts at (--resume_step with a bare state_dict)
    notes: List[str] = field(default_factory=list)  # what differs from a plain new run / resume
    continue_with: str = ""  # the command that goes on after a stop (set by :func:`train`)
    command: str = "train"  # how the run's messages name it
    step: Optional[Callable] = None  # the optimisation step, called as train_step (None: train_step)
    data: Optional[Callable] = None  # (cfg, divisor, rank, world) -> (dataset, DataOrder); None: the training pairs
    entries: Dict[str, Any] = field(default_factory=dict)  # further entries of every checkpoint and config.json


def plan_run(cfg: TrainConfig) -> RunPlan:
    """Validate ``cfg``, find what to resume from and merge a resumed run's settings."""
    from ..model.checkpoint import check_state_dict, is_cwdm_checkpoint, read_checkpoint

    cfg.contr = canonical_contrast(cfg.contr, cfg.modalities)  # --contr flair -> t2f (BraTS 2021 names)
    validate_config(cfg)
    run_dir = cfg.run_folder()
    check_destination(run_dir, "--run_dir")
    plan = RunPlan(cfg, run_dir, resolve_resume(cfg, run_dir))
    if plan.resume_path is None and cfg.resume == "auto":
        plan.cfg, plan.notes = restart_settings(cfg, run_dir)
        validate_config(plan.cfg)
    if plan.resume_path is None:
        if cfg.resume_step:
            raise CwdmError(f"--resume_step {cfg.resume_step} needs the weights it counts: give the state_dict "
                            f"trained that many steps with --resume_checkpoint (or --resume)")
        return plan
    state = read_checkpoint(plan.resume_path)
    if is_cwdm_checkpoint(state) and state.get("distill_config") is not None:
        raise CwdmError(f"{plan.resume_path}: a checkpoint of a distillation run; continue it with cwdm distill "
                        f"--run_dir {run_dir} --resume auto")
    if is_cwdm_checkpoint(state) and state.get("train_config") is None:
        raise CwdmError(f"{plan.resume_path}: an exported checkpoint (weights and task, no training state); "
                        f"resume from the run's checkpoints/ckpt_<step>.pt instead")
    if is_cwdm_checkpoint(state):
        asked = cfg.resume_step
        plan.cfg, changed = merge_resumed_config(cfg, state["train_config"], plan.resume_path,
                                                 cfg.flags_given)
        plan.notes += [f"changed on resume: {c}" for c in changed]
        if asked and asked != int(state["step"]):
            plan.notes.append(f"note: --resume_step {asked} ignored: {plan.resume_path} is a cwdm checkpoint "
                              f"and its stored step {int(state['step'])} wins")
        validate_config(plan.cfg)
        plan.state = state
    else:  # a bare state_dict (e.g. released weights): fine-tune from it as a new run
        if checkpoint_files(run_dir):
            raise CwdmError(f"{plan.resume_path} is a bare state_dict (weights only); starting a new run from it "
                            f"needs an empty --run_dir, but {run_dir} already holds a run")
        check_state_dict(state, cfg.model_config(), str(plan.resume_path))
        plan.init_weights = state
        plan.start_step = cfg.resume_step
        plan.notes.append(f"new run initialised from the weights of {plan.resume_path} (bare state_dict: "
                          f"fresh optimizer, step {cfg.resume_step}"
                          f"{' from --resume_step' if cfg.resume_step else ''})")
    return plan


def build_parts(plan: RunPlan, order: DataOrder, device: torch.device, info) -> TrainingParts:
    """Network, EMA, optimizer and generator: fresh (seeded), from ``plan.init_weights``, or as in
    ``plan.state`` (which also restores ``order`` and the CPU RNG), then moved to ``device``."""
    cfg, state = plan.cfg, plan.state
    torch.manual_seed(cfg.seed)
    model = UNet(cfg.model_config(), use_checkpoint=cfg.use_checkpoint)
    ema = EMA(model, cfg.ema_rate)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    parts = TrainingParts(model, model, ema, optimizer, torch.Generator(device=device).manual_seed(
        cfg.seed * 1000 + info.rank))
    if plan.init_weights is not None:
        model.load_state_dict(plan.init_weights)
        ema.model.load_state_dict(plan.init_weights)
        parts.step = plan.start_step
    if state is not None:
        model.load_state_dict(state["model"])
        ema.model.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        order.load_state_dict(state["data_order"])
        parts.generator.set_state(state["rng"]["generator"])
        torch.set_rng_state(state["rng"]["torch_cpu"])
        parts.step = int(state["step"])
        for group in optimizer.param_groups:  # a changed --lr / --weight_decay applies from now on
            group["lr"], group["weight_decay"] = cfg.lr, cfg.weight_decay
    model.to(device, memory_format=memory_format(device, cfg.channels_last))
    ema.model.to(device)
    move_optimizer(optimizer, device)
    if info.enabled:
        parts.net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device] if device.type == "cuda" else None)
    if cfg.compile:
        parts.net = torch.compile(parts.net)
    return parts


def sample_timesteps(num_timesteps: int, batch: int, generator: torch.Generator, device: torch.device,
                     power: float = 1.0) -> torch.Tensor:
    """(batch,) training timesteps in [0, num_timesteps): uniform for ``power`` 1 (the draw the reference
    makes), else ``floor(num_timesteps * u ** power)``, ``u`` uniform in [0, 1): the share below ``t``
    is ``(t / num_timesteps) ** (1 / power)`` (power 3: 46 % of the draws below t = 100)."""
    if power == 1.0:
        return torch.randint(0, num_timesteps, (batch,), device=device, generator=generator)
    u = torch.rand((batch,), device=device, generator=generator, dtype=torch.float64)
    return (num_timesteps * u ** power).long().clamp_(0, num_timesteps - 1)


def train_step(parts: TrainingParts, schedule: Schedule, target: torch.Tensor, cond: torch.Tensor,
               bf16: bool = True, layout: torch.memory_format = torch.contiguous_format,
               lr: Optional[float] = None, identity: Optional[torch.Tensor] = None,
               timestep_power: float = 1.0, prediction: Prediction = X0,
               weight: Optional[torch.Tensor] = None):
    """One optimisation step on a batch: noise, forward, backward, AdamW, EMA; ``parts.step`` += 1.

    Args:
        parts: the network, EMA, optimizer and generator (timestep and noise draws).
        schedule: the diffusion schedule of the noising.
        target: (B, 1, X, Y, Z) target images on the training device.
        cond: (B, C, X, Y, Z) condition volumes, same device.
        bf16: bf16 autocast of the forward pass on CUDA (ignored on CPU).
        layout: memory format of the network input.
        lr: learning rate of this step (None: leave the optimizer's as it is).
        identity: (B, M) target identity of a unified network (:mod:`cwdm.data.unified`), else None.
        timestep_power: timesteps are drawn uniformly (1, the reference), or as ``floor(T u^p)`` with
            ``u`` uniform in [0, 1) (p > 1: more steps at low noise, where the network must read x_t).
        prediction: what the network's output means (:mod:`cwdm.model.prediction`).
        weight: (B, 1, X/2, Y/2, Z/2) loss weight per subband voxel (:func:`region_weight`), or None.

    Returns:
        ``(loss (), per_subband (8,), prediction (B, 8, X/2, Y/2, Z/2))``.
    """
    device = target.device
    x0 = to_subbands(target).contiguous(memory_format=layout)
    c = condition_input(cond, identity).contiguous(memory_format=layout)
    t = sample_timesteps(schedule.num_timesteps, x0.shape[0], parts.generator, device, timestep_power)
    noise = torch.randn(x0.shape, device=device, generator=parts.generator)
    with autocast(device, bf16):
        loss, per_subband, pred = training_loss(parts.net, schedule, x0, c, t, noise, prediction, weight)
    optimizer_step(parts, loss, lr)
    return loss, per_subband, pred


def optimizer_step(parts: TrainingParts, loss: torch.Tensor, lr: Optional[float] = None) -> None:
    """Backward ``loss`` (a scalar), AdamW at ``lr`` (None: the optimizer's), EMA; ``parts.step`` += 1."""
    parts.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if lr is not None:
        for group in parts.optimizer.param_groups:
            group["lr"] = lr
    parts.optimizer.step()
    parts.ema.update(parts.model)
    parts.step += 1


def training_checkpoint(cfg: TrainConfig, parts: TrainingParts, order: DataOrder, **entries: Any) -> dict:
    """The checkpoint of a run at its current step (CPU tensors; see :mod:`cwdm.training.state`), with
    further ``entries`` (:attr:`RunPlan.entries`)."""
    def cpu(module: torch.nn.Module) -> dict:
        return {k: v.detach().cpu() for k, v in module.state_dict().items()}

    return checkpoint_dict(cfg.model_config(), cpu(parts.model), cpu(parts.ema.model), task=cfg.task(),
                           prediction=cfg.prediction_spec(),
                           train_config=to_dict(cfg), step=parts.step,
                           optimizer=optimizer_to_cpu(parts.optimizer.state_dict()),
                           data_order=order.state_dict(), rng=parts.rng_state(), **entries)


def _train(cfg: TrainConfig, info, device: torch.device, stop: StopFlag, continue_with: Optional[str] = None,
           planner: Callable[[Any], "RunPlan"] = plan_run) -> int:
    plan = planner(cfg)
    plan.continue_with = continue_with or resume_command(plan.run_dir)
    cfg = plan.cfg
    start = int(plan.state["step"]) if plan.state is not None else plan.start_step
    if plan.resume_path is not None and start >= cfg.step_limit:
        if info.is_main:
            print(f"cwdm {plan.command}: {plan.resume_path} is already at step {start} >= the step limit "
                  f"{cfg.step_limit} (--max_steps / --lr_anneal_steps); nothing to do (raise it to train longer)",
                  file=sys.stderr)
        return 0
    new_folders = []  # what this run creates, removed again when it fails before its first step
    if info.is_main:
        for folder in (plan.run_dir, plan.run_dir / "checkpoints"):
            remove_stale_temporaries(folder, again=True)
        new_folders = [Path(d) for d in (plan.run_dir, cfg.tensorboard_dir) if d is not None and not Path(d).exists()]
    progress: List[TrainingParts] = []
    try:
        return _run(plan, info, device, stop, progress)
    except Exception as exc:
        created = [d for d in new_folders if d.exists()]
        if not created or checkpoint_files(plan.run_dir) or (progress and progress[0].step > start):
            raise
        for folder in created:
            shutil.rmtree(folder, ignore_errors=True)
        if isinstance(exc, CwdmError):
            raise CwdmError(f"{exc} (the new run folder {plan.run_dir} was removed again)") from None
        raise


def _run(plan: RunPlan, info, device: torch.device, stop: StopFlag, progress: List[TrainingParts]) -> int:
    """Build the data, the network and the logger of ``plan`` and train (``progress`` gets the parts)."""
    from .log import TrainLogger, training_grid

    cfg = plan.cfg
    dataset, order = (plan.data or build_data)(cfg, cfg.model_config().image_divisor, info.rank, info.world_size)
    if cfg.prediction != "x0" and not cfg.sigma_data:  # a new run: the data's scale, then kept in its config
        cfg.sigma_data = measure_sigma_data(dataset)
        plan.notes.append(f"--prediction {cfg.prediction}: sigma_data per subband measured on "
                          f"{min(len(dataset), SIGMA_CASES)} training cases: {' '.join(map(str, cfg.sigma_data))}")
    parts = build_parts(plan, order, device, info)
    progress.append(parts)
    logger = TrainLogger(plan.run_dir, cfg, cfg.model_config(), enabled=info.is_main, start_step=parts.step,
                         resumed_from=plan.resume_path, device=device,
                         grid=training_grid(dataset, cfg.model_config().image_divisor), command=plan.command,
                         extra=plan.entries)
    for note in plan.notes:
        logger.message(note)

    def save() -> None:
        if not info.is_main:
            return
        try:
            path = save_checkpoint(plan.run_dir, training_checkpoint(cfg, parts, order, **plan.entries), parts.step,
                                   cfg.keep_last)
        except CwdmError as exc:  # full disk, read-only place: say what is kept and how to go on
            latest = latest_checkpoint(plan.run_dir)
            kept = f"the latest saved checkpoint is {latest}" if latest else "no checkpoint was saved yet"
            raise CwdmError(f"{exc}; training stopped at step {parts.step}, {kept}; continue with: "
                            f"{plan.continue_with}") from None
        logger.saved(path)

    try:
        return _loop(cfg, parts, iter(make_loader(dataset, order, cfg, device)), order, device, info, stop, logger, save,
                     plan.continue_with, plan.step or train_step)
    finally:
        logger.close()


def _next_batch(batches, parts: TrainingParts, save) -> Tuple[torch.Tensor, torch.Tensor]:
    """The next (target, cond) batch; a bad volume met while loading saves and stops with one line."""
    try:
        return next(batches)
    except CwdmError as exc:  # a bad volume found while loading (also from a worker process)
        save()
        text = str(exc)
        text = text.rpartition("CwdmError: ")[2] if "CwdmError: " in text else text
        raise CwdmError(f"{text.strip()} (checkpoint saved at step {parts.step}; fix or remove the case, "
                        f"then continue with --resume auto)") from None


def _loop(cfg: TrainConfig, parts: TrainingParts, batches, order: DataOrder, device: torch.device, info,
          stop: StopFlag, logger, save, continue_with: str = "", step: Callable = None) -> int:
    """Train until ``cfg.step_limit``, a signal or the time limit, saving as asked; returns the exit status.
    A stop by a signal prints ``continue_with`` (default: the run's ``--resume auto`` command); ``step``
    is the optimisation step, called as :func:`train_step` (default)."""
    schedule, layout = linear_schedule(), memory_format(device, cfg.channels_last)
    start = time.monotonic()
    parts.model.train()
    task = cfg.task()
    while parts.step < cfg.step_limit:
        target, cond = _next_batch(batches, parts, save)
        target, cond = target.to(device, non_blocking=True), cond.to(device, non_blocking=True)
        identity, weight = None, None
        if task.is_unified:  # the batch holds every modality: draw each case's target and inputs
            target, cond, identity = draw_training_inputs(target, parts.generator, task.drop_conditions)
        if task.fills_region and cfg.mask_weight != 1:  # the mask is the second condition
            weight = region_weight(cond[:, 1:2], cfg.mask_weight)
        try:
            loss, per_subband, pred = (step or train_step)(parts, schedule, target, cond, cfg.bf16, layout,
                                                 lr=cfg.lr_at(parts.step), identity=identity,
                                                 timestep_power=cfg.timestep_power,
                                                 prediction=cfg.prediction_spec(), weight=weight)
        except torch.cuda.OutOfMemoryError:
            raise CwdmError(f"CUDA out of memory at batch size {cfg.batch_size}, volume "
                            f"{tuple(target.shape[2:])}: try --use_checkpoint True, --additive_skips True "
                            f"or a smaller --batch_size / --num_channels") from None
        except Exception as exc:  # noqa: BLE001 - only the compiler's errors are rephrased
            if cfg.compile and is_compiler_error(exc):  # no C++ compiler, an inductor bug: one line
                raise CompileFailed(exc) from None
            raise
        order.advance(target.shape[0])
        logger.step(parts.step, loss, per_subband, parts.optimizer.param_groups[0]["lr"],
                    target.shape[0] * info.world_size, device, images=(cond, target, pred))
        signum = agree_max(stop.signal or 0, info, device)
        if signum:
            save()
            logger.message(f"stopped by signal {signum} at step {parts.step}; checkpoint saved; continue with: "
                           f"{continue_with or resume_command(logger.run_dir)}")
            return 128 + signum
        out_of_time = cfg.max_minutes is not None and time.monotonic() - start > 60 * cfg.max_minutes
        if agree_max(int(out_of_time), info, device):
            save()
            logger.message(f"time limit of {cfg.max_minutes} min reached at step {parts.step}; checkpoint saved")
            return 0
        if parts.step % cfg.save_interval == 0 or parts.step == cfg.step_limit:
            save()
    return 0

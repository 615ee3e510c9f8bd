"""``cwdm distill``: a student that samples in 1 or 2 network calls what the teacher samples in N.

The student has the teacher's network, task and output parameterization and starts from its (EMA)
weights; it learns the teacher's deterministic DDIM map from noise to sample
(:mod:`cwdm.training.distill`), so its samples keep the teacher's variety. Its checkpoints are
ordinary cwdm checkpoints that record the sampler they were trained for
(``"sampler": {"name": "ddim_trailing", "steps": K}``) and where they come from
(``"distilled_from"``: the teacher's path and sha256, its DDIM steps and timesteps); ``cwdm sample``,
``cwdm auto`` and the API use that sampler when none is chosen.

The run is a training run (:mod:`cwdm.training.loop`, through its planner hook): the same run
folder (``checkpoints/ckpt_<step>.pt``, ``config.json``, ``tb/``), EMA, exact ``--resume auto``,
saving on Ctrl-C, bf16 autocast on CUDA and DDP under ``torchrun``. The teacher is read once,
never written, and must be the same file (sha256) when a run is resumed.
"""

from __future__ import annotations

import sys
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from shlex import quote
from typing import FrozenSet, Optional, Tuple

from ..config import given_field, to_dict
from ..errors import CwdmError
from ..naming import ANY, MODALITIES
from ..training.config import TrainConfig, merge_resumed_config, validate_config
from ..training.distill import STUDENT_SAMPLER, STUDENT_STEPS, TEACHER_SAMPLER, DistillStep
from ..training.loop import RunPlan, train
from ..training.resume import restart_settings, resolve_resume
from ..task import Task
from ..model.flags import NetworkFlags
from ..model.unet import UNetConfig

__all__ = ["HELP", "CONFIG", "run", "DistillConfig", "plan_distill"]

HELP = "distill a trained checkpoint into a student that samples in 1 or 2 network calls"

_TRAIN = {f.name: f for f in fields(TrainConfig)}


def _as_in_train(name: str, default=MISSING):
    """A field declared as :class:`TrainConfig`'s ``name`` (its help), with its default or ``default``."""
    f = _TRAIN[name]
    return field(default=f.default if default is MISSING else default, metadata=f.metadata)


@dataclass
class DistillConfig:
    """``cwdm distill``'s flags: the teacher and the student, and the training flags that apply."""

    teacher: Optional[Path] = field(default=None, metadata={
        "help": "the checkpoint to distill: a cwdm checkpoint or a released state_dict (its EMA weights; "
                "read once, never written)"})
    data_dir: Path = field(default=Path("data/training"), metadata={
        "help": "BraTS-layout folder whose cases give the conditions (their targets are not used)"})
    run_dir: Optional[Path] = field(default=None, metadata={
        "help": "run directory (default runs/<teacher file name>_distill<K>)"})
    student_steps: int = field(default=1, metadata={"help": "network calls of the student: 1 or 2"})
    teacher_steps: int = field(default=20, metadata={
        "help": "DDIM calls of the teacher (deterministic) whose samples the student learns to match"})
    contr: Optional[str] = field(default=None, metadata={
        "help": "a released state_dict teacher's target (default: from its file name; a cwdm checkpoint "
                "says its own)"})
    modalities: Tuple[str, ...] = field(default=MODALITIES, metadata={"help": "modality names"})
    num_groups: int = field(default=32, metadata={
        "help": "GroupNorm groups of a released state_dict teacher (a cwdm checkpoint records its own)"})
    resume: Optional[str] = _as_in_train("resume")
    lr: float = _as_in_train("lr")
    weight_decay: float = _as_in_train("weight_decay")
    batch_size: int = _as_in_train("batch_size")
    max_steps: int = _as_in_train("max_steps", 20_000)
    max_minutes: Optional[float] = _as_in_train("max_minutes")
    ema_rate: float = _as_in_train("ema_rate", 0.999)
    seed: int = _as_in_train("seed")
    save_interval: int = _as_in_train("save_interval", 1000)
    keep_last: int = _as_in_train("keep_last")
    log_interval: int = _as_in_train("log_interval")
    num_workers: int = _as_in_train("num_workers")
    check_data: str = _as_in_train("check_data")
    use_checkpoint: bool = _as_in_train("use_checkpoint")
    device: str = _as_in_train("device")
    bf16: bool = field(default=True, metadata={
        "help": "bf16 autocast on CUDA for the teacher's and the student's network calls (ignored on CPU)"})
    progress: bool = _as_in_train("progress")
    tensorboard: bool = _as_in_train("tensorboard")
    # the flags typed on the command line (not a flag, not stored): what a resumed run takes from them
    flags_given: Optional[FrozenSet[str]] = given_field()

    def run_folder(self) -> Path:
        """``run_dir``, or ``runs/<teacher file name>_distill<K>``."""
        if self.run_dir is not None:
            return Path(self.run_dir)
        if self.teacher is None:
            raise CwdmError("give --run_dir (to continue a run) or --teacher (to start one)")
        return Path("runs") / f"{Path(self.teacher).stem}_distill{self.student_steps}"


CONFIG = DistillConfig
# what it writes (checked before it starts): (config field, "dir" or "file")
DESTINATIONS = [("run_dir", "dir")]
ALIASES = {"max_steps": ["iterations"], "resume": ["resume_checkpoint"]}

FIXED = ("student_steps", "teacher_steps", "contr", "modalities", "num_groups")
"""Settings a resumed run may not change (the teacher itself must be the same file: its sha256)."""


def validate(cfg: DistillConfig) -> None:
    """One-line errors for values a distillation cannot use (the training ones as ``cwdm train`` says them)."""
    if cfg.student_steps not in STUDENT_STEPS:
        raise CwdmError(f"--student_steps must be 1 or 2, got {cfg.student_steps}")
    if not cfg.student_steps <= cfg.teacher_steps <= 1000:
        raise CwdmError(f"--teacher_steps must be in {cfg.student_steps}..1000 (at least --student_steps "
                        f"{cfg.student_steps}), got {cfg.teacher_steps}")
    validate_config(TrainConfig(**_shared(cfg), modalities=tuple(cfg.modalities), contr=ANY))


def _shared(cfg: DistillConfig) -> dict:
    """The values of ``cfg``'s fields that are :class:`TrainConfig`'s too (its run settings)."""
    skip = {"modalities", "contr", "num_groups", "run_dir", "resume", "flags_given"}
    return {f.name: getattr(cfg, f.name) for f in fields(DistillConfig) if f.name in _TRAIN and f.name not in skip}


@dataclass
class StudentTrainConfig(TrainConfig):
    """The training loop's view of a distillation run: :class:`TrainConfig` with the teacher's task and
    network (:meth:`task`, :meth:`model_config`), which no flag changes."""

    teacher_task: Optional[Task] = field(default=None, metadata={"cli": False, "stored": False})
    teacher_network: Optional[UNetConfig] = field(default=None, metadata={"cli": False, "stored": False})

    def task(self) -> Task:
        return self.teacher_task

    def model_config(self) -> UNetConfig:
        return self.teacher_network


def loop_config(cfg: DistillConfig, task: Task, network: UNetConfig, prediction) -> StudentTrainConfig:
    """The :class:`StudentTrainConfig` of a distillation run with the teacher's ``task``, ``network`` and
    ``prediction`` (no TensorBoard images: the loop has no target volumes to show)."""
    labels = tuple(f"{name}={','.join(map(str, values))}" for name, values in task.label_maps.items())
    special = task.is_unified or task.fills_region
    region = dict(insertion=True, insertion_margin=task.insert_margin) if task.is_insertion else {}
    described = dict(contr=task.target, modalities=tuple(cfg.modalities if task.fills_region else task.modalities),
                     label_maps=() if special else labels,
                     conditions=() if special else tuple(task.condition_names), inpainting=task.is_inpainting, **region,
                     drop_conditions=task.drop_conditions if task.is_unified else False)
    net = {f.name: getattr(network, f.name) for f in fields(NetworkFlags)}
    return StudentTrainConfig(**_shared(cfg), **described, **net, run_dir=cfg.run_folder(), resume=cfg.resume,
                              prediction=prediction.kind, sigma_data=prediction.sigma_data, image_interval=0,
                              teacher_task=task, teacher_network=network)


def load_teacher(cfg: DistillConfig):
    """The teacher (on the CPU, EMA weights), its task and the file's sha256; one-line errors."""
    from ..inference.flags import ModelFlags
    from ..inference.provenance import sha256_file
    from ..inference.steps import resolve_model

    if cfg.teacher is None:
        raise CwdmError("--teacher is required: the cwdm checkpoint or released state_dict to distill")
    path = Path(cfg.teacher)
    if not path.is_file():
        raise CwdmError(f"{path}: teacher checkpoint not found" + (" (a folder)" if path.is_dir() else ""))
    flags = ModelFlags(num_groups=cfg.num_groups, flags_given=frozenset())
    loaded, task = resolve_model(path, cfg.contr, tuple(cfg.modalities), flags, ema=True, device="cpu")
    recorded = loaded.meta.get("sampler")
    if recorded is not None:
        raise CwdmError(f"{path}: a distilled student (it samples with {recorded['name']} in {recorded['steps']} "
                        f"calls); distill its teacher instead")
    return loaded, task, sha256_file(path)


def plan_distill(cfg: DistillConfig) -> RunPlan:
    """Settle a distillation run before anything is written: its settings (a resumed run's merged with
    the flags given now), the teacher, what it resumes from, and the loop's hooks."""
    from ..model.checkpoint import is_cwdm_checkpoint, read_checkpoint
    from ..writes import check_destination

    if cfg.teacher is not None:
        cfg.teacher = Path(cfg.teacher).resolve()
    validate(cfg)
    run_dir = cfg.run_folder()
    check_destination(run_dir, "--run_dir")
    resume_path, state, notes = resolve_resume(cfg, run_dir), None, []
    if resume_path is not None:
        state = read_checkpoint(resume_path)
        stored = state.get("distill_config") if is_cwdm_checkpoint(state) else None
        if stored is None:
            raise CwdmError(f"{resume_path}: not a checkpoint of a distillation run (it records no distill_config); "
                            f"start a new run in another --run_dir")
        cfg, changed = merge_resumed_config(cfg, stored, resume_path, cfg.flags_given, FIXED)
        notes += [f"changed on resume: {c}" for c in changed]
    elif cfg.resume == "auto":
        cfg, notes = restart_settings(cfg, run_dir, key="distill_config", fixed=FIXED)
    validate(cfg)
    loaded, task, sha = load_teacher(cfg)
    if state is not None and (state.get("distilled_from") or {}).get("sha256") != sha:
        raise CwdmError(f"{cfg.teacher}: not the teacher the run started from (sha256 {sha[:12]}, the run's "
                        f"{str((state.get('distilled_from') or {}).get('sha256'))[:12]}); give its teacher with "
                        f"--teacher")
    step = DistillStep(loaded.model, loaded.prediction, cfg.student_steps, cfg.teacher_steps)
    entries = {"distill_config": to_dict(cfg),
               "sampler": {"name": STUDENT_SAMPLER, "steps": cfg.student_steps},
               "distilled_from": {"teacher": str(cfg.teacher), "sha256": sha, "teacher_sampler": TEACHER_SAMPLER,
                                  "teacher_steps": cfg.teacher_steps, "teacher_timesteps": step.teacher_ts,
                                  "student_timesteps": step.student}}
    calls = "call" if cfg.student_steps == 1 else "calls"
    notes.append(f"distilling {cfg.teacher} (sha256 {sha[:12]}; {task.describe()}; predicts "
                 f"{loaded.prediction.kind}): the teacher's {TEACHER_SAMPLER} in {cfg.teacher_steps} calls into a "
                 f"student of {cfg.student_steps} {calls} at t = {', '.join(map(str, step.student))} "
                 f"(sampled as {STUDENT_SAMPLER} {cfg.student_steps})")
    plan = RunPlan(loop_config(cfg, task, loaded.config, loaded.prediction), run_dir, resume_path, state=state,
                   notes=notes, command="distill", step=step, data=distill_data, entries=entries)
    if state is None:  # a new run: the student starts as the teacher
        plan.init_weights = {k: v.detach().clone() for k, v in loaded.model.state_dict().items()}
    return plan


def distill_data(cfg: StudentTrainConfig, divisor: int, rank: int, world: int):
    """The cases' conditions and their order (a unified or inpainting teacher: as training reads its cases,
    every modality to draw the target from, or the region to fill drawn per item)."""
    from ..data.cases import discover_cases
    from ..data.datasets import ConditionDataset
    from ..training.inputs import build_data
    from ..training.state import DataOrder

    task = cfg.task()
    if task.is_unified or task.fills_region:
        return build_data(cfg, divisor, rank, world)
    cases = discover_cases(cfg.data_dir, task.modalities)
    try:
        dataset = ConditionDataset(cases, task, divisor, check=cfg.check_data, workers=max(1, cfg.num_workers))
    except CwdmError as exc:
        raise CwdmError(f"{cfg.data_dir}: the teacher takes {', '.join(task.condition_names)}: {exc}") from None
    return dataset, DataOrder(len(dataset), seed=cfg.seed, rank=rank, world=world)


def resume_command(run_dir: Path) -> str:
    """The command that continues a distillation run (it keeps all its settings)."""
    return f"cwdm distill --run_dir {quote(str(run_dir))} --resume auto"


def run(cfg: DistillConfig) -> int:
    """``cwdm distill``: train the student; returns the exit status (as ``cwdm train``'s)."""
    from ..runtime import dist_from_env
    from ..training.state import latest_checkpoint

    from ..model.checkpoint import read_checkpoint

    run_dir = cfg.run_folder()
    status = train(cfg, continue_with=resume_command(run_dir), planner=plan_distill)
    if dist_from_env().is_main:
        latest = latest_checkpoint(run_dir)
        if status != 0 or latest is None:
            print(f"cwdm distill: stopped; {run_dir}: latest checkpoint {latest}; continue with: "
                  f"{resume_command(run_dir)}", file=sys.stderr)
        else:
            name, sampler = f"{run_dir.name}.pt", read_checkpoint(latest)["sampler"]
            calls = f"{sampler['steps']} network call" + ("s" if sampler["steps"] > 1 else "")
            print(f"cwdm distill: {run_dir} distilled to step {int(latest.stem.rpartition('_')[2])}, latest "
                  f"checkpoint {latest} (samples with {sampler['name']} in {calls}); next: cwdm export "
                  f"{quote(str(run_dir))} {name}, then cwdm sample --data_dir VAL_DIR --model_path {name} "
                  f"--output_dir results (its sampler is used unless --sampler is given)", file=sys.stderr)
    return status


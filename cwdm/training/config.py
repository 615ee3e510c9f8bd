"""Settings of ``cwdm train``: the :class:`TrainConfig` flags, their checks, and how a resumed run's
stored settings merge with the flags given now."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import FrozenSet, Optional, Tuple

from ..naming import ANY, MODALITIES, canonical_contrast
from ..config import from_dict, given_field
from ..errors import CwdmError
from ..task import Task, parse_labels
from ..model.flags import NetworkFlags
from ..model.prediction import Prediction
from ..model.unet import UNetConfig


@dataclass
class TrainConfig(NetworkFlags):
    data_dir: Path = field(default=Path("data/training"), metadata={"help": "BraTS-layout training folder"})
    contr: str = field(default="t1n", metadata={
        "help": "target contrast to synthesize; 'any': one network for every modality (unified)"})
    modalities: Tuple[str, ...] = field(default=MODALITIES, metadata={"help": "modality names (canonical order)"})
    conditions: Tuple[str, ...] = field(default=(), metadata={
        "help": "the network's inputs in order (default: every modality but the target; may include seg)"})
    drop_conditions: bool = field(default=False, metadata={
        "help": "--contr any: also hide a random subset of the other modalities (at least one stays), so the "
                "network completes cases missing several"})
    label_maps: Tuple[str, ...] = field(default=(), metadata={
        "help": "conditions that are label maps, as NAME=L1,L2,... with the declared non-zero labels "
                "(e.g. seg=1,2,3); repeatable", "repeatable": True})
    inpainting: bool = field(default=False, metadata={
        "help": "train the inpainting task: fill a region of a t1n from the voided t1n and the region's mask "
                "(challenge layout, or t1n + seg cases; a healthy region is drawn per item)"})
    mask_weight: float = field(default=1.0, metadata={
        "help": "--inpainting / --insertion: weight of the masked region in the loss (1 + (W - 1) mask on the "
                "subband grid; 1 = plain MSE)"})
    insertion: bool = field(default=False, metadata={
        "help": "train tumour insertion: write a tumour of given labels (1, 2, 3) into a t1n, from the voided t1n, "
                "the region and the labels (t1n + seg cases; the region is the tumour dilated per item)"})
    insertion_margin: Tuple[int, ...] = field(default=(2, 5), metadata={
        "help": "--insertion: the region is the tumour dilated by a margin drawn per item in LO..HI voxels; "
                "sampling dilates a drawing by (LO + HI) // 2"})
    insertion_healthy: float = field(default=0.2, metadata={
        "help": "--insertion: fraction of items with a healthy region and no labels (as inpainting's), so the "
                "model also fills healthy tissue where a drawing is 0"})
    run_dir: Optional[Path] = field(default=None, metadata={
        "help": "run directory (default runs/<contr>; runs/inpainting with --inpainting, runs/insertion with "
                "--insertion)"})
    resume: Optional[str] = field(default=None, metadata={"help": "checkpoint path, or 'auto' for the run's latest"})
    resume_step: int = field(default=0, metadata={
        "help": "step count of the bare state_dict given with --resume (the reference's meaning): the new run "
                "starts at this step, so the lr annealing and the step limit continue from it; a cwdm "
                "checkpoint's stored step wins over it (with a note)"})
    use_checkpoint: bool = field(default=False, metadata={"help": "gradient checkpointing (less memory)"})
    # optimization
    lr: float = field(default=1e-5, metadata={"help": "AdamW learning rate"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    batch_size: int = field(default=1, metadata={"help": "volumes per step and process"})
    max_steps: int = field(default=1_200_000, metadata={"help": "stop after this many steps"})
    lr_anneal_steps: int = field(default=0, metadata={
        "help": "decay the learning rate linearly to 0 over this many steps and stop there "
                "(the reference's meaning; 0 = constant learning rate)"})
    max_minutes: Optional[float] = field(default=None, metadata={"help": "also stop (and save) after this wall time"})
    ema_rate: float = field(default=0.9999, metadata={"help": "EMA decay of the kept weight average"})
    seed: int = field(default=0, metadata={"help": "seed of data order, timesteps and noise"})
    prediction: str = field(default="x0", metadata={
        "help": "what the network outputs: x0 (the clean subbands; the reference and every released model) or "
                "edm (a correction to the best linear guess from x_t, so the estimate follows x_t at low noise: "
                "a network that must draw detail its conditions leave open; see cwdm.model.prediction)",
        "choices": ["x0", "edm"]})
    sigma_data: Tuple[float, ...] = field(default=(), metadata={
        "help": "--prediction edm: the data's scale per wavelet subband (8 values, or 1 for all); default: "
                "measured on the first training cases when the run starts, then kept"})
    timestep_power: float = field(default=1.0, metadata={
        "help": "training timesteps drawn as floor(1000 u^p), u uniform: 1 = uniform (the reference); "
                "p > 1 trains more at low noise, where a network must read x_t to draw detail the conditions "
                "leave open (3: 46 %% of steps below t = 100)"})
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
    # the flags typed on the command line (not a flag, not stored): what a resumed run takes from
    # the command line rather than from its checkpoint (None: values that differ from the defaults)
    flags_given: Optional[FrozenSet[str]] = given_field()
    compile: bool = field(default=False, metadata={
        "help": "torch.compile the network (CUDA; needs a C++ compiler, else one line at the first step)"})
    channels_last: bool = field(default=False, metadata={
        "help": "channels-last layout (0.65x the speed of the default on an H100)"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})
    tensorboard: bool = field(default=True, metadata={"help": "write TensorBoard logs (False: none)"})
    tensorboard_dir: Optional[Path] = field(default=None, metadata={
        "help": "TensorBoard log folder (default <run_dir>/tb)"})

    @property
    def step_limit(self) -> int:
        """The step training stops at: ``max_steps``, or ``lr_anneal_steps`` when that is set and smaller."""
        return min(self.max_steps, self.lr_anneal_steps) if self.lr_anneal_steps else self.max_steps

    def lr_at(self, step: int) -> float:
        """Learning rate of the optimizer step taken after ``step`` completed steps."""
        if not self.lr_anneal_steps:
            return self.lr
        return self.lr * max(0.0, 1.0 - step / self.lr_anneal_steps)

    def run_folder(self) -> Path:
        """``run_dir``, or its default ``runs/<contr>`` (``runs/inpainting`` for an inpainting run)."""
        if self.run_dir is not None:
            return Path(self.run_dir)
        if self.insertion:
            return Path("runs") / "insertion"
        return Path("runs") / ("inpainting" if self.inpainting else canonical_contrast(self.contr, self.modalities))

    def task(self) -> Task:
        """What the run's network maps (:class:`cwdm.task.Task`); one-line error if the flags contradict."""
        if self.insertion:
            if self.inpainting or self.contr != Task.insertion().target or self.conditions or self.label_maps \
                    or self.drop_conditions:
                raise CwdmError("--insertion True writes a tumour into a t1n from the voided t1n, the region and "
                                "the labels: drop --inpainting, --contr, --conditions, --label_maps and "
                                "--drop_conditions")
            return Task.insertion(tuple(int(v) for v in self.insertion_margin))
        if self.inpainting:
            if self.contr != Task.inpainting().target or self.conditions or self.label_maps or self.drop_conditions:
                raise CwdmError("--inpainting True fills a t1n from the voided t1n and its mask: drop --contr, "
                                "--conditions, --label_maps and --drop_conditions")
            return Task.inpainting()
        if self.contr == ANY:
            if self.conditions or self.label_maps:
                raise CwdmError("--contr any takes every modality as input: drop --conditions / --label_maps")
            return Task.unified(self.modalities, self.drop_conditions)
        if self.drop_conditions:
            raise CwdmError("--drop_conditions needs --contr any (one network for every modality)")
        return Task.default(self.contr, self.modalities, self.conditions or None, parse_labels(self.label_maps))

    def prediction_spec(self) -> Prediction:
        """What the network's output means (:class:`cwdm.model.prediction.Prediction`)."""
        return Prediction(self.prediction, self.sigma_data if self.prediction != "x0" else ())

    def model_config(self) -> UNetConfig:
        return replace(self.unet_config(0), in_channels=self.task().in_channels)


ARCH_FIELDS = ("contr", "modalities", "conditions", "label_maps", "drop_conditions", "inpainting", "insertion",
               "insertion_margin",
               "prediction", "sigma_data",
               *(f.name for f in fields(UNetConfig) if f.name in {g.name for g in fields(TrainConfig)}))
"""Settings a resume may not change: the task (target, modalities, conditions, label maps: they fix
``in_channels``) and every
:class:`UNetConfig` field that is a training flag (they fix the tensors' shapes)."""


def merge_resumed_config(cfg: TrainConfig, stored: dict, source: Path, given: Optional[set] = None,
                         fixed: Tuple[str, ...] = ARCH_FIELDS) -> Tuple[TrainConfig, list]:
    """The configuration of a resumed run, and notes on what the command line changed.

    Every setting comes from the checkpoint unless its flag was given on the
    command line (``given``; without it, a value different from the default
    counts as given). The ``fixed`` settings (default: architecture, target and
    modalities) cannot change: a conflicting flag is an error. ``cfg`` may be
    another command's config class (``cwdm distill``'s), with its own ``fixed``.
    """
    cls = type(cfg)
    old = from_dict(cls, stored)
    defaults = cls()
    if given is None:
        given = {f.name for f in fields(cls) if getattr(cfg, f.name) != getattr(defaults, f.name)}
    merged, notes = {}, []
    for f in fields(cls):
        name, mine, theirs = f.name, getattr(cfg, f.name), getattr(old, f.name)
        if name in ("resume", "run_dir", "flags_given") or (name in given and mine == theirs):
            continue
        if name == "resume_step":  # how the run started: kept; a given value is answered in plan_run
            merged[name] = theirs
            continue
        if name not in given:
            merged[name] = theirs
        elif name in fixed:
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
             (cfg.lr_anneal_steps >= 0, "--lr_anneal_steps must be >= 0 (0 = constant learning rate)"),
             (cfg.resume_step >= 0, "--resume_step must be >= 0"),
             (cfg.timestep_power > 0, "--timestep_power must be positive"),
             (cfg.prediction == "x0" or len(cfg.sigma_data) in (0, 1, 8),
              "--sigma_data takes 1 value or 8 (one per wavelet subband)"),
             (all(s > 0 for s in cfg.sigma_data), "--sigma_data values must be positive"),
             (cfg.mask_weight > 0, "--mask_weight must be positive"),
             (cfg.inpainting or cfg.insertion or cfg.mask_weight == 1,
              "--mask_weight weights the masked region: it needs --inpainting True or --insertion True"),
             (len(cfg.insertion_margin) == 2 and all(int(v) == v for v in cfg.insertion_margin)
              and 0 <= cfg.insertion_margin[0] <= cfg.insertion_margin[1],
              "--insertion_margin takes two whole numbers of voxels LO HI with 0 <= LO <= HI"),
             (0 <= cfg.insertion_healthy <= 1, "--insertion_healthy must be a fraction in [0, 1]"),
             (cfg.contr in (*cfg.modalities, ANY),
              f"--contr {cfg.contr} is not one of the modalities {list(cfg.modalities)} (or 'any')")]
    for ok, message in rules:
        if not ok:
            raise CwdmError(message)
    cfg.task()  # conditions and label maps

"""``cwdm export CKPT OUT.pt``: the weights of a training checkpoint, for inference.

``--format state_dict`` writes the plain ordered dict of tensors that the
reference implementation saves and loads (``model.load_state_dict(torch.load(path))``),
so a model trained with cwdm runs there, and in ``cwdm sample --model_path``
(which reads the network from the tensors; only ``--num_groups`` must match).
A bare state_dict cannot say what its network maps, nor its GroupNorm groups,
so by default (``--format auto``) a model that a bare state_dict would not
describe completely is written as a slim cwdm checkpoint: a task that is not
the released kind (chosen conditions, label maps, a unified ``--contr any``
model), or ``num_groups`` other than the released 32 (the CPU-sized networks
of the Quick tour and the demo). It holds the network configuration, the
chosen weights, the task and the step, no optimizer state, and loads back
everywhere cwdm takes a checkpoint without any network flag. A released-kind
model with 32 groups is exported as the bare state_dict. A distilled student (``cwdm distill``)
records the sampler it was trained for, which a bare state_dict cannot: ``auto`` writes it as a
cwdm checkpoint that keeps that entry (and ``distilled_from``); ``--format state_dict`` writes the
weights and says which sampler to give them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from shlex import quote

import torch

from ..model.prediction import Prediction
from ..model.checkpoint import checkpoint_dict, is_cwdm_checkpoint, read_checkpoint, stored_sampler, stored_task
from ..config import from_dict
from ..errors import CwdmError
from ..writes import atomic_path
from ..model.unet import RELEASED_CONFIG, UNetConfig

HELP = "write a training checkpoint's weights for inference (the released state_dict format, or with their task)"
FORMATS = ("auto", "state_dict", "cwdm")


@dataclass
class ExportConfig:
    checkpoint: Path = field(default=None, metadata={
        "positional": True, "help": "training checkpoint (.pt), or a run folder (its latest checkpoint)"})
    out: Path = field(default=None, metadata={"positional": True, "help": "output state_dict (.pt)"})
    ema: bool = field(default=True, metadata={"help": "export the EMA weights (else the raw weights)"})
    overwrite: bool = field(default=False, metadata={"help": "replace an existing output file"})
    format: str = field(default="auto", metadata={
        "help": "state_dict (the reference's format), cwdm (weights with their configuration and task), or "
                "auto: state_dict for a released-kind task with the released 32 GroupNorm groups, cwdm otherwise",
        "choices": list(FORMATS)})


CONFIG = ExportConfig
# what it writes (checked before it starts): (config field, "dir" or "file")
DESTINATIONS = [("out", "file")]


def resolve_checkpoint(path: Path) -> Path:
    """A checkpoint file as given; for a run folder (or its ``checkpoints/``) its latest checkpoint."""
    from ..training.state import latest_checkpoint

    if not path.is_dir():
        return path
    run_dir = path.parent if path.name == "checkpoints" and not (path / "checkpoints").is_dir() else path
    latest = latest_checkpoint(run_dir)
    if latest is None:
        raise CwdmError(f"{path}: a folder without training checkpoints (expected {run_dir}/checkpoints/"
                        f"ckpt_<step>.pt); give a checkpoint file or a run folder")
    return latest


def export_state_dict(checkpoint: Path, out: Path, ema: bool = True, overwrite: bool = False,
                      format: str = "auto") -> Path:
    """Write the model (or EMA) weights of a cwdm checkpoint as a bare state_dict or a slim cwdm checkpoint
    (``format``: see the module notes)."""
    if checkpoint is None or out is None:
        raise CwdmError("usage: cwdm export CHECKPOINT|RUN_DIR OUT.pt [--ema False]")
    checkpoint = resolve_checkpoint(Path(checkpoint))
    if Path(out).resolve() == Path(checkpoint).resolve():
        raise CwdmError(f"{out}: the output would replace the training checkpoint it is exported from")
    obj = read_checkpoint(checkpoint)
    if not is_cwdm_checkpoint(obj):
        raise CwdmError(f"{checkpoint}: not a cwdm training checkpoint (already a bare state_dict?)")
    key = "ema" if ema and obj.get("ema") is not None else "model"
    state = {k: v.contiguous() for k, v in obj[key].items()}
    task = stored_task(obj, str(checkpoint))
    prediction = Prediction.from_dict(obj.get("prediction"), str(checkpoint))
    sampler = stored_sampler(obj, str(checkpoint))  # a distilled student's
    if format == "state_dict" and task is not None and not task.is_default:
        raise CwdmError(f"{checkpoint}: its task ({task.describe()}) is not the released kind, and a bare "
                        f"state_dict cannot record it; use --format cwdm (or auto)")
    if format == "state_dict" and not prediction.is_x0:
        raise CwdmError(f"{checkpoint}: its network predicts {prediction.kind}, not x0 as released weights do, "
                        f"and a bare state_dict cannot record it; use --format cwdm (or auto)")
    config = from_dict(UNetConfig, obj["model_config"])
    groups = config.num_groups != RELEASED_CONFIG.num_groups  # the one network value a state_dict cannot record
    released_kind = (task is None or task.is_default) and prediction.is_x0
    if format == "cwdm" or (format == "auto" and (groups or not released_kind or sampler is not None)):
        origin = {"distilled_from": obj["distilled_from"]} if obj.get("distilled_from") is not None else {}
        state = checkpoint_dict(config, state, task=task, prediction=prediction, sampler=sampler,
                                step=obj.get("step"), **origin)
    out = Path(out)
    with atomic_path(out, overwrite=overwrite) as tmp:
        torch.save(state, tmp)
    bare = all(isinstance(v, torch.Tensor) for v in state.values())
    if bare:
        kind = "bare state_dict" + (f", loading it needs --num_groups {config.num_groups}" if groups else "")
    elif format == "auto":
        why = ("its task or output is not the released kind" if not released_kind else
               f"num_groups {config.num_groups} is not the released {RELEASED_CONFIG.num_groups}, which a bare "
               f"state_dict cannot record; --format state_dict writes one anyway" if groups else
               f"it records its sampler ({sampler['name']}, {sampler['steps']} steps), which a bare state_dict "
               f"cannot; --format state_dict writes one anyway")
        kind = f"cwdm checkpoint with its network configuration and task, as {why}"
    else:
        kind = "cwdm checkpoint with its network configuration and task"
    flags = f" --num_groups {config.num_groups}" if bare and groups else ""
    if bare and sampler is not None:  # the student's weights without the sampler they were trained for
        flags += f" --sampler {sampler['name']} --sampling_steps {sampler['steps']}"
    print(f"wrote {out} ({kind}: {key} weights of {checkpoint}, step {obj.get('step')}, target {obj.get('target')}, "
          f"model config {obj.get('model_config')}); next: cwdm sample --data_dir VAL_DIR --model_path "
          f"{quote(str(out))} --output_dir results{flags}")
    return out


def run(cfg: ExportConfig) -> int:
    export_state_dict(cfg.checkpoint, cfg.out, cfg.ema, cfg.overwrite, cfg.format)
    return 0

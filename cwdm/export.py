"""``cwdm export CKPT OUT.pt``: a bare state_dict in the released format.

The result is the plain ordered dict of tensors that the reference
implementation saves and loads (``model.load_state_dict(torch.load(path))``),
so a model trained with cwdm runs there, and in ``cwdm sample --model_path``
(which reads the network from the tensors; only ``--num_groups`` must match).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from shlex import quote

import torch

from .checkpoint import is_cwdm_checkpoint, read_checkpoint
from .errors import CwdmError
from .nifti_io import atomic_path

HELP = "write a bare state_dict in the released format from a training checkpoint"


@dataclass
class ExportConfig:
    checkpoint: Path = field(default=None, metadata={
        "positional": True, "help": "training checkpoint (.pt), or a run folder (its latest checkpoint)"})
    out: Path = field(default=None, metadata={"positional": True, "help": "output state_dict (.pt)"})
    ema: bool = field(default=True, metadata={"help": "export the EMA weights (else the raw weights)"})
    overwrite: bool = field(default=False, metadata={"help": "replace an existing output file"})


CONFIG = ExportConfig


def resolve_checkpoint(path: Path) -> Path:
    """A checkpoint file as given; for a run folder (or its ``checkpoints/``) its latest checkpoint."""
    from .train_state import latest_checkpoint

    if not path.is_dir():
        return path
    run_dir = path.parent if path.name == "checkpoints" and not (path / "checkpoints").is_dir() else path
    latest = latest_checkpoint(run_dir)
    if latest is None:
        raise CwdmError(f"{path}: a folder without training checkpoints (expected {run_dir}/checkpoints/"
                        f"ckpt_<step>.pt); give a checkpoint file or a run folder")
    return latest


def export_state_dict(checkpoint: Path, out: Path, ema: bool = True, overwrite: bool = False) -> Path:
    """Write the model (or EMA) weights of a cwdm checkpoint as a bare state_dict."""
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
    out = Path(out)
    with atomic_path(out, overwrite=overwrite) as tmp:
        torch.save(state, tmp)
    print(f"wrote {out} ({key} weights of {checkpoint}, step {obj.get('step')}, target {obj.get('target')}, "
          f"model config {obj.get('model_config')}); next: cwdm sample --data_dir VAL_DIR --model_path "
          f"{quote(str(out))} --output_dir results")
    return out


def run(cfg: ExportConfig) -> int:
    export_state_dict(cfg.checkpoint, cfg.out, cfg.ema, cfg.overwrite)
    return 0

"""``cwdm train``: train a cWDM for one target contrast, resumable, on CPU, one GPU or several.

Flags use the reference implementation's names where the concept is the same
(``--data_dir``, ``--contr``, ``--lr``, ``--batch_size``, ``--num_channels``,
``--channel_mult``, ``--num_res_blocks``, ``--save_interval``,
``--resume_checkpoint``, ``--additive_skips``). The work is done by
:mod:`cwdm.training.loop`; this module holds the command's flags and closing line.
"""

from __future__ import annotations

import sys
from pathlib import Path
from ..errors import CwdmError
from ..runtime import dist_from_env
from ..training.config import TrainConfig
from ..task import Task
from ..training.state import latest_checkpoint
from ..training.loop import train
from ..training.resume import resume_command

__all__ = ["HELP", "CONFIG", "run"]

HELP = "train a conditional wavelet diffusion model for one target contrast"


CONFIG = TrainConfig
# what it writes (checked before it starts): (config field, "dir" or "file")
DESTINATIONS = [("run_dir", "dir")]
ALIASES = {"model_channels": ["num_channels"], "resume": ["resume_checkpoint"], "max_steps": ["iterations"],
           "run_dir": ["out_dir"], "contr": ["target"], "tensorboard": ["use_tensorboard"],
           "tensorboard_dir": ["tensorboard_path"]}


def _run_task(run_dir: Path, cfg: TrainConfig) -> Task:
    """The task ``config.json`` of a run names (a resumed run may not have been told), else the flags'."""
    import json

    try:
        return Task.from_dict(json.loads((run_dir / "config.json").read_text())["task"])
    except (OSError, ValueError, KeyError, TypeError, CwdmError):
        return cfg.task()


def _next_commands(run_dir: Path, task: Task) -> str:
    """What to run after training: export, then sample (or auto for a unified model)."""
    from shlex import quote

    name = f"brats_{task.target}.pt" if task.is_default or task.is_unified else f"{run_dir.name}.pt"
    then = (f"cwdm auto --data_dir CASES_DIR --model any={name}" if task.is_unified
            else f"cwdm sample --data_dir VAL_DIR --model_path {name} --output_dir results")
    return f"cwdm export {quote(str(run_dir))} {name}, then {then}"


def run(cfg: TrainConfig) -> int:
    status = train(cfg)
    if dist_from_env().is_main:
        run_dir = cfg.run_folder()
        latest = latest_checkpoint(run_dir)
        if status != 0 or latest is None:
            print(f"cwdm train: stopped; {run_dir}: latest checkpoint {latest}; continue with: "
                  f"{resume_command(run_dir)}", file=sys.stderr)
        else:
            step = int(latest.stem.rpartition("_")[2])
            print(f"cwdm train: {run_dir} trained to step {step}, latest checkpoint {latest}; next: "
                  f"{_next_commands(run_dir, _run_task(run_dir, cfg))}", file=sys.stderr)
    return status

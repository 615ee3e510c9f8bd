"""``cwdm train``: train a cWDM for one target contrast, resumable, on CPU, one GPU or several.

Flags use the reference implementation's names where the concept is the same
(``--data_dir``, ``--contr``, ``--lr``, ``--batch_size``, ``--num_channels``,
``--channel_mult``, ``--num_res_blocks``, ``--save_interval``,
``--resume_checkpoint``, ``--additive_skips``). The work is done by
:mod:`cwdm.training`; this module holds the command's flags and closing line.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

from .naming import canonical_contrast
from .runtime import dist_from_env
from .train_config import ALIASES, ARCH_FIELDS, TrainConfig  # noqa: F401  (public)
from .train_state import latest_checkpoint
from .training import resume_command, train  # noqa: F401  (public)

HELP = "train a conditional wavelet diffusion model for one target contrast"


CONFIG = TrainConfig


def _run_target(run_dir: Path) -> Optional[str]:
    """The target contrast ``config.json`` of a run names (a resumed run may not have been told)."""
    import json

    try:
        return json.loads((run_dir / "config.json").read_text())["train"]["contr"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def run(cfg: TrainConfig) -> int:
    status = train(cfg)
    if dist_from_env().is_main:
        from shlex import quote

        run_dir = Path(cfg.run_dir or Path("runs") / canonical_contrast(cfg.contr, cfg.modalities))
        latest = latest_checkpoint(run_dir)
        if status != 0 or latest is None:
            print(f"cwdm train: stopped; {run_dir}: latest checkpoint {latest}; continue with: "
                  f"{resume_command(run_dir)}", file=sys.stderr)
        else:
            step = int(latest.stem.rpartition("_")[2])
            target = _run_target(run_dir) or canonical_contrast(cfg.contr, cfg.modalities)
            print(f"cwdm train: {run_dir} trained to step {step}, latest checkpoint {latest}; next: cwdm export "
                  f"{quote(str(run_dir))} brats_{target}.pt, then cwdm sample --data_dir VAL_DIR --model_path "
                  f"brats_{target}.pt --output_dir results", file=sys.stderr)
    return status

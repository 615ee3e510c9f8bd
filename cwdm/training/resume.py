"""Where a training run continues from: the checkpoint ``--resume`` names (:func:`resolve_resume`), a run
that stopped before its first save (:func:`restart_settings`), and the command that continues a run
(:func:`resume_command`, printed when a run stops)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional, Tuple

from ..errors import CwdmError
from .config import ARCH_FIELDS, TrainConfig, merge_resumed_config
from .state import checkpoint_files, latest_checkpoint


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


def restart_settings(cfg: TrainConfig, run_dir: Path, key: str = "train",
                     fixed: Tuple[str, ...] = ARCH_FIELDS) -> Tuple[TrainConfig, List[str]]:
    """``--resume auto`` in ``run_dir`` without a checkpoint (the run died before its first save).

    With the run's ``config.json``: its settings, merged with the flags given now as on a resume
    (the task and network cannot change), and a note that it starts again from step 0. With a
    missing or empty folder: ``cfg`` (a new run, what ``run.sh``'s default ``RESUME=auto`` relies on).
    Anything else there (no ``config.json`` to say what the run was): a one-line refusal.
    ``key``: the entry of ``config.json`` holding settings like ``cfg``'s; ``fixed``: those that
    cannot change (:func:`merge_resumed_config`).
    """
    config = run_dir / "config.json"
    if not config.is_file():
        if run_dir.is_dir() and any(run_dir.iterdir()):
            raise CwdmError(f"--resume auto: {run_dir} holds neither a checkpoint nor config.json, so there is "
                            f"no run to continue; start a new run there without --resume, or choose another "
                            f"--run_dir")
        return cfg, []
    try:
        stored = json.loads(config.read_text())[key]
        started_from = stored.get("resume")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CwdmError(f"{config}: unreadable run settings ({type(exc).__name__}: {exc}); --resume auto "
                        f"cannot tell what the run was: remove {run_dir} or choose another --run_dir") from None
    if started_from not in (None, "", "auto"):  # a run started from given weights: start it the same way
        raise CwdmError(f"--resume auto: {run_dir} holds no checkpoint, and its run started from the weights "
                        f"{started_from}; start it again with --resume {started_from}")
    merged, changed = merge_resumed_config(cfg, stored, config, cfg.flags_given, fixed)
    notes = [f"note: {run_dir} holds no checkpoint (the run stopped before its first save): starting it "
             f"again from step 0 with its settings from {config.name}"]
    return merged, notes + [f"changed on resume: {c}" for c in changed]


def resume_command(run_dir: Path) -> str:
    """The command that continues a run (a resumed run keeps all its settings)."""
    from shlex import quote

    return f"cwdm train --run_dir {quote(str(run_dir))} --resume auto"

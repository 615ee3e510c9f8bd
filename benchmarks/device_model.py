#!/usr/bin/env python
"""Bring a model trained on a lent GPU back within the device tool's 16 MiB a file.

    python benchmarks/device_model.py pack RUN_DIR model_fp16.pt      # there: last checkpoint's EMA, float16
    python benchmarks/device_model.py unpack model_fp16.pt model.pt   # here: float32 again, for load_model

``pack`` keeps the last checkpoint's EMA weights (stored once, as both ``model`` and ``ema``) and its
description (network, task, prediction, training config, step), drops the optimizer, data order and
random state, and halves the weights; ``unpack`` turns them back into float32 (the rounding to
float16 is the only change: about 1e-3 relative per weight), so ``benchmarks/noise_use.py`` and
``cwdm sample`` read it as a checkpoint of the step it was packed at. Not resumable: it has no
training state.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

DROPPED = ("optimizer", "data_order", "rng")


def _cast(weights: dict, dtype: torch.dtype) -> dict:
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in weights.items()}


def _save(obj: dict, path: Path) -> None:
    from cwdm.writes import atomic_path

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def pack(run: Path, path: Path) -> Path:
    """Write the EMA weights of ``run``'s last checkpoint in float16 to ``path``; returns that checkpoint."""
    from cwdm.model.checkpoint import read_checkpoint
    from cwdm.training.state import latest_checkpoint

    ckpt = latest_checkpoint(run)
    if ckpt is None:
        raise SystemExit(f"{run}: no checkpoint to pack")
    obj = {k: v for k, v in read_checkpoint(ckpt).items() if k not in DROPPED}
    weights = _cast(obj["ema"] if obj.get("ema") is not None else obj["model"], torch.float16)
    obj["model"] = obj["ema"] = weights  # one copy in the file: torch.save keeps shared objects once
    _save(obj, path)
    return ckpt


def unpack(packed: Path, path: Path) -> None:
    """Write ``packed``'s weights in float32 to ``path``, as a checkpoint :func:`load_model` reads."""
    from cwdm.model.checkpoint import read_checkpoint

    obj = read_checkpoint(packed)
    obj["model"] = obj["ema"] = _cast(obj["ema"], torch.float32)
    _save(obj, path)


def main(argv=None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 3 or args[0] not in ("pack", "unpack"):
        raise SystemExit("usage: device_model.py pack RUN_DIR OUT.pt | unpack IN.pt OUT.pt")
    if args[0] == "pack":
        print(f"packed {pack(Path(args[1]), Path(args[2]))} into {args[2]}")
    else:
        unpack(Path(args[1]), Path(args[2]))
        print(f"unpacked {args[1]} into {args[2]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

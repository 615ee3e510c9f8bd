"""Loading network weights: released bare ``state_dict``s and cwdm checkpoints.

Two kinds of file are accepted, always read with ``weights_only=True``:

* a **bare state_dict** as released by the reference implementation (an
  ordered dict of tensors). Its configuration is not stored, so the caller's
  :class:`UNetConfig` is used (default: the released one); every dimension
  that can be read off the tensors is checked first, so a mismatch gives one
  line such as ``checkpoint has in_channels 32, config expects 24``.
* a **cwdm checkpoint**: a dict with ``format == FORMAT`` holding
  ``model_config`` (dict), ``model`` and optionally ``ema`` (state_dicts),
  ``target`` and ``modalities``, plus training state (see :mod:`cwdm.train`).
  Its own configuration is used.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from .config import from_dict
from .errors import CwdmError
from .unet import RELEASED_CONFIG, UNet, UNetConfig

FORMAT = "cwdm-checkpoint"
FORMAT_VERSION = 1


@dataclass
class LoadedModel:
    """A network ready for inference plus what the checkpoint says about itself."""

    model: UNet
    config: UNetConfig
    kind: str  # "released" or "cwdm"
    target: Optional[str] = None
    modalities: Optional[list] = None
    meta: Dict[str, Any] = field(default_factory=dict)


def _not_a_checkpoint_reason(path: Path) -> Optional[str]:
    """Why a file is obviously not a checkpoint (text, HTML, Git LFS pointer), from its first bytes."""
    with open(path, "rb") as fh:
        head = fh.read(512)
    if not head:
        return "the file is empty"
    if head.startswith(b"version https://git-lfs"):
        return "it is a Git LFS pointer, not the weights (fetch them with `git lfs pull`)"
    low = head.lstrip().lower()
    if low.startswith((b"<!doctype", b"<html", b"<?xml")):
        return "it is an HTML/XML page (a failed download?)"
    if head[:2] != b"PK" and all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        first = head.decode("ascii", "replace").strip().splitlines()[0][:80] if head.strip() else ""
        return f"it is a text file ({first!r})"
    return None


def read_checkpoint(path: str | Path) -> Dict[str, Any]:
    """Read a checkpoint file safely (``weights_only=True``); one-line errors for bad files."""
    path = Path(path)
    if not path.is_file():
        raise CwdmError(f"{path}: checkpoint file not found")
    reason = _not_a_checkpoint_reason(path)
    if reason:
        raise CwdmError(f"{path}: not a PyTorch checkpoint: {reason}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for damaged or foreign files
        text = str(exc).strip()
        if "Weights only load failed" in text:
            detail = "it holds Python objects other than tensors, which cwdm refuses to unpickle"
        elif isinstance(exc, (zipfile.BadZipFile, EOFError)) or "central directory" in text or "Invalid argument" in text:
            detail = "the file is truncated or damaged"
        else:
            detail = (text.splitlines()[0] if text else type(exc).__name__)[:160]
        raise CwdmError(f"{path}: not a readable PyTorch checkpoint ({detail})") from None
    if not isinstance(obj, dict):
        raise CwdmError(f"{path}: expected a state_dict or cwdm checkpoint, found {type(obj).__name__}")
    return obj


def is_cwdm_checkpoint(obj: Dict[str, Any]) -> bool:
    return obj.get("format") == FORMAT


def _shape_facts(sd: Dict[str, torch.Tensor]) -> Dict[str, int]:
    """Configuration values that can be read off a state_dict's tensor shapes."""
    facts = {}
    if "input_blocks.0.0.weight" in sd:
        w = sd["input_blocks.0.0.weight"]
        facts["model_channels"], facts["in_channels"] = int(w.shape[0]), int(w.shape[1])
    if "out.2.weight" in sd:
        facts["out_channels"] = int(sd["out.2.weight"].shape[0])
    return facts


def check_state_dict(sd: Dict[str, torch.Tensor], cfg: UNetConfig, source: str) -> None:
    """Raise a one-line :class:`CwdmError` if ``sd`` cannot be loaded into ``UNet(cfg)``."""
    if not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CwdmError(f"{source}: not a network state_dict (expected a dict of tensors)")
    for name, value in _shape_facts(sd).items():
        expected = getattr(cfg, name)
        if value != expected:
            raise CwdmError(f"{source}: checkpoint has {name} {value}, config expects {expected}")
    reference = UNet.from_config(cfg).state_dict()
    missing = [k for k in reference if k not in sd]
    unexpected = [k for k in sd if k not in reference]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing tensors (first: {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensors (first: {unexpected[0]})")
        raise CwdmError(f"{source}: checkpoint does not fit the network config "
                        f"(channel_mult {list(cfg.channel_mult)}, num_res_blocks {cfg.num_res_blocks}, "
                        f"additive_skips {cfg.additive_skips}): {'; '.join(parts)}")
    for k, v in reference.items():
        if tuple(sd[k].shape) != tuple(v.shape):
            raise CwdmError(f"{source}: tensor {k} has shape {tuple(sd[k].shape)}, "
                            f"config expects {tuple(v.shape)}")


def load_model(path: str | Path, config: Optional[UNetConfig] = None, ema: bool = True,
               device: str | torch.device = "cpu") -> LoadedModel:
    """Build the network from a checkpoint file, in eval mode on ``device``.

    :param config: the configuration of a bare state_dict (default: released);
        for a cwdm checkpoint it is ignored, the stored one is used.
    :param ema: use the EMA weights of a cwdm checkpoint when it has them.
    """
    obj = read_checkpoint(path)
    if is_cwdm_checkpoint(obj):
        version = obj.get("version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise CwdmError(f"{path}: checkpoint format version {version} is newer than this cwdm "
                            f"understands ({FORMAT_VERSION}); upgrade cwdm")
        cfg = from_dict(UNetConfig, obj["model_config"])
        sd = obj["ema"] if ema and obj.get("ema") is not None else obj["model"]
        kind, target, modalities = "cwdm", obj.get("target"), obj.get("modalities")
    else:
        cfg = config or RELEASED_CONFIG
        sd, kind, target, modalities = obj, "released", None, None
    check_state_dict(sd, cfg, str(path))
    model = UNet.from_config(cfg)
    model.load_state_dict(sd, strict=True)
    model.to(device).eval()
    meta = {k: v for k, v in obj.items() if k in ("step", "train_config", "version")} if kind == "cwdm" else {}
    return LoadedModel(model=model, config=cfg, kind=kind, target=target, modalities=modalities, meta=meta)

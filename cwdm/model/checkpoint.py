"""Loading network weights: released bare ``state_dict``s and cwdm checkpoints.

Two kinds of file are accepted, always read with ``weights_only=True``:

* a **bare state_dict** as released by the reference implementation (an
  ordered dict of tensors). Its configuration is not stored, but all of it
  except ``num_groups`` is read off the tensors (:func:`infer_config`); flags
  the user gave that contradict the file are all listed in one line such as
  ``checkpoint has in_channels 32, config expects 24``.
* a **cwdm checkpoint**: a dict with ``format == FORMAT`` holding
  ``model_config`` (dict), ``model`` and optionally ``ema`` (state_dicts),
  ``task`` (:meth:`cwdm.task.Task.to_dict`; files written before it existed
  have ``target`` and ``modalities``, read as the default task), plus training
  state (see :mod:`cwdm.training.loop`). Its own configuration is used. A distilled
  student (``cwdm distill``) also records the sampler it was trained for,
  ``sampler: {"name": ..., "steps": K}`` (:func:`stored_sampler`), which sampling uses when the
  user chooses none.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

import torch

from ..naming import MODALITIES
from ..config import from_dict, to_dict
from ..errors import CwdmError, option
from ..task import Task, check_network
from .prediction import X0, Prediction
from .unet import RELEASED_CONFIG, UNet, UNetConfig
from .wavelet import NUM_SUBBANDS

FORMAT = "cwdm-checkpoint"
FORMAT_VERSION = 1


@dataclass
class LoadedModel:
    """A network ready for inference plus what the checkpoint says about itself."""

    model: UNet
    config: UNetConfig
    kind: str  # "released" or "cwdm"
    task: Optional[Task] = None  # a cwdm checkpoint's own; for a released state_dict set by the caller
    prediction: Prediction = X0  # what the network's output means (:mod:`cwdm.model.prediction`)
    meta: Dict[str, Any] = field(default_factory=dict)  # step, train_config, version; a student's sampler

    @property
    def target(self) -> Optional[str]:
        """The modality the network synthesizes, when its task is known."""
        return self.task.target if self.task is not None else None


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


NETWORK_FIELDS = ("model_channels", "channel_mult", "num_res_blocks", "in_channels", "out_channels",
                  "additive_skips")
"""The configuration values a state_dict's tensors determine (all but num_groups and dropout)."""


def _blocks(sd: Dict[str, torch.Tensor], prefix: str) -> List[int]:
    """Sorted distinct indices ``i`` of the keys ``<prefix>.<i>.*``."""
    return sorted({int(k.split(".")[1]) for k in sd if k.startswith(prefix + ".") and k.split(".")[1].isdigit()})


def infer_config(sd: Dict[str, torch.Tensor], num_groups: int = 32, source: str = "checkpoint") -> UNetConfig:
    """The :class:`UNetConfig` a state_dict in the released layout was built with.

    Read off the tensors: model_channels and in_channels (first convolution),
    out_channels (last convolution), the number of levels (upsampling blocks
    + 1), num_res_blocks (decoder blocks per level - 1), channel_mult (the
    width of each level's first encoder block) and additive_skips (the width
    of the first decoder block: the bottom width, or twice it when skips are
    concatenated). ``num_groups`` cannot be read off and is taken as given.
    """
    if not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CwdmError(f"{source}: not a network state_dict (expected a dict of tensors)")
    try:
        first, last = sd["input_blocks.0.0.weight"], sd["out.2.weight"]
        model_channels, in_channels, out_channels = int(first.shape[0]), int(first.shape[1]), int(last.shape[0])
        decoder = _blocks(sd, "output_blocks")
        levels = 1 + sum(1 for i in decoder if any(k.startswith(f"output_blocks.{i}.1.") for k in sd))
        if not decoder or len(decoder) % levels or len(decoder) // levels < 2:
            raise ValueError(f"{len(decoder)} decoder blocks do not split into {levels} levels")
        num_res_blocks = len(decoder) // levels - 1
        widths = [int(sd[f"input_blocks.{1 + level * (num_res_blocks + 1)}.0.out_layers.3.weight"].shape[0])
                  for level in range(levels)]
        if any(w % model_channels for w in widths):
            raise ValueError(f"level widths {widths} are not multiples of {model_channels}")
        channel_mult = tuple(w // model_channels for w in widths)
        additive = int(sd["output_blocks.0.0.in_layers.2.weight"].shape[1]) == widths[-1]
    except (KeyError, IndexError, ValueError) as exc:
        detail = f"no tensor {exc}" if isinstance(exc, KeyError) else str(exc)
        raise CwdmError(f"{source}: not a cWDM U-Net state_dict (cannot read its layout: {detail})") from None
    return UNetConfig(model_channels=model_channels, channel_mult=channel_mult, num_res_blocks=num_res_blocks,
                      in_channels=in_channels, out_channels=out_channels, additive_skips=additive,
                      num_groups=num_groups)


def _show(value: Any) -> str:
    return " ".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)


def _contradictions(found: UNetConfig, cfg: UNetConfig, names) -> List[str]:
    """``checkpoint has X a, config expects b`` for every field of ``names`` that differs."""
    out = []
    for name in names:
        mine, theirs = getattr(found, name), getattr(cfg, name)
        if mine != theirs:
            text = f"checkpoint has {name} {_show(mine)}, config expects {_show(theirs)}"
            if name == "in_channels" and mine % NUM_SUBBANDS == 0 and theirs % NUM_SUBBANDS == 0:
                text += (f" (the network takes {mine // NUM_SUBBANDS - 1} conditions, the modalities give "
                         f"{theirs // NUM_SUBBANDS - 1})")
            out.append(text)
    return out


def _build(cfg: UNetConfig, source: str, inferred: bool) -> UNet:
    try:
        return UNet(cfg)
    except CwdmError as exc:
        if not inferred:
            raise
        raise CwdmError(f"{source}: {exc}; the network read from the file has model_channels "
                        f"{cfg.model_channels}, channel_mult {_show(cfg.channel_mult)}: pass "
                        f"{option('num_groups')} with a divisor of {cfg.model_channels} (the one value a "
                        f"state_dict does not record)") from None


def check_state_dict(sd: Dict[str, torch.Tensor], cfg: UNetConfig, source: str,
                     names=NETWORK_FIELDS) -> None:
    """Raise one one-line :class:`CwdmError` if ``sd`` cannot be loaded into ``UNet(cfg)``.

    Every field of ``names`` that the tensors contradict is listed in the one message.
    """
    found = infer_config(sd, cfg.num_groups, source)
    wrong = _contradictions(found, cfg, names)
    if wrong:
        raise CwdmError(f"{source}: " + "; ".join(wrong))
    with torch.device("meta"):  # shapes only: nothing is allocated
        reference = _build(cfg, source, inferred=False).state_dict()
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


def checkpoint_dict(config: UNetConfig, model: Dict[str, torch.Tensor],
                    ema: Optional[Dict[str, torch.Tensor]] = None, task: Optional[Task] = None,
                    prediction: Prediction = X0, sampler: Optional[Dict[str, Any]] = None,
                    **training: Any) -> Dict[str, Any]:
    """The dictionary of a cwdm checkpoint file, as :func:`load_model` reads it back.

    Args:
        config: the network's configuration (stored as ``model_config``).
        model: the network's state_dict (raw weights).
        ema: the EMA weights' state_dict, used for inference when present.
        task: what the network maps (its ``in_channels`` must fit); also stored as
            ``target``, ``modalities`` and ``conditions`` for readers that predate it.
        prediction: what the network's output means; stored only when it is not ``x0``.
        sampler: the sampler the network is meant to be sampled with, ``{"name": ..., "steps": K}``
            (a distilled student's; checked by :func:`stored_sampler`); stored only when given.
        **training: further entries, e.g. the training state of :mod:`cwdm.training.state`
            (``train_config``, ``step``, ``optimizer``, ``data_order``, ``rng``).

    Returns:
        dict with ``format``, ``version`` and the above, ready for ``torch.save``.
    """
    described: Dict[str, Any] = {"task": None, "target": None, "modalities": None, "conditions": None}
    if task is not None:
        check_network(task, config.in_channels, "checkpoint")
        described = {"task": task.to_dict(), "target": task.target, "modalities": list(task.modalities),
                     "conditions": list(task.condition_names)}
    stored = {"prediction": prediction.to_dict()} if not prediction.is_x0 else {}
    if sampler is not None:
        stored["sampler"] = stored_sampler({"sampler": sampler}, "checkpoint")
    return {"format": FORMAT, "version": FORMAT_VERSION, "model_config": to_dict(config), "model": model,
            "ema": ema, **described, **stored, **training}


def stored_sampler(obj: Dict[str, Any], source: str) -> Optional[Dict[str, Any]]:
    """The sampler a cwdm checkpoint's dictionary records (``{"name": str, "steps": int}``), or None;
    a one-line :class:`CwdmError` naming ``source`` for an entry no sampler of
    :data:`cwdm.model.samplers.SAMPLERS` can run."""
    from .samplers import SAMPLERS

    entry = obj.get("sampler")
    if entry is None:
        return None
    name = entry.get("name") if isinstance(entry, dict) else None
    steps = entry.get("steps") if isinstance(entry, dict) else None
    if name not in SAMPLERS or isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= 1000:
        raise CwdmError(f"{source}: unreadable sampler entry {entry!r} (expected a sampler of "
                        f"{', '.join(SAMPLERS)} and steps in 1..1000)")
    return {"name": str(name), "steps": int(steps)}


def stored_task(obj: Dict[str, Any], source: str) -> Optional[Task]:
    """The task of a cwdm checkpoint's dictionary: ``task``, else the older ``target`` /
    ``modalities`` / ``conditions`` entries, else None."""
    if obj.get("task") is not None:
        return Task.from_dict(obj["task"], source)
    if obj.get("target") is None:
        return None
    try:
        return Task.default(obj["target"], obj.get("modalities") or MODALITIES, obj.get("conditions"))
    except CwdmError as exc:
        raise CwdmError(f"{source}: {exc}") from None


def load_model(path: str | Path, config: Optional[UNetConfig] = None, ema: bool = True,
               device: str | torch.device = "cpu", given: Optional[Iterable[str]] = None) -> LoadedModel:
    """Build the network from a checkpoint file, in eval mode on ``device``.

    Args:
        config: the caller's configuration. For a bare state_dict the
            network is read from the tensors (:func:`infer_config`) with
            ``config.num_groups`` (default 32), and the fields of ``config`` named
            in ``given`` (default: all of them), plus ``in_channels`` (the number
            of conditions), must agree with the file: every contradiction is
            listed in one error. For a cwdm checkpoint it is ignored, the stored
            configuration is used.
        ema: use the EMA weights of a cwdm checkpoint when it has them.
        given: the network fields the user chose explicitly.
    """
    obj = read_checkpoint(path)
    if is_cwdm_checkpoint(obj):
        version = obj.get("version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise CwdmError(f"{path}: checkpoint format version {version} is newer than this cwdm "
                            f"understands ({FORMAT_VERSION}); upgrade cwdm")
        cfg = from_dict(UNetConfig, obj["model_config"])
        sd = obj["ema"] if ema and obj.get("ema") is not None else obj["model"]
        kind, task = "cwdm", stored_task(obj, str(path))
        prediction = Prediction.from_dict(obj.get("prediction"), str(path))
        if task is not None:
            check_network(task, cfg.in_channels, str(path))
    else:
        sd, kind, task, prediction = obj, "released", None, X0
        cfg = infer_config(sd, config.num_groups if config is not None else RELEASED_CONFIG.num_groups, str(path))
        if config is not None:
            names = NETWORK_FIELDS if given is None else [n for n in NETWORK_FIELDS
                                                         if n in set(given) | {"in_channels"}]
            wrong = _contradictions(cfg, config, names)
            if wrong:
                raise CwdmError(f"{path}: the network flags contradict the file: " + "; ".join(wrong)
                                + " (a bare state_dict's network is read from its tensors: drop those flags)")
            cfg = replace(cfg, dropout=config.dropout)
        with torch.device("meta"):
            _build(cfg, str(path), inferred=True)  # a clear message when --num_groups does not fit
    check_state_dict(sd, cfg, str(path))
    model = UNet(cfg)
    model.load_state_dict(sd, strict=True)
    model.to(device).eval()
    meta = {k: v for k, v in obj.items() if k in ("step", "train_config", "version")} if kind == "cwdm" else {}
    if kind == "cwdm" and obj.get("sampler") is not None:  # a distilled student's (checked)
        meta["sampler"] = stored_sampler(obj, str(path))
    return LoadedModel(model=model, config=cfg, kind=kind, task=task, prediction=prediction, meta=meta)

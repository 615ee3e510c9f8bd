#!/usr/bin/env python
"""A small 3D U-Net tumour segmenter for phantom benchmarks (a benchmark script, not part of cwdm).

BraTS ranks completed cases also by the Dice of a segmentation model run on them. This script trains
such a model on complete phantom cases (``cwdm phantom OUT --cases N --downsample 4``) and segments
cases whose contrasts may come from a synthesis result folder::

    python benchmarks/phantom_segmenter.py train --data TRAIN --out seg.pt [--steps N] [--seed S]
    python benchmarks/phantom_segmenter.py predict --model seg.pt --data TEST --out SEGS \
        [--replace t1c=RESULTS ...] [--overwrite]
    python benchmarks/phantom_segmenter.py dice --pred SEGS --data TEST

Inputs are the four contrasts t1n, t1c, t2w, t2f, each normalized as cwdm normalizes a volume
(:func:`cwdm.data.preprocess.clip_and_normalize`: clip to the 0.1/99.9 % quantiles, scale to [0, 1]),
so a synthesized volume (``cwdm sample`` writes [0, 1] values, the linear baseline too) goes through
the same mapping as an acquired one. Labels: 0 background, 1 necrosis, 2 edema, 3 enhancing (a BraTS
2021 label 4 is read as 3). ``--replace t1c=RESULTS`` reads t1c from ``RESULTS/<case>/<case>-t1c.nii.gz``
(the layout of ``cwdm sample --output_dir`` and of the demo's baseline), or ``RESULTS/<case>-t1c.nii.gz``.
Predictions are ``SEGS/<case>.nii.gz``, uint8, with the reference seg's affine and header.

Network (:class:`UNet3D`): 3 levels of 16/32/64 channels (two 3x3x3 convolutions, GroupNorm, LeakyReLU
each), trained on 32x32x24 patches (2/3 centred on tumour) with cross-entropy + soft Dice and Adam,
applied to whole volumes padded to a multiple of 4. 800 steps take about 4-5 min on 2 CPU cores.

Dice (``dice``): per label 1/2/3 and the BraTS regions ET = 3, TC = 1|3, WT = 1|2|3, mean over cases;
both masks empty gives 1, only one empty gives 0.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from cwdm.data.cases import Case, discover_cases
from cwdm.data.nifti_io import load_nifti, save_nifti_like
from cwdm.data.preprocess import clip_and_normalize
from cwdm.errors import CwdmError
from cwdm.evaluation.segmentation import dice_scores as label_dice
from cwdm.naming import MODALITIES
from cwdm.writes import atomic_path

FORMAT = "cwdm-phantom-segmenter/1"
NUM_CLASSES = 4
REGIONS = ("1", "2", "3", "ET", "TC", "WT")
"""Dice keys: per label, then the BraTS regions (as ``cwdm evaluate --seg_dir`` defines them)."""


# ---------------------------------------------------------------------------------------------- network
def _norm(kind: str, channels: int) -> nn.Module:
    """GroupNorm with up to 4 groups (``"group"``) or BatchNorm (``"batch"``: in eval mode a fixed affine
    map, so patch and whole-volume statistics cannot differ, but its backward pass is slow on CPU)."""
    if kind == "batch":
        return nn.BatchNorm3d(channels)
    if kind == "group":
        return nn.GroupNorm(min(4, channels), channels)
    raise ValueError(f"norm must be 'batch' or 'group', got {kind!r}")


class Block(nn.Sequential):
    """Two 3x3x3 convolutions, each followed by a norm and LeakyReLU: (B, cin, X, Y, Z) -> (B, cout, X, Y, Z)."""

    def __init__(self, cin: int, cout: int, norm: str = "group") -> None:
        super().__init__(nn.Conv3d(cin, cout, 3, padding=1), _norm(norm, cout), nn.LeakyReLU(0.01, inplace=True),
                         nn.Conv3d(cout, cout, 3, padding=1), _norm(norm, cout), nn.LeakyReLU(0.01, inplace=True))


class UNet3D(nn.Module):
    """A plain 3D U-Net: ``len(channels)`` levels, max-pool down, transposed convolution up, skip concatenation.

    Maps (B, in_channels, X, Y, Z) to logits (B, classes, X, Y, Z); every spatial size must be a
    multiple of :attr:`divisor` = 2 ** (levels - 1) (:func:`pad_to` and :func:`crop_to` do that).
    """

    def __init__(self, in_channels: int = 4, classes: int = NUM_CLASSES, channels: Sequence[int] = (16, 32, 64),
                 norm: str = "group"):
        super().__init__()
        ch = [int(c) for c in channels]
        self.divisor = 2 ** (len(ch) - 1)
        self.down = nn.ModuleList([Block(in_channels, ch[0], norm)] + [Block(a, b, norm) for a, b in zip(ch, ch[1:])])
        self.up = nn.ModuleList([nn.ConvTranspose3d(b, a, 2, stride=2) for a, b in zip(ch, ch[1:])])
        self.merge = nn.ModuleList([Block(2 * a, a, norm) for a in ch[:-1]])
        self.head = nn.Conv3d(ch[0], classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool3d(x, 2))
            skips.append(x)
        x = skips.pop()
        for i in reversed(range(len(self.up))):
            x = self.merge[i](torch.cat([skips.pop(), self.up[i](x)], dim=1))
        return self.head(x)


def pad_to(x: torch.Tensor, divisor: int) -> torch.Tensor:
    """Zero-pad the last three axes of (..., X, Y, Z) at their end up to multiples of ``divisor``."""
    pads: List[int] = []
    for n in reversed(x.shape[-3:]):
        pads += [0, (-n) % divisor]
    return F.pad(x, pads) if any(pads) else x


def crop_to(x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """The leading (X, Y, Z) = ``shape`` part of the last three axes of ``x`` (inverse of :func:`pad_to`)."""
    return x[..., :shape[0], :shape[1], :shape[2]]


# ---------------------------------------------------------------------------------------------- data
def _result_file(folder: Path, case: Case, modality: str) -> Path:
    """The file of ``modality`` for ``case`` in a result folder (``<case>/<case>-<m>.nii.gz`` or flat)."""
    names = [case.file_name(modality), f"{case.prefix}-{modality}.nii.gz", f"{case.name}-{modality}.nii.gz"]
    names += [n[:-3] for n in names]  # the uncompressed .nii spelling
    for place in (folder / case.name, folder):
        for name in names:
            if (place / name).is_file():
                return place / name
    raise CwdmError(f"{folder}: no {modality} result for case {case.name} "
                    f"(looked for {folder / case.name / names[0]} and {folder / names[0]})")


def case_inputs(case: Case, replace: Optional[Mapping[str, Path]] = None,
                modalities: Sequence[str] = MODALITIES) -> np.ndarray:
    """The normalized contrasts of a case: (C, X, Y, Z) float32 in [0, 1], C = len(modalities).

    ``replace`` maps a modality to a result folder it is read from instead of the case folder.
    """
    replace = dict(replace or {})
    vols = []
    for m in modalities:
        if m in replace:
            path = _result_file(Path(replace[m]), case, m)
        elif m in case.files:
            path = case.files[m]
        else:
            raise CwdmError(f"{case.folder}: case {case.name} has no {m} file")
        vol = load_nifti(path)[0]
        if vols and vol.shape != vols[0].shape:
            raise CwdmError(f"{path}: shape {vol.shape} differs from the case's {vols[0].shape}")
        vols.append(clip_and_normalize(vol).astype(np.float32))
    return np.stack(vols)


def case_labels(case: Case) -> np.ndarray:
    """The reference segmentation of a case: (X, Y, Z) int64 labels 0..3 (a BraTS 2021 label 4 becomes 3)."""
    if case.seg is None:
        raise CwdmError(f"{case.folder}: case {case.name} has no seg file")
    seg = np.rint(load_nifti(case.seg)[0]).astype(np.int64)
    seg[seg == 4] = 3
    if seg.min() < 0 or seg.max() >= NUM_CLASSES:
        raise CwdmError(f"{case.seg}: labels must be 0, 1, 2, 3 (or 4), found {np.unique(seg).tolist()}")
    return seg


# ---------------------------------------------------------------------------------------------- training
def seg_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy plus (1 - soft Dice) over the tumour classes 1..3.

    Args:
        logits: (B, K, X, Y, Z) network output.
        target: (B, X, Y, Z) int64 labels.
    """
    ce = F.cross_entropy(logits, target)
    prob = logits.softmax(dim=1)[:, 1:]
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 4, 1, 2, 3)[:, 1:].to(prob.dtype)
    dims = (0, 2, 3, 4)
    inter = (prob * onehot).sum(dims)
    dice = (2 * inter + 1.0) / (prob.sum(dims) + onehot.sum(dims) + 1.0)
    return ce + (1.0 - dice.mean())


def _patch_starts(shape: Sequence[int], patch: Sequence[int], centre: torch.Tensor) -> List[int]:
    """Start of a ``patch`` box centred on ``centre`` (3,), moved inside a volume of ``shape``."""
    return [int(min(max(int(c) - p // 2, 0), n - p)) for c, p, n in zip(centre, patch, shape)]


def train_segmenter(data_dir, out_path, steps: int = 800, seed: int = 0, threads: int = 2,
                    channels: Sequence[int] = (16, 32, 64), batch_size: int = 4, lr: float = 3e-3,
                    patch: Sequence[int] = (32, 32, 24), foreground: float = 0.67, norm: str = "group",
                    log_every: int = 100, overwrite: bool = True) -> Dict:
    """Train a :class:`UNet3D` on the complete cases of ``data_dir`` and write it to ``out_path``.

    Each step takes ``batch_size`` patches of ``patch`` voxels (cut to the padded grid, a multiple of
    the net's divisor) from cases drawn with a seeded generator; a patch is centred on a random tumour
    voxel with probability ``foreground``, else on a random voxel, then flipped along each axis with
    probability 1/2. Adam with ``lr`` held for the first half, then a cosine decay to 0. The model file
    (a dict: ``format``, ``config``, ``state_dict``, ``train``) is written to a temporary file renamed
    into place.

    Returns:
        the ``train`` record: settings, cases, seconds, final loss (mean of the last 20 steps).
    """
    torch.set_num_threads(int(threads))
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    cases = [c for c in discover_cases(data_dir) if c.seg is not None]
    if not cases:
        raise CwdmError(f"{data_dir}: no case with a seg file to train on")
    t0 = time.monotonic()
    config = {"in_modalities": list(MODALITIES), "classes": NUM_CLASSES, "channels": [int(c) for c in channels],
              "norm": norm}
    net = UNet3D(len(MODALITIES), NUM_CLASSES, channels, norm)
    images = pad_to(torch.from_numpy(np.stack([case_inputs(c) for c in cases])), net.divisor)  # (N, 4, X, Y, Z)
    labels = pad_to(torch.from_numpy(np.stack([case_labels(c) for c in cases])), net.divisor)  # (N, X, Y, Z)
    shape = labels.shape[1:]
    size = [min(int(p), n) // net.divisor * net.divisor for p, n in zip(patch, shape)]
    tumour = [torch.nonzero(lab > 0) for lab in labels]  # (M_i, 3) per case
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    half = steps // 2
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 1.0 if s < half else 0.5 * (1 + np.cos(np.pi * (s - half) / max(1, steps - half))))
    losses: List[float] = []
    net.train()
    for step in range(steps):
        xs, ys = [], []
        for _ in range(batch_size):
            i = int(torch.randint(len(cases), (1,), generator=gen))
            if float(torch.rand(1, generator=gen)) < foreground and len(tumour[i]):
                centre = tumour[i][int(torch.randint(len(tumour[i]), (1,), generator=gen))]
            else:
                centre = torch.stack([torch.randint(n, (1,), generator=gen)[0] for n in shape])
            a = _patch_starts(shape, size, centre)
            box = tuple(slice(a[k], a[k] + size[k]) for k in range(3))
            x, y = images[i][(slice(None),) + box], labels[i][box]
            flips = [d for d, f in zip((1, 2, 3), torch.rand(3, generator=gen) < 0.5) if f]
            if flips:
                x, y = x.flip(flips), y.flip([d - 1 for d in flips])
            xs.append(x)
            ys.append(y)
        loss = seg_loss(net(torch.stack(xs)), torch.stack(ys))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if log_every and ((step + 1) % log_every == 0 or step + 1 == steps):
            print(f"[segmenter] step {step + 1}/{steps} loss {np.mean(losses[-log_every:]):.4f} "
                  f"({time.monotonic() - t0:.0f} s)", file=sys.stderr)
    record = {"steps": steps, "seed": seed, "cases": len(cases), "batch_size": batch_size, "lr": lr,
              "patch": size, "foreground": foreground, "norm": norm,
              "seconds": round(time.monotonic() - t0, 1), "final_loss": float(np.mean(losses[-20:]))}
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_path, overwrite=overwrite) as tmp:
        torch.save({"format": FORMAT, "config": config, "state_dict": net.state_dict(), "train": record}, tmp)
    return record


def load_segmenter(path) -> Tuple[UNet3D, Dict]:
    """The network of a model file (eval mode) and its config."""
    blob = torch.load(str(path), map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise CwdmError(f"{path}: not a phantom segmenter model file ({FORMAT})")
    cfg = blob["config"]
    net = UNet3D(len(cfg["in_modalities"]), cfg["classes"], cfg["channels"], cfg.get("norm", "group"))
    net.load_state_dict(blob["state_dict"])
    return net.eval(), cfg


# ---------------------------------------------------------------------------------------------- prediction
@torch.no_grad()
def segment(net: UNet3D, image: np.ndarray) -> np.ndarray:
    """Labels (X, Y, Z) uint8 of one normalized case ``image`` (C, X, Y, Z)."""
    x = torch.from_numpy(np.ascontiguousarray(image))[None]
    logits = crop_to(net(pad_to(x, net.divisor)), image.shape[1:])
    return logits.argmax(dim=1)[0].numpy().astype(np.uint8)


def predict_folder(model_path, data_dir, out_dir, replace: Optional[Mapping[str, Path]] = None,
                   threads: int = 2, overwrite: bool = False) -> List[Path]:
    """Segment every case of ``data_dir`` into ``out_dir/<case>.nii.gz``; returns the written files.

    ``replace``: modality -> result folder that modality is read from instead (see :func:`case_inputs`).
    The output has the affine and header of the case's seg (of its first file when it has none).
    """
    torch.set_num_threads(int(threads))
    net, cfg = load_segmenter(model_path)
    replace = dict(replace or {})
    bad = sorted(set(replace) - set(cfg["in_modalities"]))
    if bad:
        raise CwdmError(f"--replace: unknown modality {bad[0]} (one of {', '.join(cfg['in_modalities'])})")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for case in discover_cases(data_dir):
        image = case_inputs(case, replace, cfg["in_modalities"])
        reference = case.seg if case.seg is not None else next(iter(case.files.values()))
        written.append(save_nifti_like(segment(net, image), reference, out_dir / f"{case.name}.nii.gz",
                                       overwrite=overwrite, dtype=np.uint8))
    return written


# ---------------------------------------------------------------------------------------------- Dice
def region_dice(pred: np.ndarray, ref: np.ndarray) -> Dict[str, float]:
    """Dice of every key of :data:`REGIONS` between two (X, Y, Z) label maps
    (:func:`cwdm.evaluation.segmentation.dice_scores`: both empty 1, one empty 0, label 4 read as 3)."""
    scores = label_dice(pred, ref)
    return {k: scores[f"dice_{k.lower()}"] for k in REGIONS}


def dice_scores(pred_dir, data_dir) -> Dict:
    """Dice of ``pred_dir/<case>.nii.gz`` against the seg of every case of ``data_dir`` that has one.

    Returns:
        ``{"cases": {case: {key: dice}}, "mean": {key: mean over cases}}``, keys of :data:`REGIONS`.
    """
    per_case: Dict[str, Dict[str, float]] = {}
    for case in discover_cases(data_dir):
        if case.seg is None:
            continue
        path = Path(pred_dir) / f"{case.name}.nii.gz"
        if not path.is_file() and path.with_suffix("").is_file():
            path = path.with_suffix("")  # <case>.nii
        ref = case_labels(case)
        pred = np.rint(load_nifti(path)[0]).astype(np.int64)
        if pred.shape != ref.shape:
            raise CwdmError(f"{path}: shape {pred.shape} differs from the reference seg's {ref.shape}")
        per_case[case.name] = region_dice(pred, ref)
    if not per_case:
        raise CwdmError(f"{data_dir}: no case with a seg file to score")
    mean = {k: float(np.mean([d[k] for d in per_case.values()])) for k in REGIONS}
    return {"cases": per_case, "mean": mean}


def format_scores(scores: Dict) -> str:
    """A small text table: one row per case, then the mean."""
    keys = list(REGIONS)
    lines = ["case".ljust(24) + "".join(k.rjust(8) for k in keys)]
    rows = list(scores["cases"].items()) + [(f"mean ({len(scores['cases'])} cases)", scores["mean"])]
    for name, d in rows:
        lines.append(name.ljust(24) + "".join(f"{d[k]:8.4f}" for k in keys))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- CLI
def _replacements(items: Sequence[str]) -> Dict[str, Path]:
    out = {}
    for item in items:
        mod, sep, folder = item.partition("=")
        if not sep or not mod or not folder:
            raise CwdmError(f"--replace expects MODALITY=FOLDER, got {item!r}")
        if not Path(folder).is_dir():
            raise CwdmError(f"--replace {item}: {folder} is not a folder")
        out[mod] = Path(folder)
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train on the complete cases of a folder")
    t.add_argument("--data", required=True, type=Path)
    t.add_argument("--out", required=True, type=Path, help="model file to write (.pt)")
    t.add_argument("--steps", type=int, default=800)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--channels", type=int, nargs="+", default=[16, 32, 64], help="channels per level")
    t.add_argument("--batch_size", type=int, default=4)
    t.add_argument("--patch", type=int, nargs=3, default=[32, 32, 24], help="training patch (X Y Z)")
    t.add_argument("--norm", choices=["group", "batch"], default="group",
                   help="GroupNorm (default) or BatchNorm (about 2.5x slower on CPU)")
    t.add_argument("--lr", type=float, default=3e-3)
    s = sub.add_parser("predict", help="segment every case of a folder")
    s.add_argument("--model", required=True, type=Path)
    s.add_argument("--data", required=True, type=Path)
    s.add_argument("--out", required=True, type=Path, help="folder for <case>.nii.gz")
    s.add_argument("--replace", nargs="*", default=[], metavar="MODALITY=FOLDER",
                   help="read MODALITY from FOLDER/<case>/<case>-MODALITY.nii.gz instead")
    s.add_argument("--threads", type=int, default=2)
    s.add_argument("--overwrite", action="store_true", help="replace existing segmentations")
    d = sub.add_parser("dice", help="Dice of predicted segmentations against the cases' seg files")
    d.add_argument("--pred", required=True, type=Path)
    d.add_argument("--data", required=True, type=Path)
    args = p.parse_args(argv)
    try:
        if args.command == "train":
            rec = train_segmenter(args.data, args.out, args.steps, args.seed, args.threads, args.channels,
                                  args.batch_size, args.lr, args.patch, norm=args.norm)
            print(f"wrote {args.out}: {rec['steps']} steps on {rec['cases']} cases in {rec['seconds']:.1f} s, "
                  f"final loss {rec['final_loss']:.4f}")
        elif args.command == "predict":
            files = predict_folder(args.model, args.data, args.out, _replacements(args.replace), args.threads,
                                   args.overwrite)
            print(f"wrote {len(files)} segmentation(s) to {args.out}")
        else:
            print(format_scores(dice_scores(args.pred, args.data)))
    except CwdmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

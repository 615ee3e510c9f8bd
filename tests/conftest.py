"""Shared test helpers and fixtures.

* the reference tensors of the released checkpoint contract (:data:`REF`,
  :func:`npz`, :func:`tiny_config`, :func:`tiny_model`);
* tiny cwdm checkpoints (:func:`make_checkpoint`) and fast sampling flags (:data:`FAST`);
* small synthetic BraTS-layout data roots written with nibabel, described below.

``make_brats_root(...)`` (fixture returning a factory) writes::

    <root>/<case>/<case>-<modality>.nii.gz   for each modality not in `missing`
    <root>/<case>/<case>-seg.nii.gz          if `seg`

Each volume is a noisy ellipsoid "brain" (values > 0 inside, exactly 0
outside) whose intensity differs per modality and case, float32 by default.
:func:`write_inpainting_root` writes cases of the inpainting challenge's layout.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Dict, Iterable, Optional, Sequence, Union

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from cwdm.naming import MODALITIES

DEFAULT_SHAPE = (24, 24, 16)
REF = Path(__file__).parent / "data" / "reference"
FAST = ["--sampler", "ddim", "--sampling_steps", "2", "--progress", "False", "--num_workers", "0"]
"""Flags of a quick ``cwdm sample`` / ``cwdm auto`` run."""


def npz(name: str) -> dict:
    """The arrays of ``tests/data/reference/<name>.npz``."""
    with np.load(REF / f"{name}.npz") as d:
        return {k: d[k] for k in d.files}


def tiny_config() -> dict:
    """The reference tiny network's configuration (UNetConfig fields)."""
    return json.loads((REF / "unet_tiny_config.json").read_text())


def tiny_model():
    """The reference tiny network with its released weights, in eval mode."""
    from cwdm.model.unet import UNet, UNetConfig

    model = UNet(UNetConfig(**tiny_config()))
    model.load_state_dict(torch.load(REF / "unet_tiny.pt", map_location="cpu", weights_only=True), strict=True)
    return model.eval()


def make_checkpoint(path: Path, target: str = "t2f", seed: int = 0, output: Optional[str] = None) -> Path:
    """Write a tiny 3-condition cwdm checkpoint with random non-zero weights to ``path``; returns ``path``.

    Its syntheses vary around 0.5 inside the brain (the low-pass output bias is raised), so they pass
    :func:`cwdm.inference.synthesis.degenerate` also after ``cwdm auto``'s threshold.

    ``output``: a broken network instead, whose synthesized volumes are degenerate: ``"zero"`` (all
    weights 0: every volume is all zero), ``"constant"`` (only the low-pass output bias is non-zero:
    a constant image), ``"nan"`` (a NaN weight).
    """
    from cwdm.model.checkpoint import checkpoint_dict
    from cwdm.task import Task
    from cwdm.model.unet import UNet, UNetConfig

    torch.manual_seed(seed)
    cfg = UNetConfig(model_channels=8, channel_mult=(1, 2), num_res_blocks=1, num_groups=4, in_channels=32)
    model = UNet(cfg)
    with torch.no_grad():
        for p in model.parameters():
            torch.nn.init.normal_(p, std=0.05)
        dict(model.named_parameters())["out.2.bias"][0] += 0.5  # brain at ~0.5: never degenerate, even zeroed at 0.04
    if output is not None:
        with torch.no_grad():
            for p in model.parameters():
                p.zero_()
            sd = dict(model.named_parameters())
            if output == "constant":
                sd["out.2.bias"][0] = 0.5
            elif output == "nan":
                sd["out.2.bias"][0] = float("nan")
            elif output != "zero":
                raise ValueError(output)
    torch.save(checkpoint_dict(cfg, model.state_dict(), model.state_dict(), task=Task.default(target), step=1),
               path)
    return path


def case_names(n: int, prefix: str = "BraTS-GLI") -> list:
    """``BraTS-GLI-00000-000``, ``BraTS-GLI-00001-000``, ..."""
    return [f"{prefix}-{i:05d}-000" for i in range(n)]


def brain_volume(shape: Sequence[int], rng: np.random.Generator, scale: float = 1000.0) -> np.ndarray:
    """(X, Y, Z) float32 phantom: positive noisy ellipsoid, zero background."""
    grids = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    inside = sum(g ** 2 for g in grids) <= 0.7
    vol = np.zeros(shape, dtype=np.float32)
    vol[inside] = scale * (0.5 + rng.random(int(inside.sum()))).astype(np.float32)
    return vol


def write_brats_root(root: Path, cases: Union[int, Sequence[str]] = 3,
                     shape: Sequence[int] = DEFAULT_SHAPE, modalities: Sequence[str] = MODALITIES,
                     missing: Optional[Dict[str, Iterable[str]]] = None, seg: bool = True,
                     affine: Optional[np.ndarray] = None, dtype=np.float32, seed: int = 0,
                     ext: str = ".nii.gz") -> Path:
    """Write a synthetic data root; returns ``root``.

    Args:
        cases: number of cases (named by :func:`case_names`) or explicit names.
        shape: spatial shape of every volume.
        missing: case name -> modalities not written for that case.
        seg: also write ``<case>-seg`` label volumes (uint8, labels 0..3).
        affine: (4, 4) affine of every file (default: 1 mm, shifted origin).
        ext: ``.nii.gz`` or ``.nii``.
    """
    root = Path(root)
    names = case_names(cases) if isinstance(cases, int) else list(cases)
    missing = {k: set(v) for k, v in (missing or {}).items()}
    if affine is None:
        affine = np.diag([-1.0, -1.0, 1.0, 1.0])
        affine[:3, 3] = [120.0, 120.0, -70.0]
    rng = np.random.default_rng(seed)
    for ci, name in enumerate(names):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for mi, mod in enumerate(modalities):
            if mod in missing.get(name, ()):
                continue
            vol = brain_volume(shape, rng, scale=100.0 * (mi + 1) + 10.0 * ci).astype(dtype)
            nib.save(nib.Nifti1Image(vol, affine), str(folder / f"{name}-{mod}{ext}"))
        if seg:
            lab = (brain_volume(shape, rng, scale=2.0) > 2.0).astype(np.uint8) * rng.integers(1, 4)
            nib.save(nib.Nifti1Image(lab.astype(np.uint8), affine), str(folder / f"{name}-seg{ext}"))
    return root


def write_inpainting_root(root: Path, cases: int = 2, shape: Sequence[int] = DEFAULT_SHAPE, seed: int = 0) -> Path:
    """Write cases of the inpainting challenge's layout (:mod:`cwdm.data.inpainting`); returns ``root``.

    Each case (named by :func:`case_names`) has ``-t1n`` (a float32 :func:`brain_volume`),
    ``-mask-unhealthy`` (a tumour block), ``-mask`` and ``-mask-healthy`` (a healthy block inside the
    brain, uint8) and ``-t1n-voided`` (the t1n with the healthy block set to 0).
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    x, y, z = (int(s) for s in shape)
    for name in case_names(cases):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        t1n = brain_volume(shape, rng)
        tumour, mask = np.zeros(shape, np.uint8), np.zeros(shape, np.uint8)
        tumour[x // 4: x // 4 + 3, y // 2 - 2: y // 2 + 2, z // 2 - 2: z // 2 + 2] = 1
        mask[x // 2 + 2: x // 2 + 6, y // 2 - 2: y // 2 + 2, z // 2 - 2: z // 2 + 2] = 1
        voided = np.where(mask == 1, 0, t1n).astype(np.float32)
        for part, volume in (("t1n", t1n), ("t1n-voided", voided), ("mask", mask), ("mask-healthy", mask),
                             ("mask-unhealthy", tumour)):
            nib.save(nib.Nifti1Image(volume, affine), str(folder / f"{name}-{part}.nii.gz"))
    return root


@pytest.fixture
def make_brats_root(tmp_path):
    """Factory fixture: ``make_brats_root(**kwargs)`` -> a new data root under tmp_path.

    Keyword arguments are those of :func:`write_brats_root`; ``root=`` may
    name the folder (default ``tmp_path/data``, ``data1``, ``data2``, ...).
    """
    counter = itertools.count()

    def make(root: Optional[Path] = None, **kwargs) -> Path:
        if root is None:
            i = next(counter)
            root = tmp_path / ("data" if i == 0 else f"data{i}")
        return write_brats_root(root, **kwargs)

    return make


@pytest.fixture
def brats_root(make_brats_root) -> Path:
    """Three complete 24x24x16 cases with seg files."""
    return make_brats_root()


@pytest.fixture
def models(tmp_path) -> Path:
    """A folder with one tiny checkpoint per contrast, named as the released weights are."""
    folder = tmp_path / "models"
    folder.mkdir()
    for i, mod in enumerate(MODALITIES):
        make_checkpoint(folder / f"brats_{mod}_1200000.pt", target=mod, seed=i)
    return folder

"""``cwdm inpaint-data --data_dir DATA --output_dir OUT``: inpainting cases from complete BraTS cases.

For every case of ``DATA`` (BraTS layout, :func:`cwdm.data.cases.discover_cases`; each case needs
its ``<case>-t1n`` and ``<case>-seg``) it writes ``OUT/<case>/`` in the challenge's inpainting layout
(:mod:`cwdm.data.inpainting`):

* ``<case>-t1n-voided.nii.gz``: the t1n with the mask's voxels set to 0, in the t1n's data type
  and header (a t1n stored with a scaling slope or intercept is written as float32, scaling 1, 0);
* ``<case>-mask.nii.gz``: the voided region, uint8 0/1 (the t1n's header otherwise);
* ``<case>-mask-healthy.nii.gz``: the same region (all of it is healthy tissue);
* ``<case>-mask-unhealthy.nii.gz``: the tumour, ``seg > 0``, uint8 0/1;
* ``<case>-t1n.nii.gz``: the complete t1n, copied byte for byte (a ``.nii`` input is gzipped), for
  training and scoring.

The region is drawn by :func:`cwdm.data.inpaint_masks.draw_healthy_mask` in the brain, the voxels
where the t1n is non-zero (BraTS and ``cwdm phantom`` volumes are skull-stripped with a background of
exactly 0; a case needs no other modality), at least ``--margin`` voxels from the tumour, with a
volume of a fraction of the brain drawn log-uniformly in ``--size_range``. Case ``<name>`` uses the
generator ``np.random.default_rng([seed, crc32(name)])``: its mask depends on the seed, its name and
its images only, not on the other cases of ``DATA``.

``DATA`` is never modified and every case is checked (files present, readable headers, the t1n and
seg of one shape) before anything is written. A case's five files are written into a hidden folder
of ``OUT`` and moved into place together, so a case is complete or absent. Existing files are
replaced only with ``--overwrite`` (other files of an existing case folder are left alone).
"""

from __future__ import annotations

import gzip
import os
import shutil
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

from ..data.cases import Case, discover_cases
from ..data.inpaint_masks import draw_healthy_mask
from ..data.inpainting import HEALTHY, IMAGE, MASK, UNHEALTHY, VOIDED
from ..data.nifti_io import load_header, load_nifti, save_nifti_like
from ..errors import CwdmError
from ..naming import SEG
from ..writes import make_folder

HELP = "make inpainting cases (t1n voided in a healthy-tissue mask) from complete BraTS cases"
OUTPUTS = (VOIDED, MASK, HEALTHY, UNHEALTHY, IMAGE)
"""The parts written per case."""


@dataclass
class InpaintDataConfig:
    data_dir: Path = field(metadata={"help": "complete BraTS-layout cases (t1n and seg needed); never modified"})
    output_dir: Path = field(metadata={"help": "where the inpainting cases go (not inside --data_dir)"})
    seed: int = field(default=0, metadata={"help": "random seed (>= 0); case NAME draws from rng([seed, crc32(NAME)])"})
    size_range: List[float] = field(default_factory=lambda: [0.005, 0.05], metadata={
        "help": "smallest and largest mask volume, as fractions of the brain volume (drawn log-uniformly)"})
    margin: int = field(default=2, metadata={"help": "voxels of healthy tissue kept between the mask and the tumour"})
    overwrite: bool = field(default=False, metadata={"help": "replace existing output files of the same cases"})


CONFIG = InpaintDataConfig
# what it writes (checked before it starts): (config field, "dir" or "file")
DESTINATIONS = [("output_dir", "dir")]


def _check_paths(data_dir: Path, output_dir: Path) -> None:
    data, out = data_dir.resolve(), output_dir.resolve()
    if out == data or data in out.parents:
        raise CwdmError(f"--output_dir {output_dir}: is (inside) the input folder {data_dir}, which is never "
                        f"modified; choose a folder outside it")
    if out in data.parents:
        raise CwdmError(f"--output_dir {output_dir}: contains the input folder {data_dir}; choose a separate folder")


def _check_options(seed: int, size_range: Sequence[float], margin: int) -> Tuple[float, float]:
    if int(seed) != seed or seed < 0:
        raise CwdmError(f"--seed must be a whole number >= 0, got {seed!r}")
    if len(size_range) != 2:
        raise CwdmError(f"--size_range takes two fractions of the brain volume (smallest largest), got "
                        f"{' '.join(map(str, size_range))}")
    lo, hi = (float(v) for v in size_range)
    if not 0.0 < lo <= hi < 1.0:
        raise CwdmError(f"--size_range must be two fractions with 0 < smallest <= largest < 1, got {lo:g} {hi:g}")
    if int(margin) != margin or margin < 0:
        raise CwdmError(f"--margin must be a whole number of voxels >= 0, got {margin!r}")
    return lo, hi


def _case_problems(case: Case) -> List[str]:
    """What stops ``case`` from being made into an inpainting case (one line each, naming the file)."""
    problems = list(case.problems)
    for part in (IMAGE, SEG):
        copies = case.duplicates.get(part, [])
        if copies:
            problems.append(f"{copies[1]}: a second {part} file in the case (also {copies[0].name})")
        elif case.path(part) is None:
            need = "the image to void" if part == IMAGE else "the tumour, which the mask must stay away from"
            problems.append(f"{case.folder / case.file_name(part)}: missing ({part} is needed: {need})")
    if problems:
        return problems
    try:
        t1n_shape = load_header(case.path(IMAGE))[0]
        seg_shape = load_header(case.seg)[0]
    except CwdmError as exc:
        return [str(exc)]
    if seg_shape != t1n_shape:
        problems.append(f"{case.seg}: shape {seg_shape} differs from the t1n's {t1n_shape} "
                        f"({case.path(IMAGE).name})")
    return problems


def _existing(output_dir: Path, cases: Sequence[Case]) -> List[Path]:
    """The output files of ``cases`` already in ``output_dir`` (and case names taken by a non-folder)."""
    found = []
    for case in cases:
        folder = output_dir / case.name
        if folder.exists() and not folder.is_dir():
            found.append(folder)
            continue
        found += [folder / f"{case.name}-{part}.nii.gz" for part in OUTPUTS
                  if (folder / f"{case.name}-{part}.nii.gz").exists()]
    return found


def _image(path: Path):
    """(data (X, Y, Z) in the file's data type, or float32 when the file is scaled; the image)."""
    shape, _, img = load_header(path)
    # a loaded image keeps the file's scaling on its data proxy (its header's scl_slope is reset)
    slope, inter = getattr(img.dataobj, "slope", 1.0), getattr(img.dataobj, "inter", 0.0)
    scaled = not (slope == 1.0 and inter == 0.0)
    try:
        data = img.get_fdata(dtype=np.float32) if scaled else np.asanyarray(img.dataobj)
    except Exception as exc:  # noqa: BLE001 - gzip/zlib/nibabel raise many kinds on truncated data
        if isinstance(exc, MemoryError):
            raise
        raise CwdmError(f"{path}: unreadable or corrupt NIfTI data ({' '.join(str(exc).split())[:200]})") from None
    data = np.asarray(data).reshape(shape)
    if data.dtype.kind == "f" and not np.all(np.isfinite(data)):
        raise CwdmError(f"{path}: holds NaN or infinite values")
    return data, img


def _copy_gz(src: Path, dst: Path) -> None:
    """``src`` as ``dst`` (a ``.nii.gz``): the same bytes, or gzipped when ``src`` is a plain ``.nii``."""
    if src.name.lower().endswith(".gz"):
        shutil.copyfile(src, dst)
    else:
        with open(src, "rb") as fin, gzip.open(dst, "wb") as fout:
            shutil.copyfileobj(fin, fout)


def case_rng(seed: int, name: str) -> np.random.Generator:
    """The generator of case ``name``: ``np.random.default_rng([seed, crc32(name)])``."""
    return np.random.default_rng([int(seed), zlib.crc32(name.encode("utf-8"))])


def _write_case(case: Case, output_dir: Path, seed: int, size_range: Tuple[float, float], margin: int,
                mode: int) -> Tuple[int, int]:
    """Write the inpainting case of ``case``; returns (mask voxels, brain voxels)."""
    t1n_path, seg_path = case.path(IMAGE), case.seg
    data, img = _image(t1n_path)
    tumour = load_nifti(seg_path)[0] > 0
    brain = data != 0
    try:
        mask = draw_healthy_mask(brain, tumour, case_rng(seed, case.name), size_range=size_range, margin=margin)
    except CwdmError as exc:
        raise CwdmError(f"{t1n_path}: {exc}") from None
    voided = data.copy()
    voided[mask] = 0
    name = case.name
    tmp = Path(tempfile.mkdtemp(dir=str(output_dir), prefix=f".{name}.", suffix=".tmp"))
    try:
        save_nifti_like(voided, img, tmp / f"{name}-{VOIDED}.nii.gz", dtype=data.dtype)
        for part, array in ((MASK, mask), (HEALTHY, mask), (UNHEALTHY, tumour)):
            save_nifti_like(array.astype(np.uint8), img, tmp / f"{name}-{part}.nii.gz", dtype=np.uint8)
        _copy_gz(t1n_path, tmp / f"{name}-{IMAGE}.nii.gz")
        final = output_dir / name
        if not final.exists():
            os.chmod(tmp, mode)
            os.replace(tmp, final)
        else:
            for part in OUTPUTS:
                os.replace(tmp / f"{name}-{part}.nii.gz", final / f"{name}-{part}.nii.gz")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return int(mask.sum()), int(brain.sum())


def make_inpainting_set(data_dir, output_dir, seed: int = 0, size_range: Sequence[float] = (0.005, 0.05),
                        margin: int = 2, overwrite: bool = False, progress: bool = False) -> Dict[str, float]:
    """Write the inpainting case of every case of ``data_dir`` under ``output_dir`` (module docstring).

    Returns:
        case name -> the mask's volume as a fraction of the brain's, in case order.

    Raises:
        CwdmError: bad options, ``output_dir`` inside ``data_dir`` (or the reverse), a case that
            cannot be used (the first problem named, with the count of the others), outputs that
            exist without ``overwrite``, or a case where no mask fits (the cases before it are
            written, each complete).
    """
    data_dir, output_dir = Path(data_dir), Path(output_dir)
    lo, hi = _check_options(seed, size_range, margin)
    _check_paths(data_dir, output_dir)
    cases = discover_cases(data_dir)
    problems = [p for case in cases for p in _case_problems(case)]
    if problems:
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise CwdmError(problems[0] + more)
    existing = _existing(output_dir, cases)
    if existing and not overwrite:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise CwdmError(f"{existing[0]}: already exists{more}; use --overwrite to replace")
    make_folder(output_dir)
    umask = os.umask(0)
    os.umask(umask)
    from tqdm import tqdm

    fractions: Dict[str, float] = {}
    for case in tqdm(cases, desc="inpaint-data", unit="case", disable=not progress):
        try:
            voxels, brain = _write_case(case, output_dir, seed, (lo, hi), int(margin), 0o777 & ~umask)
        except CwdmError as exc:
            done = f" ({len(fractions)} cases before it are written)" if fractions else ""
            raise CwdmError(f"{exc}{done}") from None
        fractions[case.name] = voxels / brain
    return fractions


def run(cfg: InpaintDataConfig) -> int:
    """Write the set and print a one-line summary; returns 0."""
    fractions = make_inpainting_set(cfg.data_dir, cfg.output_dir, cfg.seed, cfg.size_range, cfg.margin,
                                    cfg.overwrite, progress=True)
    values = sorted(fractions.values())
    print(f"inpaint-data: wrote {len(values)} inpainting case(s) to {cfg.output_dir} (seed {cfg.seed}; masks "
          f"{values[0]:.2%} to {values[-1]:.2%} of the brain, median {values[len(values) // 2]:.2%}, "
          f"more than {cfg.margin} voxels from the tumour)")
    return 0

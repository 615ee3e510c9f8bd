"""Writing phantom sets: case names, atomic NIfTI files, whole sets, mid-slice pictures.

The library behind ``cwdm phantom`` (whose docstring describes the files and
the grid): :func:`make_phantom_set` draws cases with
:func:`cwdm.phantom.anatomy.generate_case` and writes them with
:func:`write_case` as ``OUT/<case>/<case>-{t1n,t1c,t2w,t2f,seg}.nii.gz``;
:func:`save_midslices` draws one case. The command module
:mod:`cwdm.commands.phantom` re-exports these names.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from ..errors import CwdmError
from ..naming import MODALITIES, SEG
from .anatomy import generate_case

FILES = MODALITIES + (SEG,)
"""The files of a phantom case: the four BraTS modalities and the tumour segmentation."""
__all__ = ["FILES", "case_name", "write_case", "make_phantom_set", "save_midslices"]


def case_name(index: int, draw: int = 0) -> str:
    """BraTS-style case name, e.g. ``BraTS-GLI-00007-000``; the last field is the detail draw
    (where BraTS numbers a subject's time points)."""
    return f"BraTS-GLI-{int(index):05d}-{int(draw):03d}"


def _save_atomic(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    """Write one NIfTI file through a temporary ``.nii.gz`` in the same folder."""
    import nibabel as nib

    img = nib.Nifti1Image(array, affine)
    img.header.set_data_dtype(array.dtype)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:-7]}.", suffix=".nii.gz")
    os.close(fd)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)      # mkstemp makes 0600; give the usual mode
        nib.save(img, tmp)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _occupied(folder: Path) -> bool:
    return folder.is_dir() and any(folder.iterdir())


def write_case(case: dict, out_dir, name: str, overwrite: bool = False) -> Path:
    """Write ``case`` (from :func:`generate_case`) as ``out_dir/name/name-<mod>.nii.gz``.

    Refuses (``CwdmError``) to write into a non-empty ``out_dir/name`` unless
    ``overwrite``. Every file is written atomically. Returns the case folder.
    """
    folder = Path(out_dir) / name
    if folder.exists() and not folder.is_dir():
        raise CwdmError(f"{folder} exists and is not a folder")
    if _occupied(folder) and not overwrite:
        raise CwdmError(f"{folder} already exists; pass --overwrite to replace it")
    missing = [k for k in FILES + ("affine",) if k not in case]
    if missing:
        raise ValueError(f"case dict lacks {missing}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for key in FILES:
            _save_atomic(np.asarray(case[key]), np.asarray(case["affine"], dtype=np.float64),
                         folder / f"{name}-{key}.nii.gz")
    except OSError as exc:
        raise CwdmError(f"cannot write {folder}: {exc.strerror or exc}") from exc
    return folder


def make_phantom_set(out, cases: int, seed: int, downsample: int = 1, start: int = 0,
                     overwrite: bool = False, progress: bool = True, ambiguous: bool = False,
                     detail_draws: int = 1) -> list:
    """Generate and write cases ``start .. start+cases-1``; return their folders.

    All target folders are checked before anything is generated, so a refused
    run writes nothing. ``ambiguous`` makes the ambiguous phantom
    (:mod:`cwdm.phantom.detail`; its detail masks are not written).
    ``detail_draws`` D > 1 (ambiguous only) writes each subject D times with
    detail draws ``0 .. D-1`` (``generate_case``'s ``detail_seed``), named
    ``BraTS-GLI-<index>-<draw:03d>``: the same anatomy with independent detail,
    which shows a model several outcomes of one subject's missing contrast.
    """
    from tqdm import tqdm

    for label, value, low in (("cases", cases, 1), ("seed", seed, 0), ("start", start, 0),
                              ("detail_draws", detail_draws, 1)):
        if int(value) != value or value < low:
            raise CwdmError(f"--{label} must be an integer >= {low}, got {value!r}")
    if detail_draws > 1 and not ambiguous:
        raise CwdmError("--detail_draws above 1 needs --ambiguous (the plain phantom has no detail to draw)")
    if int(downsample) != downsample or not 1 <= downsample <= 16:
        raise CwdmError(f"--downsample must be an integer from 1 to 16, got {downsample!r}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CwdmError(f"{out} exists and is not a folder")
    jobs = [(i, d) for i in range(start, start + cases) for d in range(int(detail_draws))]
    names = [case_name(i, d) for i, d in jobs]
    if not overwrite:
        taken = [n for n in names if _occupied(out / n)]
        if taken:
            more = f" (and {len(taken) - 1} more)" if len(taken) > 1 else ""
            raise CwdmError(f"{out / taken[0]}{more} already exists; pass --overwrite to replace")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CwdmError(f"cannot create {out}: {exc.strerror or exc}") from exc
    folders = []
    for (index, draw), name in zip(tqdm(jobs, desc="phantom", unit="case", disable=not progress), names):
        case = generate_case(seed, index, downsample, ambiguous=bool(ambiguous), detail_seed=draw)
        folders.append(write_case(case, out, name, overwrite=True))
    return folders


def save_midslices(case: dict, path, title: str = "") -> Path:
    """PNG of a case: axial mid slice, then coronal and sagittal slices through the tumour.

    ``docs/phantom_midslices.png`` is
    ``save_midslices(generate_case(0, 10), path, title)`` (matplotlib Agg).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    seg = case[SEG]
    shape = np.array(seg.shape)
    tumour = np.argwhere(seg > 0)
    centre = tumour.mean(0).round().astype(int) if len(tumour) else shape // 2
    views = [("axial mid", lambda v: v[:, :, shape[2] // 2].T),
             ("coronal", lambda v: v[:, centre[1], ::-1].T),
             ("sagittal", lambda v: v[centre[0], :, ::-1].T)]
    fig = Figure(figsize=(12.5, 8.2))       # Agg canvas, no pyplot state touched
    FigureCanvasAgg(fig)
    axes = fig.subplots(3, 5)
    for row, (view, cut) in enumerate(views):
        for col, key in enumerate(FILES):
            ax = axes[row, col]
            img = cut(case[key])
            if key == SEG:
                ax.imshow(img, cmap="viridis", vmin=0, vmax=3, interpolation="nearest")
            else:
                vmax = np.percentile(case[key][case[key] > 0], 99.5)
                ax.imshow(img, cmap="gray", vmin=0, vmax=vmax)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(key)
            if col == 0:
                ax.set_ylabel(view)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=80)
    return path

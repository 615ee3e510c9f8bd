"""NIfTI reading and atomic, non-clobbering writing.

* :func:`load_nifti` reads a 3D volume as float32 and raises a one-line
  :class:`~cwdm.errors.CwdmError` naming the file when it is missing,
  unreadable, corrupt or not 3D (a 4D volume whose last axis is 1 is
  squeezed).
* :func:`save_nifti_like` writes an array with the affine and header of a
  reference image, through a temporary file in the destination folder that is
  renamed into place (``os.replace``) only when complete.
* :func:`atomic_write` / :func:`atomic_path` give the same guarantee to other
  file kinds (CSV, JSON, ``torch.save``): either the old file or the complete
  new one is there, never a half-written file, and no temporary file is left
  behind after an error.
* :func:`check_destination` refuses, in one line and before any work, an
  output folder or file that cannot be written (a file where a folder is
  wanted, a parent that is a file, a read-only place, the kernel's ``/proc``
  or ``/sys``).
* A write that fails on the way (full disk, read-only file system, no
  permission, I/O error) is one :class:`CwdmError` naming the destination and
  the cause; the temporary file is removed first. The first write into a
  folder removes the temporaries killed writes left there (:mod:`cwdm.writes`).
"""

from __future__ import annotations

import contextlib
import os
import zlib
from pathlib import Path
from typing import IO, Iterator, Optional, Tuple, Union

import nibabel as nib
import numpy as np

from ..errors import CwdmError
from ..naming import is_nifti
from ..writes import is_write_error, remove_stale_temporaries, temp_name, virtual_root, write_failure

__all__ = ["load_header", "load_nifti",
           "save_nifti_like", "atomic_path", "atomic_write", "check_destination"]

PathLike = Union[str, "os.PathLike[str]"]

# Errors nibabel / gzip / zlib raise on missing, truncated or garbage files.
_READ_ERRORS = (OSError, EOFError, ValueError, zlib.error, nib.filebasedimages.ImageFileError,
                nib.spatialimages.HeaderDataError, TypeError, IndexError)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_current_umask()


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _spatial_shape(shape: Tuple[int, ...], path: PathLike) -> Tuple[int, int, int]:
    """The 3D shape of an image of ``shape`` (4D with last axis 1 is allowed)."""
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise CwdmError(f"{path}: not a 3D volume (shape {tuple(shape)})")
    if min(shape) < 1:
        raise CwdmError(f"{path}: empty volume (shape {tuple(shape)})")
    return tuple(int(s) for s in shape)  # type: ignore[return-value]


def load_header(path: PathLike) -> Tuple[Tuple[int, int, int], np.ndarray, nib.Nifti1Image]:
    """Read only the header of a NIfTI file.

    Returns:
        (shape (X, Y, Z), affine (4, 4) float64, the lazily loaded image).

    Raises:
        CwdmError: missing, unreadable or not-3D file (message names ``path``).
    """
    p = Path(path)
    if not p.is_file():
        raise CwdmError(f"{p}: file not found" if not p.exists() else f"{p}: not a regular file")
    try:
        img = nib.load(str(p))
        shape = tuple(img.shape)
        affine = np.asarray(img.affine, dtype=np.float64)
    except _READ_ERRORS as exc:
        raise CwdmError(f"{p}: unreadable or corrupt NIfTI file ({_describe(exc)})") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise CwdmError(f"{p}: not a NIfTI image ({type(img).__name__})")
    return _spatial_shape(shape, p), affine, img


def load_nifti(path: PathLike) -> Tuple[np.ndarray, nib.Nifti1Image]:
    """Read a 3D NIfTI volume.

    Returns:
        (data (X, Y, Z) float32 with scaling applied, the image object for
        its affine/header).

    Raises:
        CwdmError: missing, unreadable, truncated/corrupt or not-3D file; the
            one-line message names ``path``.
    """
    shape, _, img = load_header(path)
    try:
        data = img.get_fdata(dtype=np.float32)
    except Exception as exc:  # gzip/zlib/nibabel raise many kinds on truncated data
        if isinstance(exc, MemoryError):
            raise
        raise CwdmError(f"{path}: unreadable or corrupt NIfTI data ({_describe(exc)})") from None
    return data.reshape(shape), img


def _check_target(path: Path, overwrite: bool) -> None:
    if not path.parent.is_dir():
        raise CwdmError(f"{path}: folder {path.parent} does not exist")
    if path.is_dir():
        raise CwdmError(f"{path}: is a folder, cannot write a file there")
    if path.exists() and not overwrite:
        raise CwdmError(f"{path}: already exists (use --overwrite to replace it)")


def check_destination(path: PathLike, flag: str, kind: str = "dir", overwrite: bool = True) -> None:
    """Raise a one-line :class:`CwdmError` if ``path`` cannot be written; nothing is created.

    ``kind="dir"``: ``path`` is an output folder; it may be missing if it can
    be created (its nearest existing ancestor is a writable folder).
    ``kind="file"``: ``path`` is an output file; its folder must exist and be
    writable, and an existing file is refused unless ``overwrite``.
    ``flag`` names the option in the message (``--output_dir``).
    """
    path = Path(path)
    if kind not in ("dir", "file"):
        raise ValueError(f"kind must be 'dir' or 'file', got {kind!r}")
    virtual = virtual_root(path)
    if virtual is not None:
        raise CwdmError(f"{flag} {path}: {virtual} is the kernel's virtual file system, not a place for "
                        f"files; choose a folder on a disk")
    if kind == "file":
        if path.is_dir():
            raise CwdmError(f"{flag} {path}: is a folder, expected a file name")
        folder = path.parent
        if not folder.is_dir():
            what = "is not a folder" if folder.exists() else "does not exist"
            raise CwdmError(f"{flag} {path}: {folder} {what}")
        if path.exists() and not overwrite:
            raise CwdmError(f"{flag} {path}: already exists (use --overwrite to replace it)")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise CwdmError(f"{flag} {path}: folder {folder} is not writable")
        return
    if path.exists() or path.is_symlink():
        if not path.is_dir():
            raise CwdmError(f"{flag} {path}: is a file (or a dangling link), not a folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise CwdmError(f"{flag} {path}: folder is not writable")
        return
    ancestor = path.absolute().parent
    while not (ancestor.exists() or ancestor.is_symlink()):
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise CwdmError(f"{flag} {path}: cannot create the folder, {ancestor} is a file")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise CwdmError(f"{flag} {path}: cannot create the folder, {ancestor} is not writable")


@contextlib.contextmanager
def atomic_path(path: PathLike, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path``.

    The temporary name ends with ``path``'s suffix (``x.nii.gz`` -> ``...tmp.nii.gz``)
    so libraries that choose a format by extension behave the same. On any
    exception the temporary file is removed and ``path`` is left untouched; a
    write the file system refuses (full disk, read-only, no permission) becomes
    a one-line :class:`CwdmError` naming ``path`` and the cause
    (:func:`cwdm.writes.write_failure`). Stale temporaries of killed writes in
    the folder are removed first (:func:`cwdm.writes.remove_stale_temporaries`).

    Args:
        path: final destination; its folder must exist.
        overwrite: if False and ``path`` exists, raise :class:`CwdmError`
            before writing anything (checked again before the rename).
    """
    final = Path(path)
    _check_target(final, overwrite)
    remove_stale_temporaries(final.parent)
    try:
        tmp = temp_name(final)
    except OSError as exc:
        raise write_failure(final, exc) from None
    try:
        yield tmp
        if not overwrite and final.exists():
            raise CwdmError(f"{final}: already exists (use --overwrite to replace it)")
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, final)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, (OSError, RuntimeError)) and is_write_error(exc, tmp):
            raise write_failure(final, exc) from None
        raise


@contextlib.contextmanager
def atomic_write(path: PathLike, mode: str = "w", *, overwrite: bool = True,
                 encoding: Optional[str] = None, newline: Optional[str] = None) -> Iterator[IO]:
    """Open a temporary file for writing; on success it atomically replaces ``path``.

    Example::

        with atomic_write(out / "metrics.csv", newline="") as f:
            csv.writer(f).writerows(rows)
        with atomic_write(out / "model.pt", "wb") as f:
            torch.save(state, f)

    Args:
        path: final destination; its folder must exist.
        mode: ``"w"`` (text, UTF-8 unless ``encoding``) or ``"wb"``.
        overwrite: if False and ``path`` exists, raise :class:`CwdmError`.
    """
    if mode not in ("w", "wb", "wt"):
        raise ValueError(f"atomic_write mode must be 'w' or 'wb', got {mode!r}")
    if "b" not in mode and encoding is None:
        encoding = "utf-8"
    with atomic_path(path, overwrite=overwrite) as tmp:
        with open(tmp, mode, encoding=encoding, newline=newline) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())


def save_nifti_like(array: np.ndarray, reference_img: Union[nib.Nifti1Image, PathLike],
                    path: PathLike, overwrite: bool = False, dtype: np.dtype = np.float32,
                    descrip: Optional[str] = None) -> Path:
    """Write ``array`` (X, Y, Z) with the affine and header of ``reference_img``.

    The header is copied (qform/sform and their codes, voxel sizes, units,
    description), its data type set to ``dtype`` and its scaling reset. The
    file is written to a temporary ``*.nii.gz`` next to ``path`` and renamed
    into place when complete.

    Args:
        array: (X, Y, Z) numpy array (or anything ``np.asarray`` takes, e.g. a
            CPU tensor); must have the reference image's spatial shape.
        reference_img: image (or path of one) whose geometry is reused.
        path: destination, ``.nii.gz`` (compressed) or ``.nii``.
        overwrite: replace an existing ``path``; otherwise raise CwdmError.
        dtype: on-disk data type (float32 by default).
        descrip: the header's description instead of the reference's (at most 79 bytes), or None.

    Returns:
        ``path`` as a :class:`Path`.
    """
    final = Path(path)
    if not is_nifti(final):
        raise CwdmError(f"{final}: output name must end in .nii.gz or .nii")
    _check_target(final, overwrite)
    if not isinstance(reference_img, nib.spatialimages.SpatialImage):
        _, _, reference_img = load_header(reference_img)
    data = np.asarray(array)
    ref_shape = tuple(reference_img.shape)
    ref_spatial = ref_shape[:3] if len(ref_shape) == 4 and ref_shape[3] == 1 else ref_shape
    if data.ndim != 3 or tuple(data.shape) != tuple(ref_spatial):
        raise CwdmError(f"{final}: array shape {tuple(data.shape)} does not match the reference "
                        f"image shape {tuple(ref_spatial)}")
    if not np.all(np.isfinite(data)):
        raise CwdmError(f"{final}: refusing to write non-finite values (NaN/Inf)")
    dtype = np.dtype(dtype)
    header = reference_img.header.copy()
    header.set_data_shape(data.shape)
    header.set_data_dtype(dtype)
    img_cls = type(reference_img) if isinstance(reference_img, (nib.Nifti1Image, nib.Nifti2Image)) \
        else nib.Nifti1Image
    img = img_cls(data.astype(dtype, copy=False), reference_img.affine, header=header)
    ref_hdr = reference_img.header
    if hasattr(ref_hdr, "get_qform"):
        img.set_qform(ref_hdr.get_qform(), code=int(ref_hdr["qform_code"]))
        img.set_sform(ref_hdr.get_sform(), code=int(ref_hdr["sform_code"]))
    img.header.set_slope_inter(1.0, 0.0)
    if descrip is not None:
        img.header["descrip"] = descrip.encode()[:79]
    with atomic_path(final, overwrite=overwrite) as tmp:
        nib.save(img, str(tmp))
    return final


MARK = "cwdm synthesized "
"""Start of the NIfTI ``descrip`` of every volume cwdm synthesizes: ``cwdm synthesized t2f from t1n,t2w``."""


def synthesis_mark(target: str, inputs) -> str:
    """The ``descrip`` header text of a volume cwdm synthesized (at most 79 bytes: the target is kept)."""
    text = f"{MARK}{target} from {','.join(inputs)}"
    return text if len(text.encode()) <= 79 else text.encode()[:79].decode(errors="ignore")


def synthesized_target(path: Path) -> Optional[str]:
    """The modality cwdm synthesized into the NIfTI file ``path`` (its header says so), else None.

    Only the header is read; an unreadable file is None (validation reports it).
    """
    import nibabel as nib

    try:
        raw = nib.load(str(path)).header["descrip"]
    except Exception:  # noqa: BLE001 - anything nibabel/gzip raise on a broken file: not ours
        return None
    text = bytes(raw.tobytes() if hasattr(raw, "tobytes") else raw).split(b"\0")[0].decode(errors="ignore")
    if not text.startswith(MARK):
        return None
    return text[len(MARK):].split(" ")[0] or None

"""NIfTI reading and atomic, non-clobbering NIfTI writing.

* :func:`load_nifti` reads a 3D volume as float32 and raises a one-line
  :class:`~cwdm.errors.CwdmError` naming the file when it is missing,
  unreadable, corrupt or not 3D (a 4D volume whose last axis is 1 is
  squeezed).
* :func:`save_nifti_like` writes an array with the affine and header of a
  reference image, through a temporary file in the destination folder that is
  renamed into place (``os.replace``) only when complete.
  (:func:`cwdm.writes.atomic_path`, which every other file kind uses too).
* A write that fails on the way (full disk, read-only file system, no
  permission, I/O error) is one :class:`CwdmError` naming the destination and
  the cause; the temporary file is removed first. The first write into a
  folder removes the temporaries killed writes left there (:mod:`cwdm.writes`).
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path
from typing import Optional, Tuple, Union

import nibabel as nib
import numpy as np

from ..errors import CwdmError
from ..naming import is_nifti
from ..writes import atomic_path, check_target

__all__ = ["load_header", "load_nifti", "save_nifti_like"]

PathLike = Union[str, "os.PathLike[str]"]

# Errors nibabel / gzip / zlib raise on missing, truncated or garbage files.
_READ_ERRORS = (OSError, EOFError, ValueError, zlib.error, nib.filebasedimages.ImageFileError,
                nib.spatialimages.HeaderDataError, TypeError, IndexError)


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
    check_target(final, overwrite)
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

"""The modality vocabulary: the names cwdm and the BraTS world use for contrasts, files and released weights.

* :data:`MODALITIES` are the BraTS 2023/2024 modality names in the canonical
  (condition) order; :data:`SEG` is the segmentation's name and :data:`ANY`
  the target of a unified model (it synthesizes whichever modality is missing).

* BraTS 2023/2024 files are ``<case>-t1n.nii.gz`` (``t1n``, ``t1c``, ``t2w``,
  ``t2f``, ``seg``); BraTS 2021 files are ``<case>_t1.nii.gz`` (``t1``,
  ``t1ce``, ``t2``, ``flair``, ``seg``). :data:`LEGACY_NAMES` maps the old
  names to the new ones; they are also accepted as ``--contr`` values.
* The paper's weights (HuggingFace ``pfriedri/cwdm``) are called
  ``t1_gen.pt``, ``t1ce_gen.pt``, ``t2_gen.pt`` and ``flair_gen.pt``
  (:data:`PUBLISHED_WEIGHTS`); cwdm's own exports are ``brats_<contrast>_<step>.pt``.

The old names apply only when the new name they stand for is one of the
modalities in use (the BraTS default), so other tasks' names are never rewritten.
"""

from __future__ import annotations

import re
from pathlib import Path
import os
from typing import Optional, Sequence, Tuple, Union


MODALITIES = ("t1n", "t1c", "t2w", "t2f")
"""BraTS 2023/2024 modality names in the canonical (condition) order."""
SEG = "seg"
"""The file-name suffix of a BraTS segmentation (a label map, never synthesized)."""
ANY = "any"
"""The target of a unified model: it synthesizes whichever modality is missing (:meth:`cwdm.task.Task.unified`)."""
LEGACY_NAMES = {"t1": "t1n", "t1ce": "t1c", "t2": "t2w", "flair": "t2f"}
"""BraTS 2021 modality name -> BraTS 2023 name."""
PUBLISHED_WEIGHTS = {"t1_gen": "t1n", "t1ce_gen": "t1c", "t2_gen": "t2w", "flair_gen": "t2f"}
"""File stem of the paper's released weights -> the contrast that file synthesizes."""


NIFTI_SUFFIXES = (".nii.gz", ".nii")
"""File name endings of NIfTI files."""

PathLike = Union[str, "os.PathLike[str]"]


def is_nifti(path: PathLike) -> bool:
    """True if the file name ends in ``.nii.gz`` or ``.nii`` (case-insensitive)."""
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def nifti_stem(path: PathLike) -> str:
    """File name without ``.nii.gz`` / ``.nii`` (``a/b-t1n.nii.gz`` -> ``b-t1n``)."""
    name = Path(path).name
    for suffix in NIFTI_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def split_part(path: PathLike, parts: Sequence[str]) -> Tuple[str, Optional[str]]:
    """``(prefix, part)`` of a file name ending in ``-<part>`` for one of ``parts`` (whole names, longest first:
    ``B-1-t1n-voided.nii.gz`` -> ``("B-1", "t1n-voided")`` even when ``t1n`` is a part too); part None when
    the name ends in none of them, or nothing precedes it."""
    stem = nifti_stem(path)
    for part in sorted(parts, key=len, reverse=True):
        if stem.lower().endswith("-" + part) and len(stem) > len(part) + 1:
            return stem[: -len(part) - 1], part
    return stem, None


def canonical_contrast(name: Optional[str], modalities: Sequence[str]) -> Optional[str]:
    """``name`` as one of ``modalities``: itself, or the new name of a BraTS 2021 name (``flair`` -> ``t2f``).

    Names that are neither are returned unchanged (the caller reports them).
    """
    if name is None:
        return None
    by_lower = {m.lower(): m for m in modalities}
    low = str(name).strip().lower()
    if low in by_lower:
        return by_lower[low]
    new = LEGACY_NAMES.get(low)
    return by_lower.get(new, name) if new else name


def parse_file_name(path: Path, modalities: Sequence[str]) -> Tuple[str, Optional[str], str]:
    """``(prefix, key, separator)`` of a NIfTI file name.

    ``key`` is a modality of ``modalities``, ``"seg"`` or None (not recognized).
    ``<prefix>-<modality>`` is tried first; then ``<prefix>_<old name>`` with a
    BraTS 2021 name (separator ``"_"``), e.g. ``BraTS2021_00000_flair`` -> t2f.
    """
    stem = nifti_stem(path)
    by_lower = {m.lower(): m for m in modalities}
    prefix, sep, tail = stem.rpartition("-")
    if sep:
        low = tail.lower()
        if low in by_lower or low == SEG:
            return prefix, by_lower.get(low, SEG), "-"
    prefix, sep, tail = stem.rpartition("_")
    if sep and prefix:
        low = tail.lower()
        if low == SEG:
            return prefix, SEG, "_"
        new = LEGACY_NAMES.get(low)
        if new is not None and new in by_lower and low not in by_lower:
            return prefix, by_lower[new], "_"
    prefix, sep, _ = stem.rpartition("-")
    return (prefix, None, "-") if sep else (stem, None, "-")


def legacy_name(modality: str) -> str:
    """The BraTS 2021 name of ``modality`` (itself when it has none)."""
    return next((old for old, new in LEGACY_NAMES.items() if new == modality), modality)


def contrast_of_checkpoint(path: Path, modalities: Sequence[str]) -> Optional[str]:
    """The contrast a checkpoint's file name says it synthesizes, or None.

    ``flair_gen.pt`` (a published name) -> t2f; ``brats_t2f_1200000.pt`` -> t2f
    (a modality is one of the words of the name, split at non-alphanumerics);
    a name that names several modalities, or none, says nothing.
    """
    stem = Path(path).stem.lower()
    published = PUBLISHED_WEIGHTS.get(stem)
    if published is not None and published in modalities:
        return published
    words = set(re.split(r"[^0-9a-z]+", stem))
    named = [m for m in modalities if m.lower() in words]
    return named[0] if len(named) == 1 else None

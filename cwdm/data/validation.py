"""Validation of case folders: every problem of a case as one line naming the file, before any work.

:func:`validate_case` checks one case (presence, duplicates, headers, shapes, affines, grid fit,
and when asked the voxels: non-finite, empty or constant volumes, label maps holding only declared
labels); :func:`validate_cases` checks many, optionally in threads; :func:`check_cases` raises one
:class:`~cwdm.errors.CwdmError` listing the bad ones (``cwdm check`` prints them all). The datasets of
:mod:`cwdm.data.datasets` run :func:`check_cases` at the level their ``check`` names
(:data:`CHECK_LEVELS`).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..errors import CwdmError, format_shape
from ..naming import SEG
from .cases import Case
from .nifti_io import load_header
from .preprocess import grid_for

__all__ = ["validate_case", "validate_cases", "check_cases", "check_presence", "label_problems", "AFFINE_ATOL",
           "CHECK_LEVELS"]

AFFINE_ATOL = 1e-3
MAX_LISTED_PROBLEMS = 20
CHECK_LEVELS = ("full", "header", "none")


def _presence_problems(case: Case, required: Sequence[str]) -> List[str]:
    """Problems found without reading files: the folder's own, duplicates, no recognized
    modality at all, missing required modalities."""
    problems = list(case.problems)
    if not case.files and not case.duplicates and not case.problems and not required:
        found = ", ".join(p.name for p in case.others[:4]) or "no modality file"
        problems.append(f"{case.folder}: no file with a known modality name (found {found}; expected "
                        f"{case.prefix}-<modality>.nii.gz)")
    problems += [f"{case.folder}: {len(paths)} files for modality {mod} "
                f"({', '.join(p.name for p in paths)}); keep exactly one"
                for mod, paths in case.duplicates.items()]
    problems += [f"{case.folder}: missing required modality {mod} (no {case.file_name(mod)})"
                 for mod in required if case.path(mod) is None and mod not in case.duplicates]
    return problems


def validate_case(case: Case, required: Sequence[str] = (), divisor: Optional[int] = None,
                  *, read_data: bool = True, labels: Optional[Mapping[str, Sequence[int]]] = None) -> List[str]:
    """Every problem of one case, each a single line naming the file.

    Checked: duplicate modality files, missing ``required`` modalities,
    unreadable/corrupt or non-3D files, shapes or affines (``np.allclose``,
    atol 1e-3) that differ from the case's first file, a shape that cannot be
    mapped to the model grid of ``divisor``, and -- when ``read_data`` --
    non-finite voxels and all-zero (or constant) volumes. All present modality
    files and the seg file are checked, not only the ``required`` ones.

    ``labels`` names the label maps of a task (name -> declared non-zero
    labels, :attr:`cwdm.task.Task.label_maps`): their voxels are always read
    (even without ``read_data``; a label map is small) and every value must be
    a whole number of the declared set or 0 (:func:`label_problems`); an empty
    or constant label map is fine (a case without tumour).

    Returns:
        list of problem lines (empty when the case is usable).
    """
    problems = _presence_problems(case, required)
    labels = dict(labels or {})
    headers = []  # (modality, path, shape, affine, image) of readable files
    items = list(case.files.items()) + ([(SEG, case.seg)] if case.seg is not None else [])
    for mod, path in items:
        try:
            headers.append((mod, path) + load_header(path))
        except CwdmError as exc:
            problems.append(str(exc))
    ref = _reference_header(headers)
    for mod, path, shape, affine, img in headers:
        if path != ref[0]:
            if shape != ref[1]:
                problems.append(f"{path}: shape {format_shape(shape)} differs from {ref[0].name} ({format_shape(ref[1])})")
                continue
            if not np.allclose(affine, ref[2], atol=AFFINE_ATOL, rtol=0):
                diff = float(np.max(np.abs(affine - ref[2])))
                problems.append(f"{path}: affine differs from {ref[0].name} (max difference {diff:.4g})")
        if mod in labels:
            problems.extend(_label_file_problems(path, img, labels[mod]))
        elif read_data:
            problems.extend(_data_problems(path, img, shape, is_seg=mod == SEG))
    if divisor is not None and headers:
        try:
            grid_for(ref[1], divisor)
        except CwdmError as exc:
            problems.append(f"{ref[0]}: {exc}")
    return problems


def _reference_header(headers: List[Tuple[Any, ...]]) -> Tuple[Path, Tuple[int, ...], np.ndarray]:
    """(path, shape, affine) the other files are compared with: the first
    modality file whose geometry agrees with the most files, so that a single
    odd file is the one reported."""
    if not headers:
        return (Path(), (), np.eye(4))

    def agree(a: Tuple[Any, ...], b: Tuple[Any, ...]) -> bool:
        return a[2] == b[2] and np.allclose(a[3], b[3], atol=AFFINE_ATOL, rtol=0)

    candidates = [h for h in headers if h[0] != SEG] or headers
    best = max(candidates, key=lambda h: sum(agree(h, o) for o in headers))  # first of ties
    return best[1], best[2], best[3]



def _read_voxels(path: Path, img: Any) -> Tuple[Optional[np.ndarray], List[str]]:
    """The voxels of a loaded header's image, or None and the one-line problem."""
    try:
        return np.asarray(img.get_fdata(dtype=np.float32)), []
    except Exception as exc:  # nibabel/gzip/zlib raise many kinds on truncated data
        text = " ".join(str(exc).split()) or type(exc).__name__
        return None, [f"{path}: unreadable or corrupt NIfTI data ({text[:200]})"]


def label_problems(path: Any, data: np.ndarray, labels: Sequence[int]) -> List[str]:
    """Why ``data``, read from ``path``, is not a label map of the declared non-zero ``labels``
    (one line each; empty when it is): every voxel must be a whole number, 0 or one of ``labels``."""
    finite = np.isfinite(data)
    if not np.all(finite):
        return [f"{path}: a label map must hold whole numbers (found {int(data.size - finite.sum())} NaN/Inf voxels)"]
    if np.any(data != np.round(data)):
        return [f"{path}: a label map must hold whole numbers (found non-integer values)"]
    declared = sorted(int(v) for v in labels)
    unknown = sorted(set(np.unique(data).astype(np.int64).tolist()) - {0, *declared})
    if unknown:
        return [f"{path}: labels {unknown} are not in the declared set {declared} (0 = background)"]
    return []


def _label_file_problems(path: Path, img: Any, labels: Sequence[int]) -> List[str]:
    data, problems = _read_voxels(path, img)
    return problems if data is None else label_problems(path, data, labels)


def _data_problems(path: Path, img: Any, shape: Tuple[int, ...], is_seg: bool) -> List[str]:
    data, problems = _read_voxels(path, img)
    if data is None:
        return problems
    finite = np.isfinite(data)
    bad = int(data.size - np.count_nonzero(finite))
    if bad:
        return [f"{path}: {bad} non-finite voxels (NaN/Inf) of {data.size}"]
    if is_seg:
        return []
    if not np.any(data):
        return [f"{path}: all voxels are zero (empty volume)"]
    lo, hi = float(data.min()), float(data.max())
    if lo == hi:
        return [f"{path}: constant volume (every voxel is {lo:g})"]
    return []


def validate_cases(cases: Sequence[Case], required: Sequence[str] = (), divisor: Optional[int] = None,
                   *, read_data: bool = True, workers: int = 1,
                   labels: Optional[Mapping[str, Sequence[int]]] = None) -> Dict[str, List[str]]:
    """:func:`validate_case` for every case (in order), optionally in threads.

    Returns:
        case name -> problem lines (empty list for good cases), in input order.
    """
    def one(case: Case) -> List[str]:
        return validate_case(case, required, divisor, read_data=read_data, labels=labels)

    cases = list(cases)
    if workers > 1 and len(cases) > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(one, cases))
    else:
        results = [one(c) for c in cases]
    return {c.name: r for c, r in zip(cases, results)}


def check_cases(cases: Sequence[Case], required: Sequence[str] = (), divisor: Optional[int] = None,
                *, read_data: bool = True, workers: int = 1,
                labels: Optional[Mapping[str, Sequence[int]]] = None) -> None:
    """Raise one :class:`CwdmError` listing every bad case; return None if all are good.

    The message is one line: ``"3 of 10 cases are unusable: <problem>; <problem>; ..."``
    (at most 20 problems are listed, then a count of the rest).
    """
    cases = list(cases)
    if not cases:
        raise CwdmError("no cases to use")
    _raise_if_bad(validate_cases(cases, required, divisor, read_data=read_data, workers=workers, labels=labels))


def check_presence(cases: Sequence[Case], required: Sequence[str] = ()) -> None:
    """:func:`check_cases` without opening a file (``check="none"``): the folders' own problems,
    duplicates and missing ``required`` modalities only."""
    _raise_if_bad({c.name: _presence_problems(c, required) for c in cases})


def _raise_if_bad(results: Dict[str, List[str]]) -> None:
    """One CwdmError for all bad cases of ``results`` (case name -> problems)."""
    bad = {name: probs for name, probs in results.items() if probs}
    if not bad:
        return
    problems = [p for probs in bad.values() for p in probs]
    listed = problems[:MAX_LISTED_PROBLEMS]
    more = len(problems) - len(listed)
    tail = f"; ... and {more} more problems (run `cwdm check` on the data folder for all)" if more else ""
    noun = "case is" if len(results) == 1 else "cases are"
    raise CwdmError(f"{len(bad)} of {len(results)} {noun} unusable: " + "; ".join(listed) + tail)

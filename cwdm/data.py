"""Case discovery, validation and the training / inference datasets.

A data root holds one folder per case; a case folder holds
``<case>-<modality>.nii.gz`` files (``.nii`` is accepted too), e.g.
``BraTS-GLI-00000-000/BraTS-GLI-00000-000-t1n.nii.gz``, and optionally
``<case>-seg.nii.gz``. The modality is the text after the last ``-`` before
the extension. Modality names are configurable (default
:data:`cwdm.MODALITIES` = t1n, t1c, t2w, t2f) so other tasks reuse this code.

Validation (:func:`validate_case`, :func:`check_cases`) reports every problem
as one line naming the file, before any work starts. The datasets yield
volumes preprocessed exactly like the released models
(:func:`~cwdm.preprocess.clip_and_normalize`, then
:meth:`~cwdm.preprocess.Grid.to_model`); tensors are (C, X', Y', Z') with the
spatial axes in file order (called (C, D, H, W) elsewhere).

torch is imported lazily (only when an item is loaded), so ``cwdm check`` and
``cwdm dropout`` stay fast. The datasets are plain map-style datasets
(``__len__``/``__getitem__``) and work with ``torch.utils.data.DataLoader``.
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import MODALITIES
from .errors import CwdmError
from .nifti_io import is_nifti, load_header, load_nifti, nifti_stem
from .preprocess import Grid, clip_and_normalize, grid_for

__all__ = ["SEG", "Case", "discover_cases", "conditions_for", "validate_case", "validate_cases",
           "check_cases", "PairedVolumeDataset", "InferenceDataset", "collate_list"]

SEG = "seg"
AFFINE_ATOL = 1e-3
MAX_LISTED_PROBLEMS = 20
CHECK_LEVELS = ("full", "header", "none")


@dataclass
class Case:
    """One case folder.

    Attributes:
        name: the folder name (cases are sorted by it).
        folder: the case folder.
        files: modality -> file, only for modalities present exactly once,
            in canonical modality order.
        seg: the ``-seg`` file, if any.
        prefix: the file-name prefix before ``-<modality>`` (the folder name
            if no file is present); outputs are named ``<prefix>-<modality>.nii.gz``.
        duplicates: modality (or ``seg``) -> all its files, when there are
            several (a problem: the modality is then not in ``files``).
        others: NIfTI files whose name matches no modality (ignored).
    """

    name: str
    folder: Path
    files: Dict[str, Path]
    seg: Optional[Path] = None
    prefix: str = ""
    duplicates: Dict[str, List[Path]] = field(default_factory=dict)
    others: List[Path] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.folder = Path(self.folder)
        if not self.prefix:
            self.prefix = self.name

    @property
    def present(self) -> Tuple[str, ...]:
        """Modalities present exactly once, in canonical order."""
        return tuple(self.files)

    def missing(self, modalities: Sequence[str] = MODALITIES) -> List[str]:
        """Modalities of ``modalities`` that are not (unambiguously) present."""
        return [m for m in modalities if m not in self.files]

    def path_for(self, modality: str) -> Path:
        """Where ``modality`` is / would be written: ``folder/<prefix>-<modality>.nii.gz``."""
        return self.folder / f"{self.prefix}-{modality}.nii.gz"


def _parse_modality(path: Path) -> Tuple[str, str]:
    """(prefix, modality) of ``<prefix>-<modality>.nii[.gz]``; modality is '' without '-'."""
    stem = nifti_stem(path)
    prefix, sep, modality = stem.rpartition("-")
    return (prefix, modality) if sep else (stem, "")


def _scan_case(folder: Path, modalities: Sequence[str]) -> Optional[Case]:
    """Build a :class:`Case` from a folder; None if it holds no NIfTI file."""
    names = {m.lower(): m for m in modalities}
    found: Dict[str, List[Path]] = {}
    prefixes: List[str] = []
    others: List[Path] = []
    niftis = sorted(p for p in folder.iterdir() if p.is_file() and is_nifti(p) and not p.name.startswith("."))
    if not niftis:
        return None
    for p in niftis:
        prefix, mod = _parse_modality(p)
        key = names.get(mod.lower(), SEG if mod.lower() == SEG else None)
        if key is None:
            others.append(p)
            continue
        found.setdefault(key, []).append(p)
        if key != SEG:
            prefixes.append(prefix)
    files = {m: found[m][0] for m in modalities if len(found.get(m, [])) == 1}
    duplicates = {m: v for m, v in found.items() if len(v) > 1}
    seg_files = found.get(SEG, [])
    seg = seg_files[0] if len(seg_files) == 1 else None
    prefix = Counter(prefixes).most_common(1)[0][0] if prefixes else folder.name
    return Case(name=folder.name, folder=folder, files=files, seg=seg, prefix=prefix,
                duplicates=duplicates, others=others)


def discover_cases(root: Any, modalities: Sequence[str] = MODALITIES) -> List[Case]:
    """All case folders of ``root`` (sub-folders holding NIfTI files), sorted by name.

    Hidden folders/files (starting with ``.``) and folders without NIfTI files
    are skipped. Problems inside a case (duplicates, missing modalities) are
    recorded on the :class:`Case` and reported by :func:`validate_case`.

    Raises:
        CwdmError: ``root`` is missing, not a folder, or holds no case folder.
    """
    root = Path(root)
    if not root.exists():
        raise CwdmError(f"{root}: data folder does not exist")
    if not root.is_dir():
        raise CwdmError(f"{root}: not a folder (expected a folder with one sub-folder per case)")
    _check_modalities(modalities)
    cases = []
    for sub in sorted(root.iterdir(), key=lambda p: p.name):
        if sub.name.startswith(".") or not sub.is_dir():
            continue
        case = _scan_case(sub, modalities)
        if case is not None:
            cases.append(case)
    if not cases:
        loose = [p for p in root.iterdir() if p.is_file() and is_nifti(p)]
        hint = (f"; it holds {len(loose)} NIfTI files directly: put each case in its own "
                f"sub-folder, or pass the folder that contains the case folders") if loose else ""
        raise CwdmError(f"{root}: no case folders with NIfTI files found{hint}")
    return cases


def _check_modalities(modalities: Sequence[str]) -> None:
    mods = list(modalities)
    if not mods:
        raise CwdmError("no modality names given")
    bad = [m for m in mods if not m or "-" in m or m.lower() == SEG]
    if bad or len({m.lower() for m in mods}) != len(mods):
        raise CwdmError(f"invalid modality names {mods}: names must be unique, non-empty, "
                        f"without '-', and not '{SEG}'")


def conditions_for(target: str, modalities: Sequence[str] = MODALITIES) -> List[str]:
    """The condition modalities for ``target``: the others, in canonical order.

    ``conditions_for("t1c") == ["t1n", "t2w", "t2f"]``.
    """
    mods = list(modalities)
    if target not in mods:
        raise CwdmError(f"unknown target modality {target!r}; expected one of {', '.join(mods)}")
    return [m for m in mods if m != target]


def _presence_problems(case: Case, required: Sequence[str]) -> List[str]:
    """Problems found without reading files: duplicates, missing required modalities."""
    problems = [f"{case.folder}: {len(paths)} files for modality {mod} "
                f"({', '.join(p.name for p in paths)}); keep exactly one"
                for mod, paths in case.duplicates.items()]
    problems += [f"{case.folder}: missing required modality {mod} (no {case.prefix}-{mod}.nii.gz)"
                 for mod in required if mod not in case.files and mod not in case.duplicates]
    return problems


def validate_case(case: Case, required: Sequence[str] = (), divisor: Optional[int] = None,
                  *, read_data: bool = True) -> List[str]:
    """Every problem of one case, each a single line naming the file.

    Checked: duplicate modality files, missing ``required`` modalities,
    unreadable/corrupt or non-3D files, shapes or affines (``np.allclose``,
    atol 1e-3) that differ from the case's first file, a shape that cannot be
    mapped to the model grid of ``divisor``, and -- when ``read_data`` --
    non-finite voxels and all-zero (or constant) volumes. All present modality
    files and the seg file are checked, not only the ``required`` ones.

    Returns:
        list of problem lines (empty when the case is usable).
    """
    problems = _presence_problems(case, required)
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
                problems.append(f"{path}: shape {_fmt(shape)} differs from {ref[0].name} ({_fmt(ref[1])})")
                continue
            if not np.allclose(affine, ref[2], atol=AFFINE_ATOL, rtol=0):
                diff = float(np.max(np.abs(affine - ref[2])))
                problems.append(f"{path}: affine differs from {ref[0].name} (max difference {diff:.4g})")
        if read_data:
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


def _fmt(shape: Sequence[int]) -> str:
    return "x".join(str(int(s)) for s in shape)


def _data_problems(path: Path, img: Any, shape: Tuple[int, ...], is_seg: bool) -> List[str]:
    try:
        data = np.asarray(img.get_fdata(dtype=np.float32))
    except Exception as exc:  # nibabel/gzip/zlib raise many kinds on truncated data
        text = " ".join(str(exc).split()) or type(exc).__name__
        return [f"{path}: unreadable or corrupt NIfTI data ({text[:200]})"]
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
                   *, read_data: bool = True, workers: int = 1) -> Dict[str, List[str]]:
    """:func:`validate_case` for every case (in order), optionally in threads.

    Returns:
        case name -> problem lines (empty list for good cases), in input order.
    """
    def one(case: Case) -> List[str]:
        return validate_case(case, required, divisor, read_data=read_data)

    cases = list(cases)
    if workers > 1 and len(cases) > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(one, cases))
    else:
        results = [one(c) for c in cases]
    return {c.name: r for c, r in zip(cases, results)}


def check_cases(cases: Sequence[Case], required: Sequence[str] = (), divisor: Optional[int] = None,
                *, read_data: bool = True, workers: int = 1) -> None:
    """Raise one :class:`CwdmError` listing every bad case; return None if all are good.

    The message is one line: ``"3 of 10 cases are unusable: <problem>; <problem>; ..."``
    (at most 20 problems are listed, then a count of the rest).
    """
    cases = list(cases)
    if not cases:
        raise CwdmError("no cases to use")
    _raise_if_bad(validate_cases(cases, required, divisor, read_data=read_data, workers=workers))


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


def _load_model_volume(path: Path, divisor: int, grid: Optional[Grid]) -> Tuple[np.ndarray, Grid]:
    """Load, normalize and crop/pad one file: ((X', Y', Z') float32, its Grid)."""
    data, _ = load_nifti(path)
    if grid is None:
        grid = grid_for(data.shape, divisor)
    elif tuple(data.shape) != grid.original:
        raise CwdmError(f"{path}: shape {_fmt(data.shape)} differs from the case's other files "
                        f"({_fmt(grid.original)})")
    try:
        norm = clip_and_normalize(data)
    except ValueError as exc:
        raise CwdmError(f"{path}: {exc}") from None
    return grid.to_model(norm.astype(np.float32)), grid


class _CaseDataset:
    """Shared set-up of the two datasets (target, conditions, checks)."""

    def __init__(self, cases: Sequence[Case], target: str, modalities: Sequence[str],
                 divisor: int, required: Sequence[str], check: str, workers: int) -> None:
        if check not in CHECK_LEVELS:
            raise ValueError(f"check must be one of {CHECK_LEVELS}, got {check!r}")
        self.cases = list(cases)
        self.modalities = list(modalities)
        self.target = target
        self.conditions = conditions_for(target, self.modalities)
        self.divisor = int(divisor)
        if not self.cases:
            raise CwdmError("no cases to use")
        if check == "none":
            _raise_if_bad({c.name: _presence_problems(c, required) for c in self.cases})
        else:
            check_cases(self.cases, required, self.divisor, read_data=check == "full", workers=workers)

    def __len__(self) -> int:
        return len(self.cases)

    def _conditions(self, case: Case) -> Tuple[np.ndarray, Grid]:
        """Stacked conditions (3, X', Y', Z') float32 and the case's Grid."""
        grid = None
        vols = []
        for mod in self.conditions:
            vol, grid = _load_model_volume(case.files[mod], self.divisor, grid)
            vols.append(vol)
        return np.stack(vols), grid  # type: ignore[return-value]


class PairedVolumeDataset(_CaseDataset):
    """Training pairs: item ``i`` is ``(target, conditions)`` of case ``i``.

    * ``target``: (1, X', Y', Z') float32 tensor, the target modality.
    * ``conditions``: (3, X', Y', Z') float32 tensor, the other modalities in
      canonical order (:func:`conditions_for`).

    Both are clip-and-normalized on the original volume, then cropped/padded
    to the model grid (BraTS: (1, 224, 224, 160) / (3, 224, 224, 160)). Cases
    of different shapes give different grids: use batch size 1 then.

    Args:
        cases: cases from :func:`discover_cases`.
        target: modality to synthesize.
        divisor: image-domain divisor of the network (:func:`~cwdm.preprocess.model_divisor`).
        check: ``"full"`` validates every file (headers and voxels) at
            construction; ``"header"`` reads headers only (voxel problems
            then raise CwdmError when the item is loaded); ``"none"`` only
            checks that the files exist. Cases lacking the target or a
            condition are always rejected, all in one CwdmError.
        workers: threads used for the construction-time check.
    """

    def __init__(self, cases: Sequence[Case], target: str, modalities: Sequence[str] = MODALITIES,
                 divisor: int = 32, *, check: str = "full", workers: int = 1) -> None:
        required = [target] + [m for m in modalities if m != target]
        super().__init__(cases, target, modalities, divisor, required, check, workers)

    def __getitem__(self, index: int) -> Tuple[Any, Any]:
        import torch

        case = self.cases[index]
        cond, grid = self._conditions(case)
        tgt, _ = _load_model_volume(case.files[self.target], self.divisor, grid)
        return torch.from_numpy(tgt[None].copy()), torch.from_numpy(cond)


class InferenceDataset(_CaseDataset):
    """Synthesis inputs: item ``i`` is a dict for case ``i``.

    Keys:
        ``name`` (str, case folder name), ``prefix`` (str, file-name prefix),
        ``folder`` (str), ``conditions`` ((3, X', Y', Z') float32 tensor),
        ``grid`` (:meth:`Grid.to_dict`, to write results back with
        ``Grid.from_dict(item["grid"]).to_original(...)``), ``reference`` (str,
        path of the first condition file, whose affine/header outputs reuse),
        and, only when the case has the target, ``target`` ((1, X', Y', Z')
        float32 tensor) and ``target_path`` (str).

    Items differ in keys and shapes, so use ``DataLoader(ds, batch_size=None)``
    (no batching) or ``collate_fn=collate_list`` (a list of item dicts).

    Args:
        require_target: reject cases without the target (paired evaluation).
        check, workers: as for :class:`PairedVolumeDataset`.
    """

    def __init__(self, cases: Sequence[Case], target: str, modalities: Sequence[str] = MODALITIES,
                 divisor: int = 32, *, require_target: bool = False, check: str = "full",
                 workers: int = 1) -> None:
        conds = conditions_for(target, modalities)
        required = ([target] if require_target else []) + conds
        super().__init__(cases, target, modalities, divisor, required, check, workers)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        import torch

        case = self.cases[index]
        cond, grid = self._conditions(case)
        item: Dict[str, Any] = {
            "name": case.name,
            "prefix": case.prefix,
            "folder": str(case.folder),
            "conditions": torch.from_numpy(cond),
            "grid": grid.to_dict(),
            "reference": str(case.files[self.conditions[0]]),
        }
        path = case.files.get(self.target)
        if path is not None:
            tgt, _ = _load_model_volume(path, self.divisor, grid)
            item["target"] = torch.from_numpy(tgt[None].copy())
            item["target_path"] = str(path)
        return item


def collate_list(batch: List[Any]) -> List[Any]:
    """DataLoader ``collate_fn`` that keeps items as a list (picklable, unlike a lambda)."""
    return list(batch)


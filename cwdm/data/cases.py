"""Case folders: finding them and telling which file holds which modality.

A data root holds one folder per case. A case folder holds
``<case>-<modality>.nii.gz`` files (``.nii`` too), e.g.
``BraTS-GLI-00000-000/BraTS-GLI-00000-000-t1n.nii.gz``, optionally
``<case>-seg.nii.gz``; the BraTS 2021 spelling ``BraTS2021_00000_flair.nii.gz``
(``_t1``, ``_t1ce``, ``_t2``, ``_flair``, ``_seg``) is read as t1n, t1c,
t2w, t2f (see :mod:`cwdm.naming`). Problems found while looking (a dangling
symbolic link, an unreadable folder) are kept on the :class:`Case` and
reported by :func:`cwdm.data.validation.validate_case` with the rest.

A modality file whose NIfTI header says cwdm synthesized it
(:func:`cwdm.data.nifti_io.synthesized_target`) is present but not acquired:
completion (:meth:`Case.acquired`) never reads it as an input. Hidden files
(a temporary file of an interrupted write starts with ``.``) are ignored.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Collection, Dict, List, Optional, Sequence, Tuple

from ..naming import LEGACY_NAMES, MODALITIES, SEG, is_nifti, legacy_name, parse_file_name
from ..errors import CwdmError

__all__ = ["Case", "discover_cases"]

_ANNOUNCED: set = set()  # data roots whose BraTS 2021 naming was already mentioned


@dataclass
class Case:
    """One case folder.

    Attributes:
        name: the folder name (cases are sorted by it).
        folder: the case folder.
        files: modality -> file, only for modalities present exactly once,
            in canonical modality order.
        seg: the seg file, if any.
        prefix: the file-name prefix before ``-<modality>`` (the folder name
            if no file is present).
        duplicates: modality (or ``seg``) -> all its files, when there are
            several (a problem: the modality is then not in ``files``).
        others: NIfTI files whose name matches no modality (ignored).
        sep: ``"-"`` (BraTS 2023 names) or ``"_"`` (BraTS 2021 names); new
            files of the case are named the same way (:meth:`file_name`).
        problems: what is wrong with the folder itself (dangling links ...).
        made: in the view :meth:`acquired` gives, modality -> file cwdm synthesized (not in ``files``).
    """

    name: str
    folder: Path
    files: Dict[str, Path]
    seg: Optional[Path] = None
    prefix: str = ""
    duplicates: Dict[str, List[Path]] = field(default_factory=dict)
    others: List[Path] = field(default_factory=list)
    sep: str = "-"
    problems: List[str] = field(default_factory=list)
    made: Dict[str, Path] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.folder = Path(self.folder)
        if not self.prefix:
            self.prefix = self.name

    @property
    def present(self) -> Tuple[str, ...]:
        """Modalities present exactly once, in canonical order."""
        return tuple(self.files)

    def path(self, name: str) -> Optional[Path]:
        """The file of modality ``name`` (or of the seg for ``seg``), None when absent."""
        return self.seg if name == SEG else self.files.get(name)

    def missing(self, modalities: Sequence[str] = MODALITIES) -> List[str]:
        """Modalities of ``modalities`` that are not (unambiguously) present."""
        return [m for m in modalities if m not in self.files]

    def acquired(self, recorded: Collection[str] = ()) -> "Case":
        """This case as completion sees it: ``files`` holds the acquired modality files only, ``made``
        the ones cwdm synthesized (header mark, or listed in ``recorded``: absolute paths from a provenance
        record), which count as missing and are never inputs."""
        from .nifti_io import synthesized_target

        made = {m: p for m, p in self.files.items()
                if os.path.abspath(p) in recorded or synthesized_target(p) is not None}
        return replace(self, files={m: p for m, p in self.files.items() if m not in made}, made=made)

    def file_name(self, modality: str) -> str:
        """The name ``modality`` has / would have in this case, in the case's own style."""
        if self.sep == "_":
            return f"{self.prefix}_{legacy_name(modality)}.nii.gz"
        return f"{self.prefix}-{modality}.nii.gz"


def _scan_case(folder: Path, modalities: Sequence[str]) -> Optional[Case]:
    """Build a :class:`Case` from a folder; None if it holds no NIfTI file (and nothing wrong)."""
    try:
        entries = sorted(p for p in folder.iterdir() if is_nifti(p) and not p.name.startswith("."))
    except OSError as exc:
        return Case(name=folder.name, folder=folder, files={},
                    problems=[f"{folder}: cannot list the case folder ({exc.strerror or exc})"])
    problems = [f"{p}: dangling symbolic link (points to {os.readlink(p)})"
                for p in entries if p.is_symlink() and not p.exists()]
    niftis = [p for p in entries if p.is_file()]
    if not niftis and not problems:
        return None
    found: Dict[str, List[Path]] = {}
    prefixes: List[str] = []
    seps: List[str] = []
    others: List[Path] = []
    for p in niftis:
        prefix, key, sep = parse_file_name(p, modalities)
        if key is None:
            others.append(p)
            continue
        found.setdefault(key, []).append(p)
        if key != SEG:
            prefixes.append(prefix)
            seps.append(sep)
    files = {m: found[m][0] for m in modalities if len(found.get(m, [])) == 1}
    duplicates = {m: v for m, v in found.items() if len(v) > 1}
    seg_files = found.get(SEG, [])
    prefix = Counter(prefixes).most_common(1)[0][0] if prefixes else folder.name
    sep = Counter(seps).most_common(1)[0][0] if seps else "-"
    return Case(name=folder.name, folder=folder, files=files, seg=seg_files[0] if len(seg_files) == 1 else None,
                prefix=prefix, duplicates=duplicates, others=others, sep=sep, problems=problems)


def discover_cases(root: Any, modalities: Sequence[str] = MODALITIES) -> List[Case]:
    """All case folders of ``root`` (sub-folders holding NIfTI files), sorted by name.

    Hidden folders/files (starting with ``.``) and folders without NIfTI files
    are skipped; a dangling symbolic link in place of a case folder is kept as
    a case with a problem. Problems inside a case (duplicates, missing
    modalities) are recorded on the :class:`Case` and reported by
    :func:`cwdm.data.validation.validate_case`. When cases use the BraTS 2021 names, one
    line on stderr says so.

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
        if sub.name.startswith("."):
            continue
        if sub.is_symlink() and not sub.exists():
            cases.append(Case(name=sub.name, folder=sub, files={},
                              problems=[f"{sub}: dangling symbolic link (points to {os.readlink(sub)})"]))
            continue
        if not sub.is_dir():
            continue
        case = _scan_case(sub, modalities)
        if case is not None:
            cases.append(case)
    if not cases:
        loose = [p for p in root.iterdir() if p.is_file() and is_nifti(p)]
        hint = (f"; it holds {len(loose)} NIfTI files directly: put each case in its own "
                f"sub-folder, or pass the folder that contains the case folders") if loose else ""
        raise CwdmError(f"{root}: no case folders with NIfTI files found{hint}")
    _announce_legacy(root, cases)
    return cases


def _announce_legacy(root: Path, cases: Sequence[Case]) -> None:
    old = sum(1 for c in cases if c.sep == "_")
    key = str(root.resolve())
    if old and key not in _ANNOUNCED:
        _ANNOUNCED.add(key)
        names = ", ".join(f"{o}={n}" for o, n in LEGACY_NAMES.items())
        print(f"note: {old} of {len(cases)} cases in {root} use the BraTS 2021 file names; read as {names}",
              file=sys.stderr)


def _check_modalities(modalities: Sequence[str]) -> None:
    mods = list(modalities)
    if not mods:
        raise CwdmError("no modality names given")
    bad = [m for m in mods if not m or "-" in m or m.lower() == SEG]
    if bad or len({m.lower() for m in mods}) != len(mods):
        raise CwdmError(f"invalid modality names {mods}: names must be unique, non-empty, "
                        f"without '-', and not '{SEG}'")

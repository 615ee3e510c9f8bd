"""Case folders whose files are named ``<case>-<part>.nii.gz`` for a fixed set of parts.

The region tasks' layouts (:mod:`cwdm.data.inpainting`, :mod:`cwdm.data.insertion`) are such folders:
each names its parts, and this module finds them. A data root holds one folder per case, or is one
case itself (:func:`case_folders`). Parts are matched on whole names, longest first
(:func:`cwdm.naming.split_part`); files that are no part of the layout are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Type, TypeVar

from ..errors import CwdmError
from ..naming import is_nifti, split_part


@dataclass
class PartCase:
    """One case folder of a parts layout.

    Attributes:
        name: the folder name (cases are sorted by it).
        folder: the case folder.
        files: part -> file, for the parts present exactly once.
        prefix: the file-name prefix before ``-<part>`` (the folder name when no input part is present).
        problems: what is wrong (a part present twice, two prefixes in one folder ...), one line each.
        found: every part with a file in the folder (once or more).
    """

    name: str
    folder: Path
    files: Dict[str, Path]
    prefix: str = ""
    problems: List[str] = field(default_factory=list)
    found: Tuple[str, ...] = ()

    def path(self, part: str) -> Optional[Path]:
        """The file of ``part``, None when absent."""
        return self.files.get(part)

    def missing(self, parts: Sequence[str]) -> List[str]:
        """The parts of ``parts`` that are absent."""
        return [p for p in parts if p not in self.files]

    def file_name(self, part: str) -> str:
        """The name ``part`` has or would have in this case."""
        return f"{self.prefix}-{part}.nii.gz"


C = TypeVar("C", bound=PartCase)


def scan_part_case(folder: Path, parts: Sequence[str], cls: Type[C] = PartCase,
                   outputs: Sequence[str] = ()) -> Optional[C]:
    """The case of ``folder`` (a ``cls``); None when no file there is one of ``parts``.

    A part found twice, or two file-name prefixes among the parts that are not ``outputs`` (results
    cwdm writes), is a problem of the case; a folder that cannot be listed is a case with that problem.
    """
    try:
        entries = sorted(p for p in folder.iterdir() if is_nifti(p) and not p.name.startswith(".") and p.is_file())
    except OSError as exc:
        return cls(folder.name, folder, {}, folder.name,
                   [f"{folder}: cannot list the case folder ({exc.strerror or exc})"])
    named = {p: split_part(p, parts) for p in entries}  # file -> (prefix, part or None)
    found: Dict[str, List[Path]] = {}
    for p in entries:  # in name order, so each part's first file is its first by name
        if named[p][1] is not None:
            found.setdefault(named[p][1], []).append(p)
    if not found:
        return None
    problems = [f"{paths[1]}: a second {part} file in the case (also {paths[0].name})"
                for part, paths in found.items() if len(paths) > 1]
    firsts = sorted(paths[0] for paths in found.values())
    prefixes: Dict[str, Path] = {}
    for p in firsts:
        if named[p][1] not in outputs:
            prefixes.setdefault(named[p][0], p)
    if len(prefixes) > 1:
        (a, pa), (b, pb) = list(prefixes.items())[:2]
        problems.append(f"{pb}: its case name {b!r} differs from {a!r} of {pa.name} in the same folder")
    prefix = next(iter(prefixes), named[firsts[0]][0])
    return cls(folder.name, folder, {part: paths[0] for part, paths in found.items() if len(paths) == 1},
               prefix, problems, tuple(found))


def case_folders(root: Path, scan: Callable[[Path], Optional[C]]) -> List[C]:
    """``[scan(root)]`` when ``root`` is itself a case, else the cases of its sub-folders (hidden ones
    skipped) sorted by name; empty when there is none.

    Raises:
        CwdmError: ``root`` is missing or not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise CwdmError(f"{root}: data folder does not exist" if not root.exists()
                        else f"{root}: not a folder (expected a folder with one sub-folder per case)")
    itself = scan(root)
    if itself is not None:
        return [itself]
    try:
        subs = sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)
    except OSError as exc:
        raise CwdmError(f"{root}: cannot list the data folder ({exc.strerror or exc})") from None
    return [c for c in map(scan, subs) if c is not None]

"""The BraTS inpainting challenge's case layout ("local synthesis of healthy brain tissue via inpainting").

A data root holds one folder per case; a case folder ``<case>/`` holds

* ``<case>-t1n-voided.nii.gz``: the t1n with a region set to 0 (:data:`VOIDED`), and
* ``<case>-mask.nii.gz``: that region, 1 inside (:data:`MASK`);

a training case also

* ``<case>-t1n.nii.gz``: the complete t1n (:data:`IMAGE`),
* ``<case>-mask-healthy.nii.gz``: the healthy tissue voided (:data:`HEALTHY`; the challenge scores
  the fill there, where the true tissue is known), and
* ``<case>-mask-unhealthy.nii.gz``: the tumour (:data:`UNHEALTHY`).

The result of a case is ``<case>-t1n-inference.nii.gz`` (:data:`RESULT`), written beside the inputs or
flat under an output folder, as the challenge collects submissions (:func:`result_path`).

The parts are matched on whole names, longest first, so ``-t1n-voided`` is never read as the
``t1n`` of the synthesis task, nor ``-mask-healthy`` as ``-mask``. A synthesis data folder
(:func:`cwdm.data.cases.discover_cases`) sees the parts it does not know as other files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..errors import CwdmError
from ..naming import is_nifti, split_part

VOIDED = "t1n-voided"
MASK = "mask"
IMAGE = "t1n"
HEALTHY = "mask-healthy"
UNHEALTHY = "mask-unhealthy"
RESULT = "t1n-inference"
PARTS = (VOIDED, MASK, IMAGE, HEALTHY, UNHEALTHY, RESULT)
"""Every file-name part of the layout."""
INPUTS = (VOIDED, MASK)
"""The parts every case needs for inpainting."""


def split_name(path: Any) -> Tuple[str, Optional[str]]:
    """``(prefix, part)`` of a file name for the parts of this layout (:data:`PARTS`;
    :func:`cwdm.naming.split_part`)."""
    return split_part(path, PARTS)


@dataclass
class InpaintingCase:
    """One case folder of the inpainting layout.

    Attributes:
        name: the folder name (cases are sorted by it).
        folder: the case folder.
        files: part -> file, for the parts present exactly once.
        prefix: the file-name prefix before ``-<part>`` (the folder name when no part is present).
        problems: what is wrong (a part present twice, two prefixes in one folder).
    """

    name: str
    folder: Path
    files: Dict[str, Path]
    prefix: str = ""
    problems: List[str] = field(default_factory=list)

    def path(self, part: str) -> Optional[Path]:
        """The file of ``part``, None when absent."""
        return self.files.get(part)

    def missing(self, parts: Sequence[str] = INPUTS) -> List[str]:
        """The parts of ``parts`` that are absent."""
        return [p for p in parts if p not in self.files]

    def file_name(self, part: str) -> str:
        """The name ``part`` has or would have in this case."""
        return f"{self.prefix}-{part}.nii.gz"


def scan_inpainting_case(folder: Path) -> Optional[InpaintingCase]:
    """The :class:`InpaintingCase` of ``folder``; None when no file there is part of the layout."""
    try:
        entries = sorted(p for p in folder.iterdir() if is_nifti(p) and not p.name.startswith(".") and p.is_file())
    except OSError as exc:
        return InpaintingCase(folder.name, folder, {}, problems=[f"{folder}: cannot list the case folder "
                                                                 f"({exc.strerror or exc})"])
    found: Dict[str, List[Path]] = {}
    prefixes: Dict[str, Path] = {}
    for p in entries:
        prefix, part = split_name(p)
        if part is not None:
            found.setdefault(part, []).append(p)
            prefixes.setdefault(prefix, p)
    if not found:
        return None
    problems = [f"{files[1]}: a second {part} file in the case (also {files[0].name})"
                for part, files in found.items() if len(files) > 1]
    if len(prefixes) > 1:
        (a, pa), (b, pb) = list(prefixes.items())[:2]
        problems.append(f"{pb}: its case name {b!r} differs from {a!r} of {pa.name} in the same folder")
    prefix = next(iter(prefixes))
    return InpaintingCase(folder.name, folder, {part: files[0] for part, files in found.items() if len(files) == 1},
                          prefix=prefix, problems=problems)


def discover_inpainting_cases(root: Any, required: Sequence[str] = INPUTS) -> List[InpaintingCase]:
    """The inpainting cases under ``root`` (its sub-folders; ``root`` itself when it is one case), sorted.

    Raises:
        CwdmError: ``root`` is missing or holds no case with a part of the layout, or a case has a
            problem or lacks one of ``required`` (one line naming the file or folder; the count of the
            other cases with problems).
    """
    root = Path(root)
    if not root.is_dir():
        raise CwdmError(f"{root}: data folder does not exist" if not root.exists()
                        else f"{root}: not a folder (expected a folder with one sub-folder per case)")
    itself = scan_inpainting_case(root)
    if itself is not None:
        cases = [itself]
    else:
        cases = [c for c in (scan_inpainting_case(sub) for sub in sorted(root.iterdir(), key=lambda p: p.name)
                             if sub.is_dir() and not sub.name.startswith(".")) if c is not None]
    if not cases:
        raise CwdmError(f"{root}: no inpainting cases found (case folders with <case>-{VOIDED}.nii.gz and "
                        f"<case>-{MASK}.nii.gz)")
    problems = [p for c in cases for p in c.problems]
    problems += [f"{c.folder / c.file_name(part)}: missing ({part} is needed)" for c in cases for part in
                 c.missing(required)]
    if problems:
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise CwdmError(problems[0] + more)
    return cases


def is_inpainting_folder(root: Any) -> bool:
    """True when ``root`` (or one of its sub-folders) holds a voided image or an inpainting result."""
    root = Path(root)
    folders = [root] + (sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else [])
    for folder in folders:
        try:
            if any(split_name(p)[1] in (VOIDED, RESULT) for p in folder.iterdir() if is_nifti(p)):
                return True
        except OSError:
            continue
    return False


def result_path(case: InpaintingCase, output_dir: Optional[Path] = None) -> Path:
    """Where the fill of ``case`` goes: ``<case>-t1n-inference.nii.gz`` beside its inputs, or flat under
    ``output_dir`` (the challenge's submission folder)."""
    return (Path(output_dir) if output_dir is not None else case.folder) / case.file_name(RESULT)

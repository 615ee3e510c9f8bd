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

from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

from ..errors import CwdmError
from ..naming import is_nifti, split_part
from .part_cases import PartCase, case_folders, scan_part_case

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


class InpaintingCase(PartCase):
    """One case folder of the inpainting layout (:class:`cwdm.data.part_cases.PartCase`)."""

    def missing(self, parts: Sequence[str] = INPUTS) -> List[str]:
        """The parts of ``parts`` (default: :data:`INPUTS`) that are absent."""
        return super().missing(parts)


def scan_inpainting_case(folder: Path) -> Optional[InpaintingCase]:
    """The :class:`InpaintingCase` of ``folder``; None when no file there is part of the layout."""
    return scan_part_case(folder, PARTS, InpaintingCase)


def discover_inpainting_cases(root: Any, required: Sequence[str] = INPUTS) -> List[InpaintingCase]:
    """The inpainting cases under ``root`` (its sub-folders; ``root`` itself when it is one case), sorted.

    Raises:
        CwdmError: ``root`` is missing or holds no case with a part of the layout, or a case has a
            problem or lacks one of ``required`` (one line naming the file or folder; the count of the
            other cases with problems).
    """
    root = Path(root)
    cases = case_folders(root, scan_inpainting_case)
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

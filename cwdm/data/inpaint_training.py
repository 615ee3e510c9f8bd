"""Training data of the inpainting task: complete t1n volumes, a healthy region drawn afresh for each item.

Cases come from either layout (:func:`training_cases`):

* the inpainting challenge's (:mod:`cwdm.data.inpainting`; recognized by a ``-t1n-voided``,
  ``-mask-healthy`` or ``-mask-unhealthy`` file): ``<case>-t1n.nii.gz`` and, as the tumour,
  ``<case>-mask-unhealthy.nii.gz``;
* BraTS synthesis folders (:func:`cwdm.data.cases.discover_cases`): ``<case>-t1n`` and, as the tumour,
  ``<case>-seg`` > 0.

The case's own ``-mask`` / ``-t1n-voided`` pair is not used: every item draws a new region with
:func:`cwdm.data.inpaint_masks.draw_healthy_mask` (brain = t1n != 0, at least 2 voxels from the tumour),
so training sees a different region of a case each time instead of the one the challenge drew.

The region of an item is drawn from ``np.random.default_rng([STREAM, seed, epoch, position])``, where
``(epoch, position)`` is the item's place in the data order (:class:`cwdm.training.state.KeyedDataOrder`
yields it): a resumed run, any DataLoader worker and any number of ranks draw the same region for the
same place. The pair is made by the convention of :mod:`cwdm.data.inpaint_volumes`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .validation import AFFINE_ATOL
from ..errors import CwdmError
from ..naming import MODALITIES
from .inpaint_masks import draw_healthy_mask
from .inpaint_volumes import training_example
from .inpainting import HEALTHY, IMAGE, UNHEALTHY, VOIDED, discover_inpainting_cases, split_name
from .nifti_io import load_header, load_nifti
from .preprocess import grid_for

TUMOUR = "tumour"
"""Key of a training case's tumour file (``-mask-unhealthy`` or ``-seg``)."""
STREAM = 0x1A7A
"""First entropy word of the region generators (keeps them apart from other streams of the same seed)."""


@dataclass
class TrainingCase:
    """One training case: ``files`` maps ``t1n`` and :data:`TUMOUR` to their files."""

    name: str
    folder: Path
    files: Dict[str, Path]


def _challenge_layout(root: Path) -> bool:
    """Whether ``root`` (or a sub-folder) holds a file only the inpainting challenge's layout has."""
    folders = [root] + sorted(p for p in root.iterdir() if p.is_dir())
    for folder in folders:
        try:
            if any(split_name(p)[1] in (VOIDED, HEALTHY, UNHEALTHY) for p in folder.iterdir() if p.is_file()):
                return True
        except OSError:
            continue
    return False


def training_cases(root: Any, modalities: Sequence[str] = MODALITIES) -> List[TrainingCase]:
    """The t1n and tumour files of every case of ``root`` (either layout; see the module notes), sorted.

    Raises:
        CwdmError: no cases, or cases without a t1n or a tumour file (one line listing them).
    """
    from .cases import discover_cases

    root = Path(root)
    if root.is_dir() and _challenge_layout(root):
        return [TrainingCase(c.name, c.folder, {IMAGE: c.path(IMAGE), TUMOUR: c.path(UNHEALTHY)})
                for c in discover_inpainting_cases(root, required=(IMAGE, UNHEALTHY))]
    cases, problems = [], []
    for case in discover_cases(root, modalities):
        problems += list(case.problems)
        if case.path(IMAGE) is None:
            problems.append(f"{case.folder}: no {case.file_name(IMAGE)} (the image to inpaint)")
        if case.seg is None:
            problems.append(f"{case.folder}: no {case.file_name('seg')} (the tumour, which a healthy region "
                            f"must avoid)")
        if not problems:
            cases.append(TrainingCase(case.name, case.folder, {IMAGE: case.path(IMAGE), TUMOUR: case.seg}))
    if problems:
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise CwdmError(f"inpainting training data: {problems[0]}{more}")
    return cases


def case_problems(case: TrainingCase, divisor: int, read_data: bool) -> List[str]:
    """Why a training case is unusable (one line each naming the file; empty when it is usable): files that
    cannot be read, a tumour file of another shape or affine, a shape the network grid cannot take, and,
    with ``read_data``, NaN/Inf or an all-zero t1n."""
    try:
        shape, affine, _ = load_header(case.files[IMAGE])
        tumour_shape, tumour_affine, _ = load_header(case.files[TUMOUR])
    except CwdmError as exc:
        return [str(exc)]
    tumour = case.files[TUMOUR]
    if tumour_shape != shape:
        return [f"{tumour}: shape {'x'.join(map(str, tumour_shape))} differs from the t1n ({'x'.join(map(str, shape))})"]
    if not np.allclose(tumour_affine, affine, atol=AFFINE_ATOL, rtol=0):
        return [f"{tumour}: affine differs from the t1n {case.files[IMAGE].name}"]
    try:
        grid_for(shape, divisor)
        if read_data:
            _image(case)
    except CwdmError as exc:
        return [str(exc) if str(exc).startswith(str(case.files[IMAGE])) else f"{case.files[IMAGE]}: {exc}"]
    return []


def _image(case: TrainingCase) -> np.ndarray:
    """The case's t1n (X, Y, Z) float32, refused when it has NaN/Inf voxels or is all zero."""
    path = case.files[IMAGE]
    image, _ = load_nifti(path)
    bad = int(image.size - np.count_nonzero(np.isfinite(image)))
    if bad:
        raise CwdmError(f"{path}: {bad} non-finite voxels (NaN/Inf) of {image.size}")
    if not image.any():
        raise CwdmError(f"{path}: all voxels are zero (empty volume)")
    return image


class InpaintingTrainingSet:
    """Inpainting training pairs (a map-style dataset; its keys come from :class:`~cwdm.training.state.KeyedDataOrder`).

    Item ``(index, epoch, position)`` (a plain ``index`` reads as ``(index, 0, index)``) is
    ``(target, conditions)`` of case ``index`` with the region drawn for ``(epoch, position)``:

    * ``target``: (1, X', Y', Z') float32 tensor, the complete t1n on [0, 1] by the voided image's bounds;
    * ``conditions``: (2, X', Y', Z') float32 tensor, the voided t1n (region 0) and the region's mask (0 / 1),

    on the model grid of ``divisor`` (:func:`~cwdm.data.preprocess.grid_for`).

    Args:
        cases: from :func:`training_cases`.
        divisor: the network's image-domain divisor.
        seed: the run's seed (the regions' streams).
        check: ``full`` (headers and voxels), ``header`` or ``none``: checked at construction, every bad
            case in one :class:`CwdmError`.
        size_range: the region's volume as a fraction of the brain (:func:`draw_healthy_mask`).
    """

    def __init__(self, cases: Sequence[TrainingCase], divisor: int, seed: int = 0, *, check: str = "header",
                 size_range: Tuple[float, float] = (0.005, 0.05)) -> None:
        self.cases, self.divisor, self.seed, self.size_range = list(cases), int(divisor), int(seed), size_range
        if not self.cases:
            raise CwdmError("no cases to use")
        if check != "none":
            problems = [p for c in self.cases for p in case_problems(c, self.divisor, check == "full")]
            if problems:
                more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
                raise CwdmError(f"inpainting training data: {problems[0]}{more}")

    def __len__(self) -> int:
        return len(self.cases)

    def region(self, index: int, epoch: int, position: int, image: Optional[np.ndarray] = None) -> np.ndarray:
        """The (X, Y, Z) bool region drawn for case ``index`` at ``(epoch, position)`` of the data order
        (``image``: the case's t1n when already read)."""
        case = self.cases[index]
        brain = (_image(case) if image is None else image) != 0
        tumour = load_nifti(case.files[TUMOUR])[0]
        if tumour.shape != brain.shape:
            raise CwdmError(f"{case.files[TUMOUR]}: shape {'x'.join(map(str, tumour.shape))} differs from the t1n")
        rng = np.random.default_rng([STREAM, self.seed % 2 ** 64, int(epoch), int(position)])
        try:
            return draw_healthy_mask(brain, tumour > 0, rng, size_range=self.size_range)
        except CwdmError as exc:
            raise CwdmError(f"{case.files[IMAGE]}: {exc}") from None

    def __getitem__(self, key: Any) -> Tuple[Any, Any]:
        import torch

        index, epoch, position = key if isinstance(key, (tuple, list)) else (key, 0, key)
        case = self.cases[int(index)]
        image = _image(case)
        mask = self.region(int(index), epoch, position, image)
        target, conditions, _ = training_example(image, mask, str(case.files[IMAGE]))
        grid = grid_for(image.shape, self.divisor)
        return (torch.from_numpy(np.ascontiguousarray(grid.to_model(target)[None])),
                torch.from_numpy(np.ascontiguousarray(grid.to_model(conditions))))

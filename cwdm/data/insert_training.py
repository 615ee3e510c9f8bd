"""Training data of the insertion task: complete t1n volumes with their tumour's labels, a region per item.

Cases are BraTS synthesis folders (:func:`cwdm.data.cases.discover_cases`) with ``<case>-t1n`` and
``<case>-seg`` (labels 1, 2, 3; :func:`insertion_cases`). The inpainting challenge's layout is refused:
its ``-mask-unhealthy`` says where the tumour is, not which labels it has.

Each item ``(index, epoch, position)`` draws, from ``np.random.default_rng([STREAM, seed, epoch,
position])`` (the item's place in the data order, :class:`cwdm.training.state.KeyedDataOrder`, so a
resumed run draws what the uninterrupted run would), first ``u`` uniform in [0, 1), then:

* a **tumour item** (``u >= healthy``, the case has a tumour): a margin ``m`` uniform in the task's
  ``lo..hi``; the region is :func:`cwdm.data.insertion.region_of` (seg, brain, m) (brain = t1n != 0);
  the labels are the seg;
* a **healthy item** (``u < healthy``, or a case without tumour): a healthy region drawn as
  inpainting's (:func:`cwdm.data.inpaint_masks.draw_healthy_mask`: in the brain, more than 2 voxels from
  the tumour) with no labels, so the model also fills healthy tissue where a drawing says 0.

The pair is :func:`cwdm.data.insertion.training_example` (inpainting's intensity convention: the scale
from the voided t1n outside the region; the target is the complete t1n).
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import CwdmError
from ..naming import MODALITIES
from .inpaint_masks import draw_healthy_mask
from .inpaint_training import TUMOUR, TrainingCase, _image, case_problems, training_cases
from .inpainting import UNHEALTHY, split_name
from .insertion import IMAGE, check_labels, region_of, training_example
from .nifti_io import load_nifti
from .preprocess import grid_for

STREAM = 0x175E
"""First entropy word of the insertion items' generators (apart from inpainting's and other streams)."""


def insertion_cases(root: Any, modalities: Sequence[str] = MODALITIES) -> List[TrainingCase]:
    """The t1n and seg files of every case of ``root`` (BraTS synthesis layout), sorted.

    Raises:
        CwdmError: no cases, a case without t1n or seg, or a folder of the inpainting challenge's layout
            (one line).
    """
    cases = training_cases(root, modalities)
    for case in cases:
        if split_name(case.files[TUMOUR])[1] == UNHEALTHY:
            raise CwdmError(f"insertion training data: {case.files[TUMOUR]}: insertion needs the tumour's labels "
                            f"(<case>-seg.nii.gz with labels 1, 2, 3 in BraTS synthesis folders); the inpainting "
                            f"layout's -{UNHEALTHY} has none")
    return cases


class InsertionTrainingSet:
    """Insertion training pairs (a map-style dataset keyed by :class:`~cwdm.training.state.KeyedDataOrder`).

    Item ``(index, epoch, position)`` (a plain ``index`` reads as ``(index, 0, index)``) is
    ``(target, conditions)`` on the model grid of ``divisor``:

    * ``target``: (1, X', Y', Z') float32, the complete t1n on [0, 1] by the voided image's bounds;
    * ``conditions``: (5, X', Y', Z') float32, the voided t1n, the region (0 / 1) and one channel per
      label 1, 2, 3 inside the region.

    Args:
        cases: from :func:`insertion_cases`.
        divisor: the network's image-domain divisor.
        seed: the run's seed.
        margin: the task's margin range ``(lo, hi)`` in voxels.
        healthy: the fraction of items with a healthy region and no labels (see the module notes).
        check: ``full``, ``header`` or ``none``: checked at construction (headers, and the seg values,
            which are always read; ``full``: also every t1n voxel), every bad case in one error.
        size_range: a healthy region's volume as a fraction of the brain (:func:`draw_healthy_mask`).
    """

    def __init__(self, cases: Sequence[TrainingCase], divisor: int, seed: int = 0, *,
                 margin: Tuple[int, int] = (2, 5), healthy: float = 0.2, check: str = "header",
                 size_range: Tuple[float, float] = (0.005, 0.05)) -> None:
        self.cases, self.divisor, self.seed = list(cases), int(divisor), int(seed)
        self.margin, self.healthy, self.size_range = (int(margin[0]), int(margin[1])), float(healthy), size_range
        if not self.cases:
            raise CwdmError("no cases to use")
        if check != "none":
            problems = []
            for case in self.cases:
                found = case_problems(case, self.divisor, check == "full")
                if not found:
                    try:
                        self._seg(case)
                    except CwdmError as exc:
                        found = [str(exc)]
                problems += found
            if problems:
                more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
                raise CwdmError(f"insertion training data: {problems[0]}{more}")

    def __len__(self) -> int:
        return len(self.cases)

    @staticmethod
    def _seg(case: TrainingCase) -> np.ndarray:
        """The case's seg (X, Y, Z) as int64, refused in one line unless it holds 0, 1, 2, 3 only."""
        seg = load_nifti(case.files[TUMOUR])[0]
        check_labels(case.files[TUMOUR], seg)
        return seg.astype(np.int64)

    def draw(self, index: int, epoch: int, position: int,
             image: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
        """``(region (X, Y, Z) bool, labels (X, Y, Z) int64, 0 outside the region)`` drawn for case ``index``
        at ``(epoch, position)`` of the data order (``image``: its t1n when already read)."""
        case = self.cases[index]
        brain = (_image(case) if image is None else image) != 0
        seg = self._seg(case)
        if seg.shape != brain.shape:
            raise CwdmError(f"{case.files[TUMOUR]}: shape {'x'.join(map(str, seg.shape))} differs from the t1n")
        rng = np.random.default_rng([STREAM, self.seed % 2 ** 64, int(epoch), int(position)])
        tumour = seg > 0
        if rng.random() >= self.healthy and tumour.any():
            region = region_of(seg, brain, int(rng.integers(self.margin[0], self.margin[1] + 1)))
            return region, np.where(region, seg, 0)
        try:
            region = draw_healthy_mask(brain, tumour, rng, size_range=self.size_range)
        except CwdmError as exc:
            raise CwdmError(f"{case.files[IMAGE]}: {exc}") from None
        return region, np.zeros(seg.shape, np.int64)

    def __getitem__(self, key: Any) -> Tuple[Any, Any]:
        import torch

        index, epoch, position = key if isinstance(key, (tuple, list)) else (key, 0, key)
        case = self.cases[int(index)]
        image = _image(case)
        region, labels = self.draw(int(index), epoch, position, image)
        target, conditions, _ = training_example(image, region, labels, str(case.files[IMAGE]))
        grid = grid_for(image.shape, self.divisor)
        return (torch.from_numpy(np.ascontiguousarray(grid.to_model(target)[None])),
                torch.from_numpy(np.ascontiguousarray(grid.to_model(conditions))))


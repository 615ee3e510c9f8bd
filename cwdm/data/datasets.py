"""The training / inference datasets.

Case folders are found by :func:`cwdm.data.cases.discover_cases`:
``<case>/<case>-<modality>.nii.gz`` files, or the BraTS 2021 names.
Modality names are configurable (default :data:`cwdm.naming.MODALITIES` = t1n, t1c,
t2w, t2f) so other tasks reuse this code.

Each dataset first checks its cases (:func:`cwdm.data.validation.check_cases`, every
problem one line naming the file, before any work starts). The datasets yield
volumes preprocessed exactly like the released models
(:func:`~cwdm.data.preprocess.clip_and_normalize`, then
:meth:`~cwdm.data.preprocess.Grid.to_model`); tensors are (C, X', Y', Z') with the
spatial axes in file order (called (C, D, H, W) elsewhere).

torch is imported lazily (only when an item is loaded), so ``cwdm check`` and
``cwdm dropout`` stay fast. The datasets are plain map-style datasets
(``__len__``/``__getitem__``) and work with ``torch.utils.data.DataLoader``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .cases import Case
from ..errors import CwdmError, format_shape
from .nifti_io import load_header, load_nifti
from .preprocess import Grid, clip_and_normalize, grid_for
from .validation import CHECK_LEVELS, check_cases, check_presence, label_problems
from ..task import IMAGE, Condition, Task

__all__ = ["PairedVolumeDataset", "ConditionDataset", "InferenceDataset", "collate_list"]


def _load_model_volume(path: Path, divisor: int, grid: Optional[Grid]) -> Tuple[np.ndarray, Grid]:
    """Load, normalize and crop/pad one file: ((X', Y', Z') float32, its Grid)."""
    data, _ = load_nifti(path)
    if grid is None:
        grid = grid_for(data.shape, divisor)
    elif tuple(data.shape) != grid.original:
        raise CwdmError(f"{path}: shape {format_shape(data.shape)} differs from the case's other files "
                        f"({format_shape(grid.original)})")
    try:
        norm = clip_and_normalize(data)
    except ValueError as exc:
        raise CwdmError(f"{path}: {exc}") from None
    return grid.to_model(norm.astype(np.float32)), grid


def _load_label_volume(path: Path, labels: Sequence[int], grid: Grid) -> np.ndarray:
    """One-hot channels of a label map on the model grid: (L, X', Y', Z') float32 in {0, 1}, one per
    declared label (background 0 is all channels 0). Unknown or non-integer values are refused."""
    data, _ = load_nifti(path)
    if tuple(data.shape) != grid.original:
        raise CwdmError(f"{path}: shape {format_shape(data.shape)} differs from the case's other files "
                        f"({format_shape(grid.original)})")
    problems = label_problems(path, data, labels)
    if problems:
        raise CwdmError(problems[0])
    return np.stack([grid.to_model((data == lab).astype(np.float32)) for lab in labels])


class _CaseDataset:
    """Shared set-up of the two datasets (task, checks, reading the conditions)."""

    def __init__(self, cases: Sequence[Case], task: Task, divisor: int, required: Sequence[str], check: str,
                 workers: int) -> None:
        if check not in CHECK_LEVELS:
            raise ValueError(f"check must be one of {CHECK_LEVELS}, got {check!r}")
        self.cases = list(cases)
        self.task = task
        self.divisor = int(divisor)
        if not self.cases:
            raise CwdmError("no cases to use")
        if check == "none":
            check_presence(self.cases, required)
        else:  # the label maps' values are checked at both levels (see validate_case)
            check_cases(self.cases, required, self.divisor, read_data=check == "full", workers=workers,
                        labels=task.label_maps)

    def __len__(self) -> int:
        return len(self.cases)

    def _volumes(self, case: Case, conditions: Sequence[Condition],
                 use: Optional[Sequence[str]] = None) -> Tuple[np.ndarray, Grid]:
        """Stacked volumes of ``conditions`` (C, X', Y', Z') float32 (C: their channels) and the case's Grid.

        Conditions not named in ``use`` (when given) are zero-filled: the empty slots of a unified network.
        """
        grid: Optional[Grid] = None
        vols: List[Optional[np.ndarray]] = []
        for cond in conditions:
            path = case.path(cond.name)
            if use is not None and cond.name not in use:
                vols.append(None)
            elif cond.kind == IMAGE:
                vol, grid = _load_model_volume(path, self.divisor, grid)
                vols.append(vol[None])
            else:
                grid = grid or grid_for(load_header(path)[0], self.divisor)
                vols.append(_load_label_volume(path, cond.labels, grid))
        if grid is None:
            raise CwdmError(f"{case.folder}: no input to synthesize from")
        return np.concatenate([v if v is not None else np.zeros((c.channels, *grid.model), np.float32)
                               for v, c in zip(vols, conditions)]), grid


class PairedVolumeDataset(_CaseDataset):
    """Training pairs: item ``i`` is ``(target, conditions)`` of case ``i``.

    * ``target``: (1, X', Y', Z') float32 tensor, the target modality.
    * ``conditions``: (C, X', Y', Z') float32 tensor, the task's conditions in
      order (C = ``task.condition_channels``; 3 for the released BraTS tasks).

    For a unified task ``target`` is every modality, (M, X', Y', Z'), and
    ``conditions`` is empty, (0, X', Y', Z'): each training step draws the
    target and the inputs (:func:`cwdm.data.unified.draw_training_inputs`).

    Both are clip-and-normalized on the original volume, then cropped/padded
    to the model grid (BraTS: (1, 224, 224, 160) / (3, 224, 224, 160)). Cases
    of different shapes give different grids: use batch size 1 then.

    Args:
        cases: cases from :func:`cwdm.data.cases.discover_cases`.
        task: what is synthesized from what (:class:`cwdm.task.Task`).
        divisor: image-domain divisor of the network (:attr:`~cwdm.model.unet.UNetConfig.image_divisor`).
        check: ``"full"`` validates every file (headers and voxels) at
            construction; ``"header"`` reads headers only (voxel problems
            then raise CwdmError when the item is loaded); ``"none"`` only
            checks that the files exist. Cases lacking the target or a
            condition are always rejected, all in one CwdmError.
        workers: threads used for the construction-time check.
    """

    def __init__(self, cases: Sequence[Case], task: Task, divisor: int = 32, *, check: str = "full",
                 workers: int = 1) -> None:
        required = list(task.modalities) if task.is_unified else [task.target, *task.condition_names]
        super().__init__(cases, task, divisor, required, check, workers)

    def __getitem__(self, index: int) -> Tuple[Any, Any]:
        import torch

        case = self.cases[index]
        cond, grid = self._volumes(case, self.task.conditions)
        if self.task.is_unified:
            return torch.from_numpy(cond), torch.zeros((0, *grid.model))
        tgt, _ = _load_model_volume(case.files[self.task.target], self.divisor, grid)
        return torch.from_numpy(tgt[None].copy()), torch.from_numpy(cond)


class ConditionDataset(_CaseDataset):
    """The conditions alone (``cwdm distill``: the teacher draws the targets): item ``i`` is
    ``(empty (0, X', Y', Z') tensor, conditions (C, X', Y', Z') float32 tensor)`` of case ``i``, as
    :class:`PairedVolumeDataset` gives them (the empty first entry stands for the target it does not
    read). Cases lacking a condition are rejected, all in one CwdmError; the target need not exist.
    Not for a unified task (whose conditions are drawn from every modality: use
    :class:`PairedVolumeDataset`).
    """

    def __init__(self, cases: Sequence[Case], task: Task, divisor: int = 32, *, check: str = "full",
                 workers: int = 1) -> None:
        if task.is_unified:
            raise ValueError("ConditionDataset takes a per-contrast task; a unified one reads every modality")
        super().__init__(cases, task, divisor, list(task.condition_names), check, workers)

    def __getitem__(self, index: int) -> Tuple[Any, Any]:
        import torch

        cond, grid = self._volumes(self.cases[index], self.task.conditions)
        return torch.zeros((0, *grid.model)), torch.from_numpy(cond)


class InferenceDataset(_CaseDataset):
    """Synthesis inputs: item ``i`` is a dict for case ``i``.

    Keys:
        ``name`` (str, case folder name), ``prefix`` (str, file-name prefix),
        ``folder`` (str), ``conditions`` ((C, X', Y', Z') float32 tensor),
        ``first_input`` ((X', Y', Z'), the first image input: outside the brain where it is 0; in a
        task of label maps only, 1 where any label map is not background, 0 elsewhere),
        ``inputs`` (the modalities read into them), ``synthesizes`` (the target's name), ``grid`` (:meth:`Grid.to_dict`,
        to write results back with ``Grid.from_dict(item["grid"]).to_original(...)``),
        ``reference`` (str, path of the first image input, whose affine/header
        outputs reuse), for a unified task ``identity`` ((M,) one-hot of the
        target), and, only when the case has the target, ``target``
        ((1, X', Y', Z') float32 tensor) and ``target_path`` (str).

    Items differ in keys and shapes, so use ``DataLoader(ds, batch_size=None)``
    (no batching) or ``collate_fn=collate_list`` (a list of item dicts).

    Args:
        target: the modality to synthesize (default: the task's; required for a unified task, whose
            other slots take the modalities each case has, zero-filled where it lacks one).
        require_target: reject cases without the target (paired evaluation).
        check, workers: as for :class:`PairedVolumeDataset`.
    """

    def __init__(self, cases: Sequence[Case], task: Task, divisor: int = 32, *, target: Optional[str] = None,
                 require_target: bool = False, check: str = "full", workers: int = 1) -> None:
        self.target = target or task.target
        task.inputs_for(self.target)  # a one-line error for a target the task does not synthesize
        required = list(task.condition_names) if not task.is_unified else []
        super().__init__(cases, task, divisor, ([self.target] if require_target else []) + required, check,
                         workers)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        import torch

        case = self.cases[index]
        inputs = self.task.inputs_for(self.target, case.present)
        cond, grid = self._volumes(case, self.task.conditions, inputs if self.task.is_unified else None)
        images = [c for c in self.task.conditions if c.kind == IMAGE and c.name in inputs]
        first = images[0] if images else self.task.conditions[0]
        start = sum(c.channels for c in self.task.conditions[:self.task.conditions.index(first)])
        conditions = torch.from_numpy(cond)
        # label maps only: outside the brain is where every label map is background (give a brain mask)
        first_input = conditions[start] if images else (conditions.amax(0) > 0).float()
        item: Dict[str, Any] = {
            "name": case.name,
            "prefix": case.prefix,
            "folder": str(case.folder),
            "conditions": conditions,
            "first_input": first_input,
            "inputs": list(inputs),
            "synthesizes": self.target,
            "grid": grid.to_dict(),
            "reference": str(case.path(first.name)),
        }
        if self.task.is_unified:
            from .unified import one_hot

            item["identity"] = one_hot(self.task.modalities, self.target)
        path = case.files.get(self.target)
        if path is not None:
            tgt, _ = _load_model_volume(path, self.divisor, grid)
            item["target"] = torch.from_numpy(tgt[None].copy())
            item["target_path"] = str(path)
        return item


def collate_list(batch: List[Any]) -> List[Any]:
    """DataLoader ``collate_fn`` that keeps items as a list (picklable, unlike a lambda)."""
    return list(batch)


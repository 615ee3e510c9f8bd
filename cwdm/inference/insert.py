"""Tumour insertion with the synthesis machinery (``cwdm sample``, :class:`cwdm.inference.fill_api.Insertion`).

A case (:class:`cwdm.data.insertion.InsertionCase`) gives ``<case>-t1n.nii.gz`` and the labels drawn
(``<case>-labels.nii.gz``, else ``<case>-seg.nii.gz``), optionally the region (``<case>-mask.nii.gz``);
its result is ``<case>-t1n-inserted.nii.gz`` (:func:`insertion_paths`, with ``_std`` beside it for an
ensemble). Without a mask the region is the labels dilated by the checkpoint's sampling margin
(:func:`cwdm.data.insertion.sampling_margin`). This module holds what differs from inpainting:

* checks (:func:`read_case`, :func:`case_problems`): one line per problem naming the file (a part
  missing, shapes or affines that differ, labels other than 0, 1, 2, 3, nothing labelled, a mask that is
  not 0 / 1, is empty or leaves labelled voxels out, a t1n with NaN/Inf or constant outside the region);
* reading (:class:`InsertionDataset`): the network's conditions (:func:`cwdm.data.insertion.network_conditions`);
* :data:`INSERTION`: the task for :mod:`cwdm.inference.region_plan`'s planning.

Writing is inpainting's (:func:`cwdm.inference.inpaint.write_filled`): the t1n file's voxels, bit for
bit, outside the region, the fill mapped back to its intensities inside; sampling, batching, the
degenerate check and the provenance record are the synthesis pipeline's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from ..data.validation import AFFINE_ATOL
from ..data.insertion import (IMAGE, MASK, InsertionCase, check_labels, discover_insertion_cases, network_conditions,
                              region_of, result_path, sampling_margin)
from ..errors import CwdmError
from .completion import completion_paths
from .region_plan import RegionTask
from .inpaint import read_raw, write_filled
from .steps import Paths, items_of, synthesize_items


def insertion_paths(case: InsertionCase, output_dir: Optional[Path] = None) -> Paths:
    """Where the result of ``case`` goes (:func:`~cwdm.data.insertion.result_path`) and its ``_std`` map."""
    return completion_paths(result_path(case, output_dir))


def _same_grid(path: Path, data: np.ndarray, img: Any, t1n: np.ndarray, t1n_img: Any, t1n_path: Path) -> None:
    """Refuse ``path`` in one line unless its shape and affine are the t1n's."""
    if data.shape != t1n.shape:
        raise CwdmError(f"{path}: shape {'x'.join(map(str, data.shape))} differs from the t1n {t1n_path.name} "
                        f"({'x'.join(map(str, t1n.shape))})")
    if not np.allclose(img.affine, t1n_img.affine, atol=AFFINE_ATOL, rtol=0):
        diff = float(np.max(np.abs(np.asarray(img.affine) - np.asarray(t1n_img.affine))))
        raise CwdmError(f"{path}: affine differs from the t1n {t1n_path.name} (max difference {diff:.4g})")


def _mask(path: Path) -> Tuple[np.ndarray, Any]:
    """A region file as bool (X, Y, Z) and its image; one line unless it holds 0 and 1 and is not empty."""
    values, img = read_raw(path)
    values = np.asarray(values, dtype=np.float64)
    other = np.unique(values[(values != 0) & (values != 1)])
    if other.size:
        shown = ", ".join(f"{v:g}" for v in other[:5]) + (", ..." if other.size > 5 else "")
        raise CwdmError(f"{path}: a mask holds 0 and 1, found other values ({shown})")
    if not (values == 1).any():
        raise CwdmError(f"{path}: the mask is empty (no voxel is 1): no region to insert into")
    return values == 1, img


def read_case(case: InsertionCase, margin: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray, Any]:
    """``(t1n (X, Y, Z) as read, region (X, Y, Z) bool, labels (X, Y, Z) int64, the t1n image)`` of a case,
    checked: one :class:`CwdmError` line naming the file for the first problem. The region is the case's
    mask, else :func:`~cwdm.data.insertion.region_of` the labels with ``margin``."""
    if case.problems:
        raise CwdmError(case.problems[0])
    t1n_path, labels_path = case.path(IMAGE), case.labels
    t1n, img = read_raw(t1n_path)
    labels, labels_img = read_raw(labels_path)
    _same_grid(labels_path, labels, labels_img, t1n, img, t1n_path)
    check_labels(labels_path, labels)
    labels = np.asarray(labels).astype(np.int64)
    if case.path(MASK) is not None:
        region, mask_img = _mask(case.path(MASK))
        _same_grid(case.path(MASK), region, mask_img, t1n, img, t1n_path)
        outside = int(np.count_nonzero((labels != 0) & ~region))
        if outside:
            raise CwdmError(f"{case.path(MASK)}: {outside} labelled voxels of {labels_path.name} lie outside the "
                            f"region; the mask must hold every labelled voxel")
        return t1n, region, labels, img
    if not labels.any():
        raise CwdmError(f"{labels_path}: no voxel is labelled 1, 2 or 3: nothing to insert (give a "
                        f"{case.file_name(MASK)} to fill a region with healthy tissue)")
    return t1n, region_of(labels, t1n != 0, margin), labels, img


def case_problems(case: InsertionCase, margin: int, divisor: int) -> List[str]:
    """Why ``case`` cannot be done by a network of grid ``divisor`` (empty when it can)."""
    from ..data.preprocess import grid_for

    try:
        t1n, region, labels, _ = read_case(case, margin)
        network_conditions(t1n, region, labels, str(case.path(IMAGE)))  # the scale exists
        grid_for(t1n.shape, divisor)
    except CwdmError as exc:
        return [str(exc)]
    return []


def usable_insertion_cases(cases: List[InsertionCase], margin: int, divisor: int,
                           report: Callable[[str], None]) -> List[InsertionCase]:
    """The cases without :func:`case_problems`, in order; ``report`` gets ``skipping <case>: <problem>``."""
    good = []
    for case in cases:
        problems = case_problems(case, margin, divisor)
        if problems:
            report(f"skipping {case.name}: " + "; ".join(problems))
        else:
            good.append(case)
    return good


class InsertionDataset:
    """Inputs of insertion: item ``i`` is a dict for case ``i`` (the keys of
    :class:`cwdm.data.datasets.InferenceDataset` that :func:`~cwdm.inference.steps.synthesize_items` reads).

    Keys: ``name``, ``prefix``, ``folder``; ``conditions`` ((5, X', Y', Z') float32: the voided t1n on
    [0, 1], the region, labels 1, 2, 3); ``first_input`` ((X', Y', Z') the region, where the fill is checked
    for degenerate values); ``inputs`` (the parts read); ``synthesizes`` (``t1n``); ``grid``;
    ``reference`` (the t1n); ``files`` (part -> path, for the writer); ``margin``; ``bounds`` (``[lo, hi]``).
    """

    def __init__(self, cases: List[InsertionCase], divisor: int, margin: int) -> None:
        self.cases, self.divisor, self.margin = list(cases), int(divisor), int(margin)

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        from ..data.preprocess import grid_for

        case = self.cases[index]
        t1n, region, labels, _ = read_case(case, self.margin)
        conditions, bounds = network_conditions(t1n, region, labels, str(case.path(IMAGE)))
        grid = grid_for(t1n.shape, self.divisor)
        cond = torch.from_numpy(np.ascontiguousarray(grid.to_model(conditions)))
        return {"name": case.name, "prefix": case.prefix, "folder": str(case.folder), "conditions": cond,
                "first_input": cond[1].clone(), "inputs": case.inputs, "synthesizes": IMAGE, "grid": grid.to_dict(),
                "reference": str(case.path(IMAGE)), "files": {k: str(v) for k, v in case.files.items()},
                "margin": self.margin, "bounds": [bounds[0], bounds[1]]}


def insert_cases(synth, cases: List[InsertionCase], out_paths: Callable[[Dict], Paths], *,
                 target: Optional[str] = None, threshold: Optional[float] = None, postprocess_on: bool = True,
                 overwrite: bool = False, batch_size: int = 1, num_workers: int = 0, bar=None, clock=None,
                 on_case=None, on_problem=None) -> List[str]:
    """:func:`cwdm.inference.steps.synthesize_cases` for insertion cases (checked already); ``target`` and
    ``threshold`` are not used. Returns the names of the cases written."""
    dataset = InsertionDataset(cases, synth.model.config.image_divisor, sampling_margin(synth.task.insert_margin))
    return synthesize_items(synth, items_of(dataset, num_workers), batch_size, out_paths, None, postprocess_on,
                            overwrite, bar, clock, on_case, on_problem, writer=write_inserted)


def write_inserted(item: Dict, mean: torch.Tensor, std: Optional[torch.Tensor], paths: Paths,
                   threshold: Optional[float], postprocess_on: bool, overwrite: bool) -> None:
    """Write one case's result (and std map): inpainting's writer with the t1n as the voided image and the
    region (read again from the item's files) as the mask."""
    case = InsertionCase(item["name"], Path(item["folder"]), {k: Path(v) for k, v in item["files"].items()},
                         item["prefix"])
    t1n, region, _, img = read_case(case, int(item["margin"]))
    write_filled(item, t1n, img, region, mean, std, paths, postprocess_on, overwrite)


def _usable(loaded, data_dir: Path, report: Callable[[str], None]) -> List[InsertionCase]:
    return usable_insertion_cases(discover_insertion_cases(data_dir), sampling_margin(loaded.task.insert_margin),
                                  loaded.config.image_divisor, report)


INSERTION = RegionTask("insertion", "--insertion True", lambda task: task.is_insertion, IMAGE, _usable,
                       lambda case, loaded: case_problems(case, sampling_margin(loaded.task.insert_margin),
                                                          loaded.config.image_divisor), insertion_paths)
"""Tumour insertion for :func:`cwdm.inference.region_plan.plan_region_folder`: results in
``<output>/<case>/`` or in the case folders."""

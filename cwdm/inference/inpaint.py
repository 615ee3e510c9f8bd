"""Inpainting cases of the challenge layout with the synthesis machinery (``cwdm sample``, :class:`cwdm.inference.fill_api.Inpainting`).

A case (:class:`cwdm.data.inpainting.InpaintingCase`) gives ``<case>-t1n-voided.nii.gz`` and
``<case>-mask.nii.gz``; its result is ``<case>-t1n-inference.nii.gz`` (:func:`inpainting_paths`, with
``_std`` beside it for an ensemble). This module holds what differs from synthesis:

* checks (:func:`case_problems`, :func:`usable_inpainting_cases`): one line per problem naming the file
  (a part missing, shapes or affines that differ, a mask that is not 0 / 1 or is empty, NaN/Inf in the
  voided image outside the mask, an image constant outside the mask);
* reading (:class:`InpaintingDataset`): the network's conditions by the convention of
  :mod:`cwdm.data.inpaint_volumes`;
* writing (:func:`write_inpainted`): the voided file's voxels outside the mask, the fill mapped back
  to its intensities inside; an ensemble's std map in the same units, 0 outside the mask;
* :data:`INPAINTING`: the task for :mod:`cwdm.inference.region_plan`'s planning.

Sampling, batching, the degenerate-volume check, progress and the provenance record are the
synthesis pipeline's (:func:`cwdm.inference.steps.synthesize_items`, :class:`cwdm.inference.pipeline.Pipeline`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from ..data.inpaint_volumes import network_inputs, paste_fill
from ..data.inpainting import IMAGE, INPUTS, MASK, VOIDED, InpaintingCase, discover_inpainting_cases, result_path
from ..data.validation import AFFINE_ATOL
from ..errors import CwdmError
from .completion import completion_paths
from .region_plan import RegionTask
from .steps import Paths, items_of, synthesize_items



def inpainting_paths(case: InpaintingCase, output_dir: Optional[Path] = None) -> Paths:
    """Where the fill of ``case`` goes: :func:`~cwdm.data.inpainting.result_path` and its ``_std`` map."""
    return completion_paths(result_path(case, output_dir))


def read_raw(path: Path) -> Tuple[np.ndarray, Any]:
    """The voxels of a NIfTI file as nibabel reads them (``np.asarray(img.dataobj)``: the file's own dtype
    unless it is scaled), (X, Y, Z), and the image; one-line :class:`CwdmError` naming ``path``."""
    from ..data.nifti_io import load_header

    shape, _, img = load_header(path)
    try:
        return np.asarray(img.dataobj).reshape(shape), img
    except Exception as exc:  # nibabel/gzip/zlib raise many kinds on truncated data
        if isinstance(exc, MemoryError):
            raise
        text = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise CwdmError(f"{path}: unreadable or corrupt NIfTI data ({text})") from None


def read_case(case: InpaintingCase) -> Tuple[np.ndarray, np.ndarray, Any]:
    """``(voided (X, Y, Z) as read, mask (X, Y, Z) bool, the voided image)`` of a case, checked: one
    :class:`CwdmError` line naming the file for the first problem (:func:`case_problems` lists all)."""
    missing = case.missing(INPUTS)
    if missing:
        raise CwdmError(f"{case.folder / case.file_name(missing[0])}: missing ({missing[0]} is needed)")
    voided_path, mask_path = case.path(VOIDED), case.path(MASK)
    voided, img = read_raw(voided_path)
    labels, mask_img = read_raw(mask_path)
    if labels.shape != voided.shape:
        raise CwdmError(f"{mask_path}: shape {'x'.join(map(str, labels.shape))} differs from the voided image "
                        f"{voided_path.name} ({'x'.join(map(str, voided.shape))})")
    if not np.allclose(mask_img.affine, img.affine, atol=AFFINE_ATOL, rtol=0):
        diff = float(np.max(np.abs(np.asarray(mask_img.affine) - np.asarray(img.affine))))
        raise CwdmError(f"{mask_path}: affine differs from the voided image {voided_path.name} (max difference "
                        f"{diff:.4g})")
    values = np.asarray(labels, dtype=np.float64)
    finite = np.isfinite(values)
    if not finite.all():
        raise CwdmError(f"{mask_path}: a mask holds 0 and 1, found {int(values.size - finite.sum())} NaN/Inf voxels")
    other = np.unique(values[(values != 0) & (values != 1)])
    if other.size:
        shown = ", ".join(f"{v:g}" for v in other[:5]) + (", ..." if other.size > 5 else "")
        raise CwdmError(f"{mask_path}: a mask holds 0 and 1, found other values ({shown})")
    mask = labels == 1
    if not mask.any():
        raise CwdmError(f"{mask_path}: the mask is empty (no voxel is 1): nothing to inpaint")
    return voided, mask, img


def case_problems(case: InpaintingCase, divisor: int) -> List[str]:
    """Why ``case`` cannot be inpainted by a network of grid ``divisor`` (empty when it can)."""
    from ..data.preprocess import grid_for

    try:
        voided, mask, _ = read_case(case)
        network_inputs(voided, mask, str(case.path(VOIDED)))  # the scale exists (see voided_bounds)
        grid_for(voided.shape, divisor)
    except CwdmError as exc:
        return [str(exc)]
    return []


def usable_inpainting_cases(cases: List[InpaintingCase], divisor: int,
                            report: Callable[[str], None]) -> List[InpaintingCase]:
    """The cases without :func:`case_problems`, in order; ``report`` gets ``skipping <case>: <problem>``."""
    good = []
    for case in cases:
        problems = case_problems(case, divisor)
        if problems:
            report(f"skipping {case.name}: " + "; ".join(problems))
        else:
            good.append(case)
    return good


class InpaintingDataset:
    """Inputs of inpainting: item ``i`` is a dict for case ``i`` (keys as those of
    :class:`cwdm.data.datasets.InferenceDataset`, so :func:`~cwdm.inference.steps.synthesize_items` runs it).

    Keys: ``name``, ``prefix``, ``folder``; ``conditions`` ((2, X', Y', Z') float32: the voided image on
    [0, 1] by the convention, mask voxels 0, then the mask); ``first_input`` ((X', Y', Z') the mask:
    where the fill is checked for degenerate values); ``inputs`` (the parts read); ``synthesizes``
    (``t1n``); ``grid`` (:meth:`~cwdm.data.preprocess.Grid.to_dict`); ``reference`` and ``voided``
    (the voided file: header and outside voxels of the result); ``mask`` (its path); ``bounds``
    (``[lo, hi]`` of the convention).
    """

    def __init__(self, cases: List[InpaintingCase], divisor: int) -> None:
        self.cases, self.divisor = list(cases), int(divisor)

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        from ..data.preprocess import grid_for

        case = self.cases[index]
        voided, mask, _ = read_case(case)
        conditions, bounds = network_inputs(voided, mask, str(case.path(VOIDED)))
        grid = grid_for(voided.shape, self.divisor)
        cond = torch.from_numpy(np.ascontiguousarray(grid.to_model(conditions)))
        return {"name": case.name, "prefix": case.prefix, "folder": str(case.folder), "conditions": cond,
                "first_input": cond[1].clone(), "inputs": [VOIDED, MASK], "synthesizes": IMAGE,
                "grid": grid.to_dict(), "reference": str(case.path(VOIDED)), "voided": str(case.path(VOIDED)),
                "mask": str(case.path(MASK)), "bounds": [bounds[0], bounds[1]]}


def inpaint_cases(synth, cases: List[InpaintingCase], out_paths: Callable[[Dict], Paths], *,
                  target: Optional[str] = None, threshold: Optional[float] = None, postprocess_on: bool = True,
                  overwrite: bool = False, batch_size: int = 1, num_workers: int = 0, bar=None, clock=None,
                  on_case=None, on_problem=None) -> List[str]:
    """:func:`cwdm.inference.steps.synthesize_cases` for inpainting cases (checked already): read, sample,
    write with :func:`write_inpainted`. ``target`` and ``threshold`` are not used (the task's target;
    no threshold). Returns the names of the cases written."""
    dataset = InpaintingDataset(cases, synth.model.config.image_divisor)
    return synthesize_items(synth, items_of(dataset, num_workers), batch_size, out_paths, None, postprocess_on,
                            overwrite, bar, clock, on_case, on_problem, writer=write_inpainted)


def write_inpainted(item: Dict, mean: torch.Tensor, std: Optional[torch.Tensor], paths: Paths,
                    threshold: Optional[float], postprocess_on: bool, overwrite: bool) -> None:
    """Write one case's result (and std map first): the voided file's voxels outside the mask, the fill
    ``mean`` ((X', Y', Z') on [0, 1], clamped to it when ``postprocess_on``) mapped back inside; the std
    map ``std`` times ``hi - lo`` inside the mask, 0 outside. Both keep the voided file's header and
    affine, with the data type of :func:`cwdm.data.inpaint_volumes.result_dtype`. A failed write is one
    line naming the file and removes what this call wrote."""
    voided, img = read_raw(Path(item["voided"]))
    labels, _ = read_raw(Path(item["mask"]))
    write_filled(item, voided, img, labels == 1, mean, std, paths, postprocess_on, overwrite)


def write_filled(item: Dict, voided: np.ndarray, img: Any, mask: np.ndarray, mean: torch.Tensor,
                 std: Optional[torch.Tensor], paths: Paths, postprocess_on: bool, overwrite: bool) -> None:
    """:func:`write_inpainted` once its inputs are read: ``voided`` (X, Y, Z, the file's voxels as read, with
    the image ``img`` whose header the result keeps) outside ``mask`` ((X, Y, Z) bool), the fill inside;
    ``item`` gives ``grid``, ``bounds`` and ``inputs``."""
    from ..data.nifti_io import save_nifti_like, synthesis_mark, synthesized_target
    from ..data.preprocess import Grid

    grid, bounds = Grid.from_dict(item["grid"]), tuple(item["bounds"])
    volume = paste_fill(voided, mask, grid.to_original(mean.numpy()), bounds, clamp=postprocess_on)
    mark = synthesis_mark(IMAGE, item["inputs"])
    orphan = paths["std"].exists() and not paths["volume"].exists() and synthesized_target(paths["std"]) is not None
    jobs = []
    if std is not None:
        spread = np.where(mask, grid.to_original(std.numpy()).astype(np.float64) * (bounds[1] - bounds[0]), 0.0)
        jobs.append((paths["std"], spread.astype(volume.dtype), synthesis_mark(IMAGE + " std", item["inputs"]),
                     overwrite or orphan))
    jobs.append((paths["volume"], volume, mark, overwrite))
    written: List[Path] = []
    current = paths["volume"]
    try:
        paths["volume"].parent.mkdir(parents=True, exist_ok=True)
        for current, array, descrip, replace in jobs:
            save_nifti_like(array, img, current, overwrite=replace, dtype=array.dtype, descrip=descrip)
            written.append(current)
    except BaseException as exc:
        for done in written:
            done.unlink(missing_ok=True)
        if isinstance(exc, CwdmError):
            raise CwdmError(f"{exc}; then rerun the same command (written cases are kept)") from None
        if not isinstance(exc, OSError):
            raise
        raise CwdmError(f"{current}: cannot write ({exc.strerror or exc}); free space or make the folder "
                        f"writable, then rerun the same command (written cases are kept)") from None


def _usable(loaded, data_dir: Path, report: Callable[[str], None]) -> List[InpaintingCase]:
    return usable_inpainting_cases(discover_inpainting_cases(data_dir, required=()), loaded.config.image_divisor,
                                   report)


INPAINTING = RegionTask("inpainting", "--inpainting True", lambda task: task.is_inpainting, VOIDED, _usable,
                        lambda case, loaded: case_problems(case, loaded.config.image_divisor), inpainting_paths)
"""The inpainting challenge's task for :func:`cwdm.inference.region_plan.plan_region_folder`: results flat
under the output folder (the challenge's submission layout) or beside the inputs."""

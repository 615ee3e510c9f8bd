"""Python API of the region tasks: :class:`Inpainting` (fill a region with healthy tissue, the BraTS
inpainting task) and :class:`Insertion` (write a drawn tumour into a scan), over :class:`RegionModel`,
what they share (also ``cwdm.Inpainting``, ``cwdm.Insertion``, ``cwdm.api.Inpainting``,
``cwdm.api.Insertion``). Both run ``cwdm sample``'s pipeline (:class:`cwdm.inference.pipeline.Pipeline`)
and check their arguments as :class:`cwdm.api.MissingModality` does.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Dict, Optional, Sequence

from ..api import (DEFAULTS, PathLike, _api, _batch_folders, _output_file, _partly_written, _path,
                   _sampling_flags)
from ..errors import CwdmError


class RegionModel:
    """What :class:`Inpainting` and :class:`Insertion` share: the checkpoint
    (key ``t1n``) and sampling settings checked and loaded once through ``cwdm sample``'s pipeline, one case
    or a folder run through it, one-line errors. Subclasses give :meth:`region` (their
    :class:`cwdm.inference.region_plan.RegionTask`) and :attr:`DONE` (the verbose line's verb)."""

    DONE = ""
    MISSED = "done"

    @_api
    def __init__(self, model_path: PathLike = None, sampler: Optional[str] = None, steps: Optional[int] = None,
                 ensemble: int = DEFAULTS.ensemble, seed: int = DEFAULTS.seed, precision: str = DEFAULTS.precision,
                 device: str = "auto", verbose: bool = False, compile: str = "auto", continue_anyway: bool = False,
                 **sampler_options: float) -> None:
        from .flags import ModelFlags
        from .pipeline import Pipeline
        from ..runtime import select_device

        if model_path is None:
            raise CwdmError(f"model_path= is required: a checkpoint of cwdm train {self.region().flag}")
        path = _path(model_path, "model_path")
        if not path.is_file():
            raise CwdmError(f"model_path= {path}: " + ("is not a file" if path.exists() else "file does not exist"))
        self.flags = _sampling_flags(sampler, steps, ensemble, seed, precision, compile, device, sampler_options)
        self.options = self.flags.options()
        self.options.validate()
        self.verbose = bool(verbose)
        say = (lambda line: print(f"cwdm: {line}", file=sys.stderr)) if self.verbose else None
        self.pipeline = Pipeline({"t1n": path}, self.options, select_device(device), ModelFlags(), command="api",
                                 say=say, continue_anyway=bool(continue_anyway),
                                 sampler_chosen=sampler is not None or steps is not None)
        from .region_plan import region_model

        region_model(self.pipeline, self.region())  # loaded once; refused now unless of the subclass's task

    @staticmethod
    def region():
        """The subclass's :class:`cwdm.inference.region_plan.RegionTask`."""
        raise NotImplementedError

    def _single(self, plan, out: Path) -> Path:
        """Run the plan of one case; a bad case or a degenerate fill raises its one line."""
        result = self.pipeline.run(plan)
        for line in result.unusable + result.degenerate:
            raise CwdmError(line)
        self._say_written(result)
        return out

    def _batch(self, data_folder, output_folder, overwrite) -> Dict[str, Path]:
        """The subclass's task run on a folder; ``{case: path}``, or one error naming the cases not done
        (its ``written`` holds the dict)."""
        from .region_plan import plan_region_folder

        data, out = _batch_folders(data_folder, output_folder, overwrite)
        plan = plan_region_folder(self.pipeline, self.region(), data, out, overwrite=overwrite)
        result = self.pipeline.run(plan)
        self._say_written(result)
        written = {name: path for name, _, path in result.written}
        problems = plan.problems + result.unusable + result.degenerate
        if problems:
            raise _partly_written(f"{len(problems)} cases were not {self.MISSED}", problems, written)
        return written

    def _say_written(self, result) -> None:
        if self.verbose:
            for name, _, path in result.written:
                print(f"cwdm: wrote {path} ({self.DONE} {name})", file=sys.stderr)


def _input_files(optional: Sequence[str] = (), **files: Optional[PathLike]) -> Dict[str, Path]:
    """The NIfTI files given as API arguments (name -> value), each checked to exist; None is refused
    unless the name is ``optional`` (then it is left out)."""
    given = {}
    for arg, value in files.items():
        if value is None:
            if arg in optional:
                continue
            raise CwdmError(f"{arg}= is required: a NIfTI file")
        given[arg] = _path(value, arg)
        if not given[arg].is_file():
            raise CwdmError(f"{arg}= {given[arg]}: " + ("is not a file" if given[arg].exists()
                                                        else "file does not exist"))
    return given


class Inpainting(RegionModel):
    """Fill a region of a t1n with healthy tissue (the BraTS inpainting task) with a checkpoint of
    ``cwdm train --inpainting True``, through ``cwdm sample``'s pipeline:

        inp = Inpainting("inpainting.pt", sampler="ddim", steps=10)
        path = inp.infer_single(t1n_voided="c/c-t1n-voided.nii.gz", mask="c/c-mask.nii.gz",
                                output_file="out/c-t1n-inference.nii.gz")
        written = inp.infer_batch("cases", "results")    # {case: path}, as `cwdm sample` writes them

    The result holds the voided file's voxels, bit for bit, outside the mask and the fill inside it, in
    the voided image's intensities (:mod:`cwdm.data.inpaint_volumes`); with ``ensemble`` K > 1 the
    std map ``<name>_std.nii.gz`` is beside it (0 outside the mask). Each call keeps
    ``cwdm_provenance.json`` in its output folder. Every argument is checked before any work; errors
    are one-line :class:`cwdm.errors.CwdmError` naming the argument (``t1n_voided=``, ``mask=``).

    Args:
        model_path: the inpainting checkpoint (loaded and checked here, kept).
        sampler, steps, ensemble, seed, precision, compile, device, continue_anyway, **sampler_options:
            as for :class:`MissingModality`.
        verbose: print a line per written file (and skipped case) on stderr.
    """

    DONE = "inpainted"
    MISSED = "inpainted"

    @staticmethod
    def region():
        from .inpaint import INPAINTING

        return INPAINTING

    @_api
    def infer_single(self, t1n_voided: PathLike = None, mask: PathLike = None, output_file: PathLike = None,
                     overwrite: bool = False) -> Path:
        """Inpaint one case: ``t1n_voided`` and ``mask`` (NIfTI files) -> ``output_file`` (``.nii.gz``),
        recorded in its folder's ``cwdm_provenance.json``. The noise is drawn for the case named by the
        voided file's prefix (``B-1`` of ``B-1-t1n-voided.nii.gz``), so a case of the challenge layout
        gives what ``cwdm sample`` writes for it. Returns the written path; raises a one-line
        :class:`CwdmError` for a bad argument, a bad case (mask of another shape, not 0 / 1 or empty,
        NaN/Inf in the voided image) or a degenerate fill (then nothing is written)."""
        from ..data.inpainting import MASK, VOIDED, InpaintingCase, split_name
        from .region_plan import plan_region_case

        given = _input_files(t1n_voided=t1n_voided, mask=mask)
        out = _output_file(output_file, overwrite)
        voided = given["t1n_voided"]
        prefix, part = split_name(voided)
        case = InpaintingCase(prefix if part == VOIDED else voided.parent.name, voided.parent,
                              {VOIDED: voided, MASK: given["mask"]}, prefix=prefix)
        return self._single(plan_region_case(self.pipeline, self.region(), case, out, overwrite), out)

    @_api
    def infer_batch(self, data_folder: PathLike = None, output_folder: Optional[PathLike] = None,
                    overwrite: bool = False) -> Dict[str, Path]:
        """Inpaint every case of ``data_folder`` (the challenge layout) as ``cwdm sample`` does: results
        flat under ``output_folder`` (created), or beside the inputs when it is None; existing results are
        kept unless ``overwrite``. Returns ``{case name: written path}``. Unusable cases and degenerate fills
        are not written: once the other cases are, one :class:`CwdmError` names each (its ``written``
        holds the returned dict)."""
        return self._batch(data_folder, output_folder, overwrite)


class Insertion(RegionModel):
    """Write a tumour of given BraTS labels (1 necrosis / non-enhancing core, 2 edema, 3 enhancing) into a
    t1n with a checkpoint of ``cwdm train --insertion True``, through ``cwdm sample``'s pipeline.

    The region rewritten is the labelled voxels dilated by the checkpoint's sampling margin (brain
    voxels only; :func:`cwdm.data.insertion.region_of`), or the ``mask`` given. The result holds the
    t1n file's voxels, bit for bit, outside the region and the network's fill inside it, in the t1n's
    intensities (inpainting's convention, :mod:`cwdm.data.inpaint_volumes`); with ``ensemble`` K > 1 the
    std map ``<name>_std.nii.gz`` is beside it (0 outside the region). Each call keeps
    ``cwdm_provenance.json`` in its output folder. Errors are one-line :class:`cwdm.errors.CwdmError`
    naming the argument (``labels=``) or the file.

    Args:
        model_path: the insertion checkpoint (loaded and checked here, kept).
        sampler, steps, ensemble, seed, precision, compile, device, continue_anyway, **sampler_options:
            as for :class:`cwdm.api.MissingModality`.
        verbose: print a line per written file (and skipped case) on stderr.
    """

    DONE = "tumour inserted into"

    @staticmethod
    def region():
        from .insert import INSERTION

        return INSERTION

    @_api
    def infer_single(self, t1n: PathLike = None, labels: PathLike = None, output_file: PathLike = None,
                     mask: Optional[PathLike] = None, overwrite: bool = False) -> Path:
        """Insert the tumour drawn in ``labels`` into ``t1n`` (NIfTI files) -> ``output_file`` (``.nii.gz``),
        recorded in its folder's ``cwdm_provenance.json``; ``mask`` (0 / 1, holding every labelled voxel)
        gives the region instead of the dilated labels. The noise is drawn for the case named by the t1n's
        prefix (``B-1`` of ``B-1-t1n.nii.gz``), so a case folder gives what ``cwdm sample`` writes for it.
        Returns the written path; raises a one-line :class:`CwdmError` for a bad argument, a bad case
        (labels outside 0..3 or of another shape, nothing labelled ...) or a degenerate fill (then
        nothing is written)."""
        from ..data.insertion import IMAGE, LABELS, MASK, InsertionCase, split_name
        from .region_plan import plan_region_case

        given = _input_files(optional=("mask",), t1n=t1n, labels=labels, mask=mask)
        out = _output_file(output_file, overwrite)
        scan = given["t1n"]
        prefix, part = split_name(scan)
        name = prefix if part == IMAGE else scan.parent.name
        files = {IMAGE: scan, LABELS: given["labels"], **({MASK: given["mask"]} if "mask" in given else {})}
        case = InsertionCase(name, scan.parent, files, prefix=name)
        return self._single(plan_region_case(self.pipeline, self.region(), case, out, overwrite), out)

    @_api
    def infer_batch(self, data_folder: PathLike = None, output_folder: Optional[PathLike] = None,
                    overwrite: bool = False) -> Dict[str, Path]:
        """Insert into every case of ``data_folder`` (:mod:`cwdm.data.insertion`'s layout) as ``cwdm sample``
        does: results in ``output_folder/<case>/`` (created), or in the case folders when it is None;
        existing results are kept unless ``overwrite``. Returns ``{case name: written path}``. Unusable
        cases and degenerate fills are not written: once the other cases are, one :class:`CwdmError` names
        each (its ``written`` holds the returned dict)."""
        return self._batch(data_folder, output_folder, overwrite)

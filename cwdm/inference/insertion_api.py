"""Python API of tumour insertion: :class:`Insertion` (also ``cwdm.Insertion`` and ``cwdm.api.Insertion``).

    from cwdm import Insertion

    ins = Insertion("runs/insertion/checkpoints/ckpt_00002000.pt", sampler="ddim", steps=10)
    path = ins.infer_single(t1n="c/c-t1n.nii.gz", labels="drawn/c-labels.nii.gz",
                            output_file="out/c-t1n-inserted.nii.gz")
    written = ins.infer_batch("cases", "inserted")    # {case: path}, as `cwdm sample` writes them

It runs ``cwdm sample``'s pipeline for an insertion checkpoint (:mod:`cwdm.inference.insert`), with the
checks and one-line errors of :class:`cwdm.api.Inpainting`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Dict, Optional

from ..api import DEFAULTS, PathLike, _api, _output_file, _path, _sampling_flags, _writable_folder
from ..errors import CwdmError


class Insertion:
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

    @_api
    def __init__(self, model_path: PathLike = None, sampler: Optional[str] = None, steps: Optional[int] = None,
                 ensemble: int = DEFAULTS.ensemble, seed: int = DEFAULTS.seed, precision: str = DEFAULTS.precision,
                 device: str = "auto", verbose: bool = False, compile: str = "auto", continue_anyway: bool = False,
                 **sampler_options: float):
        from ..data.insertion import IMAGE
        from .flags import ModelFlags
        from .insert import insertion_model
        from .pipeline import Pipeline
        from ..runtime import select_device

        if model_path is None:
            raise CwdmError("model_path= is required: a checkpoint of cwdm train --insertion True")
        path = _path(model_path, "model_path")
        if not path.is_file():
            raise CwdmError(f"model_path= {path}: " + ("is not a file" if path.exists() else "file does not exist"))
        self.flags = _sampling_flags(sampler, steps, ensemble, seed, precision, compile, device, sampler_options)
        self.options = self.flags.options()
        self.options.validate()
        self.verbose = bool(verbose)
        say = (lambda line: print(f"cwdm: {line}", file=sys.stderr)) if self.verbose else None
        self.pipeline = Pipeline({IMAGE: path}, self.options, select_device(device), ModelFlags(), command="api",
                                 say=say, continue_anyway=bool(continue_anyway),
                                 sampler_chosen=sampler is not None or steps is not None)
        insertion_model(self.pipeline)  # loaded once; refused now unless it is an insertion checkpoint

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
        from .insert import plan_case

        given = {}
        for arg, value in (("t1n", t1n), ("labels", labels), ("mask", mask)):
            if value is None:
                if arg == "mask":
                    continue
                raise CwdmError(f"{arg}= is required: a NIfTI file")
            given[arg] = _path(value, arg)
            if not given[arg].is_file():
                raise CwdmError(f"{arg}= {given[arg]}: " + ("is not a file" if given[arg].exists()
                                                            else "file does not exist"))
        out = _output_file(output_file, overwrite)
        scan = given["t1n"]
        prefix, part = split_name(scan)
        name = prefix if part == IMAGE else scan.parent.name
        files = {IMAGE: scan, LABELS: given["labels"], **({MASK: given["mask"]} if "mask" in given else {})}
        case = InsertionCase(name, scan.parent, files, prefix=name)
        result = self.pipeline.run(plan_case(self.pipeline, case, out, overwrite))
        for line in result.unusable + result.degenerate:
            raise CwdmError(line)
        self._say_written(result)
        return out

    @_api
    def infer_batch(self, data_folder: PathLike = None, output_folder: Optional[PathLike] = None,
                    overwrite: bool = False) -> Dict[str, Path]:
        """Insert into every case of ``data_folder`` (:mod:`cwdm.data.insertion`'s layout) as ``cwdm sample``
        does: results in ``output_folder/<case>/`` (created), or in the case folders when it is None;
        existing results are kept unless ``overwrite``. Returns ``{case name: written path}``. Unusable
        cases and degenerate fills are not written: once the other cases are, one :class:`CwdmError` names
        each (its ``written`` holds the returned dict)."""
        from .insert import plan_folder
        from .steps import check_output_dir

        if data_folder is None:
            raise CwdmError("data_folder= is required: a folder with one sub-folder per case")
        data = _path(data_folder, "data_folder")
        out = _path(output_folder, "output_folder", optional=True)
        if not isinstance(overwrite, bool):
            raise CwdmError(f"overwrite= must be True or False, got {overwrite!r}")
        if out is not None:
            check_output_dir(out, data, in_place_ok=True)
            _writable_folder(out, "output_folder")
        plan = plan_folder(self.pipeline, data, out, overwrite=overwrite)
        result = self.pipeline.run(plan)
        self._say_written(result)
        written = {name: path for name, _, path in result.written}
        problems = plan.problems + result.unusable + result.degenerate
        if problems:
            error = CwdmError(f"{len(problems)} cases were not done ({'; '.join(problems)}); the other "
                              f"{len(written)} were written (this error's .written lists them)")
            error.written = written
            raise error
        return written

    def _say_written(self, result) -> None:
        if self.verbose:
            for name, _, path in result.written:
                print(f"cwdm: wrote {path} (tumour inserted into {name})", file=sys.stderr)

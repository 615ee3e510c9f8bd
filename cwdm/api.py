"""Python API: complete cases with a missing modality, or inpaint a region of a t1n (:class:`Inpainting`),
from a notebook or a pipeline.

    from cwdm import MissingModality

    mm = MissingModality(models_dir="checkpoints", sampler="ddim", steps=10)
    path = mm.infer_single(t1n="c/c-t1n.nii.gz", t1c="c/c-t1c.nii.gz", t2w="c/c-t2w.nii.gz",
                           output_file="c/c-t2f.nii.gz")        # the one modality not given is synthesized
    written = mm.infer_batch("data/pseudo_val", "completed")    # {case: path} as `cwdm auto` completes them

Both calls run ``cwdm auto``'s pipeline (:class:`cwdm.inference.pipeline.Pipeline`: the plan,
its checks, preprocessing, sampler, the reference's post-processing with the
0.04 threshold, the header and affine of the first condition), so a case gives
the same file either way (a case missing several modalities is completed with a
unified checkpoint trained with dropped conditions, as ``cwdm auto`` does), and
both keep ``cwdm_provenance.json`` in their output folder as ``cwdm auto``
does (:mod:`cwdm.inference.provenance`). The default sampler is the command's
(ddpm, 1000 steps: the reference's), or, when neither ``sampler`` nor ``steps`` is given, the one a
distilled student records (``cwdm distill``). Checkpoints are loaded once per modality and kept.

Every argument is checked before any work; a bad one, like every other error,
is a :class:`cwdm.errors.CwdmError` with a one-line message that names the
API's arguments (``num_groups=``), not the command-line flags. A synthesized
volume that is degenerate (:func:`cwdm.inference.synthesis.degenerate`: NaN/Inf, all
zero, constant) is never written: ``infer_single`` raises, ``infer_batch``
writes the other cases, then raises naming each such file (the exception's
``written`` holds ``{case: path}`` of what was written).
"""

from __future__ import annotations

import functools
import os
import sys
from numbers import Integral, Real
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

from .naming import ANY, MODALITIES
from .data.cases import Case
from .errors import CwdmError, api_call
from .inference.steps import check_output_dir
from .inference.synthesis import SamplingOptions

PathLike = Union[str, Path]
DEFAULTS = SamplingOptions()
"""The sampler settings of every synthesis (``cwdm sample``, ``cwdm auto`` and this API): the reference's."""


def _api(method):
    """Run a public method so that its messages name the API's arguments (:func:`cwdm.errors.api_call`)."""
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        with api_call():
            return method(*args, **kwargs)
    return wrapper


def _path(value, arg: str, optional: bool = False) -> Optional[Path]:
    """``value`` as a Path: a str or os.PathLike; None only when ``optional``."""
    if value is None and optional:
        return None
    if isinstance(value, (str, os.PathLike)) and str(value):
        return Path(value)
    raise CwdmError(f"{arg}= must be a path (str or pathlib.Path), got {value!r}")


def _number(value, arg: str, kind=Integral, low=None, high=None):
    """``value`` checked: an int (``kind=Integral``, numpy's too) or a real number, not a bool, within
    [low, high]; returned as a Python int or float."""
    if isinstance(value, bool) or not isinstance(value, kind):
        what = "an integer" if kind is Integral else "a number"
        raise CwdmError(f"{arg}= must be {what}, got {value!r} ({type(value).__name__})")
    if (low is not None and value < low) or (high is not None and value > high):
        span = f"in {low}..{high}" if high is not None else f">= {low}"
        raise CwdmError(f"{arg}= must be {span}, got {value!r}")
    return int(value) if kind is Integral else float(value)  # plain Python numbers (numpy's too) for the record


def _choice(value, arg: str, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise CwdmError(f"{arg}= must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def _batch_folders(data_folder, output_folder, overwrite) -> Tuple[Path, Optional[Path]]:
    """The checked ``(data folder, output folder or None)`` of an ``infer_batch`` call: one-line errors
    for a missing or non-path argument, a non-bool ``overwrite``, and an output folder among the input
    cases (as ``cwdm auto`` refuses) or not writable."""
    if data_folder is None:
        raise CwdmError("data_folder= is required: a folder with one sub-folder per case")
    data = _path(data_folder, "data_folder")
    out = _path(output_folder, "output_folder", optional=True)
    if not isinstance(overwrite, bool):
        raise CwdmError(f"overwrite= must be True or False, got {overwrite!r}")
    if out is not None:
        check_output_dir(out, data, in_place_ok=True)  # never among the input cases
        _writable_folder(out, "output_folder")
    return data, out


def _writable_folder(folder: Path, arg: str) -> None:
    """Refuse an output folder that is a file or lies below one (it is created when results are written)."""
    for place in (folder, *folder.absolute().parents):
        if place.exists() or place.is_symlink():
            if not place.is_dir():
                where = "is a file" if place == folder else f"lies below {place}, which is a file"
                raise CwdmError(f"{arg}= {folder}: the output folder {where}; choose another place")
            return


def _compile(value) -> str:
    """``value`` as one of :data:`cwdm.runtime.COMPILE_MODES`."""
    from .runtime import compile_mode

    if isinstance(value, (bool, str)):
        try:
            return compile_mode(value)
        except CwdmError:
            pass
    raise CwdmError(f"compile= must be 'auto', True or False, got {value!r}")


def _device(device) -> str:
    """``device`` checked the way :func:`cwdm.runtime.select_device` will use it."""
    import torch

    if not isinstance(device, str) or not (device in ("auto", "cpu", "cuda") or
                                           (device.startswith("cuda:") and device[5:].isdigit())):
        raise CwdmError(f"device= must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise CwdmError(f"device={device!r}: no CUDA GPU is available here (use device='cpu' or 'auto')")
    return device


def _sampler_options(given: Mapping[str, object], known) -> Dict[str, float]:
    """The samplers' options among the keyword arguments, each checked against its declaration."""
    unknown = [name for name in given if name not in known]
    if unknown:
        raise CwdmError(f"unexpected argument {unknown[0]}=; the samplers' options are "
                        f"{', '.join(f'{n}=' for n in known) or 'none'}")
    return {name: _number(value, name, Real, low=known[name].minimum) for name, value in given.items()}


def _sampling_flags(sampler, steps, ensemble, seed, precision, compile, device, sampler_options: Mapping[str, object]):
    """The :class:`cwdm.inference.flags.SamplingFlags` of the API's sampling arguments, each checked (in
    this order) with a one-line error naming it; ``sampler`` and ``steps`` None (not chosen): the defaults."""
    from .inference.flags import SamplingFlags
    from .model.samplers import SAMPLERS, registry_options
    from .runtime import PRECISIONS

    return SamplingFlags(
        sampler=_choice(DEFAULTS.sampler if sampler is None else sampler, "sampler", list(SAMPLERS)),
        sampling_steps=_number(DEFAULTS.steps if steps is None else steps, "steps", low=1, high=1000),
        **_sampler_options(sampler_options, registry_options()), ensemble=_number(ensemble, "ensemble", low=1),
        seed=_number(seed, "seed"), precision=_choice(precision, "precision", list(PRECISIONS)),
        compile=_compile(compile), device=_device(device), progress=False, num_workers=0)


def _output_file(output_file, overwrite) -> Path:
    """``output_file=`` checked: a ``.nii.gz`` path in a folder that can be made, not a folder, not existing
    unless ``overwrite=True``."""
    if output_file is None:
        raise CwdmError("output_file= is required: the .nii.gz file to write")
    out = _path(output_file, "output_file")
    if not isinstance(overwrite, bool):
        raise CwdmError(f"overwrite= must be True or False, got {overwrite!r}")
    if not out.name.endswith(".nii.gz"):
        raise CwdmError(f"output_file= {out}: must end in .nii.gz")
    _writable_folder(out.parent, "output_file")
    if out.is_dir():
        raise CwdmError(f"output_file= {out}: is a folder, expected a .nii.gz file name")
    if out.exists() and not overwrite:
        raise CwdmError(f"output_file= {out}: already exists (pass overwrite=True to replace it)")
    return out


class MissingModality:
    """Synthesize a case's missing modality with one checkpoint per target contrast.

    Args:
        models_dir: folder with one checkpoint per contrast, named as published
            (``t1_gen.pt``, ``t1ce_gen.pt``, ``t2_gen.pt``, ``flair_gen.pt``) or
            ``brats_<contrast>_*.pt`` (what ``cwdm export`` writes as the Quick tour names it).
        models: modality -> checkpoint path (takes precedence over ``models_dir``); ``"any"`` -> a
            unified checkpoint (``cwdm train --contr any``), used for modalities without their own.
        sampler, steps, ensemble, seed, precision, compile: as ``cwdm sample``'s and ``cwdm auto``'s
            flags, with their defaults (:class:`cwdm.inference.synthesis.SamplingOptions`: ``ddpm`` with 1000
            steps, the reference's sampler; ``sampler="ddim", steps=10`` is about 100 times faster);
            ``steps`` is ``--sampling_steps``. With neither ``sampler`` nor ``steps`` given, a checkpoint
            that records its sampler (a distilled student, ``cwdm distill``) is sampled with it.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        num_groups: GroupNorm groups of bare state_dicts (released: 32; cwdm checkpoints carry their own).
        modalities: modality names in canonical order.
        verbose: print progress notes on stderr.
        continue_anyway: add results to an output folder whose recorded results were made with other
            settings (its ``cwdm_provenance.json`` then lists both); otherwise that is refused.
        **sampler_options: the samplers' own options by name, as their flags (``eta=0.5`` for ddim);
            the registry (:func:`cwdm.model.samplers.registry_options`) says which exist.
    """

    @_api
    def __init__(self, models_dir: Optional[PathLike] = None, models: Optional[Mapping[str, PathLike]] = None,
                 sampler: Optional[str] = None, steps: Optional[int] = None,
                 ensemble: int = DEFAULTS.ensemble, seed: int = DEFAULTS.seed, precision: str = DEFAULTS.precision, device: str = "auto", num_groups: int = 32,
                 modalities: Sequence[str] = MODALITIES, verbose: bool = False, compile: str = "auto",
                 continue_anyway: bool = False, **sampler_options: float):
        from .inference.flags import ModelFlags
        from .inference.completion import find_checkpoints
        from .inference.pipeline import Pipeline
        from .runtime import select_device
        from .inference.synthesis import AUTO_THRESHOLD

        if isinstance(modalities, str) or not modalities or not all(isinstance(m, str) and m for m in modalities):
            raise CwdmError(f"modalities= must be a list of modality names, got {modalities!r}")
        self.modalities = tuple(modalities)
        if models is not None and not isinstance(models, Mapping):
            raise CwdmError(f"models= must be a dict modality -> checkpoint path, got {models!r}")
        unknown = [m for m in (models or {}) if m not in (*self.modalities, ANY)]
        if unknown:
            raise CwdmError(f"models= given for unknown modalities {unknown}; known: {', '.join(self.modalities)}"
                            f" (and 'any' for a unified checkpoint)")
        given = {m: _path(p, f"models['{m}']") for m, p in (models or {}).items()}
        folder = _path(models_dir, "models_dir", optional=True)
        if folder is not None and not folder.is_dir():
            raise CwdmError(f"models_dir= {folder}: " + ("not a folder" if folder.exists() else "does not exist"))
        if folder is None and not given:
            raise CwdmError("give models_dir= (a folder of checkpoints) or models= (modality -> checkpoint)")
        self.flags = _sampling_flags(sampler, steps, ensemble, seed, precision, compile, device, sampler_options)
        self.network = ModelFlags(num_groups=_number(num_groups, "num_groups", low=1))
        self.threshold = AUTO_THRESHOLD  # as cwdm auto
        self.options = self.flags.options()
        self.options.validate()
        self.checkpoints = find_checkpoints(folder, given, self.modalities)
        self.device = select_device(device)
        self.verbose = bool(verbose)
        self.continue_anyway = bool(continue_anyway)
        say = (lambda line: print(f"cwdm: {line}", file=sys.stderr)) if self.verbose else None
        # cwdm auto's pipeline, recorded as "api"; it loads each checkpoint once and keeps it
        self.pipeline = Pipeline(self.checkpoints, self.options, self.device, self.network, command="api",
                                 modalities=self.modalities, ema=self.flags.ema, postprocess=self.flags.postprocess,
                                 threshold=self.threshold, say=say, continue_anyway=self.continue_anyway,
                                 sampler_chosen=sampler is not None or steps is not None)

    @_api
    def infer_single(self, output_file: PathLike = None, overwrite: bool = False,
                     **volumes: Optional[PathLike]) -> Path:
        """Synthesize the one modality not given from the NIfTI files given by modality name.

        Example: ``infer_single(t1n=a, t1c=b, t2w=c, output_file="x-t2f.nii.gz")`` writes t2f, and
        records it in ``cwdm_provenance.json`` next to it. Returns the written path. Raises
        :class:`cwdm.errors.CwdmError` in one line when an argument is wrong (not exactly one
        modality missing, a file missing or unusable, ``output_file`` not a ``.nii.gz`` path or
        existing without ``overwrite=True``, its folder a file) or the synthesized volume is
        degenerate (then nothing is written).
        """
        unknown = [m for m in volumes if m not in self.modalities]
        if unknown:
            raise CwdmError(f"unknown modalities {unknown}; known: {', '.join(self.modalities)}")
        given = {m: _path(p, m) for m, p in volumes.items() if p is not None}
        missing = [m for m in self.modalities if m not in given]
        if len(missing) != 1:
            raise CwdmError(f"give every modality but one (missing now: {', '.join(missing) or 'none'})")
        for m, p in given.items():
            if not p.is_file():
                raise CwdmError(f"{m}= {p}: " + ("is not a file" if p.exists() else "file does not exist"))
        out = _output_file(output_file, overwrite)
        name = out.name[:-len(".nii.gz")]
        name = name[:-len(missing[0]) - 1] if name.endswith(f"-{missing[0]}") else name
        case = Case(name=name, folder=out.parent,
                    files={m: given[m] for m in self.modalities if m in given})
        if missing[0] not in self.checkpoints and ANY not in self.checkpoints:
            raise CwdmError(f"no checkpoint synthesizes {missing[0]} (give models={{'{missing[0]}': PATH}}, a unified "
                            f"models={{'any': PATH}} or a models_dir holding one)")
        result = self.pipeline.run(self.pipeline.one_case(case, missing[0], out, overwrite))
        for line in result.unusable + result.degenerate:
            raise CwdmError(line)
        self._say_written(result)
        return out

    @_api
    def infer_batch(self, data_folder: PathLike = None, output_folder: Optional[PathLike] = None,
                    overwrite: bool = False) -> Dict[str, Union[Path, Tuple[Path, ...]]]:
        """Complete every case of ``data_folder`` as ``cwdm auto`` does.

        Results go to ``output_folder/<case>/`` (created), or into the case folders when it is None,
        with the folder's ``cwdm_provenance.json`` (in ``data_folder`` when completing in place);
        existing files are kept unless ``overwrite``. A case missing several modalities is completed
        with a unified checkpoint trained with dropped conditions (``models={'any': PATH}``); cases that
        cannot be completed are skipped (noted when ``verbose``). Returns ``{case name: written path}``
        (a tuple of paths for a case completed with several files).

        A degenerate synthesized volume is not written; once the other cases are written a
        :class:`cwdm.errors.CwdmError` names every such file, and its ``written`` attribute holds
        ``{case name: written path}`` of the cases that were.
        """
        data, out = _batch_folders(data_folder, output_folder, overwrite)
        plan = self.pipeline.completion(data, out, overwrite)
        result = self.pipeline.run(plan)
        self._say_written(result)
        by_case: Dict[str, Dict[str, Path]] = {}
        for name, modality, path in result.written:
            by_case.setdefault(name, {})[modality] = path
        written: Dict[str, Union[Path, Tuple[Path, ...]]] = {  # several files: in the modalities' order
            name: next(iter(paths.values())) if len(paths) == 1 else
            tuple(paths[m] for m in self.modalities if m in paths) for name, paths in by_case.items()}
        if result.degenerate:
            raise _partly_written(f"{len(result.degenerate)} of {plan.todo} synthesized volumes were degenerate and "
                                  f"not written", result.degenerate, written)
        return written

    def _say_written(self, result) -> None:
        """With ``verbose``: one line per written volume."""
        if self.verbose:
            for name, modality, path in result.written:
                print(f"cwdm: wrote {path} ({modality} of {name})", file=sys.stderr)


def _partly_written(head: str, problems: list, written: dict) -> CwdmError:
    """The one-line error of a batch call that wrote only some cases: ``head (problem; problem); the other
    N cases were written``; its ``written`` attribute holds the dict the call would have returned."""
    error = CwdmError(f"{head} ({'; '.join(problems)}); the other {len(written)} cases were written (this error's "
                      f".written lists them)")
    error.written = written
    return error


def __getattr__(name):  # the region tasks' classes live in cwdm.inference.fill_api (they use this module's helpers)
    if name in ("Inpainting", "Insertion"):
        from .inference import fill_api

        return getattr(fill_api, name)
    raise AttributeError(f"module 'cwdm.api' has no attribute {name!r}")

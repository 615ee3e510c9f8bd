"""Python API: complete cases with a missing modality from a notebook or a pipeline.

    from cwdm import MissingModality

    mm = MissingModality(models_dir="checkpoints", sampler="ddim", steps=10)
    path = mm.infer_single(t1n="c/c-t1n.nii.gz", t1c="c/c-t1c.nii.gz", t2w="c/c-t2w.nii.gz",
                           output_file="c/c-t2f.nii.gz")        # the one modality not given is synthesized
    written = mm.infer_batch("data/pseudo_val", "completed")    # {case: path} for every case missing one

Both calls run the same pipeline as ``cwdm auto`` (preprocessing, sampler,
the reference's post-processing with the 0.04 threshold, the header and
affine of the first condition), so a case gives the same file either way.
Checkpoints are loaded once per modality and kept.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence, Union

from . import MODALITIES
from .cases import Case, discover_cases
from .errors import CwdmError
from .task import ANY

PathLike = Union[str, Path]


class MissingModality:
    """Synthesize a case's missing modality with one checkpoint per target contrast.

    Args:
        models_dir: folder with one checkpoint per contrast, named as published
            (``t1_gen.pt``, ``t1ce_gen.pt``, ``t2_gen.pt``, ``flair_gen.pt``) or
            ``brats_<contrast>_*.pt``.
        models: modality -> checkpoint path (takes precedence over ``models_dir``); ``"any"`` -> a
            unified checkpoint (``cwdm train --contr any``), used for modalities without their own.
        sampler, steps, eta, ensemble, seed, precision, compile: as ``cwdm sample``'s flags
            (``sampler`` ``ddpm`` with 1000 steps is the reference's sampler).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        num_groups: GroupNorm groups of bare checkpoints (released: 32).
        modalities: modality names in canonical order.
        verbose: print progress notes on stderr.
    """

    def __init__(self, models_dir: Optional[PathLike] = None, models: Optional[Mapping[str, PathLike]] = None,
                 sampler: str = "ddim", steps: int = 10, eta: float = 0.0, ensemble: int = 1, seed: int = 0,
                 precision: str = "fp32", device: str = "auto", num_groups: int = 32,
                 modalities: Sequence[str] = MODALITIES, verbose: bool = False, compile: str = "auto"):
        from .flags import ModelFlags, SamplingFlags
        from .completion import find_checkpoints
        from .runtime import select_device
        from .synthesis import AUTO_THRESHOLD

        self.modalities = tuple(modalities)
        unknown = [m for m in (models or {}) if m not in (*self.modalities, ANY)]
        if unknown:
            raise CwdmError(f"models given for unknown modalities {unknown}; known: {', '.join(self.modalities)}")
        self.flags = SamplingFlags(sampler=sampler, sampling_steps=steps, eta=eta, ensemble=ensemble, seed=seed,
                                   precision=precision, compile=compile, device=device, progress=False,
                                   num_workers=0)
        self.network = ModelFlags(num_groups=num_groups)
        self.threshold = AUTO_THRESHOLD  # as cwdm auto
        self.options = self.flags.options()
        self.options.validate()
        self.checkpoints = find_checkpoints(Path(models_dir) if models_dir is not None else None,
                                            {m: Path(p) for m, p in (models or {}).items()}, self.modalities)
        self.device = select_device(device)
        self.verbose = verbose
        self._loaded: Dict[str, object] = {}

    def _synthesizer(self, modality: str):
        """The Synthesizer of ``modality``: its per-contrast checkpoint, else the unified one (``any``),
        loaded on first use, then kept."""
        from .inference import resolve_model
        from .synthesis import Synthesizer

        key = modality if modality in self.checkpoints else ANY
        if key not in self.checkpoints:
            raise CwdmError(f"no checkpoint synthesizes {modality} (give models={{'{modality}': PATH}}, a unified "
                            f"models={{'any': PATH}} or a models_dir holding one)")
        if key not in self._loaded:
            loaded, task = resolve_model(self.checkpoints[key], None if key == ANY else key, self.modalities,
                                         self.network, self.flags.ema, self.device)
            if key == ANY and not task.is_unified:
                raise CwdmError(f"{self.checkpoints[key]}: given as the unified checkpoint, but it synthesizes "
                                f"{task.target} only")
            self._loaded[key] = Synthesizer(loaded, task, self.device, self.options)
        return self._loaded[key]

    def _complete(self, case: Case, modality: str, output_file: Path, overwrite: bool) -> Path:
        """Synthesize ``modality`` of ``case`` into ``output_file`` through ``cwdm auto``'s pipeline.

        Args:
            case: the case (its files of the other modalities).
            modality: the one to synthesize.
            output_file: where it goes (its ``_std`` map, with an ensemble, next to it).
            overwrite: replace existing files.

        Returns:
            ``output_file``.
        """
        from .completion import completion_paths
        from .inference import synthesize_cases, usable_cases

        synth = self._synthesizer(modality)
        problems = []
        if not usable_cases([case], synth.task.inputs_for(modality), synth.model.config.image_divisor,
                            problems.append, labels=synth.task.label_maps):
            raise CwdmError(problems[0])
        synthesize_cases(synth, [case], lambda item: completion_paths(output_file), target=modality,
                         threshold=self.threshold, postprocess_on=self.flags.postprocess, overwrite=overwrite)
        if self.verbose:
            print(f"cwdm: wrote {output_file} ({modality} of {case.name})", file=sys.stderr)
        return output_file

    def infer_single(self, output_file: PathLike, overwrite: bool = False, **volumes: Optional[PathLike]) -> Path:
        """Synthesize the one modality not given from the NIfTI files given by modality name.

        Example: ``infer_single(t1n=a, t1c=b, t2w=c, output_file="x-t2f.nii.gz")`` writes t2f.
        Returns the written path. Raises :class:`cwdm.errors.CwdmError` in one line when not exactly
        one modality is missing, a file is missing or unusable, or ``output_file`` exists (unless
        ``overwrite``).
        """
        unknown = [m for m in volumes if m not in self.modalities]
        if unknown:
            raise CwdmError(f"unknown modalities {unknown}; known: {', '.join(self.modalities)}")
        given = {m: Path(p) for m, p in volumes.items() if p is not None}
        missing = [m for m in self.modalities if m not in given]
        if len(missing) != 1:
            raise CwdmError(f"give every modality but one (missing now: {', '.join(missing) or 'none'})")
        for m, p in given.items():
            if not p.is_file():
                raise CwdmError(f"{p}: {m} file does not exist")
        out = Path(output_file)
        if not out.name.endswith(".nii.gz"):
            raise CwdmError(f"{out}: output_file must end in .nii.gz")
        if out.exists() and not overwrite:
            raise CwdmError(f"{out} already exists (pass overwrite=True to replace it)")
        out.parent.mkdir(parents=True, exist_ok=True)
        name = out.name[:-len(".nii.gz")]
        name = name[:-len(missing[0]) - 1] if name.endswith(f"-{missing[0]}") else name
        case = Case(name=name, folder=out.parent,
                    files={m: given[m] for m in self.modalities if m in given})
        return self._complete(case, missing[0], out, overwrite)

    def infer_batch(self, data_folder: PathLike, output_folder: Optional[PathLike] = None,
                    overwrite: bool = False) -> Dict[str, Path]:
        """Complete every case of ``data_folder`` that misses exactly one modality.

        Results go to ``output_folder/<case>/`` (created), or into the case folders when it is None;
        existing files are kept unless ``overwrite``. Cases with nothing or several modalities
        missing are skipped (noted when ``verbose``). Returns ``{case name: written path}``.
        """
        from .completion import output_path

        written: Dict[str, Path] = {}
        for case in (c.acquired() for c in discover_cases(data_folder, self.modalities)):  # never from cwdm's own
            missing = case.missing(self.modalities)
            if len(missing) != 1:
                if self.verbose:
                    print(f"cwdm: skipping {case.name}: {len(missing)} modalities missing", file=sys.stderr)
                continue
            target = output_path(case, missing[0], output_folder)  # where `cwdm auto` writes it
            if target.exists() and not overwrite:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            written[case.name] = self._complete(case, missing[0], target, overwrite)
        return written

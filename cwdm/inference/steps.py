"""The inference library under ``cwdm sample``, ``cwdm auto``, ``cwdm demo`` and the Python API.

* model resolution: :func:`resolve_model` (checkpoint and its task), :func:`chosen_target`;
* which cases to do: :func:`check_output_dir`, :func:`usable_cases` (and, for
  ``auto`` and the API, :mod:`cwdm.inference.completion`);
* where results go: :func:`paired_paths` (``sample``);
* case iteration, batching, post-processing and writing: :func:`synthesize_cases`
  over :func:`synthesize_items`;
* progress: :func:`progress_bar`, :func:`announce`, :func:`model_grid`.

The commands keep what is theirs: their flags, the provenance record
(:mod:`cwdm.inference.provenance`) and their messages (:mod:`cwdm.feedback`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import torch

from ..naming import ANY, MODALITIES, canonical_contrast, contrast_of_checkpoint
from ..model.checkpoint import LoadedModel, load_model
from ..errors import CwdmError, option
from .flags import ModelFlags
from .synthesis import SamplingOptions, Synthesizer, degenerate, postprocess
from ..task import Task, check_network

Paths = Dict[str, Optional[Path]]
"""Where one case's results go: ``{"volume": path, "std": path, "target": path or None}``."""


def resolve_model(path: Optional[Path], target: Optional[str], modalities, flags: ModelFlags,
                  ema: bool, device: torch.device) -> Tuple[LoadedModel, Task]:
    """Load a checkpoint and settle its task.

    A cwdm checkpoint's task is its own (a unified one synthesizes any of its
    modalities: the caller picks the target); a released state_dict's is the
    default task (:meth:`Task.default`) of the target asked for, or of the one
    its file name says.

    Args:
        path: released state_dict or cwdm checkpoint (None: refused).
        target: contrast asked for (None: from the checkpoint or its file name).
        modalities: modality names asked for (a cwdm checkpoint's own win over the default).
        flags: network of a bare state_dict; its ``flags_given`` (the flags typed) are checked against the file.
        ema: use the EMA weights of a cwdm checkpoint.
        device: where it will run (the model is loaded on the CPU; the Synthesizer moves it).

    Returns:
        ``(loaded model, task)``; ``loaded.task`` is set to the task. Raises :class:`CwdmError` in one
        line on a mismatch.
    """
    if path is None:
        raise CwdmError("--model_path is required (a released state_dict or a cwdm checkpoint)")
    target = canonical_contrast(target, modalities)  # --contr flair -> t2f (BraTS 2021 names)
    given = flags.flags_given  # network flags the user typed: checked against a bare state_dict
    loaded = load_model(path, config=flags.unet_config(len(modalities) - 1), ema=ema, device="cpu",
                        given=set(given) if given is not None else set())
    task = loaded.task
    if task is not None:
        if target is not None and target not in task.targets and not (task.is_unified and target == ANY):
            raise CwdmError(f"{path}: checkpoint was trained to synthesize {' or '.join(task.targets)}, not {target}")
        if list(task.modalities) != list(modalities) and tuple(modalities) != MODALITIES:
            raise CwdmError(f"{path}: checkpoint modalities {list(task.modalities)} differ from {option('modalities')} "
                            f"{list(modalities)}")
    else:
        if loaded.kind == "released":
            target = _released_target(Path(path), target, modalities)
        if target is None:
            raise CwdmError(f"{path}: a released state_dict does not say its target; pass {option('contr')}")
        task = Task.default(target, modalities)
        check_network(task, loaded.config.in_channels, str(path))
    loaded.task = task
    return loaded, task


def chosen_target(task: Task, asked: Optional[str], path) -> str:
    """The modality to synthesize: the task's own, or for a unified model the one asked for (required)."""
    if not task.is_unified:
        return task.target
    target = canonical_contrast(asked, task.modalities)
    if target is None or target == ANY:
        raise CwdmError(f"{path}: a unified checkpoint synthesizes any of {', '.join(task.modalities)}; "
                        f"pass --contr to choose")
    task.inputs_for(target)
    return target


def _released_target(path: Path, target: Optional[str], modalities) -> Optional[str]:
    """The target of a released state_dict: as asked, else as its file name says (noted on stderr)."""
    named = contrast_of_checkpoint(path, modalities)
    if target is None and named is not None:
        print(f"note: {path}: synthesizing {named}, as the file name says (pass --contr to choose)",
              file=sys.stderr)
        return named
    if named is not None and target is not None and named != target:
        print(f"warning: {path}: the file name says it synthesizes {named}, but {target} was asked for",
              file=sys.stderr)
    return target


def check_output_dir(output_dir: Path, data_dir: Path, in_place_ok: bool = False) -> None:
    """Refuse an output folder that would put results in place of, or among, the input files.

    Args:
        output_dir: where results would go.
        data_dir: the input folder.
        in_place_ok: accept the input folder itself (``cwdm auto`` only adds missing files).
    """
    out, data = Path(output_dir).resolve(), Path(data_dir).resolve()
    if out == data and in_place_ok:
        return
    if out == data or data in out.parents:
        raise CwdmError(f"{option('output_dir')} {output_dir} is (inside) the input folder {data_dir}: results "
                        f"would replace or mix with the input scans; choose another folder (completing the case "
                        f"folders in place is safe: cwdm auto, or the API's infer_batch without an output folder)")


def usable_cases(cases, required, divisor: int, report: Callable[[str], None],
                 labels: Optional[Mapping[str, Sequence[int]]] = None):
    """The cases whose files pass validation.

    Args:
        cases: :class:`cwdm.data.cases.Case` objects.
        required: modalities each case must have.
        divisor: the network's grid divisor.
        report: called with one line per unusable case, naming its problems.
        labels: the task's label maps (name -> declared labels, :attr:`cwdm.task.Task.label_maps`), whose
            values are checked too.

    Returns:
        The usable cases, in their order.
    """
    from ..data.validation import validate_cases

    results = validate_cases(cases, required, divisor, labels=labels)
    good = []
    for case in cases:
        problems = results[case.name]
        if problems:
            report(f"skipping {case.name}: " + "; ".join(problems))
        else:
            good.append(case)
    return good


def paired_paths(root: Path, name: str, prefix: str, target: str, save_target: bool = False) -> Paths:
    """Paths of a paired-mode result: ``root/<name>/<prefix>-<target>.nii.gz``, its ``_std`` map and,
    with ``save_target``, the preprocessed true target (``_target``; else None)."""
    folder = Path(root) / name
    return {"volume": folder / f"{prefix}-{target}.nii.gz", "std": folder / f"{prefix}-{target}_std.nii.gz",
            "target": folder / f"{prefix}-{target}_target.nii.gz" if save_target else None}


def synthesize_cases(synth: Synthesizer, cases, out_paths: Callable[[Dict], Paths], *, target: Optional[str] = None,
                     threshold: Optional[float] = None, postprocess_on: bool = True, overwrite: bool = False, batch_size: int = 1,
                     num_workers: int = 0, bar=None, clock=None,
                     on_case: Optional[Callable[[Dict, Paths, float], None]] = None,
                     on_problem: Optional[Callable[[str], None]] = None) -> List[str]:
    """Read, synthesize and write ``target`` for each of ``cases`` (already validated).

    Args:
        synth: the loaded network and sampler.
        cases: usable cases (:func:`usable_cases`).
        out_paths: item -> :data:`Paths` of its results.
        target: the modality to synthesize (default: the task's; required for a unified model).
        threshold, postprocess_on, overwrite, batch_size, bar, clock, on_case, on_problem: as
            :func:`synthesize_items`.
        num_workers: DataLoader workers reading the cases.

    Returns:
        The names of the cases written.
    """
    from ..data.datasets import InferenceDataset

    dataset = InferenceDataset(cases, synth.task, synth.model.config.image_divisor, target=target, check="none")
    return synthesize_items(synth, items_of(dataset, num_workers), batch_size, out_paths, threshold,
                            postprocess_on, overwrite, bar, clock, on_case, on_problem)


def synthesize_items(synth: Synthesizer, items: Iterable[Dict], batch_size: int,
                     out_paths: Callable[[Dict], Paths], threshold: Optional[float],
                     postprocess_on: bool, overwrite: bool, bar=None, clock=None,
                     on_case: Optional[Callable[[Dict, Paths, float], None]] = None,
                     on_problem: Optional[Callable[[str], None]] = None, writer=None) -> List[str]:
    """Synthesize and write each item of an ``InferenceDataset``.

    Items of the same model-grid shape are batched up to ``batch_size``. A degenerate volume
    (:func:`cwdm.inference.synthesis.degenerate`: NaN/Inf, all zero, constant) is not written under its name,
    so a rerun retries it: ``on_problem`` gets one line ``<path>: <what>; not written`` and the
    other cases go on; without ``on_problem`` that line is raised as :class:`CwdmError` once the
    batch's good cases are written.

    Args:
        synth: the loaded network and sampler.
        items: dataset items (dicts with ``name``, ``conditions``, ``grid``, ``reference``, maybe ``target``).
        batch_size: cases per network call.
        out_paths: item -> :data:`Paths` of its results.
        threshold: zero values at or below it (``cwdm auto``), or None.
        postprocess_on: apply the reference's post-processing.
        overwrite: replace existing files.
        bar: progress bar advanced by the cases of a batch after each network call, or None.
        clock: :class:`cwdm.feedback.RunClock` timing the network calls, or None.
        on_case: called as ``on_case(item, paths, seconds)`` after each case is written.
        on_problem: called with the line of each degenerate volume (see above), or None.
        writer: writes one case, called as ``writer(item, mean, std, paths, threshold, postprocess_on,
            overwrite)`` (None: the synthesis writer; inpainting passes
            :func:`cwdm.inference.inpaint.write_inpainted`).

    Returns:
        The names of the cases written, in order.
    """
    write = writer if writer is not None else _write_item
    done: List[str] = []
    problems: List[str] = []

    def flush(batch: List[Dict]) -> None:
        if not batch:
            return
        mean, std = _sample_batch(synth, batch, bar, clock)
        written = []
        for k, item in enumerate(batch):
            paths = out_paths(item)
            problem = degenerate(mean[k], item["first_input"], None if std is None else std[k], threshold,
                                 postprocess_on)
            if problem is not None:
                problems.append(f"{paths['volume']}: {problem} (an undertrained or broken checkpoint?); "
                                f"not written")
                continue
            write(item, mean[k], None if std is None else std[k], paths, threshold, postprocess_on, overwrite)
            done.append(item["name"])
            written.append((item, paths))
        seconds = clock.batch_seconds() if clock is not None else 0.0
        for item, paths in written:
            if on_case is not None:
                on_case(item, paths, seconds)
        batch.clear()
        for line in problems:
            if on_problem is None:
                raise CwdmError(line)
            on_problem(line)
        problems.clear()

    pending: List[Dict] = []
    for item in items:
        if pending and (len(pending) >= batch_size or pending[0]["conditions"].shape != item["conditions"].shape):
            flush(pending)
        pending.append(item)
    flush(pending)
    return done


def _sample_batch(synth: Synthesizer, batch: List[Dict], bar, clock):
    """Run the sampler on a batch of items; returns ``(mean, std or None)`` in the model grid."""
    conds = torch.stack([it["conditions"] for it in batch])
    identity = torch.stack([it["identity"] for it in batch]) if "identity" in batch[0] else None
    if clock is not None:
        clock.batch_started(len(batch))

    def callback(i: int, n: int) -> None:
        if bar is not None:
            bar.update(len(batch))
        if clock is not None:
            clock.network_call()

    return synth(conds, [it["name"] for it in batch], callback, identity=identity)


def _write_item(item: Dict, mean: torch.Tensor, std: Optional[torch.Tensor], paths: Paths,
                threshold: Optional[float], postprocess_on: bool, overwrite: bool) -> None:
    """Post-process one case's sample and write it (std map and true target first) on the original grid.

    The volume and std map say in their header that cwdm synthesized them, and from what
    (:func:`cwdm.data.nifti_io.synthesis_mark`). A failed write (full disk, read-only place) is one line
    naming the file, and removes what this call wrote: a case is written whole or not at all.
    """
    from ..data.nifti_io import save_nifti_like
    from ..data.preprocess import Grid
    from ..data.nifti_io import synthesis_mark, synthesized_target

    grid, first, reference = Grid.from_dict(item["grid"]), item["first_input"], item["reference"]
    made = item.get("synthesizes")

    def mark(suffix: str = "") -> Optional[str]:
        return synthesis_mark(made + suffix, item["inputs"]) if made else None

    vol = postprocess(mean, first, threshold, postprocess_on)
    # a std map cwdm wrote without its volume (a run killed between the two) is redone
    orphan = paths["std"] is not None and paths["std"].exists() and not paths["volume"].exists() \
        and synthesized_target(paths["std"]) is not None
    jobs = []
    if std is not None:
        s = postprocess(std, first, None, postprocess_on)
        jobs.append((paths["std"], s.numpy(), mark(" std"), overwrite or orphan))
    if paths.get("target") is not None and "target" in item:
        jobs.append((paths["target"], item["target"][0].numpy(), None, overwrite))
    jobs.append((paths["volume"], vol.numpy(), mark(), overwrite))
    written: List[Path] = []
    current = paths["volume"]
    try:
        paths["volume"].parent.mkdir(parents=True, exist_ok=True)
        for current, array, descrip, replace in jobs:
            save_nifti_like(grid.to_original(array), reference, current, overwrite=replace, descrip=descrip)
            written.append(current)
    except BaseException as exc:
        for done in written:
            done.unlink(missing_ok=True)
        if isinstance(exc, CwdmError):  # the writer's own line (full disk, read-only place ...)
            raise CwdmError(f"{exc}; then rerun the same command (written cases are kept)") from None
        if not isinstance(exc, OSError):
            raise
        raise CwdmError(f"{current}: cannot write ({exc.strerror or exc}); free space or make the folder "
                        f"writable, then rerun the same command (written cases are kept)") from None


def progress_bar(total: int, enabled: bool, desc: str):
    """A tqdm bar (a context manager) counting ``total`` network calls, labelled ``desc``, shown if ``enabled``."""
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, unit="call", desc=desc, dynamic_ncols=True)


def items_of(dataset, num_workers: int):
    """Iterate a dataset's items in order, read by ``num_workers`` DataLoader workers (0: in this process)."""
    from torch.utils.data import DataLoader

    return DataLoader(dataset, batch_size=None, shuffle=False, num_workers=num_workers)


def model_grid(case, modality: str, divisor: int) -> Tuple[int, ...]:
    """The network grid of one case, from the header of its ``modality`` file."""
    from ..data.nifti_io import load_header
    from ..data.preprocess import grid_for

    return grid_for(load_header(case.path(modality))[0], divisor).model


def announce(say, device: torch.device, channels: int, grid, options: SamplingOptions, cases: int,
             compiling: bool = False) -> None:
    """Say the device, warn before a released-size run on a CPU, and say when the network is compiled.

    Args:
        say: prints one line.
        device: where the network runs.
        channels: the network's base channels.
        grid: model grid of the first case to do, or None when there is none.
        options: the sampler settings (network calls per case, ``compile``).
        cases: cases to do.
        compiling: whether the first network call compiles the network
            (:func:`cwdm.inference.synthesis.run_compiles`).
    """
    from ..feedback import cpu_sampling_warning, device_line

    say(device_line(device))
    warning = cpu_sampling_warning(device, channels, grid, options.calls_per_case, cases) if grid else None
    if warning:
        say(warning)
    if compiling:
        say(f"compiling the network before its first call (--compile {options.compile}; measured on a 2-core CPU: "
            f"about 80 s, 18 s when torch's compile cache holds it, then 0.78-0.89x the time per call; "
            f"--compile False skips it)")

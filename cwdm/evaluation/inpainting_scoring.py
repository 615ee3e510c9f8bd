"""Scoring behind ``cwdm evaluate`` for inpainting results, as the BraTS inpainting challenge scores them.

Predictions: ``P/<case>-t1n-inference.nii.gz`` (flat, as the challenge collects them) or
``P/<case>/<case>-t1n-inference.nii.gz`` (beside the inputs; ``P`` may then be the data folder
itself). References: the inpainting layout (:mod:`cwdm.data.inpainting`), ``R/<case>/`` with
``<case>-t1n.nii.gz`` (the truth), ``<case>-t1n-voided.nii.gz`` (normalization bounds) and
``<case>-mask-healthy.nii.gz`` (where the challenge scores); a case without a healthy mask is scored in
``<case>-mask.nii.gz`` instead (a note says how many; the ``mask`` column names the one used).
The measures are :func:`cwdm.evaluation.inpainting.inpainting_metrics`.

Every prediction file has a row in ``metrics.csv``. One that cannot be scored (no reference case, a
reference part missing or unreadable, another shape, an empty mask, NaN/Inf voxels, an undefined
normalization) keeps its row with empty metric cells and the reason in ``problem``, and is a problem: a
``warning:`` line naming the file and an entry of ``summary.json``'s ``problems``. A reference case
without a result is a problem too (no row). ``summary.json`` is the synthesis report's
(:func:`cwdm.evaluation.report.summarize`) with ``task: "inpainting"`` and ``mask_fallback`` (the
cases scored in ``-mask``); ``psnr`` and ``psnr_01`` are capped at 100 dB in its statistics.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..data.part_cases import case_folders
from ..data.inpainting import (HEALTHY, IMAGE, MASK, RESULT, VOIDED, InpaintingCase, scan_inpainting_case,
                               split_name)
from ..errors import CwdmError
from ..naming import is_nifti
from .inpainting import INPAINTING_METRICS, UnscorableCase, inpainting_metrics, read_challenge_volume
from .report import CSV_NAME, SUMMARY_NAME, summarize, write_csv, write_json

__all__ = ["TASK_NOTE", "INPAINTING_CSV_FIELDS", "TABLE_COLUMNS", "TABLE_HEADS", "has_inpainting_results",
           "find_results", "reference_cases", "score_case", "inpainting_inputs", "evaluate_inpainting_dirs"]

TASK_NOTE = ("inpainting results: scored as the BraTS inpainting challenge does "
             "(SSIM, PSNR, MSE in mask-healthy)")
TARGET = IMAGE
"""The ``target`` column of every row (the filled contrast)."""
INPAINTING_CSV_FIELDS = ("case", "target") + INPAINTING_METRICS + ("mask", "problem")
"""Columns of an inpainting ``metrics.csv``; ``mask``: the part scored in (``mask-healthy`` or ``mask``)."""
TABLE_COLUMNS = ("ssim", "psnr", "psnr_01", "mse", "mae")
TABLE_HEADS = {"psnr": "PSNR dB (target range)", "psnr_01": "PSNR dB (range 1)", "rmse": "RMSE"}
CAPPED = ("psnr", "psnr_01")


def _result_files(folder: Path) -> List[Path]:
    """The ``<case>-t1n-inference`` files directly in ``folder`` (none when it cannot be listed)."""
    try:
        return sorted(p for p in folder.iterdir() if p.is_file() and is_nifti(p) and split_name(p)[1] == RESULT)
    except OSError:
        return []


def _subfolders(folder: Path) -> List[Path]:
    try:
        return sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")),
                      key=lambda p: p.name)
    except OSError:
        return []


def has_inpainting_results(pred_dir: Any) -> bool:
    """True when ``pred_dir`` or one of its sub-folders holds a ``<case>-t1n-inference`` file."""
    folder = Path(pred_dir)
    return folder.is_dir() and any(_result_files(f) for f in [folder] + _subfolders(folder))


def find_results(pred_dir: Path) -> Tuple[Dict[str, Path], Dict[str, str]]:
    """The result of each case in ``pred_dir`` (flat, then in case folders).

    Returns:
        (case name -> result file, case name -> problem line for a case with two result files).
    """
    found: Dict[str, List[Path]] = {}
    for folder in [pred_dir] + _subfolders(pred_dir):
        for path in _result_files(folder):
            found.setdefault(split_name(path)[0], []).append(path)
    doubles = {case: f"{paths[1]}: a second result for case {case} (also {paths[0]}); not scored"
               for case, paths in found.items() if len(paths) > 1}
    return {case: paths[0] for case, paths in sorted(found.items())}, doubles


def reference_cases(ref_dir: Path) -> Dict[str, InpaintingCase]:
    """The inpainting cases of ``ref_dir`` (itself when it is one case), by file-name prefix and folder name.

    Raises:
        CwdmError: ``ref_dir`` holds no case of the inpainting layout (none with a voided t1n).
    """
    cases = case_folders(ref_dir, scan_inpainting_case)
    if not any(c.path(VOIDED) is not None for c in cases):  # t1n alone is the synthesis layout
        raise CwdmError(f"{ref_dir}: no inpainting cases (case folders with <case>-{IMAGE}.nii.gz, "
                        f"<case>-{VOIDED}.nii.gz and <case>-{HEALTHY}.nii.gz) to score the inpainting results "
                        f"(<case>-{RESULT}.nii.gz) against")
    by_name: Dict[str, InpaintingCase] = {}
    for case in cases:
        by_name.setdefault(case.name, case)
    for case in cases:  # the file-name prefix wins over another case's folder name
        by_name[case.prefix] = case
    return by_name


def _case_files(case: InpaintingCase) -> Tuple[Dict[str, Path], Optional[str]]:
    """The reference files of ``case`` by input name, or the problem that stops its scoring."""
    if case.problems:
        return {}, case.problems[0]
    for part, what in ((IMAGE, "the true t1n"), (VOIDED, "the voided t1n (normalization)")):
        if case.path(part) is None:
            return {}, f"{case.folder / case.file_name(part)}: missing ({what} is needed to score the case)"
    mask = case.path(HEALTHY) or case.path(MASK)
    if mask is None:
        return {}, (f"{case.folder / case.file_name(HEALTHY)}: missing (the scoring mask; "
                    f"no {case.file_name(MASK)} either)")
    return {"target": case.files[IMAGE], "voided": case.files[VOIDED], "mask": mask}, None


def _empty_row(name: str, problem: str = "") -> Dict[str, Any]:
    return {"case": name, "target": TARGET, **dict.fromkeys(INPAINTING_METRICS, float("nan")), "mask": "",
            "problem": problem}


def score_case(name: str, pred: Path, case: Optional[InpaintingCase], device: Any = None) -> Dict[str, Any]:
    """The row of one result.

    Args:
        name: the case name (the result's file-name prefix).
        pred: the ``<case>-t1n-inference`` file.
        case: its reference case, or None when there is none.
        device: torch device of the SSIM computation (None: CPU).

    Returns:
        ``case``, ``target``, the :data:`~cwdm.evaluation.inpainting.INPAINTING_METRICS` (``nan`` when not
        scored), ``mask`` (the part scored in, ``""`` when none) and ``problem`` (the one-line reason naming
        the file, ``""`` when scored).
    """
    row = _empty_row(name)
    if case is None:
        row["problem"] = f"{pred}: no reference case {name}; not scored"
        return row
    files, why = _case_files(case)
    if why is not None:
        row["problem"] = f"{why}; {name} not scored"
        return row
    files = {"prediction": pred, **files}
    row["mask"] = split_name(files["mask"])[1]
    try:
        vols = {key: read_challenge_volume(path) for key, path in files.items()}
        row.update(inpainting_metrics(vols["prediction"], vols["target"], vols["voided"], vols["mask"],
                                      device=device))
    except CwdmError as exc:
        row["problem"] = f"{exc}; {name} not scored"
    except UnscorableCase as exc:
        row["problem"] = f"{files[exc.volume]}: {exc.reason}; {name} not scored"
    return row


def inpainting_inputs(pred_dir: Any, ref_dir: Any) -> Dict[str, Any]:
    """What an inpainting report is made from, as ``summary.json`` records it under ``inputs``."""
    return {"pred_dir": str(Path(pred_dir).resolve()), "ref_dir": str(Path(ref_dir).resolve()),
            "task": "inpainting"}


def _check_dirs(pred_dir: Path, ref_dir: Path) -> None:
    for name, folder in (("pred_dir", pred_dir), ("ref_dir", ref_dir)):
        if not folder.is_dir():
            raise CwdmError(f"{folder}: {name} {'is not a folder' if folder.exists() else 'does not exist'}")


def _score_all(results: Dict[str, Path], doubles: Dict[str, str], refs: Dict[str, InpaintingCase],
               progress: bool, warn: Callable[[str], None], device: Any) -> Tuple[List[Dict[str, Any]], List[str]]:
    """One row per result (sorted by case) and the problem lines, under a progress bar."""
    from tqdm import tqdm

    rows: List[Dict[str, Any]] = []
    problems: List[str] = []
    bar = tqdm(results.items(), total=len(results), desc="evaluate", unit="case", disable=not progress,
               file=sys.stderr)
    for name, pred in bar:
        bar.set_postfix_str(name, refresh=False)
        row = _empty_row(name, doubles[name]) if name in doubles else score_case(name, pred, refs.get(name), device)
        if row["problem"]:
            warn(row["problem"])
            problems.append(row["problem"])
        rows.append(row)
    bar.close()
    return rows, problems


def evaluate_inpainting_dirs(pred_dir: Any, ref_dir: Any, out_dir: Any = None, progress: bool = True, *,
                             verbose: bool = True, device: Any = None) -> Tuple[List[Dict[str, Any]], Dict[str, Any]]:
    """Score every inpainting result of ``pred_dir`` against ``ref_dir`` and write the reports.

    Args:
        pred_dir: the results (see the module docstring); may be ``ref_dir`` itself.
        ref_dir: the reference cases in the inpainting layout.
        out_dir: report folder (created); None: ``pred_dir/evaluation``.
        progress: show a tqdm bar over the cases.
        verbose: print the task note, the mask note and each problem on stderr.
        device: torch device of the SSIM computation (None: CPU).

    Returns:
        (one row per result with :data:`INPAINTING_CSV_FIELDS` keys -- ``nan`` metrics and a ``problem``
        when not scored --, the ``summary.json`` dict before JSON sanitizing).

    Raises:
        CwdmError: a folder is missing, ``pred_dir`` holds no result, ``ref_dir`` no inpainting case, or
            the report folder cannot be created.
    """
    from .scoring import DEFAULT_OUT, _make_report_dir, _warner

    pred_dir, ref_dir = Path(pred_dir), Path(ref_dir)
    _check_dirs(pred_dir, ref_dir)
    out = Path(out_dir) if out_dir is not None else pred_dir / DEFAULT_OUT
    results, doubles = find_results(pred_dir)
    if not results:
        raise CwdmError(f"{pred_dir}: no inpainting results (<case>-{RESULT}.nii.gz, flat or in case folders)")
    refs = reference_cases(ref_dir)
    warn = _warner(verbose)
    fallback = sorted(name for name in results if name in refs and refs[name].path(HEALTHY) is None
                      and refs[name].path(MASK) is not None)
    if verbose:
        print(f"note: {TASK_NOTE}", file=sys.stderr)
        if fallback:
            print(f"note: {len(fallback)} cases have no <case>-{HEALTHY}.nii.gz and are scored in "
                  f"<case>-{MASK}.nii.gz (the whole voided region) instead: not comparable with the "
                  f"challenge's scores (column mask)", file=sys.stderr)
    _make_report_dir(out, montage=False)
    rows, problems = _score_all(results, doubles, refs, progress, warn, device)
    for name, case in sorted({c.prefix: c for c in refs.values()}.items()):
        if name not in results and case.name not in results:
            line = f"{case.folder}: reference case {name} has no result ({case.file_name(RESULT)}) in {pred_dir}"
            warn(line)
            problems.append(line)

    summary = summarize(rows, problems, [], [TARGET], INPAINTING_METRICS, CAPPED)
    summary.update({"task": "inpainting", "mask_fallback": fallback, "pred_dir": str(pred_dir),
                    "ref_dir": str(ref_dir), "out_dir": str(out), "inputs": inpainting_inputs(pred_dir, ref_dir)})
    write_csv(out / CSV_NAME, rows, INPAINTING_CSV_FIELDS)
    write_json(out / SUMMARY_NAME, summary)
    return rows, summary

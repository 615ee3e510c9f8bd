"""Scoring behind ``cwdm evaluate``: metrics of each prediction against its reference, and the reports.

:func:`evaluate_pair` scores one :class:`~cwdm.evaluation.pairs.Pair` (and
draws its montage); :func:`evaluate_dirs` pairs two folders
(:func:`cwdm.evaluation.pairs.find_pairs`), scores every pair and writes
``metrics.csv`` and ``summary.json`` (:mod:`cwdm.evaluation.report`). The volumes are
read by :mod:`cwdm.evaluation.reading`; the measures are those of
:mod:`cwdm.evaluation.metrics` (with :mod:`~cwdm.evaluation.realism`),
:mod:`~cwdm.evaluation.uncertainty` (a std map) and :mod:`~cwdm.evaluation.segmentation`
(``--seg_dir``). The
folder layouts, the problems reported and the report formats are described
in the docstring of the command module :mod:`cwdm.commands.evaluate`, which re-exports
the public names of this module.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..naming import MODALITIES
from ..errors import CwdmError
from .pairs import Pair, find_pairs
from .reading import read_context, read_pair, read_predicted_seg, read_std
from .report import CSV_NAME, REPORT_METRICS, SUMMARY_NAME, summarize, write_csv, write_json, write_pair_montage

__all__ = ["MONTAGE_DIR", "DEFAULT_OUT", "evaluate_pair", "evaluate_dirs", "report_inputs"]

MONTAGE_DIR = "montages"
DEFAULT_OUT = "evaluation"


# ----------------------------------------------------------------------------- one pair

def _score(pair: Pair, pred: np.ndarray, ref: np.ndarray, others: Dict[str, np.ndarray],
           seg: Optional[np.ndarray], device: Any, pred_scale: str,
           problems: List[str]) -> Tuple[Dict[str, Any], np.ndarray, Optional[np.ndarray]]:
    """The metric row of one pair.

    Args:
        pair: the prediction and its reference case.
        pred: the (X, Y, Z) prediction.
        ref: the (X, Y, Z) reference, raw intensities.
        others: the case's other (X, Y, Z) reference volumes (brain mask).
        seg: the (X, Y, Z) label map or None.
        device: torch device of the SSIM computation (None: CPU).
        pred_scale: ``auto``, ``target`` or ``unit``.
        problems: the list a line is appended to when a volume is degenerate.

    Returns:
        (row with the metric keys, ``case``, ``target``, ``problem`` and
        ``pred_scale`` -- metrics ``nan`` and ``problem`` set for a degenerate
        volume --, the reference on the prediction's scale, the boolean
        (X, Y, Z) brain mask or None when no reference volume is finite).
    """
    from . import metrics as M

    finite_refs = [v for v in (ref, *others.values()) if np.all(np.isfinite(v))]
    mask = M.brain_mask(*finite_refs) if finite_refs else None
    ref, used_scale = M.reference_on_prediction_scale(pred, ref, pred_scale)
    row: Dict[str, Any] = {"case": pair.case, "target": pair.target, "problem": "", "pred_scale": used_scale}
    try:
        row.update(M.case_metrics(pred, ref, mask, seg, device=device))
    except M.DegenerateVolume as exc:
        bad = pair.ref_case.files[pair.target] if exc.volume == "reference" else pair.pred
        row.update(dict.fromkeys(REPORT_METRICS, float("nan")), problem=str(exc))
        problems.append(f"{bad}: {exc}; {pair.case}/{pair.target} not scored (empty metric cells)")
    return row, ref, mask


def _beyond_the_pair(pred: np.ndarray, ref: np.ndarray, mask: Optional[np.ndarray], std: Optional[np.ndarray],
                     seg: Optional[np.ndarray], pred_seg: Optional[np.ndarray]) -> Dict[str, float]:
    """The metrics that need more than the two volumes: the std map's calibration, the user's Dice.

    Args:
        pred: the (X, Y, Z) prediction.
        ref: the (X, Y, Z) reference on the prediction's scale.
        mask: the boolean (X, Y, Z) brain mask (None: ``ref != 0``).
        std: the (X, Y, Z) std map beside the prediction, or None.
        seg: the reference's (X, Y, Z) label map, or None.
        pred_seg: the user's (X, Y, Z) label map of the case, or None.

    Returns:
        The :data:`~cwdm.evaluation.uncertainty.UNCERTAINTY_METRICS` and
        :data:`~cwdm.evaluation.segmentation.SEGMENTATION_METRICS` values, ``nan`` without their input.
    """
    from .segmentation import SEGMENTATION_METRICS, dice_scores
    from .uncertainty import UNCERTAINTY_METRICS, calibration_metrics

    out = dict.fromkeys(UNCERTAINTY_METRICS + SEGMENTATION_METRICS, float("nan"))
    if std is not None:
        out.update(calibration_metrics(pred, ref, std, (ref != 0) if mask is None else mask))
    if pred_seg is not None and seg is not None:
        out.update(dice_scores(pred_seg, seg))
    return out


def evaluate_pair(pair: Pair, modalities: Sequence[str] = MODALITIES, montage_path: Optional[Path] = None,
                  device: Any = None, pred_scale: str = "auto",
                  seg_path: Optional[Path] = None) -> Tuple[Optional[Dict[str, Any]], List[str]]:
    """Metrics (and optionally the montage) of one pair.

    Args:
        pair: the prediction and its reference case.
        modalities: modality names in canonical order (montage columns).
        montage_path: where the PNG montage goes; None: no montage (none
            either for a degenerate pair).
        device: torch device of the SSIM computation (None: CPU).
        pred_scale: see :func:`cwdm.evaluation.metrics.reference_on_prediction_scale`;
            the scale used is the row's ``pred_scale``.
        seg_path: the user's segmentation of the case (``--seg_dir``), or None: no Dice.

    Returns:
        (row dict with :data:`~cwdm.evaluation.report.CSV_FIELDS` keys --
        metrics ``nan`` and ``problem`` set when a volume is degenerate --, or
        None if the pair could not be read; problem lines).
    """
    pred, ref, problems = read_pair(pair)
    if pred is None or ref is None:
        return None, problems
    others, seg = read_context(pair, ref.shape, problems)
    std = read_std(pair, pred.shape, problems)
    pred_seg = read_predicted_seg(seg_path, pair, ref.shape, seg, problems)
    row, ref, mask = _score(pair, pred, ref, others, seg, device, pred_scale, problems)
    row["has_std"] = std is not None
    if not row["problem"]:
        row.update(_beyond_the_pair(pred, ref, mask, std, seg, pred_seg))

    if montage_path is not None and not row["problem"]:
        try:
            write_pair_montage(montage_path, pair.case, pair.target, modalities, others, ref,
                               {"synthesis": pred}, mask, std, seg)
        except Exception as exc:  # a failed picture must not lose the metrics
            problems.append(f"{montage_path}: montage not written ({type(exc).__name__}: {exc})")
    return row, problems


# ----------------------------------------------------------------------------- driver

def _check_targets(targets: Optional[Sequence[str]], modalities: Sequence[str]) -> None:
    """Refuse target names that are not modalities.

    Args:
        targets: the requested targets (None or empty: all).
        modalities: the known modality names.

    Raises:
        CwdmError: a target is not one of ``modalities``.
    """
    if targets:
        unknown = [t for t in targets if t not in modalities]
        if unknown:
            raise CwdmError(f"unknown target modalities {unknown}; known: {', '.join(modalities)}")


def _warner(verbose: bool) -> Callable[[str], None]:
    """The function that prints a problem line.

    Args:
        verbose: print at all.

    Returns:
        ``warn(msg)``: a ``warning: msg`` line on stderr (through tqdm, so a
        progress bar stays intact) when ``verbose``, else nothing.
    """
    from tqdm import tqdm

    def warn(msg: str) -> None:
        if verbose:
            tqdm.write(f"warning: {msg}", file=sys.stderr)

    return warn


def _notes(pairs: List[Pair], skipped: List[str], verbose: bool) -> None:
    """Print the ``note:`` lines about the reference's result layout and the skipped copies.

    Args:
        pairs: the pairs found.
        skipped: the prediction files skipped as copies of their reference.
        verbose: print at all.
    """
    from tqdm import tqdm

    n_ref = sum(p.reference_layout for p in pairs)
    if n_ref and verbose:
        target = next(p.target for p in pairs if p.reference_layout)
        tqdm.write(f"note: {n_ref} cases hold the reference's results (<case>/sample.nii.gz); scored as "
                   f"{target}, put back on the case grid (cropped border = 0)", file=sys.stderr)
    if skipped and verbose:
        tqdm.write(f"note: {len(skipped)} prediction files are copies of their reference and were "
                   f"skipped (listed in {SUMMARY_NAME})", file=sys.stderr)


def _make_report_dir(out: Path, montage: bool) -> None:
    """Create the report folder (and its ``montages`` folder).

    Args:
        out: the report folder.
        montage: create ``out/montages`` too.

    Raises:
        CwdmError: a folder cannot be created.
    """
    try:
        out.mkdir(parents=True, exist_ok=True)
        if montage:
            (out / MONTAGE_DIR).mkdir(exist_ok=True)
    except OSError as exc:
        raise CwdmError(f"{out}: cannot create the report folder ({exc.strerror or exc})") from None


def _score_pairs(pairs: List[Pair], out: Path, modalities: Sequence[str], montage: bool, progress: bool,
                 warn: Callable[[str], None], device: Any, pred_scale: str,
                 seg_dir: Optional[Path] = None) -> Tuple[List[Dict[str, Any]], List[str]]:
    """Score every pair, case by case, under a progress bar.

    Args:
        pairs: the pairs, sorted by case.
        out: the report folder (montages in ``out/montages``).
        modalities: modality names in canonical order.
        montage: draw the montages.
        progress: show a tqdm bar over the cases.
        warn: prints each problem line as it is found.
        device: torch device of the SSIM computation (None: CPU).
        pred_scale: ``auto``, ``target`` or ``unit``.
        seg_dir: the users' segmentations (one per case, its Dice in each row of the case), or None.

    Returns:
        (one row per pair that could be read, the problem lines in order).
    """
    from tqdm import tqdm

    from .segmentation import find_seg

    by_case: Dict[str, List[Pair]] = {}
    for pair in pairs:
        by_case.setdefault(pair.case, []).append(pair)
    rows: List[Dict[str, Any]] = []
    problems: List[str] = []
    bar = tqdm(by_case.items(), total=len(by_case), desc="evaluate", unit="case",
               disable=not progress, file=sys.stderr)
    for case, case_pairs in bar:
        bar.set_postfix_str(case, refresh=False)
        seg_path, why = find_seg(seg_dir, case, case_pairs[0].ref_case.prefix) if seg_dir else (None, None)
        case_problems = [why] if why else []
        for pair in case_pairs:
            mpath = out / MONTAGE_DIR / f"{pair.case}-{pair.target}.png" if montage else None
            row, pair_problems = evaluate_pair(pair, modalities, mpath, device=device, pred_scale=pred_scale,
                                               seg_path=seg_path)
            for p in case_problems + pair_problems:
                warn(p)
            problems.extend(case_problems + pair_problems)
            case_problems = []
            if row is not None:
                rows.append(row)
    bar.close()
    return rows, problems


def report_inputs(pred_dir: Any, ref_dir: Any, targets: Optional[Sequence[str]], pred_scale: str,
                  modalities: Sequence[str], seg_dir: Any = None) -> Dict[str, Any]:
    """What a report is made from, as ``summary.json`` records it under ``inputs`` (absolute folders;
    ``seg_dir`` ``""`` without one)."""
    return {"pred_dir": str(Path(pred_dir).resolve()), "ref_dir": str(Path(ref_dir).resolve()),
            "targets": list(targets or []), "pred_scale": pred_scale, "modalities": list(modalities),
            "seg_dir": str(Path(seg_dir).resolve()) if seg_dir is not None else ""}


def evaluate_dirs(pred_dir: Any, ref_dir: Any, out_dir: Any = None, modalities: Sequence[str] = MODALITIES,
                  montage: bool = True, progress: bool = True, *, targets: Optional[Sequence[str]] = None,
                  verbose: bool = True, device: Any = None, pred_scale: str = "auto",
                  seg_dir: Any = None) -> Tuple[List[Dict[str, Any]], Dict[str, Any]]:
    """Evaluate every prediction of ``pred_dir`` against ``ref_dir`` and write the reports.

    Args:
        pred_dir, ref_dir: see the :mod:`cwdm.commands.evaluate` docstring.
        out_dir: report folder (created); None: ``pred_dir/evaluation``.
        modalities: modality names (conditions of a target are the others).
        montage: write ``montages/<case>-<target>.png``.
        progress: show a tqdm bar over the pairs' cases.
        targets: evaluate only these modalities (default: all found).
        verbose: print each problem as a ``warning:`` line on stderr.
        device: torch device of the SSIM computation (None: CPU).
        pred_scale: ``auto``, ``target`` or ``unit`` (:func:`cwdm.evaluation.metrics.reference_on_prediction_scale`).
        seg_dir: the segmentations a user's model predicted on the completed cases
            (:func:`cwdm.evaluation.segmentation.find_seg`): Dice columns; None: empty Dice cells.

    Returns:
        (rows: one dict per evaluated pair with the
        :data:`~cwdm.evaluation.report.CSV_FIELDS` keys -- floats may be
        ``nan``/``inf``; a degenerate pair has ``nan`` metrics and a
        ``problem`` --, summary: the ``summary.json`` dict before JSON
        sanitizing).

    Raises:
        CwdmError: a folder is missing, or the report folder cannot be created.
    """
    modalities = list(modalities)
    _check_targets(targets, modalities)
    if seg_dir is not None and not Path(seg_dir).is_dir():
        raise CwdmError(f"{seg_dir}: --seg_dir {'is not a folder' if Path(seg_dir).exists() else 'does not exist'}")
    pred_dir, ref_dir = Path(pred_dir), Path(ref_dir)
    out = Path(out_dir) if out_dir is not None else pred_dir / DEFAULT_OUT
    warn = _warner(verbose)

    pairs, problems, skipped = find_pairs(pred_dir, ref_dir, modalities, targets)
    for p in problems:
        warn(p)
    _notes(pairs, skipped, verbose)
    _make_report_dir(out, montage)
    rows, pair_problems = _score_pairs(pairs, out, modalities, montage, progress, warn, device, pred_scale,
                                       None if seg_dir is None else Path(seg_dir))
    problems.extend(pair_problems)

    summary = summarize(rows, problems, skipped, modalities)
    summary.update({"pred_dir": str(pred_dir), "ref_dir": str(ref_dir), "out_dir": str(out),
                    "inputs": report_inputs(pred_dir, ref_dir, targets, pred_scale, modalities, seg_dir)})
    write_csv(out / CSV_NAME, rows)
    write_json(out / SUMMARY_NAME, summary)
    return rows, summary

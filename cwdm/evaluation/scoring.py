"""Scoring behind ``cwdm evaluate``: metrics of each prediction against its reference, and the reports.

:func:`evaluate_pair` scores one :class:`~cwdm.evaluation.pairs.Pair` (and
draws its montage); :func:`evaluate_dirs` pairs two folders
(:func:`cwdm.evaluation.pairs.find_pairs`), scores every pair and writes
``metrics.csv`` and ``summary.json`` (:mod:`cwdm.evaluation.report`). The
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
from .pairs import REFERENCE_CROP, Pair, find_pairs
from .report import CSV_NAME, SUMMARY_NAME, summarize, write_csv, write_json, write_pair_montage

__all__ = ["MONTAGE_DIR", "DEFAULT_OUT", "evaluate_pair", "evaluate_dirs", "report_inputs"]

MONTAGE_DIR = "montages"
DEFAULT_OUT = "evaluation"


# ----------------------------------------------------------------------------- one pair

def _load(path: Path) -> np.ndarray:
    """The (X, Y, Z) data array of a NIfTI file (``CwdmError`` if it cannot be read)."""
    from ..data.nifti_io import load_nifti

    data, _ = load_nifti(path)
    return data


def _fmt_shape(shape: Sequence[int]) -> str:
    """A shape as messages write it, e.g. ``60x60x39``."""
    return "x".join(str(int(s)) for s in shape)


def _load_matching(path: Path, shape: Sequence[int], against: str, consequence: str, problems: List[str],
                   unreadable: Optional[str] = None) -> Optional[np.ndarray]:
    """Load a volume that must have ``shape``; on failure append a problem line and return None.

    Args:
        path: the NIfTI file.
        shape: the (X, Y, Z) shape it must have.
        against: what the shape is compared with, as the message names it.
        consequence: what the line says happens to a file of another shape
            (and to an unreadable one unless ``unreadable`` is given).
        problems: the list the problem line is appended to.
        unreadable: what the line says happens to a file that cannot be read.

    Returns:
        The (X, Y, Z) array, or None when it cannot be read or has another shape.
    """
    try:
        vol = _load(path)
    except CwdmError as exc:
        problems.append(f"{exc}; {unreadable or consequence}")
        return None
    if vol.shape != tuple(shape):
        problems.append(f"{path}: shape {_fmt_shape(vol.shape)} differs from {against} "
                        f"({_fmt_shape(shape)}); {consequence}")
        return None
    return vol


def _on_reference_grid(pred: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """The reference's cropped result placed back on the case grid, zeros in the border.

    Args:
        pred: the reference implementation's (X-16, Y-16, Z) result.
        shape: the case grid (X, Y, Z).

    Returns:
        The (X, Y, Z) volume; a ``pred`` of any other shape is returned as it
        is (and reported as a mismatch by the caller).
    """
    c = REFERENCE_CROP
    x, y, z = (int(s) for s in shape)
    if pred.shape != (x - 2 * c, y - 2 * c, z) or x <= 2 * c or y <= 2 * c:
        return pred
    out = np.zeros((x, y, z), dtype=pred.dtype)
    out[c:x - c, c:y - c, :] = pred
    return out


def _read_pair(pair: Pair) -> Tuple[Optional[np.ndarray], Optional[np.ndarray], List[str]]:
    """Load the prediction and its reference on one grid.

    Args:
        pair: the prediction and its reference case.

    Returns:
        (prediction, reference, problem lines): two (X, Y, Z) arrays of one
        shape (the reference's result put back on the case grid) and no
        problem, or None, None and the line saying why the pair is not
        evaluated.
    """
    ref_path = pair.ref_case.files[pair.target]
    try:
        pred = _load(pair.pred)
        ref = _load(ref_path)
    except CwdmError as exc:
        return None, None, [f"{exc}; {pair.case}/{pair.target} not evaluated"]
    if pair.reference_layout:
        pred = _on_reference_grid(pred, ref.shape)
    if pred.shape != ref.shape:
        return None, None, [f"{pair.pred}: shape {_fmt_shape(pred.shape)} differs from the reference "
                            f"{ref_path.name} ({_fmt_shape(ref.shape)}); not evaluated"]
    return pred, ref, []


def _read_context(pair: Pair, shape: Sequence[int],
                  problems: List[str]) -> Tuple[Dict[str, np.ndarray], Optional[np.ndarray]]:
    """The reference case's other volumes and its segmentation, where they match the reference.

    Args:
        pair: the prediction and its reference case.
        shape: the reference's (X, Y, Z) shape.
        problems: the list a line is appended to for each file left out.

    Returns:
        (other modality -> (X, Y, Z) volume, (X, Y, Z) label map or None).
    """
    rcase = pair.ref_case
    ref_name = rcase.files[pair.target].name
    others: Dict[str, np.ndarray] = {}
    for mod, path in rcase.files.items():
        if mod == pair.target:
            continue
        vol = _load_matching(path, shape, ref_name, "left out of the brain mask", problems,
                             unreadable=f"left out of the brain mask of {pair.case}/{pair.target}")
        if vol is not None:
            others[mod] = vol
    seg = None
    if rcase.seg is not None:
        seg = _load_matching(rcase.seg, shape, ref_name, "tumour / non-tumour SSIM not computed", problems)
    return others, seg


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
        row.update(dict.fromkeys(M.METRIC_NAMES, float("nan")), problem=str(exc))
        problems.append(f"{bad}: {exc}; {pair.case}/{pair.target} not scored (empty metric cells)")
    return row, ref, mask


def evaluate_pair(pair: Pair, modalities: Sequence[str] = MODALITIES, montage_path: Optional[Path] = None,
                  device: Any = None, pred_scale: str = "auto") -> Tuple[Optional[Dict[str, Any]], List[str]]:
    """Metrics (and optionally the montage) of one pair.

    Args:
        pair: the prediction and its reference case.
        modalities: modality names in canonical order (montage columns).
        montage_path: where the PNG montage goes; None: no montage (none
            either for a degenerate pair).
        device: torch device of the SSIM computation (None: CPU).
        pred_scale: see :func:`cwdm.evaluation.metrics.reference_on_prediction_scale`;
            the scale used is the row's ``pred_scale``.

    Returns:
        (row dict with :data:`~cwdm.evaluation.report.CSV_FIELDS` keys --
        metrics ``nan`` and ``problem`` set when a volume is degenerate --, or
        None if the pair could not be read; problem lines).
    """
    pred, ref, problems = _read_pair(pair)
    if pred is None or ref is None:
        return None, problems
    others, seg = _read_context(pair, ref.shape, problems)
    row, ref, mask = _score(pair, pred, ref, others, seg, device, pred_scale, problems)

    std = None
    if pair.std is not None:
        std = _load_matching(pair.std, pred.shape, "the prediction", "uncertainty map ignored", problems)
    row["has_std"] = std is not None

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
                 warn: Callable[[str], None], device: Any,
                 pred_scale: str) -> Tuple[List[Dict[str, Any]], List[str]]:
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

    Returns:
        (one row per pair that could be read, the problem lines in order).
    """
    from tqdm import tqdm

    by_case: Dict[str, List[Pair]] = {}
    for pair in pairs:
        by_case.setdefault(pair.case, []).append(pair)
    rows: List[Dict[str, Any]] = []
    problems: List[str] = []
    bar = tqdm(by_case.items(), total=len(by_case), desc="evaluate", unit="case",
               disable=not progress, file=sys.stderr)
    for case, case_pairs in bar:
        bar.set_postfix_str(case, refresh=False)
        for pair in case_pairs:
            mpath = out / MONTAGE_DIR / f"{pair.case}-{pair.target}.png" if montage else None
            row, pair_problems = evaluate_pair(pair, modalities, mpath, device=device, pred_scale=pred_scale)
            for p in pair_problems:
                warn(p)
            problems.extend(pair_problems)
            if row is not None:
                rows.append(row)
    bar.close()
    return rows, problems


def report_inputs(pred_dir: Any, ref_dir: Any, targets: Optional[Sequence[str]], pred_scale: str,
                  modalities: Sequence[str]) -> Dict[str, Any]:
    """What a report is made from, as ``summary.json`` records it under ``inputs`` (absolute folders)."""
    return {"pred_dir": str(Path(pred_dir).resolve()), "ref_dir": str(Path(ref_dir).resolve()),
            "targets": list(targets or []), "pred_scale": pred_scale, "modalities": list(modalities)}


def evaluate_dirs(pred_dir: Any, ref_dir: Any, out_dir: Any = None, modalities: Sequence[str] = MODALITIES,
                  montage: bool = True, progress: bool = True, *, targets: Optional[Sequence[str]] = None,
                  verbose: bool = True, device: Any = None,
                  pred_scale: str = "auto") -> Tuple[List[Dict[str, Any]], Dict[str, Any]]:
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
    pred_dir, ref_dir = Path(pred_dir), Path(ref_dir)
    out = Path(out_dir) if out_dir is not None else pred_dir / DEFAULT_OUT
    warn = _warner(verbose)

    pairs, problems, skipped = find_pairs(pred_dir, ref_dir, modalities, targets)
    for p in problems:
        warn(p)
    _notes(pairs, skipped, verbose)
    _make_report_dir(out, montage)
    rows, pair_problems = _score_pairs(pairs, out, modalities, montage, progress, warn, device, pred_scale)
    problems.extend(pair_problems)

    summary = summarize(rows, problems, skipped, modalities)
    summary.update({"pred_dir": str(pred_dir), "ref_dir": str(ref_dir), "out_dir": str(out),
                    "inputs": report_inputs(pred_dir, ref_dir, targets, pred_scale, modalities)})
    write_csv(out / CSV_NAME, rows)
    write_json(out / SUMMARY_NAME, summary)
    return rows, summary

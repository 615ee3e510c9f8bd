"""``cwdm evaluate --pred_dir P --ref_dir R``: metrics of synthesized volumes against references.

Layout:

* predictions: ``P/<case>/<case>-<target>.nii.gz`` (as written by ``cwdm
  sample`` / ``cwdm auto``), optionally with an uncertainty map
  ``P/<case>/<case>-<target>_std.nii.gz``;
* references: BraTS layout in ``R`` (``R/<case>/<case>-<modality>.nii.gz`` for
  the true target and the conditions, optional ``-seg``).
* the reference implementation's results: its ``scripts/sample.py`` writes
  ``P/<case>/sample.nii.gz`` (next to its ``target.nii.gz``, which is ignored)
  on the [0, 1] scale, cropped to 224 x 224 x 155 (8 voxels off each side of
  the first two axes of a 240 x 240 x 155 case). The file does not name the
  contrast, so it is scored as the one contrast given with ``--targets``
  against ``R/<case>/<case>-<target>.nii.gz``, after putting it back on the
  reference's grid (zeros in the cropped border). So both tools can be scored
  on the same cases: ``cwdm evaluate --pred_dir results --ref_dir data
  --targets t2f``.

Every modality file found in a case folder of ``P`` is a prediction for the
case folder of the same name in ``R``. A file of ``P`` that is byte-for-byte
the reference file (a condition copied next to the synthesis, as in a case
folder completed in place by ``cwdm auto``) is skipped and listed under
"skipped". A case or (case, target) present on one side only, a shape
mismatch or an unreadable file is a *problem*: a warning line on stderr and an
entry of the "problems" list of ``summary.json``, never a crash. A degenerate
prediction or reference (any NaN/Inf voxel, all zero, constant, see
:func:`cwdm.metrics.degenerate_reason`) is a problem too; its row is kept in
``metrics.csv`` with empty metric cells and the reason in ``problem``.

Metrics: :data:`cwdm.metrics.METRIC_NAMES`, defined in :mod:`cwdm.metrics` as
the BraSyn challenge scores them (tumour scores need a ``-seg`` file; errors
inside the brain mask: any reference volume of the case non-zero).

Outputs in ``out_dir`` (default ``P/evaluation``), each written atomically
(the statistics and the CSV / JSON writers are in :mod:`cwdm.evaluate_report`):

* ``metrics.csv``: one row per (case, target) with the columns of
  :data:`CSV_FIELDS`. Floats are written with 10 significant digits, an
  infinite PSNR (prediction identical to the reference on the reference's
  scale, ``mse == 0``) as ``inf`` (``float("inf")`` reads it back), an undefined value
  (no segmentation, empty region, degenerate volume) as an empty cell;
  ``has_std`` is ``True`` / ``False``; ``problem`` is empty for a scored pair.
* ``summary.json``: ``{"per_target": {target: stats}, "overall": stats,
  "problems": [...], "skipped": [...], "psnr_cap_db": 100.0, ...}`` where
  ``stats = {"n": rows, "n_unscored": degenerate rows, "<metric>": {"n",
  "mean", "std", "median"}, ...}``.
  Statistics use the finite values of a metric only (``n`` counts them;
  ``std`` is the population standard deviation, ``ddof=0``), except PSNR:
  infinite PSNR values are first capped at :data:`~cwdm.metrics.PSNR_CAP_DB`
  (100 dB) and counted in ``psnr.n_capped``. The file never holds ``NaN`` or
  ``Infinity``: a statistic without values is ``null``.
* ``montages/<case>-<target>.png`` (unless ``--no-montage``; none for a
  degenerate pair): mid-slices through the brain centre (rows) of each
  condition in ``R``, the reference, the synthesis (on the reference's scale),
  their absolute error and the std map when present (columns).

Exit status (:func:`run`) 0 when every pair was scored without problems, 1 otherwise.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import MODALITIES
from .errors import CwdmError
from .evaluate_pairs import REFERENCE_CROP, Pair, find_pairs  # noqa: F401  (Pair, find_pairs: public API)
from .evaluate_report import (CSV_FIELDS, CSV_NAME, SUMMARY_NAME, format_table,  # noqa: F401  (public API)
                              summarize, write_csv, write_json, write_pair_montage)

HELP = ("SSIM (whole / tumour / non-tumour), PSNR, MSE and MAE of synthesized volumes "
        "against references (as the BraSyn challenge scores them), with CSV/JSON reports and PNG montages")

MONTAGE_DIR = "montages"
DEFAULT_OUT = "evaluation"


@dataclass
class EvaluateConfig:
    pred_dir: Path = field(metadata={"help": "folder of synthesized cases: <case>/<case>-<target>.nii.gz "
                                             "(+ optional <case>-<target>_std.nii.gz)"})
    ref_dir: Path = field(metadata={"help": "reference cases in BraTS layout (true target, conditions, "
                                            "optional -seg)"})
    out_dir: Optional[Path] = field(default=None,
                                    metadata={"help": "report folder; none: <pred_dir>/evaluation"})
    modalities: List[str] = field(default_factory=lambda: list(MODALITIES),
                                  metadata={"help": "modality names, in canonical order"})
    targets: List[str] = field(default_factory=list,
                               metadata={"help": "evaluate only these predicted modalities; "
                                                 "empty: every modality file found in pred_dir"})
    montage: bool = field(default=True, metadata={"help": "write PNG montages (--no-montage to skip)"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})
    device: str = field(default="auto", metadata={"help": "where SSIM is computed: auto (CUDA when "
                                                          "available), cpu, cuda or cuda:N"})
    pred_scale: str = field(default="auto", metadata={
        "help": "prediction intensities for PSNR/MSE/MAE: target (the reference's units), unit (cwdm's "
                "[0, 1] model scale: the reference is clipped at 0.1/99.9 %% and scaled first), auto (unit "
                "when the prediction lies in [0, 1] and the reference does not)",
        "choices": ["auto", "target", "unit"]})


CONFIG = EvaluateConfig
ALIASES = {"pred_dir": ["pred-dir"], "ref_dir": ["ref-dir"], "out_dir": ["out-dir"]}


# ----------------------------------------------------------------------------- one pair

def _load(path: Path) -> np.ndarray:
    from .nifti_io import load_nifti

    data, _ = load_nifti(path)
    return data


def _fmt_shape(shape: Sequence[int]) -> str:
    return "x".join(str(int(s)) for s in shape)


def _load_matching(path: Path, shape: Sequence[int], against: str, consequence: str, problems: List[str],
                   unreadable: Optional[str] = None) -> Optional[np.ndarray]:
    """Load a volume that must have ``shape``; on failure append a problem line and return None.

    The line names the file and says ``consequence`` (``unreadable`` replaces
    it for a file that cannot be read); ``against`` names what the shape is
    compared with.
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
    """The reference's cropped result (X-16, Y-16, Z) placed back on the (X, Y, Z) grid, zeros in the
    border; any other shape is returned as it is (and reported as a mismatch)."""
    c = REFERENCE_CROP
    x, y, z = (int(s) for s in shape)
    if pred.shape != (x - 2 * c, y - 2 * c, z) or x <= 2 * c or y <= 2 * c:
        return pred
    out = np.zeros((x, y, z), dtype=pred.dtype)
    out[c:x - c, c:y - c, :] = pred
    return out


def evaluate_pair(pair: Pair, modalities: Sequence[str] = MODALITIES, montage_path: Optional[Path] = None,
                  device: Any = None, pred_scale: str = "auto") -> Tuple[Optional[Dict[str, Any]], List[str]]:
    """Metrics (and optionally the montage) of one pair.

    ``pred_scale``: see :func:`cwdm.metrics.reference_on_prediction_scale`; the
    scale used is the row's ``pred_scale``.

    Returns:
        (row dict with :data:`CSV_FIELDS` keys -- metrics ``nan`` and
        ``problem`` set when a volume is degenerate --, or None if the pair
        could not be read; problem lines).
    """
    from . import metrics as M

    problems: List[str] = []
    rcase = pair.ref_case
    ref_path = rcase.files[pair.target]
    try:
        pred = _load(pair.pred)
        ref = _load(ref_path)
    except CwdmError as exc:
        return None, [f"{exc}; {pair.case}/{pair.target} not evaluated"]
    if pair.reference_layout:
        pred = _on_reference_grid(pred, ref.shape)
    if pred.shape != ref.shape:
        return None, [f"{pair.pred}: shape {_fmt_shape(pred.shape)} differs from the reference "
                      f"{ref_path.name} ({_fmt_shape(ref.shape)}); not evaluated"]

    others: Dict[str, np.ndarray] = {}
    for mod, path in rcase.files.items():
        if mod == pair.target:
            continue
        vol = _load_matching(path, ref.shape, ref_path.name, "left out of the brain mask", problems,
                             unreadable=f"left out of the brain mask of {pair.case}/{pair.target}")
        if vol is not None:
            others[mod] = vol
    seg = None
    if rcase.seg is not None:
        seg = _load_matching(rcase.seg, ref.shape, ref_path.name, "tumour / non-tumour SSIM not computed",
                             problems)

    finite_refs = [v for v in (ref, *others.values()) if np.all(np.isfinite(v))]
    mask = M.brain_mask(*finite_refs) if finite_refs else None
    ref, used_scale = M.reference_on_prediction_scale(pred, ref, pred_scale)
    row: Dict[str, Any] = {"case": pair.case, "target": pair.target, "problem": "", "pred_scale": used_scale}
    try:
        row.update(M.case_metrics(pred, ref, mask, seg, device=device))
    except M.DegenerateVolume as exc:
        bad = ref_path if exc.volume == "reference" else pair.pred
        row.update(dict.fromkeys(M.METRIC_NAMES, float("nan")), problem=str(exc))
        problems.append(f"{bad}: {exc}; {pair.case}/{pair.target} not scored (empty metric cells)")

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

def evaluate_dirs(pred_dir: Any, ref_dir: Any, out_dir: Any = None, modalities: Sequence[str] = MODALITIES,
                  montage: bool = True, progress: bool = True, *, targets: Optional[Sequence[str]] = None,
                  verbose: bool = True, device: Any = None,
                  pred_scale: str = "auto") -> Tuple[List[Dict[str, Any]], Dict[str, Any]]:
    """Evaluate every prediction of ``pred_dir`` against ``ref_dir`` and write the reports.

    Args:
        pred_dir, ref_dir: see the module docstring.
        out_dir: report folder (created); None: ``pred_dir/evaluation``.
        modalities: modality names (conditions of a target are the others).
        montage: write ``montages/<case>-<target>.png``.
        progress: show a tqdm bar over the pairs' cases.
        targets: evaluate only these modalities (default: all found).
        verbose: print each problem as a ``warning:`` line on stderr.
        device: torch device of the SSIM computation (None: CPU).
        pred_scale: ``auto``, ``target`` or ``unit`` (:func:`cwdm.metrics.reference_on_prediction_scale`).

    Returns:
        (rows: one dict per evaluated pair with the :data:`CSV_FIELDS` keys --
        floats may be ``nan``/``inf``; a degenerate pair has ``nan`` metrics
        and a ``problem`` --, summary: the ``summary.json`` dict before JSON
        sanitizing).

    Raises:
        CwdmError: a folder is missing, or the report folder cannot be created.
    """
    from tqdm import tqdm

    modalities = list(modalities)
    if targets:
        unknown = [t for t in targets if t not in modalities]
        if unknown:
            raise CwdmError(f"unknown target modalities {unknown}; known: {', '.join(modalities)}")
    pred_dir, ref_dir = Path(pred_dir), Path(ref_dir)
    out = Path(out_dir) if out_dir is not None else pred_dir / DEFAULT_OUT

    def warn(msg: str) -> None:
        if verbose:
            tqdm.write(f"warning: {msg}", file=sys.stderr)

    pairs, problems, skipped = find_pairs(pred_dir, ref_dir, modalities, targets)
    for p in problems:
        warn(p)
    n_ref = sum(p.reference_layout for p in pairs)
    if n_ref and verbose:
        tqdm.write(f"note: {n_ref} cases hold the reference's results (<case>/sample.nii.gz); scored as "
                   f"{next(p.target for p in pairs if p.reference_layout)}, put back on the case grid (cropped border = 0)", file=sys.stderr)
    if skipped and verbose:
        tqdm.write(f"note: {len(skipped)} prediction files are copies of their reference and were "
                   f"skipped (listed in {SUMMARY_NAME})", file=sys.stderr)
    try:
        out.mkdir(parents=True, exist_ok=True)
        if montage:
            (out / MONTAGE_DIR).mkdir(exist_ok=True)
    except OSError as exc:
        raise CwdmError(f"{out}: cannot create the report folder ({exc.strerror or exc})") from None

    by_case: Dict[str, List[Pair]] = {}
    for pair in pairs:
        by_case.setdefault(pair.case, []).append(pair)
    rows: List[Dict[str, Any]] = []
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

    summary = summarize(rows, problems, skipped, modalities)
    summary.update({"pred_dir": str(pred_dir), "ref_dir": str(ref_dir), "out_dir": str(out)})
    write_csv(out / CSV_NAME, rows)
    write_json(out / SUMMARY_NAME, summary)
    return rows, summary


def run(cfg: EvaluateConfig) -> int:
    """``cwdm evaluate``: 0 when every prediction was scored without problems, else 1.

    Problems (a case on one side only, a shape mismatch, an unreadable file, a
    degenerate prediction such as an all-zero volume) do
    not stop the evaluation: the reports cover every pair that could be
    evaluated and list the problems; the exit status tells a script that some
    were found, as ``cwdm sample`` and ``cwdm auto`` do.
    """
    from .runtime import select_device

    device = select_device(cfg.device)
    rows, summary = evaluate_dirs(cfg.pred_dir, cfg.ref_dir, cfg.out_dir, cfg.modalities,
                                  montage=cfg.montage, progress=cfg.progress, targets=cfg.targets or None,
                                  device=device, pred_scale=cfg.pred_scale)
    out = Path(summary["out_dir"])
    print(format_table(summary))
    print(f"{len(rows)} pairs evaluated, {len(summary['problems'])} problems, "
          f"{len(summary['skipped'])} skipped; reports in {out} ({CSV_NAME}, {SUMMARY_NAME}"
          f"{', ' + MONTAGE_DIR + '/' if cfg.montage and rows else ''}); next: read {out / SUMMARY_NAME}"
          f"{' and the montages' if cfg.montage and rows else ''}, or compare another run with cwdm evaluate "
          f"--pred_dir OTHER --ref_dir {cfg.ref_dir}")
    if not rows:
        print("cwdm evaluate: nothing was evaluated (see the warnings above)", file=sys.stderr)
        return 1
    return 1 if summary["problems"] else 0

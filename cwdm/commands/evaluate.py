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
:func:`cwdm.evaluation.metrics.degenerate_reason`) is a problem too; its row is kept in
``metrics.csv`` with empty metric cells and the reason in ``problem``.

Metrics: :data:`cwdm.evaluation.report.REPORT_METRICS`. Those of
:data:`cwdm.evaluation.metrics.METRIC_NAMES` are defined in :mod:`cwdm.evaluation.metrics` as
the BraSyn challenge scores them (tumour scores need a ``-seg`` file; errors
inside the brain mask: any reference volume of the case non-zero), plus
``hf_energy_ratio`` (fine detail kept, :mod:`cwdm.evaluation.realism`). With a std map
beside the prediction: ``std_error_corr`` and ``ause`` (its calibration,
:mod:`cwdm.evaluation.uncertainty`; empty cells without one). With ``--seg_dir DIR``
(segmentations a user's model predicted on the completed cases, ``DIR/<case>.nii.gz`` or
``DIR/<case>/<case>-seg.nii.gz``): ``dice_et``, ``dice_tc``, ``dice_wt``, ``dice_1``, ``dice_2``,
``dice_3`` against the reference case's ``-seg`` (:mod:`cwdm.evaluation.segmentation`; both
empty 1, one empty 0); a case's Dice is repeated in each of its rows. A
segmentation that is missing, unreadable, of another shape or with labels other than 0-3 (4 is
read as 3) is a problem naming the file; its Dice cells stay empty.

Outputs in ``output_dir`` (alias ``--out_dir``; default ``P/evaluation``), each written atomically
(the scoring is in :mod:`cwdm.evaluation.scoring`, the statistics and the CSV / JSON
writers in :mod:`cwdm.evaluation.report`):

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
  infinite PSNR values are first capped at :data:`~cwdm.evaluation.metrics.PSNR_CAP_DB`
  (100 dB) and counted in ``psnr.n_capped``. The file never holds ``NaN`` or
  ``Infinity``: a statistic without values is ``null``.
* ``montages/<case>-<target>.png`` (unless ``--no-montage``; none for a
  degenerate pair): mid-slices through the brain centre (rows) of each
  condition in ``R``, the reference, the synthesis (on the reference's scale),
  their absolute error and the std map when present (columns).

A report folder keeps the inputs of its report (``summary.json``'s ``inputs``: absolute
``pred_dir`` and ``ref_dir``, ``targets``, ``pred_scale``, ``modalities``, ``seg_dir``). Evaluating other inputs
into it is refused in one line naming the old ones, unless ``--overwrite``; the same inputs again
replace the report silently.

Inpainting results: when ``P`` holds ``<case>-t1n-inference.nii.gz`` files (flat, or in case
folders; ``P`` may be the data folder itself), ``R`` is read in the BraTS inpainting layout
(:mod:`cwdm.data.inpainting`) and each result is scored as the inpainting challenge does, in
``<case>-mask-healthy.nii.gz`` (``-mask`` when there is none, with a note):
:mod:`cwdm.evaluation.inpainting` (measures) and :mod:`cwdm.evaluation.inpainting_scoring` (layout,
problems, report columns). No montages; ``--targets``, ``--seg_dir``, ``--pred_scale`` and
``--modalities`` do not apply and are refused.

Exit status (:func:`run`) 0 when every pair was scored without problems, 1 otherwise.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from ..naming import MODALITIES
from ..errors import CwdmError
from ..evaluation.report import CSV_NAME, SUMMARY_NAME, format_table
from ..evaluation.scoring import DEFAULT_OUT, MONTAGE_DIR, evaluate_dirs, report_inputs

# the library names are re-exported: they live in cwdm.evaluation.scoring, cwdm.evaluation.pairs, cwdm.evaluation.report
__all__ = ["EvaluateConfig", "CONFIG", "ALIASES", "HELP", "run"]

HELP = ("SSIM (whole / tumour / non-tumour), PSNR, MSE and MAE of synthesized volumes "
        "against references (as the BraSyn challenge scores them), fine detail, std-map calibration and "
        "downstream Dice, with CSV/JSON reports and PNG montages; inpainting results "
        "(<case>-t1n-inference.nii.gz) as the BraTS inpainting challenge scores them")


@dataclass
class EvaluateConfig:
    pred_dir: Path = field(metadata={"help": "folder of synthesized cases: <case>/<case>-<target>.nii.gz "
                                             "(+ optional <case>-<target>_std.nii.gz), or of inpainting results "
                                             "<case>-t1n-inference.nii.gz (flat or in case folders)"})
    ref_dir: Path = field(metadata={"help": "reference cases in BraTS layout (true target, conditions, "
                                            "optional -seg), or in the inpainting layout (-t1n, -t1n-voided, "
                                            "-mask-healthy)"})
    output_dir: Optional[Path] = field(default=None,
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
    seg_dir: Optional[Path] = field(default=None, metadata={
        "help": "segmentations your model predicted on the completed cases (<case>.nii.gz or "
                "<case>/<case>-seg.nii.gz): Dice per label and BraTS region against the reference's -seg"})
    overwrite: bool = field(default=False, metadata={
        "help": "replace a report made from other inputs (other --pred_dir, --ref_dir, --targets, "
                "--pred_scale, --modalities or --seg_dir); the same inputs always replace it"})


CONFIG = EvaluateConfig
# what it writes (checked before it starts): (config field, "dir" or "file")
DESTINATIONS = [("output_dir", "dir")]
# --output_dir is every command's spelling of the output folder; --out_dir stays as an alias
ALIASES = {"pred_dir": ["pred-dir"], "ref_dir": ["ref-dir"], "output_dir": ["out_dir", "out-dir"],
           "seg_dir": ["seg-dir"]}


def _previous_inputs(out: Path) -> Optional[dict]:
    """The inputs of the report already in ``out`` (None when there is none); older reports name only
    their folders."""
    import json

    try:
        data = json.loads((out / SUMMARY_NAME).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    if isinstance(data.get("inputs"), dict):
        return data["inputs"]
    if "pred_dir" in data and "ref_dir" in data:
        return {k: str(Path(data[k]).resolve()) for k in ("pred_dir", "ref_dir")}
    return None


def check_report_folder(out: Path, inputs: dict, overwrite: bool) -> None:
    """Refuse (one line) to replace the report of other inputs in ``out`` unless ``overwrite``."""
    old = _previous_inputs(out)
    if old is None or overwrite:
        return
    changed = [k for k in inputs if k in old and old[k] != inputs[k]]
    if not changed:
        return
    show = lambda v: " ".join(map(str, v)) if isinstance(v, list) else str(v)  # noqa: E731
    empty = {"targets": "(all)", "seg_dir": "(none)"}
    others = "".join(f", --{k} {show(old[k]) or empty.get(k, '')}" for k in changed
                     if k not in ("pred_dir", "ref_dir"))
    raise CwdmError(f"{out / SUMMARY_NAME}: holds the report of --pred_dir {old['pred_dir']} --ref_dir "
                    f"{old['ref_dir']}{others}; use --overwrite to replace it, or another --output_dir")


def _run_inpainting(cfg: EvaluateConfig, out: Path) -> int:
    """``cwdm evaluate`` on inpainting results (:mod:`cwdm.evaluation.inpainting_scoring`): 0 when every
    result was scored without problems, else 1."""
    from shlex import quote

    from ..evaluation.inpainting_scoring import (INPAINTING_CSV_FIELDS, TABLE_COLUMNS, TABLE_HEADS,
                                                 evaluate_inpainting_dirs, inpainting_inputs)
    from ..runtime import select_device

    given = [flag for flag, used in (("--targets", bool(cfg.targets)), ("--seg_dir", cfg.seg_dir is not None),
                                     ("--pred_scale", cfg.pred_scale != "auto"),
                                     ("--modalities", list(cfg.modalities) != list(MODALITIES))) if used]
    if given:
        raise CwdmError(f"{cfg.pred_dir}: holds inpainting results (<case>-t1n-inference.nii.gz); "
                        f"{', '.join(given)} does not apply to them")
    check_report_folder(out, inpainting_inputs(cfg.pred_dir, cfg.ref_dir), cfg.overwrite)
    rows, summary = evaluate_inpainting_dirs(cfg.pred_dir, cfg.ref_dir, out, progress=cfg.progress,
                                             device=select_device(cfg.device))
    print(format_table(summary, TABLE_COLUMNS, TABLE_HEADS))
    scored = sum(1 for r in rows if not r["problem"])
    print(f"{scored} of {len(rows)} inpainting results scored, {len(summary['problems'])} problems; reports in "
          f"{quote(str(out))} ({CSV_NAME}: {', '.join(INPAINTING_CSV_FIELDS[2:-2])} per case; {SUMMARY_NAME}); "
          f"psnr: data range of the masked target, psnr_01: range 1")
    if not scored:
        print("cwdm evaluate: no inpainting result was scored (see the warnings above)", file=sys.stderr)
        return 1
    return 1 if summary["problems"] else 0


def run(cfg: EvaluateConfig) -> int:
    """``cwdm evaluate``: 0 when every prediction was scored without problems, else 1.

    Problems (a case on one side only, a shape mismatch, an unreadable file, a
    degenerate prediction such as an all-zero volume) do
    not stop the evaluation: the reports cover every pair that could be
    evaluated and list the problems; the exit status tells a script that some
    were found, as ``cwdm sample`` and ``cwdm auto`` do.
    """
    from shlex import quote

    from ..evaluation.inpainting_scoring import has_inpainting_results
    from ..runtime import select_device

    out = Path(cfg.output_dir) if cfg.output_dir is not None else Path(cfg.pred_dir) / DEFAULT_OUT
    if has_inpainting_results(cfg.pred_dir):
        return _run_inpainting(cfg, out)
    inputs = report_inputs(cfg.pred_dir, cfg.ref_dir, cfg.targets, cfg.pred_scale, cfg.modalities, cfg.seg_dir)
    check_report_folder(out, inputs, cfg.overwrite)
    device = select_device(cfg.device)
    rows, summary = evaluate_dirs(cfg.pred_dir, cfg.ref_dir, out, cfg.modalities,
                                  montage=cfg.montage, progress=cfg.progress, targets=cfg.targets or None,
                                  device=device, pred_scale=cfg.pred_scale, seg_dir=cfg.seg_dir)
    print(format_table(summary))
    print(f"{len(rows)} pairs evaluated, {len(summary['problems'])} problems, "
          f"{len(summary['skipped'])} skipped; reports in {quote(str(out))} ({CSV_NAME}, {SUMMARY_NAME}"
          f"{', ' + MONTAGE_DIR + '/' if cfg.montage and rows else ''}); next: read "
          f"{quote(str(out / SUMMARY_NAME))}{' and the montages' if cfg.montage and rows else ''}, or compare "
          f"another run with: cwdm evaluate --pred_dir OTHER --ref_dir {quote(str(cfg.ref_dir))}")
    if not rows:
        print("cwdm evaluate: nothing was evaluated (see the warnings above)", file=sys.stderr)
        return 1
    return 1 if summary["problems"] else 0

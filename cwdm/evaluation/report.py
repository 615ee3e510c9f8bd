"""Reports of ``cwdm evaluate``: statistics, ``metrics.csv`` / ``summary.json``, printed table, montages.

Holds the per-metric statistics of the evaluated rows (:func:`summarize`),
the sanitizing of values for CSV and JSON, the atomic writers of
:data:`CSV_NAME` / :data:`SUMMARY_NAME`, :func:`format_table` and the PNG
montage of one pair (:func:`write_pair_montage`). The file
formats are described in the docstring of :mod:`cwdm.commands.evaluate`, which discovers
and evaluates the (prediction, reference) pairs and re-exports these names.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from ..naming import MODALITIES
from .metrics import CHALLENGE_METRICS, METRIC_NAMES
from .segmentation import SEGMENTATION_METRICS
from .uncertainty import UNCERTAINTY_METRICS

CSV_NAME = "metrics.csv"
SUMMARY_NAME = "summary.json"
REPORT_METRICS = METRIC_NAMES + UNCERTAINTY_METRICS + SEGMENTATION_METRICS
"""Every metric of a report, in column order: those of the two volumes
(:func:`~cwdm.evaluation.metrics.case_metrics`), the std map's calibration
(:mod:`~cwdm.evaluation.uncertainty`) and the user's Dice (:mod:`~cwdm.evaluation.segmentation`)."""
CSV_FIELDS = ("case", "target") + REPORT_METRICS + ("pred_scale", "has_std", "problem")
"""Columns of ``metrics.csv``: case, target, ssim, ssim_tumor, ssim_non_tumor, psnr, mse, mae,
ssim_tumor_region, ssim_non_tumor_region, mae_tumor, mae_non_tumor, hf_energy_ratio, std_error_corr, ause,
dice_et, dice_tc, dice_wt, dice_1, dice_2, dice_3, pred_scale, has_std, problem."""


def _finite(values: Sequence[Any]) -> List[float]:
    return [float(v) for v in values if v is not None and isinstance(v, (int, float)) and math.isfinite(v)]


def _stats(values: List[float]) -> Dict[str, Any]:
    if not values:
        return {"n": 0, "mean": None, "std": None, "median": None}
    arr = np.asarray(values, dtype=np.float64)
    return {"n": int(arr.size), "mean": float(arr.mean()), "std": float(arr.std()),
            "median": float(np.median(arr))}


def _group_stats(rows: Sequence[Dict[str, Any]], metrics: Sequence[str] = REPORT_METRICS,
                 capped: Sequence[str] = ("psnr",)) -> Dict[str, Any]:
    from .metrics import PSNR_CAP_DB

    out: Dict[str, Any] = {"n": len(rows), "n_unscored": sum(1 for r in rows if r.get("problem"))}
    for name in metrics:
        vals = [r.get(name) for r in rows]
        if name in capped:
            n_inf = sum(1 for v in vals if isinstance(v, float) and v == math.inf)
            vals = [min(v, PSNR_CAP_DB) if isinstance(v, float) and not math.isnan(v) else v for v in vals]
            out[name] = _stats(_finite(vals))
            out[name]["n_capped"] = n_inf
        else:
            out[name] = _stats(_finite(vals))
    return out


def summarize(rows: Sequence[Dict[str, Any]], problems: Sequence[str] = (),
              skipped: Sequence[str] = (), modalities: Sequence[str] = MODALITIES,
              metrics: Sequence[str] = REPORT_METRICS, capped: Sequence[str] = ("psnr",)) -> Dict[str, Any]:
    """The ``summary.json`` content for ``rows`` (see the :mod:`cwdm.commands.evaluate` docstring).

    ``metrics``: the metric keys of the rows (the synthesis report's by default); ``capped``: those whose
    ``inf`` values are capped at :data:`~cwdm.evaluation.metrics.PSNR_CAP_DB` and counted in ``n_capped``.
    """
    from .metrics import PSNR_CAP_DB

    order = {m: i for i, m in enumerate(modalities)}
    targets = sorted({r["target"] for r in rows}, key=lambda t: (order.get(t, len(order)), t))
    return {
        "n_pairs": len(rows),
        "metrics": list(metrics),
        "psnr_cap_db": PSNR_CAP_DB,
        "per_target": {t: _group_stats([r for r in rows if r["target"] == t], metrics, capped) for t in targets},
        "overall": _group_stats(rows, metrics, capped),
        "problems": list(problems),
        "skipped": list(skipped),
    }


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _csv_value(v: Any) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "True" if v else "False"
    if isinstance(v, (float, np.floating)):
        if math.isnan(v):
            return ""
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return format(float(v), ".10g")
    return "" if v is None else str(v)


def write_csv(path: Path, rows: Sequence[Dict[str, Any]], fields: Sequence[str] = CSV_FIELDS) -> None:
    """Write ``rows`` as ``metrics.csv`` with the columns ``fields`` (atomically)."""
    from ..writes import atomic_write

    with atomic_write(path, newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(fields)
        for row in rows:
            writer.writerow([_csv_value(row.get(k)) for k in fields])


def write_json(path: Path, data: Dict[str, Any]) -> None:
    from ..writes import atomic_write

    with atomic_write(path) as fh:
        json.dump(_json_safe(data), fh, indent=2, allow_nan=False)
        fh.write("\n")


def format_table(summary: Dict[str, Any], columns: Sequence[str] = CHALLENGE_METRICS,
                 heads: Optional[Mapping[str, str]] = None) -> str:
    """The summary as a text table: one line per target and one overall, mean ± std of each of ``columns``
    (the synthesis challenge's metrics by default; ``heads`` names columns the default names do not)."""
    names = {"ssim": "SSIM", "ssim_tumor": "SSIM tumour", "ssim_non_tumor": "SSIM non-tumour",
             "psnr": "PSNR dB", "mse": "MSE", "mae": "MAE", **(heads or {})}
    fmt = {"psnr": "{:.2f}", "psnr_01": "{:.2f}", "mse": "{:.2e}", "rmse": "{:.2e}"}

    def cell(stats: Dict[str, Any], name: str) -> str:
        s = stats[name]
        if s["mean"] is None:
            return "-"
        f = fmt.get(name, "{:.4f}")
        return f"{f.format(s['mean'])} ± {f.format(s['std'])}"

    groups = list(summary["per_target"].items()) + [("overall", summary["overall"])]
    table = [["target", "n"] + [names.get(m, m) for m in columns]]
    for name, stats in groups:
        n = str(stats["n"]) + (f" ({stats['n_unscored']} unscored)" if stats.get("n_unscored") else "")
        table.append([name, n] + [cell(stats, m) for m in columns])
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    capped = {m: s["n_capped"] for m, s in summary["overall"].items()
              if isinstance(s, dict) and s.get("n_capped")}
    if list(capped) == ["psnr"]:
        lines.append(f"({capped['psnr']} infinite PSNR values "
                     f"(identical volumes) capped at {summary['psnr_cap_db']:g} dB)")
    elif capped:
        counts = " and ".join(f"{n} {m}" for m, n in capped.items())
        lines.append(f"(infinite PSNR values (identical volumes) capped at {summary['psnr_cap_db']:g} dB: "
                     f"{counts})")
    return "\n".join(lines)


def write_pair_montage(path: Path, case: str, target: str, modalities: Sequence[str],
                       others: Dict[str, np.ndarray], ref: np.ndarray, preds: Mapping[str, np.ndarray],
                       mask: Optional[np.ndarray], std: Optional[np.ndarray] = None,
                       seg: Optional[np.ndarray] = None, title: Optional[str] = None) -> None:
    """PNG montage of a reference and its syntheses: conditions, reference, syntheses, |error| maps, std.

    Args:
        others: the case's other (X, Y, Z) reference volumes by modality (the
            conditions of ``target`` among them are shown, in canonical order).
        ref: the true (X, Y, Z) volume (raw intensities).
        preds: label -> synthesized (X, Y, Z) volume (e.g. ``{"synthesis": pred}``, or
            ``{"cwdm": a, "baseline": b}`` to compare methods); every synthesis is
            shown on the reference's [0, 1] scale (the scale of PSNR / MSE / MAE)
            with its absolute error, all error maps on one colour scale.
        mask: boolean (X, Y, Z) brain mask (slice centre, error colour range) or None.
        std: (X, Y, Z) uncertainty map or None.
        seg: (X, Y, Z) label map or None; the slices go through the tumour's
            centre of mass when it has labels, else through the brain's centre.
        title: figure title (default ``"<case>  <target>"``).
    Error and std maps are zero outside the brain mask and carry colour bars.
    """
    from .metrics import brasyn_normalize, normalization_bounds
    from .montage import mask_centroid, save_montage, volume_center

    bounds = normalization_bounds(ref)
    rn = brasyn_normalize(ref, bounds=bounds)
    shown = {label: brasyn_normalize(p, bounds=bounds) for label, p in preds.items()}
    errs = {label: np.abs(pn - rn) for label, pn in shown.items()}
    if mask is not None:
        errs = {label: np.where(mask, e, 0.0) for label, e in errs.items()}
        std = None if std is None else np.where(mask, std, 0.0)
    use = mask if mask is not None and mask.any() else None
    inside = np.concatenate([(e[use] if use is not None else e.ravel()) for e in errs.values()])
    emax = max(float(np.percentile(inside, 99.5)), 1e-3) if inside.size else 1.0
    cols: List[tuple] = [(m, others[m]) for m in modalities if m != target and m in others]
    cols.append((f"reference {target}", rn, {"vmin": 0.0, "vmax": 1.0}))
    cols += [(f"{label} {target}", pn, {"vmin": 0.0, "vmax": 1.0}) for label, pn in shown.items()]
    single = len(errs) == 1
    for k, (label, e) in enumerate(errs.items()):
        kwargs = {"cmap": "magma", "vmin": 0.0, "vmax": emax}
        if k == len(errs) - 1:  # one colour bar: the maps share the scale
            kwargs["colorbar"] = ("|error| (fraction of\nthe reference range)" if single
                                  else "|error|, every map\n(fraction of the reference range)")
        cols.append(("|error|" if single else f"|error| {label}", e, kwargs))
    if std is not None:
        cols.append(("std", std, {"cmap": "viridis", "colorbar": "ensemble std (output intensity)"}))
    center = (mask_centroid(seg) if seg is not None else None) or \
        (volume_center(mask) if mask is not None else volume_center(ref))
    save_montage(path, cols, center=center, title=title or f"{case}  {target}")

"""Downstream segmentation: Dice of a user's segmentation of the completed cases against the reference.

A synthesis is useful when a segmentation model run on the completed case finds the tumour it
would have found on the real scans (the BraSyn challenge's downstream score). ``cwdm evaluate
--seg_dir DIR`` reads the segmentation a user's model predicted for each evaluated case,
``DIR/<case>.nii.gz`` (as nnU-Net and BraTS submissions name them) or
``DIR/<case>/<case>-seg.nii.gz`` (``.nii`` and a ``_seg`` suffix are accepted too; :func:`find_seg`),
and compares it with the reference case's ``-seg`` file.

Labels (BraTS 2023): 1 necrosis (NCR), 2 edema (ED), 3 enhancing tumour (ET); 0 background. Label
4, the enhancing tumour of BraTS 2021 and earlier, is read as 3; a file holding both 3 and 4, any
other label or a non-integer value is not scored (:func:`label_problem`). Regions: ET = {3},
TC (tumour core) = {1, 3}, WT (whole tumour) = {1, 2, 3}.

Dice of two boolean (X, Y, Z) masks ``A`` (prediction) and ``B`` (reference), :func:`dice`:
``2 |A & B| / (|A| + |B|)``; when both are empty it is 1 (nothing to find, nothing found), when
only one is empty it is 0 (as the BraTS challenges count them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

__all__ = ["SEGMENTATION_METRICS", "LABELS", "REGIONS", "dice", "dice_scores", "label_problem",
           "seg_candidates", "find_seg"]

LABELS = {1: "necrosis", 2: "edema", 3: "enhancing tumour"}
"""The BraTS 2023 tumour labels (0 is background)."""

REGIONS = {"et": (3,), "tc": (1, 3), "wt": (1, 2, 3)}
"""The BraTS regions as unions of labels."""

SEGMENTATION_METRICS = tuple(f"dice_{r}" for r in REGIONS) + tuple(f"dice_{k}" for k in LABELS)
"""The names this module computes: ``dice_et, dice_tc, dice_wt, dice_1, dice_2, dice_3``."""

OLD_ENHANCING = 4
"""The enhancing tumour's label before BraTS 2023, read as 3."""


def dice(pred: Any, ref: Any) -> float:
    """Dice of two boolean masks of one shape: ``2 |A & B| / (|A| + |B|)``; both empty 1.0, one empty 0.0."""
    a = np.asarray(pred, dtype=bool)
    b = np.asarray(ref, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"mask shapes differ: {a.shape} vs {b.shape}")
    total = int(np.count_nonzero(a)) + int(np.count_nonzero(b))
    if total == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(a & b)) / total


def label_problem(seg: Any) -> Optional[str]:
    """Why an (X, Y, Z) label map cannot be scored, or None (labels: module docstring)."""
    s = np.asarray(seg)
    finite = np.isfinite(s)
    if not finite.all():
        return f"holds {int(s.size - np.count_nonzero(finite))} NaN/Inf voxels"
    if np.any(s != np.round(s)):
        return "holds non-integer values (not a label map)"
    found = {int(v) for v in np.unique(s)}
    extra = sorted(found - {0, *LABELS, OLD_ENHANCING})
    if extra:
        return (f"holds labels {', '.join(map(str, extra))} outside 0-{max(LABELS)} (BraTS labels: "
                f"1 necrosis, 2 edema, 3 enhancing tumour)")
    if {3, OLD_ENHANCING} <= found:
        return "holds both 3 and 4 (the enhancing tumour of BraTS 2023 and of earlier BraTS)"
    return None


def _labels(seg: Any) -> np.ndarray:
    """An integer (X, Y, Z) label map, label 4 read as 3."""
    s = np.rint(np.asarray(seg, dtype=np.float64)).astype(np.int16)
    s[s == OLD_ENHANCING] = 3
    return s


def dice_scores(pred_seg: Any, ref_seg: Any) -> Dict[str, float]:
    """Dice per BraTS region and per label of a predicted (X, Y, Z) label map against the reference's.

    Args:
        pred_seg: (X, Y, Z) label map the user's model predicted (labels 0-3, or 4 for 3).
        ref_seg: (X, Y, Z) reference label map of the same shape.

    Returns:
        ``{"dice_et", "dice_tc", "dice_wt", "dice_1", "dice_2", "dice_3"}`` as floats (empty-label
        convention of :func:`dice`).
    """
    p, r = _labels(pred_seg), _labels(ref_seg)
    if p.shape != r.shape:
        raise ValueError(f"segmentation shapes differ: {p.shape} vs {r.shape}")
    out = {f"dice_{name}": dice(np.isin(p, labels), np.isin(r, labels)) for name, labels in REGIONS.items()}
    out.update({f"dice_{k}": dice(p == k, r == k) for k in LABELS})
    return {k: out[k] for k in SEGMENTATION_METRICS}


def seg_candidates(seg_dir: Path, case: str, prefix: str = "") -> List[Path]:
    """The paths a case's predicted segmentation may have in ``seg_dir``, in order of preference.

    ``seg_dir/<name>.nii.gz`` and ``seg_dir/<case>/<name>-seg.nii.gz`` for ``name`` the case folder's
    name and the case's file-name prefix (when it differs), each also as ``.nii`` and with ``_seg``.
    """
    names = [case] + ([prefix] if prefix and prefix != case else [])
    out: List[Path] = []
    for ext in (".nii.gz", ".nii"):
        out += [Path(seg_dir) / f"{n}{ext}" for n in names]
        out += [Path(seg_dir) / case / f"{n}{sep}seg{ext}" for n in names for sep in ("-", "_")]
    return out


def find_seg(seg_dir: Path, case: str, prefix: str = "") -> Tuple[Optional[Path], Optional[str]]:
    """The predicted segmentation of one case in ``seg_dir``.

    Returns:
        (the file, None) when exactly one candidate of :func:`seg_candidates` exists, else (None,
        the problem line: none found, naming where it was looked for, or several found).
    """
    found = [p for p in seg_candidates(seg_dir, case, prefix) if p.is_file()]
    if len(found) == 1:
        return found[0], None
    if found:
        return None, (f"{Path(seg_dir)}: {len(found)} segmentation files for case {case} "
                      f"({', '.join(str(p) for p in found)}); Dice not computed")
    return None, (f"{Path(seg_dir) / (case + '.nii.gz')}: no predicted segmentation for case {case} (nor "
                  f"{Path(seg_dir) / case / (case + '-seg.nii.gz')}); Dice not computed")

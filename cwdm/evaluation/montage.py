"""PNG montages of 3D volumes: three orthogonal mid-slices per volume.

:func:`save_montage` draws a grid whose rows are the axial, coronal and
sagittal planes and whose columns are the given volumes (conditions,
reference, synthesis, error, uncertainty ...), each column titled. All slices
cut through the same point, by default the centre of the bounding box of the
voxels that are non-zero in any volume (the brain centre for skull-stripped
BraTS data). Slices are shown with ``np.rot90`` (first axis left-right), with
square pixels (isotropic voxels assumed).

matplotlib is imported inside the functions (Agg canvas, no pyplot, no GUI),
so importing :mod:`cwdm` stays light. The PNG is written atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

__all__ = ["PLANES", "mask_centroid", "volume_center", "mid_slices", "save_montage"]

PLANES = ("axial", "coronal", "sagittal")


def mask_centroid(mask: np.ndarray) -> Optional[Tuple[int, int, int]]:
    """Centre of mass (rounded voxel index) of the non-zero voxels of ``mask`` (X, Y, Z); None if empty."""
    idx = np.argwhere(np.asarray(mask) > 0)
    if idx.size == 0:
        return None
    return tuple(int(round(c)) for c in idx.mean(axis=0))  # type: ignore[return-value]


def volume_center(*volumes: np.ndarray) -> Tuple[int, int, int]:
    """Centre (integer voxel index) of the bounding box of the non-zero voxels
    of any of ``volumes``; the array centre if all are zero."""
    shape = np.asarray(volumes[0]).shape
    nz = np.zeros(shape, dtype=bool)
    for v in volumes:
        v = np.asarray(v)
        if v.shape == shape:
            nz |= (v != 0) & np.isfinite(v)
    if not nz.any():
        return tuple(s // 2 for s in shape)  # type: ignore[return-value]
    center = []
    for axis in range(3):
        others = tuple(a for a in range(3) if a != axis)
        idx = np.flatnonzero(nz.any(axis=others))
        center.append(int((idx[0] + idx[-1]) // 2))
    return tuple(center)  # type: ignore[return-value]


def mid_slices(vol: np.ndarray, center: Sequence[int]) -> Dict[str, np.ndarray]:
    """The axial (3rd axis), coronal (2nd) and sagittal (1st) slices through ``center``,
    rotated for display."""
    v = np.asarray(vol)
    x, y, z = (int(c) for c in center)
    return {
        "axial": np.rot90(v[:, :, z]),
        "coronal": np.rot90(v[:, y, :]),
        "sagittal": np.rot90(v[x, :, :]),
    }


def _display_range(vol: np.ndarray) -> Tuple[float, float]:
    finite = vol[np.isfinite(vol)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(finite, [0.5, 99.5]))
    if not hi > lo:
        lo, hi = float(finite.min()), float(finite.max())
    if not hi > lo:
        hi = lo + 1.0
    return lo, hi


def _column_volumes(columns: Sequence[tuple]) -> List[np.ndarray]:
    """The volumes of the montage's columns, checked.

    Args:
        columns: ``(title, volume)`` or ``(title, volume, imshow_kwargs)`` tuples.

    Returns:
        One float32 (X, Y, Z) array per column.

    Raises:
        ValueError: no column, a malformed column, a volume that is not 3D or
            whose shape differs from the first one's.
    """
    if not columns:
        raise ValueError("save_montage needs at least one column")
    vols: List[np.ndarray] = []
    for col in columns:
        if len(col) not in (2, 3):
            raise ValueError("each column must be (title, volume) or (title, volume, imshow_kwargs)")
        vol = np.asarray(col[1], dtype=np.float32)
        if vol.ndim != 3:
            raise ValueError(f"column {col[0]!r}: expected a 3D volume, got shape {vol.shape}")
        if vols and vol.shape != vols[0].shape:
            raise ValueError(f"column {col[0]!r}: shape {vol.shape} differs from {vols[0].shape}")
        vols.append(vol)
    return vols


def _imshow_kwargs(col: tuple, vol: np.ndarray) -> Tuple[Dict[str, Any], Any]:
    """The ``imshow`` arguments of one column and its colour-bar label.

    Args:
        col: the column tuple (its optional third item: imshow kwargs with an
            optional ``"colorbar"`` label).
        vol: the column's (X, Y, Z) volume (default display range).

    Returns:
        (kwargs with ``cmap``, ``vmin`` and ``vmax`` set, colour-bar label or None).
    """
    kwargs: Dict[str, Any] = dict(col[2]) if len(col) == 3 and col[2] else {}
    bar_label = kwargs.pop("colorbar", None)
    kwargs.setdefault("cmap", "gray")
    if "vmin" not in kwargs or "vmax" not in kwargs:
        lo, hi = _display_range(vol)
        kwargs.setdefault("vmin", lo)
        kwargs.setdefault("vmax", hi)
    return kwargs, bar_label


def _draw_column(fig: Any, axes: Any, j: int, col: tuple, vol: np.ndarray, center: Sequence[int]) -> None:
    """Draw column ``j``: the three planes of one volume, titled, with its colour bar if asked.

    Args:
        fig: the matplotlib figure.
        axes: its (3, ncols) grid of axes.
        j: the column index.
        col: the column tuple (title, volume[, imshow kwargs]).
        vol: the column's float32 (X, Y, Z) volume.
        center: voxel (x, y, z) the planes go through.
    """
    kwargs, bar_label = _imshow_kwargs(col, vol)
    nrows = len(PLANES)
    slices = mid_slices(vol, center)
    for i, plane in enumerate(PLANES):
        ax = axes[i][j]
        image = ax.imshow(slices[plane], interpolation="nearest", aspect="equal", **kwargs)
        if bar_label is not None and i == nrows - 1:
            cax = ax.inset_axes([0.08, -0.09, 0.84, 0.05])  # under the column, outside the layout
            bar = fig.colorbar(image, cax=cax, orientation="horizontal")
            bar.set_label(str(bar_label), color="white", fontsize=8)
            bar.ax.tick_params(colors="white", labelsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
        if i == 0:
            ax.set_title(str(col[0]), color="white", fontsize=9)
        if j == 0:
            ax.set_ylabel(plane, color="white", fontsize=9)


def save_montage(path: Any, columns: Sequence[tuple], center: Optional[Sequence[int]] = None,
                 title: Optional[str] = None, panel_size: float = 2.2, dpi: int = 100) -> Path:
    """Write a PNG grid: rows = axial / coronal / sagittal, one column per volume.

    Args:
        path: destination ``.png`` (its folder must exist); replaced atomically.
        columns: ``(title, volume)`` or ``(title, volume, imshow_kwargs)``
            tuples; volumes are (X, Y, Z) arrays of one shape. Without
            ``vmin``/``vmax`` in the kwargs a column is shown between its own
            0.5 / 99.5 percentiles; the default colour map is ``gray``
            (e.g. pass ``{"cmap": "magma", "vmin": 0}`` for an error map).
            A ``"colorbar": "label"`` entry in the kwargs draws a colour
            bar with that label (units) under the column.
        center: voxel (x, y, z) the three planes go through; default
            :func:`volume_center` of all columns.
        title: optional figure title.
        panel_size: inches per panel.
        dpi: resolution of the PNG.

    Returns:
        ``path`` as a :class:`Path`.

    Raises:
        ValueError: see :func:`_column_volumes`.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ..writes import atomic_write

    vols = _column_volumes(columns)
    if center is None:
        center = volume_center(*vols)
    center = tuple(int(np.clip(c, 0, s - 1)) for c, s in zip(center, vols[0].shape))

    ncols, nrows = len(columns), len(PLANES)
    bars = any(len(col) == 3 and col[2] and "colorbar" in col[2] for col in columns)
    fig = Figure(figsize=(panel_size * ncols + 0.6, panel_size * nrows + (0.5 if title else 0.2) + 0.7 * bars),
                 dpi=dpi)
    FigureCanvasAgg(fig)
    fig.patch.set_facecolor("black")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for j, (col, vol) in enumerate(zip(columns, vols)):
        _draw_column(fig, axes, j, col, vol, center)
    if title:
        fig.suptitle(title, color="white", fontsize=10)
    fig.tight_layout()
    if bars:
        fig.subplots_adjust(bottom=0.7 / fig.get_figheight() + 0.02)
    out = Path(path)
    with atomic_write(out, "wb") as fh:
        fig.savefig(fh, format="png", facecolor=fig.get_facecolor())
    return out

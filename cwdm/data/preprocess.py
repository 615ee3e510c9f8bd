"""Intensity and geometry preprocessing, identical to the released cWDM models.

Intensity (:func:`clip_and_normalize`): each volume is clipped to its own
0.1 % / 99.9 % quantiles (numpy's default linear quantile over *all* voxels,
background included) and min-max scaled to [0, 1], in float64.

Geometry (:class:`Grid`): every spatial axis goes to the nearest multiple of
the network's image-domain divisor (:attr:`cwdm.model.unet.UNetConfig.image_divisor`); ties go to the
smaller multiple (crop), never below one multiple. Cropping is symmetric (the
odd voxel is taken from the end), padding adds zeros at the *end* of the axis.
A BraTS volume of 240 x 240 x 155 with divisor 32 is cropped by 8 voxels on
each side of axes 0 and 1 and padded with 5 zero slices at the end of axis 2,
giving 224 x 224 x 160; :meth:`Grid.to_original` is the exact inverse on the
kept region (cropped borders come back as zeros).

This module imports neither torch nor nibabel; :class:`Grid` works on numpy
arrays and torch tensors alike (the last three axes are spatial).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Dict, Sequence, Tuple

import numpy as np

from ..errors import CwdmError

__all__ = [
    "LOWER_QUANTILE", "UPPER_QUANTILE", "clip_and_normalize",
    "Grid", "grid_for", "prepare_volume",
]

LOWER_QUANTILE = 0.001
UPPER_QUANTILE = 0.999

Shape3 = Tuple[int, int, int]


def clip_and_normalize(vol: np.ndarray) -> np.ndarray:
    """Clip to the volume's 0.1 %/99.9 % quantiles and scale to [0, 1].

    Args:
        vol: array of any shape (typically (X, Y, Z)), any real dtype; all
            voxels (background included) enter the quantiles.

    Returns:
        float64 array of the same shape with values in [0, 1]; a constant
        volume gives all zeros (never NaN).

    Raises:
        ValueError: empty input or non-finite voxels (callers that know the
            file name turn this into a :class:`CwdmError`).
    """
    v = np.asarray(vol, dtype=np.float64)
    if v.size == 0:
        raise ValueError("cannot normalize an empty volume")
    if not np.all(np.isfinite(v)):
        raise ValueError("volume contains non-finite values (NaN/Inf)")
    lo, hi = np.quantile(v, [LOWER_QUANTILE, UPPER_QUANTILE])
    clipped = np.clip(v, lo, hi)
    vmin, vmax = clipped.min(), clipped.max()
    span = vmax - vmin
    if not span > 0:
        return np.zeros_like(clipped)
    return (clipped - vmin) / span


def _axis_target(n: int, divisor: int, axis: int) -> int:
    """Model size of one axis of ``n`` voxels (see module docstring)."""
    if n * 2 < divisor:
        raise CwdmError(
            f"axis {axis} has {n} voxels, fewer than half the model divisor {divisor}; "
            f"this shape cannot be mapped to the model grid")
    lower = (n // divisor) * divisor
    if lower == n:
        return n
    upper = lower + divisor
    if lower == 0:
        return upper
    return lower if n - lower <= upper - n else upper


@dataclass(frozen=True)
class Grid:
    """Crop/pad mapping between an original volume shape and the model shape.

    Per spatial axis ``i``: ``original[i] - crop_start[i] - crop_end[i]``
    voxels are kept, then ``pad_end[i]`` zeros are appended, so
    ``model[i] = original[i] - crop_start[i] - crop_end[i] + pad_end[i]``.
    An axis is either cropped or padded, never both.

    Attributes:
        original: (X, Y, Z) shape of the volume on disk.
        model: (X', Y', Z') shape the network sees (multiples of ``divisor``).
        crop_start, crop_end: voxels removed at the start / end of each axis.
        pad_end: zeros appended at the end of each axis.
        divisor: the divisor the grid was built for.
    """

    original: Shape3
    model: Shape3
    crop_start: Shape3
    crop_end: Shape3
    pad_end: Shape3
    divisor: int = 1

    def __post_init__(self) -> None:
        for name in ("original", "model", "crop_start", "crop_end", "pad_end"):
            val = tuple(int(x) for x in getattr(self, name))
            if len(val) != 3 or any(x < 0 for x in val):
                raise ValueError(f"Grid.{name} must be 3 non-negative integers, got {val}")
            object.__setattr__(self, name, val)
        object.__setattr__(self, "divisor", int(self.divisor))
        for i in range(3):
            kept = self.original[i] - self.crop_start[i] - self.crop_end[i]
            if kept <= 0 or kept + self.pad_end[i] != self.model[i]:
                raise ValueError(f"inconsistent Grid on axis {i}: {self.to_dict()}")

    # -- construction / storage -------------------------------------------------
    @property
    def kept(self) -> Shape3:
        """(X, Y, Z) size of the region kept from the original volume."""
        return tuple(o - s - e for o, s, e in zip(self.original, self.crop_start, self.crop_end))  # type: ignore[return-value]

    @property
    def is_identity(self) -> bool:
        """True when the model shape equals the original shape (no crop, no pad)."""
        return self.original == self.model

    def to_dict(self) -> Dict[str, Any]:
        """JSON-friendly dict (lists of ints); inverse of :meth:`from_dict`."""
        return {"original": list(self.original), "model": list(self.model),
                "crop_start": list(self.crop_start), "crop_end": list(self.crop_end),
                "pad_end": list(self.pad_end), "divisor": self.divisor}

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "Grid":
        """Rebuild a grid from :meth:`to_dict` output (or its JSON text)."""
        if isinstance(data, str):
            data = json.loads(data)
        try:
            return cls(original=data["original"], model=data["model"],
                       crop_start=data["crop_start"], crop_end=data["crop_end"],
                       pad_end=data["pad_end"], divisor=data.get("divisor", 1))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a Grid dict: {data!r} ({exc})") from exc

    # -- mapping ----------------------------------------------------------------
    def _check(self, vol: Any, expected: Sequence[int], what: str) -> None:
        shape = tuple(vol.shape)
        if len(shape) < 3 or tuple(shape[-3:]) != tuple(expected):
            raise ValueError(f"expected an array whose last 3 axes are {tuple(expected)} "
                             f"({what} shape), got {shape}")

    def to_model(self, vol: Any) -> Any:
        """Crop/pad ``vol`` (..., X, Y, Z) to (..., X', Y', Z').

        Works on numpy arrays and torch tensors; dtype (and device) is kept.
        """
        self._check(vol, self.original, "original")
        if self.is_identity:
            return vol
        src = tuple(slice(s, o - e) for s, o, e in zip(self.crop_start, self.original, self.crop_end))
        dst = tuple(slice(0, k) for k in self.kept)
        out = _zeros_like(vol, tuple(vol.shape[:-3]) + self.model)
        out[(Ellipsis,) + dst] = vol[(Ellipsis,) + src]
        return out

    def to_original(self, vol: Any) -> Any:
        """Inverse of :meth:`to_model`: (..., X', Y', Z') -> (..., X, Y, Z).

        Drops the padded voxels and puts zeros where the original was cropped.
        """
        self._check(vol, self.model, "model")
        if self.is_identity:
            return vol
        src = tuple(slice(0, k) for k in self.kept)
        dst = tuple(slice(s, s + k) for s, k in zip(self.crop_start, self.kept))
        out = _zeros_like(vol, tuple(vol.shape[:-3]) + self.original)
        out[(Ellipsis,) + dst] = vol[(Ellipsis,) + src]
        return out


def _zeros_like(vol: Any, shape: Tuple[int, ...]) -> Any:
    """Zeros of ``shape`` with ``vol``'s dtype (and device for torch tensors)."""
    if isinstance(vol, np.ndarray):
        return np.zeros(shape, dtype=vol.dtype)
    if hasattr(vol, "new_zeros"):  # torch.Tensor, without importing torch here
        return vol.new_zeros(shape)
    raise TypeError(f"expected a numpy array or torch tensor, got {type(vol).__name__}")


def grid_for(shape: Sequence[int], divisor: int) -> Grid:
    """The :class:`Grid` for a volume of spatial ``shape`` (X, Y, Z).

    Raises:
        CwdmError: ``shape`` is not 3D or an axis is shorter than half the
            divisor (it cannot be mapped to the model grid).
    """
    shape = tuple(int(s) for s in shape)
    d = int(divisor)
    if d < 1:
        raise CwdmError(f"the model divisor must be a positive integer, got {divisor}")
    if len(shape) != 3:
        raise CwdmError(f"expected a 3D volume shape, got {shape}")
    model, crop_start, crop_end, pad_end = [], [], [], []
    for axis, n in enumerate(shape):
        if n < 1:
            raise CwdmError(f"axis {axis} of shape {shape} is empty")
        try:
            m = _axis_target(n, d, axis)
        except CwdmError as exc:
            raise CwdmError(f"shape {'x'.join(map(str, shape))}: {exc}") from None
        crop = max(n - m, 0)
        model.append(m)
        crop_start.append(crop // 2)
        crop_end.append(crop - crop // 2)
        pad_end.append(max(m - n, 0))
    return Grid(tuple(shape), tuple(model), tuple(crop_start), tuple(crop_end),  # type: ignore[arg-type]
                tuple(pad_end), d)


def prepare_volume(vol: np.ndarray, grid: Grid) -> np.ndarray:
    """Model input of one volume: :func:`clip_and_normalize` on the original
    (X, Y, Z) volume, then :meth:`Grid.to_model`; returns float32 (X', Y', Z')."""
    return grid.to_model(clip_and_normalize(vol).astype(np.float32))

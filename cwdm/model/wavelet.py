"""3D Haar wavelet transform and the model's wavelet domain.

``dwt3d`` / ``idwt3d`` are the orthonormal single-level 3D Haar transform and
its exact inverse, written with plain tensor operations (reshape, add,
subtract), so they run on any device and dtype and are differentiable.

The model does not work on raw subbands: the LLL (approximation) subband is
divided by :data:`LLL_SCALE` (= 3) so that all eight subbands have a similar
range. That scaling lives only in :func:`to_subbands` / :func:`from_subbands`.

Subband order per channel: LLL, LLH, LHL, LHH, HLL, HLH, HHL, HHH, where the
first letter is the first spatial axis (D), the last the last (W); L is the
low pass (pairwise sum / sqrt 2), H the high pass (pairwise difference / sqrt 2,
even minus odd sample). This equals ``pywt.dwtn(x, "haar")`` over (D, H, W)
with keys aaa, aad, ada, add, daa, dad, dda, ddd.
"""

from __future__ import annotations

import math

import torch

LLL_SCALE = 3.0
"""The LLL subband is divided by this in the model's wavelet domain."""

NUM_SUBBANDS = 8
SUBBAND_NAMES = ("LLL", "LLH", "LHL", "LHH", "HLL", "HLH", "HHL", "HHH")

_NORM = 1.0 / (2.0 * math.sqrt(2.0))  # (1/sqrt 2) ** 3


def _check_shape(x: torch.Tensor, name: str) -> None:
    if x.dim() != 5:
        raise ValueError(f"{name} expects a 5D tensor (B, C, D, H, W), got shape {tuple(x.shape)}")


def _butterfly(t: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """Unnormalized Haar butterfly (a, b) -> (a + b, a - b) along each size-2 dim."""
    for dim in dims:
        a, b = t.unbind(dim)
        t = torch.stack((a + b, a - b), dim=dim)
    return t


def dwt3d(x: torch.Tensor) -> torch.Tensor:
    """Single-level orthonormal 3D Haar transform.

    Args:
        x: (B, C, D, H, W) tensor; D, H and W must be even.

    Returns:
        (B, 8C, D/2, H/2, W/2) tensor; channel ``8c + k`` is subband
        ``SUBBAND_NAMES[k]`` of input channel ``c``.
    """
    _check_shape(x, "dwt3d")
    b, c, d, h, w = x.shape
    odd = [f"{n}={s}" for n, s in zip("DHW", (d, h, w)) if s % 2]
    if odd:
        raise ValueError(f"dwt3d needs even spatial sizes, got odd {', '.join(odd)} in shape {tuple(x.shape)}")
    t = x.reshape(b, c, d // 2, 2, h // 2, 2, w // 2, 2)
    t = _butterfly(t, (3, 5, 7))
    t = t.permute(0, 1, 3, 5, 7, 2, 4, 6)
    return t.reshape(b, c * NUM_SUBBANDS, d // 2, h // 2, w // 2) * _NORM


def idwt3d(bands: torch.Tensor) -> torch.Tensor:
    """Exact inverse of :func:`dwt3d`.

    Args:
        bands: (B, 8C, d, h, w) tensor of subbands in ``dwt3d`` order.

    Returns:
        (B, C, 2d, 2h, 2w) tensor.
    """
    _check_shape(bands, "idwt3d")
    b, c8, d, h, w = bands.shape
    if c8 % NUM_SUBBANDS:
        raise ValueError(f"idwt3d needs a multiple of 8 channels, got {c8} in shape {tuple(bands.shape)}")
    c = c8 // NUM_SUBBANDS
    t = bands.reshape(b, c, 2, 2, 2, d, h, w)
    t = _butterfly(t, (2, 3, 4))
    t = t.permute(0, 1, 5, 2, 6, 3, 7, 4)
    return t.reshape(b, c, 2 * d, 2 * h, 2 * w) * _NORM


def _scale_lll(bands: torch.Tensor, factor: float) -> torch.Tensor:
    b, c8, *spatial = bands.shape
    grouped = bands.reshape(b, c8 // NUM_SUBBANDS, NUM_SUBBANDS, *spatial)
    scale = torch.ones(NUM_SUBBANDS, dtype=bands.dtype, device=bands.device)
    scale[0] = factor
    return (grouped * scale.view(1, 1, NUM_SUBBANDS, 1, 1, 1)).reshape(bands.shape)


def to_subbands(x: torch.Tensor) -> torch.Tensor:
    """Image (B, C, D, H, W) -> model wavelet domain (B, 8C, D/2, H/2, W/2), LLL divided by 3."""
    return _scale_lll(dwt3d(x), 1.0 / LLL_SCALE)


def from_subbands(bands: torch.Tensor) -> torch.Tensor:
    """Model wavelet domain (B, 8C, d, h, w) -> image (B, C, 2d, 2h, 2w); undoes :func:`to_subbands`."""
    return idwt3d(_scale_lll(bands, LLL_SCALE))

"""What the network's output means: the x0 prediction (the reference), or an EDM-style preconditioned output.

``x0`` (:data:`X0`, every released checkpoint): the network maps ``[x_t, cond]`` to the clean subbands.
Such a network can learn to ignore ``x_t`` altogether: where the conditions determine the target
(most of a BraTS volume) ``x_t`` is only noise at most timesteps, and a small network then zeroes
its first layer's weights on ``x_t`` and predicts the conditional mean at every ``t``, so its
samples never differ (measured on the ambiguous phantom: ``benchmarks/noise_use.py``).

``edm`` (Karras et al. 2022, "Elucidating the design space of diffusion-based generative models",
written for the variance-preserving noising ``x_t = a x0 + b eps``, ``a = sqrt(abar_t)``,
``b = sqrt(1 - abar_t)``): with the data's scale ``s`` per subband and ``v = a^2 s^2 + b^2``,

    x0 = c_skip x_t + c_out F(c_in x_t, cond, t),
    c_skip = a s^2 / v,   c_out = s b / sqrt(v),   c_in = 1 / sqrt(v),

and the loss is the MSE of ``F`` against ``(x0 - c_skip x_t) / c_out`` (a unit-scale target at
every ``t``). ``c_skip`` is the best linear guess of ``x0`` from ``x_t`` alone, so at low noise
the estimate follows ``x_t`` without the network having to learn an identity; the network learns
the correction. ``s`` is the root mean square of each of the 8 subbands of training targets
(:func:`subband_rms`; LLL/3 of [0, 1] images is about 0.3, the detail subbands 0.03-0.1).

A checkpoint stores the non-default prediction as ``{"kind": "edm", "sigma_data": [8 values]}``;
no entry means ``x0``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import torch

from ..errors import CwdmError

KINDS = ("x0", "edm")


@dataclass(frozen=True)
class Prediction:
    """The output parameterization of a network.

    Attributes:
        kind: ``"x0"`` or ``"edm"``.
        sigma_data: ``edm``: the data's scale per subband (8 values, or 1 for all); empty for ``x0``.
    """

    kind: str = "x0"
    sigma_data: Tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise CwdmError(f"unknown prediction {self.kind!r} (one of {', '.join(KINDS)})")
        object.__setattr__(self, "sigma_data", tuple(float(s) for s in self.sigma_data))
        if self.kind == "edm" and (len(self.sigma_data) not in (1, 8) or min(self.sigma_data) <= 0):
            raise CwdmError(f"prediction edm needs 1 or 8 positive sigma_data values, got {list(self.sigma_data)}")

    @property
    def is_x0(self) -> bool:
        return self.kind == "x0"

    def to_dict(self) -> Optional[Dict[str, Any]]:
        """The checkpoint entry (None for ``x0``, which every reader assumes)."""
        return None if self.is_x0 else {"kind": self.kind, "sigma_data": list(self.sigma_data)}

    @classmethod
    def from_dict(cls, data: Optional[Dict[str, Any]], source: str = "checkpoint") -> "Prediction":
        if data is None:
            return X0
        try:
            return cls(str(data["kind"]), tuple(data.get("sigma_data") or ()))
        except (KeyError, TypeError, ValueError) as exc:
            raise CwdmError(f"{source}: unreadable prediction entry {data!r} ({type(exc).__name__})") from None

    def coefficients(self, alphas_cumprod: np.ndarray, t: torch.Tensor, like: torch.Tensor
                     ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(c_skip, c_out, c_in)`` for timesteps ``t`` (B,), each broadcastable to ``like`` (B, 8, ...).

        Computed in float64 from ``alphas_cumprod`` (the trained schedule's), then cast to ``like``'s dtype.
        """
        abar = torch.from_numpy(np.asarray(alphas_cumprod, dtype=np.float64)).to(like.device)[t.long()]
        shape = (-1,) + (1,) * (like.dim() - 1)
        a, b = abar.sqrt().view(shape), (1.0 - abar).sqrt().view(shape)
        if self.is_x0:
            one = torch.ones_like(a)
            return (torch.zeros_like(a).to(like.dtype), one.to(like.dtype), one.to(like.dtype))
        s = torch.tensor(self.sigma_data, dtype=torch.float64, device=like.device)
        s = s.view((1, -1) + (1,) * (like.dim() - 2)) if len(self.sigma_data) > 1 else s.view(())
        v = a * a * s * s + b * b
        return tuple(c.to(like.dtype) for c in (a * s * s / v, s * b / v.sqrt(), 1.0 / v.sqrt()))


X0 = Prediction()
"""The reference's parameterization: the network predicts the clean subbands."""


def subband_rms(volumes: Sequence[torch.Tensor]) -> Tuple[float, ...]:
    """Root mean square of each subband over ``volumes`` (each (B, 8, d, h, w) subbands), rounded to 4 digits."""
    total = sum(v.double().pow(2).sum(dim=(0, 2, 3, 4)) for v in volumes)
    count = sum(v.shape[0] * v[0, 0].numel() for v in volumes)
    return tuple(round(float(x), 4) for x in (total / count).sqrt())

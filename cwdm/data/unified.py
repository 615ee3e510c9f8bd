"""Inputs of a unified (any-modality) network: which slot is the target, which are hidden, and the
network's condition tensor.

A unified network (:meth:`cwdm.task.Task.unified`) sees one slot per modality.
Training draws, per volume of the batch, the target among the modalities and,
with ``drop_conditions``, how many of the others stay (uniformly 1 .. M-1) and
which; hidden slots and the target's slot are zero-filled. The target's
identity is a one-hot vector of M values, given to the network as M constant
channels after the condition subbands (:func:`condition_input`).
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch

from ..model.wavelet import to_subbands


def draw_training_inputs(volumes: torch.Tensor, generator: torch.Generator,
                         drop_conditions: bool) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split complete cases into a target and the inputs that synthesize it.

    Args:
        volumes: (B, M, X, Y, Z) every modality of B cases.
        generator: draws the targets and hidden subsets (on ``volumes.device``; kept in checkpoints).
        drop_conditions: also hide a random subset of the other modalities (at least one stays).

    Returns:
        ``(target (B, 1, X, Y, Z), slots (B, M, X, Y, Z) with the target's and hidden slots zero,
        identity (B, M) one-hot of the target)``.
    """
    b, m = volumes.shape[:2]
    device = volumes.device
    rows = torch.arange(b, device=device)
    k = torch.randint(0, m, (b,), device=device, generator=generator)
    if drop_conditions:
        n_keep = torch.randint(1, m, (b,), device=device, generator=generator)  # 1 .. M-1 others stay
        order = torch.rand((b, m), device=device, generator=generator)
        order[rows, k] = 2.0  # the target sorts last, so it is never kept
        rank = order.argsort(dim=1).argsort(dim=1)
        keep = rank < n_keep[:, None]
    else:
        keep = torch.ones((b, m), dtype=torch.bool, device=device)
        keep[rows, k] = False
    identity = torch.nn.functional.one_hot(k, m).to(volumes.dtype)
    slots = volumes * keep[:, :, None, None, None].to(volumes.dtype)
    return volumes[rows, k][:, None], slots, identity


def one_hot(modalities: Sequence[str], target: str) -> torch.Tensor:
    """(M,) float32 identity of ``target`` among ``modalities``."""
    return torch.tensor([1.0 if m == target else 0.0 for m in modalities])


def condition_input(cond: torch.Tensor, identity: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The condition tensor the network takes after the noisy target.

    Args:
        cond: (B, C, X, Y, Z) condition volumes.
        identity: (B, M) target identity of a unified network, or None.

    Returns:
        (B, 8C [+ M], X/2, Y/2, Z/2): the conditions' subbands, then M constant identity channels.
    """
    sub = to_subbands(cond)
    if identity is None:
        return sub
    ident = identity.to(sub.dtype)[:, :, None, None, None].expand(-1, -1, *sub.shape[2:])
    return torch.cat([sub, ident], dim=1)

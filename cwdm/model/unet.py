"""3D U-Net denoiser with the released cWDM ``state_dict`` layout.

The network maps a stack of wavelet subbands and an integer diffusion
timestep to 8 output subbands. It knows nothing of modalities: the caller
concatenates the noisy target subbands and the condition subbands into
``in_channels`` input channels.

Architecture (the released layout, key for key): a sinusoidal timestep
embedding and a 2-layer MLP (``time_embed``); an encoder of residual blocks
with GroupNorm, SiLU and 3x3x3 convolutions, ``num_res_blocks`` per level and a
residual block with 2x average-pool downsampling between levels
(``input_blocks``); two residual blocks at the bottom (``middle_block``, no
attention); a decoder with ``num_res_blocks + 1`` residual blocks per level
that each take one encoder skip (concatenated, or averaged with
``additive_skips``), with a nearest-neighbour 2x upsampling residual block at
the end of every level but the top (``output_blocks``); and GroupNorm, SiLU and
a 3x3x3 convolution to ``out_channels`` (``out``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import List, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from ..errors import CwdmError
from .wavelet import NUM_SUBBANDS


@dataclass
class UNetConfig:
    """Network hyper-parameters; field names follow the released config json."""

    model_channels: int = field(default=64, metadata={"help": "base channel count"})
    channel_mult: Tuple[int, ...] = field(default=(1, 2, 2, 4, 4), metadata={"help": "channel multiplier per level"})
    num_res_blocks: int = field(default=2, metadata={"help": "residual blocks per level"})
    in_channels: int = field(default=32, metadata={"help": "input channels (:func:`in_channels_for`)"})
    out_channels: int = field(default=8, metadata={"help": "output channels (8 subbands)"})
    additive_skips: bool = field(default=False, metadata={"help": "average skips instead of concatenating (less memory)"})
    num_groups: int = field(default=32, metadata={"help": "GroupNorm groups"})
    dropout: float = field(default=0.0, metadata={"help": "dropout in residual blocks"})

    def __post_init__(self) -> None:
        self.channel_mult = tuple(int(m) for m in self.channel_mult)

    @property
    def num_levels(self) -> int:
        return len(self.channel_mult)

    @property
    def subband_divisor(self) -> int:
        """Spatial sizes of the network input must be multiples of this: each of the
        ``num_levels - 1`` downsamplings halves every axis."""
        if self.num_levels < 1:
            raise CwdmError(f"a network needs at least one level (len(channel_mult) >= 1), got {self.num_levels}")
        return 2 ** (self.num_levels - 1)

    @property
    def image_divisor(self) -> int:
        """Image-domain sizes must be multiples of this (the Haar transform halves once more):
        channel_mult (1, 2, 2, 4, 4) -> 32. The one divisor every grid is cut to."""
        return 2 * self.subband_divisor


RELEASED_CONFIG = UNetConfig()
"""The configuration of the published checkpoints (3 conditions)."""


def in_channels_for(condition_volumes: int, identity_channels: int = 0) -> int:
    """Input channels of a network fed ``condition_volumes`` condition volumes (the one formula).

    The noisy target and every condition volume each give :data:`~cwdm.model.wavelet.NUM_SUBBANDS`
    (8) wavelet subbands; a unified model adds ``identity_channels`` constant channels naming the
    target: ``8 * (1 + condition_volumes) + identity_channels`` (32 for the released models).
    """
    return NUM_SUBBANDS * (1 + int(condition_volumes)) + int(identity_channels)


def condition_volumes_of(in_channels: int, identity_channels: int = 0) -> int:
    """The inverse of :func:`in_channels_for`: condition volumes of a network of ``in_channels`` inputs."""
    return (int(in_channels) - int(identity_channels)) // NUM_SUBBANDS - 1


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of timesteps.

    Args:
        t: (N,) integer or float timesteps.
        dim: embedding size.

    Returns:
        (N, dim) float32 tensor, cosines first, then sines.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 whatever the input dtype (stable under bf16)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type(x.dtype)


def _conv(cin: int, cout: int, k: int = 3) -> nn.Conv3d:
    return nn.Conv3d(cin, cout, k, padding=k // 2)


def _zeroed(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """Residual block with timestep conditioning and optional 2x resampling.

    Args:
        channels: input channels C.
        emb_channels: timestep embedding size E.
        out_channels: output channels C' (default C).
        resample: ``"down"`` (average pool), ``"up"`` (nearest) or ``None``.

    ``forward(x (N, C, D, H, W), emb (N, E)) -> (N, C', D', H', W')``.
    """

    def __init__(self, channels: int, emb_channels: int, out_channels: int | None = None,
                 num_groups: int = 32, dropout: float = 0.0, resample: str | None = None,
                 use_checkpoint: bool = False):
        super().__init__()
        out_channels = out_channels or channels
        self.resample = resample
        self.use_checkpoint = use_checkpoint
        self.in_layers = nn.Sequential(GroupNorm32(num_groups, channels), nn.SiLU(), _conv(channels, out_channels))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, out_channels))
        self.out_layers = nn.Sequential(
            GroupNorm32(num_groups, out_channels), nn.SiLU(), nn.Dropout(dropout),
            _zeroed(_conv(out_channels, out_channels)),
        )
        self.skip_connection = nn.Identity() if out_channels == channels else _conv(channels, out_channels, 1)

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        if self.resample == "down":
            return F.avg_pool3d(x, kernel_size=2, stride=2)
        if self.resample == "up":
            return F.interpolate(x, scale_factor=2, mode="nearest")
        return x

    def _forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.resample:
            h = self.in_layers[:-1](x)
            h = self.in_layers[-1](self._resample(h))
            x = self._resample(x)
        else:
            h = self.in_layers(x)
        h = h + self.emb_layers(emb).type(h.dtype)[:, :, None, None, None]
        return self.skip_connection(x) + self.out_layers(h)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.use_checkpoint and self.training and torch.is_grad_enabled():
            return checkpoint(self._forward, x, emb, use_reentrant=False)
        return self._forward(x, emb)


class EmbedSequential(nn.Sequential):
    """``nn.Sequential`` that passes the timestep embedding to residual blocks."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


class UNet(nn.Module):
    """The cWDM denoiser, built from a :class:`UNetConfig`: ``UNet(cfg)``.

    ``use_checkpoint`` trades compute for memory with gradient checkpointing.

    ``forward(x (N, in_channels, d, h, w), t (N,) int) -> (N, out_channels, d, h, w)``;
    d, h, w must be multiples of ``2 ** (len(channel_mult) - 1)``.
    """

    def __init__(self, config: UNetConfig, *, use_checkpoint: bool = False):
        super().__init__()
        if not isinstance(config, UNetConfig):
            raise TypeError(f"UNet takes a UNetConfig, got {type(config).__name__}")
        self.config = cfg = replace(config)  # a copy: the network's own record of its shape
        for mult in (1, *cfg.channel_mult):
            if (cfg.model_channels * mult) % cfg.num_groups:
                raise CwdmError(f"model_channels x channel_mult ({cfg.model_channels * mult}) "
                                f"must be divisible by num_groups ({cfg.num_groups})")
        self.additive_skips = cfg.additive_skips
        emb_dim = 4 * cfg.model_channels
        block = dict(emb_channels=emb_dim, num_groups=cfg.num_groups, dropout=cfg.dropout,
                     use_checkpoint=use_checkpoint)
        self.time_embed = nn.Sequential(nn.Linear(cfg.model_channels, emb_dim), nn.SiLU(),
                                        nn.Linear(emb_dim, emb_dim))
        self.input_blocks, skip_chans = self._encoder(cfg, block)
        ch = skip_chans[-1]
        self.middle_block = EmbedSequential(ResBlock(ch, **block), ResBlock(ch, **block))
        self.output_blocks, ch = self._decoder(cfg, block, skip_chans)
        self.out = nn.Sequential(GroupNorm32(cfg.num_groups, ch), nn.SiLU(),
                                 _zeroed(_conv(cfg.model_channels, cfg.out_channels)))

    @staticmethod
    def _encoder(cfg: UNetConfig, block: dict) -> Tuple[nn.ModuleList, List[int]]:
        """``input_blocks`` and the channel count of each skip they leave (in order)."""
        blocks = nn.ModuleList([EmbedSequential(_conv(cfg.in_channels, cfg.model_channels))])
        skip_chans = [cfg.model_channels]
        ch = cfg.model_channels
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                blocks.append(EmbedSequential(ResBlock(ch, out_channels=cfg.model_channels * mult, **block)))
                ch = cfg.model_channels * mult
                skip_chans.append(ch)
            if level < cfg.num_levels - 1:
                blocks.append(EmbedSequential(ResBlock(ch, resample="down", **block)))
                skip_chans.append(ch)
        return blocks, skip_chans

    @staticmethod
    def _decoder(cfg: UNetConfig, block: dict, skip_chans: List[int]) -> Tuple[nn.ModuleList, int]:
        """``output_blocks`` (each takes one skip, popped from ``skip_chans``) and their output channels."""
        blocks = nn.ModuleList()
        ch = skip_chans[-1]
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for i in range(cfg.num_res_blocks + 1):
                skip = skip_chans.pop()
                if cfg.additive_skips:
                    cin, cout = ch, (skip_chans[-1] if skip_chans else cfg.model_channels)
                else:
                    cin, cout = ch + skip, cfg.model_channels * mult
                layers: List[nn.Module] = [ResBlock(cin, out_channels=cout, **block)]
                ch = cout
                if level and i == cfg.num_res_blocks:
                    layers.append(ResBlock(ch, resample="up", **block))
                blocks.append(EmbedSequential(*layers))
        return blocks, ch

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a clear error if ``x`` does not fit the network."""
        cfg = self.config
        if x.dim() != 5 or x.shape[1] != cfg.in_channels:
            raise CwdmError(f"network expects input (N, {cfg.in_channels}, d, h, w), got {tuple(x.shape)}")
        div = cfg.subband_divisor
        bad = [s for s in x.shape[2:] if s % div]
        if bad:
            raise CwdmError(f"network input spatial size {tuple(x.shape[2:])} is not divisible by {div} "
                            f"({cfg.num_levels} levels); image sizes must be multiples of {2 * div}")

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        emb = self.time_embed(timestep_embedding(t, self.config.model_channels).to(x.dtype))
        skips = []
        h = x
        for module in self.input_blocks:
            h = module(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for module in self.output_blocks:
            skip = skips.pop()
            h = (h + skip) / 2 if self.additive_skips else torch.cat([h, skip], dim=1)
            h = module(h, emb)
        return self.out(h)


def random_network(config: UNetConfig, seed: int = 0, **kwargs) -> UNet:
    """A network of ``config`` with every layer random, the zero-initialized output convolutions too.

    A freshly built :class:`UNet` synthesizes zeros (its last convolutions start at zero, as in
    training). This one gives noise of the right shapes: for trying an architecture (e.g. the
    released one, with ``--models_dir``) without its weights, and for benchmarks.
    """
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = UNet(config, **kwargs)
        for m in model.modules():
            if isinstance(m, nn.Conv3d) and not m.weight.abs().sum():
                m.reset_parameters()
    finally:
        torch.random.set_rng_state(generator_state)
    return model

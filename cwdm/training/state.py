"""Training state that must survive interruptions: data order, EMA, checkpoints.

A training checkpoint is a dict readable with ``torch.load(weights_only=True)``,
built by :func:`cwdm.model.checkpoint.checkpoint_dict`:

===================  ==========================================================
key                  contents
===================  ==========================================================
``format``           ``cwdm.model.checkpoint.FORMAT``
``version``          ``cwdm.model.checkpoint.FORMAT_VERSION``
``model_config``     :class:`cwdm.model.unet.UNetConfig` as a dict
``train_config``     the :class:`cwdm.commands.train.TrainConfig` as a dict
``target``           target modality; ``modalities``: all modality names
``conditions``       condition modalities in network input order
``step``             optimizer steps done
``model``, ``ema``   state_dicts (raw weights, EMA weights)
``optimizer``        AdamW state_dict
``data_order``       ``{"epoch", "offset"}`` of :class:`DataOrder`
``rng``              ``{"generator", "torch_cpu"}`` RNG states (uint8 tensors)
===================  ==========================================================
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import torch
from torch.utils.data import Sampler

from ..writes import atomic_write, make_folder

CKPT_PATTERN = re.compile(r"^ckpt_(\d+)\.pt$")


class DataOrder(Sampler):
    """Reproducible, resumable, rank-sharded order of dataset indices.

    Epoch ``e`` visits ``randperm(n)`` drawn from a generator seeded with
    ``seed + e``; rank ``r`` of ``world`` takes every ``world``-th index (the
    permutation is padded by wrapping so every rank gets the same count).
    ``offset`` counts samples of the current epoch this rank already used, so
    iteration can restart exactly where a checkpoint was written.
    """

    def __init__(self, n: int, seed: int = 0, rank: int = 0, world: int = 1, shuffle: bool = True):
        if n <= 0:
            raise ValueError("DataOrder needs at least one sample")
        self.n, self.seed, self.rank, self.world, self.shuffle = n, seed, rank, world, shuffle
        self.epoch, self.offset = 0, 0

    def per_rank(self) -> int:
        return -(-self.n // self.world)

    def epoch_indices(self, epoch: int) -> List[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        total = self.per_rank() * self.world
        order = (order * (total // self.n + 1))[:total]
        return order[self.rank::self.world]

    def __iter__(self) -> Iterator[int]:
        """Endless stream of indices from the recorded (epoch, offset) on.

        Iterating does not move the recorded position (a DataLoader prefetches
        ahead of training); :meth:`advance` does.
        """
        epoch, offset = self.epoch, self.offset
        while True:
            yield from self.epoch_indices(epoch)[offset:]
            epoch, offset = epoch + 1, 0

    def __len__(self) -> int:  # one epoch per rank
        return self.per_rank()

    def advance(self, count: int) -> None:
        """Record that ``count`` more samples were consumed by training."""
        self.offset += count
        while self.offset >= self.per_rank():
            self.offset -= self.per_rank()
            self.epoch += 1

    def state_dict(self) -> Dict[str, int]:
        return {"epoch": self.epoch, "offset": self.offset}

    def load_state_dict(self, state: Dict[str, int]) -> None:
        self.epoch, self.offset = int(state["epoch"]), int(state["offset"])


class KeyedDataOrder(DataOrder):
    """A :class:`DataOrder` whose stream says where each sample stands: ``(index, epoch, position)``.

    ``position`` is the sample's place in the epoch's order over all ranks (``j * world + rank`` for the
    ``j``-th index of this rank), so a dataset that draws a sample's randomness from
    ``(seed, epoch, position)`` (:class:`cwdm.data.inpaint_training.InpaintingTrainingSet`) draws the same
    after a resume, in any DataLoader worker, and on any number of ranks. Its state is a DataOrder's.
    """

    def __iter__(self) -> Iterator:
        epoch, offset = self.epoch, self.offset
        while True:
            for j, index in enumerate(self.epoch_indices(epoch)[offset:], start=offset):
                yield index, epoch, j * self.world + self.rank
            epoch, offset = epoch + 1, 0


class EMA:
    """Exponential moving average of a model's parameters (buffers copied)."""

    def __init__(self, model: torch.nn.Module, rate: float):
        self.rate = rate
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        for e, p in zip(self.model.parameters(), model.parameters()):
            e.mul_(self.rate).add_(p.detach(), alpha=1.0 - self.rate)
        for e, b in zip(self.model.buffers(), model.buffers()):
            e.copy_(b)


@dataclass
class TrainingParts:
    """What one optimisation step changes (see :func:`cwdm.training.loop.train_step`).

    ``model`` is the raw network (what is saved and what ``ema`` follows);
    ``net`` is what runs forward: ``model`` itself, or DDP / ``torch.compile``
    around it. ``generator`` draws the timesteps and noise of every step.
    """

    model: torch.nn.Module
    net: torch.nn.Module
    ema: EMA
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    step: int = 0

    def rng_state(self) -> Dict[str, torch.Tensor]:
        return {"generator": self.generator.get_state().cpu(), "torch_cpu": torch.get_rng_state()}


def checkpoint_files(run_dir: Path) -> List[Path]:
    """Checkpoints of a run directory, oldest step first."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := CKPT_PATTERN.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: Path) -> Optional[Path]:
    files = checkpoint_files(run_dir)
    return files[-1] if files else None


def save_checkpoint(run_dir: Path, state: Dict, step: int, keep_last: int) -> Path:
    """Write ``state`` (a :func:`cwdm.model.checkpoint.checkpoint_dict`) atomically as
    ``checkpoints/ckpt_<step>.pt`` and prune old ones. A write the file system refuses (full disk,
    read-only) is a one-line :class:`~cwdm.errors.CwdmError`; no partial checkpoint is left."""
    folder = make_folder(Path(run_dir) / "checkpoints")
    path = folder / f"ckpt_{step:08d}.pt"
    with atomic_write(path, "wb") as fh:  # a file object: a failed write is an OSError with its errno
        torch.save(state, fh)
    if keep_last > 0:
        for old in checkpoint_files(run_dir)[:-keep_last]:
            old.unlink(missing_ok=True)
    return path


def optimizer_to_cpu(state: dict) -> dict:
    """An optimizer ``state_dict()`` with its tensors moved to the CPU (in place), for saving."""
    for s in state["state"].values():
        for k, v in s.items():
            if isinstance(v, torch.Tensor):
                s[k] = v.detach().cpu()
    return state


def move_optimizer(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """Move a loaded optimizer's state tensors (but the ``step`` counts) to ``device``."""
    for s in optimizer.state.values():
        for k, v in s.items():
            if isinstance(v, torch.Tensor) and k != "step":
                s[k] = v.to(device)

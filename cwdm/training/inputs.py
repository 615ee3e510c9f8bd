"""What a training run reads: its training set and data order (:func:`build_data`), the batches
(:func:`make_loader`) and an ``edm`` run's per-subband ``sigma_data`` measured on the targets
(:func:`measure_sigma_data`)."""

from __future__ import annotations

from typing import Tuple

import torch
from torch.utils.data import DataLoader

from ..model.prediction import subband_rms
from ..model.wavelet import to_subbands
from .config import TrainConfig
from .state import DataOrder, KeyedDataOrder


def build_data(cfg: TrainConfig, divisor: int, rank: int, world: int):
    """The training set of ``cfg``'s task and its data order for process ``rank`` of ``world``:
    paired volumes, or regions drawn per item for inpainting and insertion runs."""
    from ..data.datasets import PairedVolumeDataset
    from ..data.cases import discover_cases

    if cfg.insertion:  # a region (tumour or healthy) drawn per item from its place in the data order
        from ..data.insert_training import InsertionTrainingSet, insertion_cases

        dataset = InsertionTrainingSet(insertion_cases(cfg.data_dir, cfg.modalities), divisor, cfg.seed,
                                       margin=cfg.task().insert_margin, healthy=cfg.insertion_healthy,
                                       check=cfg.check_data)
        return dataset, KeyedDataOrder(len(dataset), seed=cfg.seed, rank=rank, world=world)
    if cfg.inpainting:  # a region drawn per item from its place in the data order (resume-exact)
        from ..data.inpaint_training import InpaintingTrainingSet, training_cases

        dataset = InpaintingTrainingSet(training_cases(cfg.data_dir, cfg.modalities), divisor, cfg.seed,
                                        check=cfg.check_data)
        return dataset, KeyedDataOrder(len(dataset), seed=cfg.seed, rank=rank, world=world)
    cases = discover_cases(cfg.data_dir, cfg.modalities)
    dataset = PairedVolumeDataset(cases, cfg.task(), divisor, check=cfg.check_data,
                                  workers=max(1, cfg.num_workers))
    order = DataOrder(len(dataset), seed=cfg.seed, rank=rank, world=world)
    return dataset, order


SIGMA_CASES = 16
"""Training cases (the first, in folder order) whose targets give an ``edm`` run's ``sigma_data``."""


def measure_sigma_data(dataset) -> Tuple[float, ...]:
    """Root mean square of each target subband over the first :data:`SIGMA_CASES` items of ``dataset``
    (:func:`cwdm.model.prediction.subband_rms`; every target channel of an item counts as a volume)."""
    volumes = []
    for i in range(min(len(dataset), SIGMA_CASES)):
        target = torch.as_tensor(dataset[i][0], dtype=torch.float32)  # (C, X, Y, Z)
        volumes.append(to_subbands(target.reshape(-1, 1, *target.shape[-3:])))
    return subband_rms(volumes)


def make_loader(dataset, order: DataOrder, cfg: TrainConfig, device: torch.device) -> DataLoader:
    """Batches of ``dataset`` in ``order`` (the data order a resumed run restores)."""
    return DataLoader(dataset, batch_size=cfg.batch_size, sampler=order, num_workers=cfg.num_workers,
                      pin_memory=device.type == "cuda", persistent_workers=False, drop_last=False)

"""What a training run shows and records: console, progress bar, TensorBoard, config.json."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import torch

from ..config import to_dict
from ..runtime import peak_memory_mb
from ..model.wavelet import SUBBAND_NAMES, from_subbands


class TrainLogger:
    """Rank-0 reporting of a training run (all methods are no-ops when ``enabled`` is False).

    * prints the resolved configuration and writes ``<run_dir>/config.json``;
    * a tqdm bar with step, loss, it/s and ETA;
    * TensorBoard scalars every ``log_interval`` steps (loss, the 8 per-subband
      losses, learning rate, samples/s, peak GPU memory) and mid-slice images of
      condition / target / prediction every ``image_interval`` steps.
    """

    def __init__(self, run_dir: Path, cfg, mcfg, enabled: bool = True, start_step: int = 0,
                 resumed_from: Optional[Path] = None, device: Optional[torch.device] = None,
                 grid: Optional[Sequence[int]] = None, command: str = "train", extra: Optional[dict] = None):
        self.enabled = enabled
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        if not enabled:
            return
        from tqdm.auto import tqdm
        from torch.utils.tensorboard import SummaryWriter

        write_config_json(self.run_dir, cfg, mcfg, extra)
        params = sum(torch.Size(s).numel() for s in _shapes(mcfg))
        head = f"resuming {resumed_from} at step {start_step}" if resumed_from else "new run"
        print(f"cwdm {command}: {head} in {self.run_dir} | {cfg.task().describe()} | {params / 1e6:.1f}M parameters",
              file=sys.stderr)
        print(format_settings(cfg, mcfg), file=sys.stderr)
        if device is not None:
            from ..feedback import cpu_training_warning, device_line

            print(device_line(device), file=sys.stderr)
            warning = cpu_training_warning(device, mcfg.model_channels, grid, cfg.batch_size,
                                           cfg.step_limit - start_step) if grid else None
            if warning:
                print(warning, file=sys.stderr)
        self.writer = None
        if cfg.tensorboard:
            tb_dir = cfg.tensorboard_dir if cfg.tensorboard_dir is not None else self.run_dir / "tb"
            self.writer = SummaryWriter(str(tb_dir), purge_step=start_step or None)
        self.bar = tqdm(total=cfg.step_limit, initial=start_step, disable=not cfg.progress, unit="step",
                        dynamic_ncols=True, desc=f"{command} {cfg.contr}")
        self.last_time, self.last_step = time.monotonic(), start_step
        self.loss_sum, self.sub_sum, self.count = 0.0, torch.zeros(len(SUBBAND_NAMES)), 0

    def step(self, step: int, loss: torch.Tensor, per_subband: torch.Tensor, lr: float, samples: int,
             device: torch.device, images=None) -> None:
        if not self.enabled:
            return
        value = float(loss.detach())
        self.loss_sum += value
        self.sub_sum += per_subband.detach().float().cpu()
        self.count += 1
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{value:.4f}", refresh=False)
        if self.writer is None:
            return
        if step % self.cfg.log_interval == 0:
            now = time.monotonic()
            rate = (step - self.last_step) * samples / max(now - self.last_time, 1e-9)
            w = self.writer
            w.add_scalar("loss/mse", self.loss_sum / self.count, step)
            for name, v in zip(SUBBAND_NAMES, (self.sub_sum / self.count).tolist()):
                w.add_scalar(f"loss/{name}", v, step)
            w.add_scalar("train/lr", lr, step)
            w.add_scalar("train/samples_per_s", rate, step)
            if device.type == "cuda":
                w.add_scalar("train/peak_memory_mb", peak_memory_mb(device), step)
            self.last_time, self.last_step = now, step
            self.loss_sum, self.sub_sum, self.count = 0.0, torch.zeros(len(SUBBAND_NAMES)), 0
        if images is not None and self.cfg.image_interval and step % self.cfg.image_interval == 0:
            self._images(step, *images)

    @torch.no_grad()
    def _images(self, step: int, cond: torch.Tensor, target: torch.Tensor, pred: torch.Tensor) -> None:
        """Axial mid slices of the first item: conditions (K, X, Y, Z), target, prediction."""
        pred_img = from_subbands(pred[:1].float()).clamp(0, 1)[0, 0]
        z = target.shape[-1] // 2
        panels = [c[..., z] for c in cond[0].float()] + [target[0, 0, ..., z].float(), pred_img[..., z]]
        grid = torch.cat([p.cpu().clamp(0, 1) for p in panels], dim=1)
        self.writer.add_image("mid_slice/conditions_target_prediction", grid.T.flip(0)[None], step)

    def saved(self, path: Path) -> None:
        if self.enabled:
            self.bar.write(f"saved {path}", file=sys.stderr)

    def message(self, text: str) -> None:
        if self.enabled:
            self.bar.write(text, file=sys.stderr)

    def close(self) -> None:
        if self.enabled:
            self.bar.close()
            if self.writer is not None:
                self.writer.close()


SETTING_GROUPS = (
    ("data", ("data_dir", "contr", "modalities", "conditions", "label_maps", "check_data", "num_workers")),
    ("network", ("model_channels", "channel_mult", "num_res_blocks", "num_groups", "additive_skips", "dropout",
                 "in_channels", "use_checkpoint")),
    ("optimization", ("lr", "weight_decay", "batch_size", "max_steps", "max_minutes", "ema_rate", "seed")),
    ("saving", ("run_dir", "save_interval", "keep_last", "log_interval", "image_interval")),
    ("hardware", ("device", "bf16", "compile", "channels_last")),
    ("diffusion", ("prediction", "sigma_data", "timestep_power")),
    ("region tasks", ("inpainting", "insertion", "insertion_margin", "insertion_healthy", "mask_weight")),
)


def _value(v) -> str:
    return " ".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)


def format_settings(cfg, mcfg) -> str:
    """The settings of a run as a few aligned lines, one per group (``config.json`` has all of them)."""
    values = {**to_dict(mcfg), **to_dict(cfg)}
    values["in_channels"] = mcfg.in_channels
    values["run_dir"] = cfg.run_folder()
    shown = {name for _, names in SETTING_GROUPS for name in names}
    groups = list(SETTING_GROUPS) + [("other", tuple(k for k in to_dict(cfg) if k not in shown
                                                     and k not in ("resume", "progress")))]
    width = max(len(g) for g, _ in groups) + 1
    lines = ["settings:"]
    for group, names in groups:
        items = [f"{n}: {_value(values[n])}" for n in names if n in values]
        if items:
            lines.append(f"  {(group + ':').ljust(width)} " + ", ".join(items))
    return "\n".join(lines)


def training_grid(dataset, divisor: int) -> Optional[tuple]:
    """The network grid of the first training case (None when it cannot be read)."""
    from ..errors import CwdmError
    from ..data.nifti_io import load_header
    from ..data.preprocess import grid_for

    try:
        case = dataset.cases[0]  # a training set has no .target: any modality of the case has the grid
        return grid_for(load_header(next(iter(case.files.values())))[0], divisor).model
    except (AttributeError, IndexError, KeyError, StopIteration, CwdmError):
        return None


def _shapes(mcfg):
    from ..model.unet import UNet

    with torch.device("meta"):
        model = UNet(mcfg)
    return [p.shape for p in model.parameters()]


def write_config_json(run_dir: Path, cfg, mcfg, extra: Optional[dict] = None) -> None:
    """``config.json`` of a run: the resolved training configuration, its task and the network's, and
    ``extra`` entries (a distillation run's settings)."""
    from ..writes import atomic_write, make_folder

    make_folder(run_dir)
    with atomic_write(run_dir / "config.json") as fh:
        json.dump({"train": to_dict(cfg), "task": cfg.task().to_dict(), "model": to_dict(mcfg),
                   **(extra or {}), "argv": sys.argv}, fh, indent=2)

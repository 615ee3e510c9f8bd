"""``cwdm sample``: synthesize the target contrast of every case of a folder (paired mode).

For every case the conditions are read, preprocessed exactly as for the
released models, the target is sampled and written back on the original grid
with the header and affine of the first condition as
``<output_dir>/<case>/<case>-<target>.nii.gz`` (plus ``<case>-<target>_std.nii.gz``
with ``--ensemble K > 1``). Under ``torchrun`` the cases are split across ranks.
"""

from __future__ import annotations

import sys
from shlex import quote
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import torch

from . import MODALITIES
from .checkpoint import LoadedModel, load_model
from .errors import CwdmError
from .naming import canonical_contrast, contrast_of_checkpoint
from .runtime import PRECISIONS, dist_from_env, select_device
from .samplers import SAMPLERS
from .synthesis import SamplingOptions, Synthesizer, postprocess
from .unet import NetworkFlags

HELP = "synthesize the target contrast of every case of a folder (paired mode)"


class ModelFlags(NetworkFlags):
    """Network configuration of a bare released state_dict (cwdm checkpoints carry their own)."""


@dataclass
class SamplingFlags:
    sampler: str = field(default="ddpm", metadata={"help": "sampler", "choices": list(SAMPLERS)})
    sampling_steps: int = field(default=1000, metadata={"help": "network calls (ddpm 1000 = the reference)"})
    eta: float = field(default=0.0, metadata={"help": "DDIM noise (0 = deterministic)"})
    ensemble: int = field(default=1, metadata={"help": "average K samples and write a std map"})
    num_samples: int = field(default=1, metadata={"help": "accepted for compatibility with the reference; unused"})
    seed: int = field(default=0, metadata={"help": "seed (each case gets its own generator)"})
    batch_size: int = field(default=1, metadata={"help": "cases per network call (same-shape cases)"})
    clip_denoised: bool = field(default=True, metadata={"help": "clip each x0 prediction in image space"})
    postprocess: bool = field(default=True, metadata={"help": "clamp and zero outside the brain (reference)"})
    ema: bool = field(default=True, metadata={"help": "use EMA weights of a cwdm checkpoint"})
    overwrite: bool = field(default=False, metadata={"help": "redo cases whose output exists"})
    continue_anyway: bool = field(default=False, metadata={
        "help": "add results to a folder whose recorded results were made with other settings "
                "(cwdm_provenance.json then lists both)"})
    num_workers: int = field(default=1, metadata={"help": "DataLoader workers reading cases"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda or cuda:N"})
    precision: str = field(default="fp32", metadata={
        "help": "arithmetic on CUDA: fp32 (exact, the reference's numbers), tf32 or bf16 (faster, not exact)",
        "choices": list(PRECISIONS)})
    channels_last: bool = field(default=False, metadata={"help": "channels-last layout on CUDA (slower on H100)"})
    compile: bool = field(default=False, metadata={"help": "torch.compile the network (pays off over ~1000 calls)"})
    ensemble_batch: int = field(default=0, metadata={"help": "ensemble members per network call (0 = all)"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})

    def options(self) -> SamplingOptions:
        return SamplingOptions(sampler=self.sampler, steps=self.sampling_steps, eta=self.eta,
                               ensemble=self.ensemble, seed=self.seed, clip_denoised=self.clip_denoised,
                               precision=self.precision, channels_last=self.channels_last,
                               compile=self.compile, ensemble_batch=self.ensemble_batch)


@dataclass
class SampleConfig(SamplingFlags, ModelFlags):
    data_dir: Path = field(default=Path("data/validation"), metadata={"help": "BraTS-layout input folder"})
    model_path: Optional[Path] = field(default=None, metadata={"help": "checkpoint (released state_dict or cwdm)"})
    contr: Optional[str] = field(default=None, metadata={"help": "target contrast (read from cwdm checkpoints)"})
    output_dir: Path = field(default=Path("results"), metadata={"help": "where <case>/<case>-<target>.nii.gz go"})
    modalities: Tuple[str, ...] = field(default=MODALITIES, metadata={"help": "modality names"})
    save_target: bool = field(default=False, metadata={"help": "also write the preprocessed target (_target)"})


CONFIG = SampleConfig
ALIASES = {"model_channels": ["num_channels"], "contr": ["target"]}


def resolve_model(path: Optional[Path], target: Optional[str], modalities, flags: ModelFlags,
                  ema: bool, device: torch.device) -> Tuple[LoadedModel, str, Tuple[str, ...]]:
    """Load the checkpoint; settle the target contrast and the modalities; refuse mismatches in one line."""
    if path is None:
        raise CwdmError("--model_path is required (a released state_dict or a cwdm checkpoint)")
    target = canonical_contrast(target, modalities)  # --contr flair -> t2f (BraTS 2021 names)
    conditions = len(modalities) - 1
    given = getattr(flags, "_given", None)  # network flags the user typed: checked against a bare state_dict
    loaded = load_model(path, config=flags.unet_config(conditions), ema=ema, device="cpu",
                        given=set(given) if given is not None else set())
    if loaded.kind == "cwdm":
        if target is not None and loaded.target not in (None, target):
            raise CwdmError(f"{path}: checkpoint was trained to synthesize {loaded.target}, not {target}")
        target = target or loaded.target
        if loaded.modalities and list(loaded.modalities) != list(modalities):
            if tuple(modalities) != MODALITIES:
                raise CwdmError(f"{path}: checkpoint modalities {loaded.modalities} differ from --modalities "
                                f"{list(modalities)}")
            modalities = tuple(loaded.modalities)  # the checkpoint knows its task
    if loaded.kind == "released":
        named = contrast_of_checkpoint(Path(path), modalities)
        if target is None and named is not None:
            target = named
            print(f"note: {path}: synthesizing {named}, as the file name says (pass --contr to choose)",
                  file=sys.stderr)
        elif named is not None and target is not None and named != target:
            print(f"warning: {path}: the file name says it synthesizes {named}, but {target} was asked for",
                  file=sys.stderr)
    if target is None:
        raise CwdmError(f"{path}: a released state_dict does not say its target; pass --contr")
    if target not in modalities:
        raise CwdmError(f"target {target} is not one of the modalities {list(modalities)}")
    return loaded, target, tuple(modalities)


def check_output_dir(output_dir: Path, data_dir: Path, in_place_ok: bool = False) -> None:
    """Refuse an output folder that would put results in place of, or among, the input files.

    ``in_place_ok`` accepts the input folder itself (``cwdm auto`` only adds missing files).
    """
    out, data = Path(output_dir).resolve(), Path(data_dir).resolve()
    if out == data and in_place_ok:
        return
    if out == data or data in out.parents:
        raise CwdmError(f"--output_dir {output_dir} is (inside) the input folder {data_dir}: results would "
                        f"replace or mix with the input scans; choose another folder "
                        f"(cwdm auto completes case folders in place safely)")


def usable_cases(cases, required, divisor: int, report: Callable[[str], None]):
    """Cases whose files pass validation; every problem of the others is reported."""
    from .data import validate_cases

    results = validate_cases(cases, required, divisor)
    good = []
    for case in cases:
        problems = results[case.name]
        if problems:
            report(f"skipping {case.name}: " + "; ".join(problems))
        else:
            good.append(case)
    return good


def synthesize_items(synth: Synthesizer, items: Iterable[Dict], batch_size: int,
                     out_paths: Callable[[Dict], Dict[str, Path]], threshold: Optional[float],
                     postprocess_on: bool, overwrite: bool, bar=None, clock=None,
                     on_case: Optional[Callable[[Dict, Dict[str, Path], float], None]] = None) -> List[str]:
    """Synthesize and write each item of an ``InferenceDataset``; returns the case names written.

    ``out_paths(item)`` gives ``{"volume": path, "std": path, "target": path-or-None}``.
    Items of the same model-grid shape are batched up to ``batch_size``. ``clock``
    (a :class:`cwdm.feedback.RunClock`) times the network calls; ``on_case(item,
    paths, seconds)`` is called after each case is written.
    """
    from .nifti_io import save_nifti_like
    from .preprocess import Grid

    done: List[str] = []

    def flush(batch: List[Dict]) -> None:
        if not batch:
            return
        conds = torch.stack([it["conditions"] for it in batch])
        if clock is not None:
            clock.batch_started(len(batch))

        def callback(i: int, n: int) -> None:
            if bar is not None:
                bar.update(len(batch))
            if clock is not None:
                clock.network_call()

        mean, std = synth(conds, [it["name"] for it in batch], callback)
        written = []
        for k, it in enumerate(batch):
            grid, first = Grid.from_dict(it["grid"]), it["conditions"][0]
            paths = out_paths(it)
            paths["volume"].parent.mkdir(parents=True, exist_ok=True)
            vol = postprocess(mean[k], first, threshold, postprocess_on)
            if std is not None:
                s = postprocess(std[k], first, None, postprocess_on)
                save_nifti_like(grid.to_original(s.numpy()), it["reference"], paths["std"], overwrite=overwrite)
            if paths.get("target") is not None and "target" in it:
                save_nifti_like(grid.to_original(it["target"][0].numpy()), it["reference"], paths["target"],
                                overwrite=overwrite)
            save_nifti_like(grid.to_original(vol.numpy()), it["reference"], paths["volume"], overwrite=overwrite)
            done.append(it["name"])
            written.append((it, paths))
        seconds = clock.batch_seconds() if clock is not None else 0.0
        for it, paths in written:
            if on_case is not None:
                on_case(it, paths, seconds)
        batch.clear()

    pending: List[Dict] = []
    for item in items:
        if pending and (len(pending) >= batch_size or pending[0]["conditions"].shape != item["conditions"].shape):
            flush(pending)
        pending.append(item)
    flush(pending)
    return done


def progress_bar(total: int, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, unit="call", desc=desc, dynamic_ncols=True)


def items_of(dataset, num_workers: int):
    from torch.utils.data import DataLoader

    return DataLoader(dataset, batch_size=None, shuffle=False, num_workers=num_workers)


def model_grid(case, modality: str, divisor: int) -> Tuple[int, ...]:
    """The network grid of one case (from its header)."""
    from .nifti_io import load_header
    from .preprocess import grid_for

    return grid_for(load_header(case.files[modality])[0], divisor).model


def announce(say, device: torch.device, channels: int, grid, calls_per_case: int, cases: int) -> None:
    """The device, once, and a warning before a released-size run on a CPU."""
    from .feedback import cpu_sampling_warning, device_line

    say(device_line(device))
    warning = cpu_sampling_warning(device, channels, grid, calls_per_case, cases) if grid else None
    if warning:
        say(warning)


def sample(cfg: SampleConfig, next_step: bool = False) -> int:
    """Paired-mode synthesis; returns 0 when every usable case was written, 1 otherwise.

    ``next_step``: end the closing line with the command to run next (``cwdm sample`` does).
    """
    from .data import InferenceDataset, conditions_for, discover_cases
    from .feedback import RunClock, write_line
    from .provenance import Provenance, checkpoint_entry, result_settings

    info = dist_from_env()
    device = select_device(cfg.device, info)
    options = cfg.options()
    options.validate()
    check_output_dir(cfg.output_dir, cfg.data_dir)
    loaded, target, modalities = resolve_model(cfg.model_path, cfg.contr, cfg.modalities, cfg, cfg.ema, device)
    conditions = conditions_for(target, modalities)
    synth = Synthesizer(loaded, len(conditions), device, options)
    say = (lambda msg: print(msg, file=sys.stderr)) if info.is_main else (lambda msg: None)
    if cfg.num_samples != 1:
        say("note: --num_samples is accepted for compatibility and has no effect; use --ensemble K")

    all_cases = discover_cases(cfg.data_dir, modalities)
    cases = usable_cases(all_cases, conditions, loaded.config.image_divisor, say)
    bad = len(all_cases) - len(cases)
    out_root = Path(cfg.output_dir)
    settings = result_settings(options, device, target=target, postprocess=cfg.postprocess, threshold=None,
                               ema=cfg.ema)
    record = Provenance(out_root, "sample", settings, {target: checkpoint_entry(cfg.model_path, loaded)},
                        device, info.rank)
    record.check(redo=cfg.overwrite, continue_anyway=cfg.continue_anyway,
                 redo_hint="--overwrite to redo every case", say=say)

    def out_paths(case_name: str, prefix: str) -> Dict[str, Path]:
        folder = out_root / case_name
        return {"volume": folder / f"{prefix}-{target}.nii.gz", "std": folder / f"{prefix}-{target}_std.nii.gz",
                "target": folder / f"{prefix}-{target}_target.nii.gz" if cfg.save_target else None}

    # split before looking at outputs: other ranks may already be writing theirs
    cases = cases[info.rank::info.world_size]
    mine = [c for c in cases if cfg.overwrite or not out_paths(c.name, c.prefix)["volume"].exists()]
    skipped = len(cases) - len(mine)
    share = f" (rank {info.rank} of {info.world_size})" if info.enabled else ""
    grid = model_grid(mine[0], conditions[0], loaded.config.image_divisor) if mine else None
    announce(say, device, loaded.config.model_channels, grid, options.calls_per_case, len(mine))
    say(f"cwdm sample: {target} from {conditions} with {options.sampler} "
        f"({options.calls_per_case} network calls per case, {options.precision}) on {device}{share}: {len(mine)} cases to do, "
        f"{skipped} already done, {bad} unusable")
    done: List[str] = []
    if mine:
        dataset = InferenceDataset(mine, target, modalities, loaded.config.image_divisor, check="none")
        bar = progress_bar(len(mine) * options.calls_per_case, cfg.progress and info.is_main, f"sample {target}")
        clock = RunClock(len(mine), options.calls_per_case, write_line if info.is_main else (lambda msg: None))
        with bar, record.session():
            done = synthesize_items(synth, items_of(dataset, cfg.num_workers), cfg.batch_size,
                                    lambda it: out_paths(it["name"], it["prefix"]), None, cfg.postprocess,
                                    cfg.overwrite, bar, clock,
                                    lambda it, paths, sec: record.case_done(paths["volume"], target, sec))
    status = 0 if bad == 0 else 1
    after = ""
    if next_step:
        after = (f"; next: cwdm evaluate --pred_dir {quote(str(out_root))} --ref_dir {quote(str(cfg.data_dir))}" if status == 0 else
                 "; fix or remove the unusable cases above, then rerun the same command (done cases are skipped)")
    say(f"wrote {len(done)} cases to {out_root}{share}; {skipped} skipped (already done), {bad} unusable{after}")
    return status


def run(cfg: SampleConfig) -> int:
    return sample(cfg, next_step=True)

"""Command lines of the reference implementation's scripts, translated to ``cwdm`` commands.

``scripts/train.py``, ``scripts/sample.py`` and ``scripts/sample_auto.py`` are
thin shims over :func:`translate`, so commands written for the reference
(``python scripts/train.py --dims=3 --num_channels=64 ...``) keep working:

* flags that cwdm understands under the same name pass through;
* flags that fix what the released models are (``--dims=3``,
  ``--predict_xstart=True``, ...) are checked: the released value is accepted,
  any other value is refused with one line, since cwdm implements only that;
* flags with no meaning here (``--dataset``, ``--devices``, ...) are dropped
  with a note;
* ``--use_ddim=True`` selects ``--sampler ddim``; ``--sampling_steps=0`` means
  the default 1000 ddpm steps, as in the reference.
* training: ``--resume_step N`` (the step count of the ``--resume_checkpoint``
  state_dict), ``--use_tensorboard True/False`` and ``--tensorboard_path DIR``
  pass through to ``cwdm train`` (same meanings; checkpoints stay in
  ``--run_dir``); ``--schedule_sampler uniform`` is accepted, any other value
  refused (cwdm draws timesteps uniformly).
* ``sample_auto.py`` works like the reference's auto mode: results go into the
  case folders (``--output_dir`` is ignored with a note), and ``--model_path``
  names the folder holding one checkpoint per contrast (``--models_dir``).
"""

from __future__ import annotations

import sys
from typing import List, Optional, Tuple

from pathlib import Path

from ..cli import main as cwdm_main
from ..errors import CwdmError

FIXED = {"dims": "3", "learn_sigma": "false", "predict_xstart": "true", "noise_schedule": "linear",
         "diffusion_steps": "1000", "use_scale_shift_norm": "false", "resample_2d": "false",
         "bottleneck_attention": "false", "use_freq": "false", "out_channels": "8", "class_cond": "false",
         "rescale_timesteps": "false", "rescale_learned_sigmas": "false", "attention_resolutions": "",
         "model": "unet"}
IGNORED = {"dataset", "num_heads", "devices", "renormalize", "image_size", "mode", "use_fp16",
           "in_channels", "sample_schedule", "microbatch", "fp16_scale_growth", "data_mode",
           "half_res_crop", "concat_coords", "gpu", "dropout", "num_head_channels",
           "use_new_attention_order", "resblock_updown", "special_checkpoint"}
_TRUE = {"true", "1", "yes"}


def _split(argv: List[str]) -> List[Tuple[str, Optional[str]]]:
    """``--key=value`` / ``--key value`` / ``--flag`` tokens as (key, value-or-None) pairs."""
    pairs, i = [], 0
    while i < len(argv):
        token = argv[i]
        if not token.startswith("--"):
            pairs.append(("", token))
            i += 1
            continue
        key, eq, value = token[2:].partition("=")
        if not eq:
            if i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                value, i = argv[i + 1], i + 1
            else:
                value = None
        pairs.append((key.replace("-", "_"), value))
        i += 1
    return pairs


def translate(command: str, argv: List[str], note=print) -> List[str]:
    """The ``cwdm`` argument list for a reference-style command line."""
    out = [command]
    for key, value in _split(argv):
        if not key:
            out.append(value)
            continue
        low = (value or "").strip().lower()
        if key in FIXED:
            if low != FIXED[key]:
                raise CwdmError(f"--{key}={value} is not supported: cwdm implements the released model "
                                f"(--{key}={FIXED[key] or '<empty>'})")
            continue
        if key in IGNORED:
            note(f"note: --{key} has no effect in cwdm and is ignored")
            continue
        if key == "schedule_sampler":
            if low != "uniform":
                raise CwdmError(f"--schedule_sampler {value} is not supported: cwdm draws timesteps uniformly "
                                f"(--schedule_sampler uniform)")
            continue
        if key == "tensorboard_path" and not value:
            continue  # reference: empty = the default log folder
        if key == "tensorboard_path" and command == "train":
            note(f"note: --tensorboard_path {value}: TensorBoard logs go there; checkpoints go to --run_dir "
                 f"(default runs/<contr>), not into that folder as in the reference")
        if key == "contr" and command == "auto":
            note("note: --contr is not needed by cwdm auto (each case's missing modality is detected)")
            continue
        if command == "auto" and key in ("model_path", "output_dir"):
            out += _auto_path_flag(key, value, note)
            continue
        if key == "use_ddim":
            if low in _TRUE:
                out += ["--sampler", "ddim"]
            continue
        if key == "sampling_steps" and low in {"0", ""}:
            continue  # reference: 0 means the full 1000-step schedule
        out.append(f"--{key}" if value is None else f"--{key}={value}")
    return out


def _auto_path_flag(key: str, value: Optional[str], note) -> List[str]:
    """``sample_auto.py``'s ``--model_path`` (a folder of checkpoints) and ``--output_dir`` (ignored)."""
    if key == "output_dir":
        note(f"note: --output_dir {value} is ignored: as in the reference's auto mode, each synthesized "
             f"modality is written into its case folder")
        return []
    path = Path(value or "")
    if path.is_dir():
        return [f"--models_dir={path}"]
    if path.is_file():
        raise CwdmError(f"--model_path {path} is one checkpoint, but auto mode completes each case's missing "
                        f"contrast and needs one checkpoint per contrast: pass the folder holding them "
                        f"(t1_gen.pt, t1ce_gen.pt, t2_gen.pt, flair_gen.pt or brats_<contrast>_*.pt) as "
                        f"--model_path, or run `cwdm auto --model_t1n A --model_t1c B --model_t2w C --model_t2f D`")
    raise CwdmError(f"--model_path {path}: no such folder (auto mode needs the folder holding one checkpoint "
                    f"per contrast)")


def main(command: str, argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = translate(command, argv, note=lambda m: print(m, file=sys.stderr))
    except CwdmError as exc:
        print(f"cwdm {command}: error: {exc}", file=sys.stderr)
        return 2
    return cwdm_main(args)

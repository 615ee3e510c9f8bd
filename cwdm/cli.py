"""``cwdm`` command-line front end.

Each sub-command lives in its own module, which exposes a dataclass config
``CONFIG``, a function ``run(cfg) -> int`` (the exit status), an optional
``ALIASES`` dict (extra flag spellings, e.g. the reference's names) and a
one-line ``HELP``. Only the module of the chosen command is imported, so
``cwdm phantom`` does not pay for importing the network code.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

from . import __version__
from .config import add_arguments, from_args, given_fields
from .errors import CwdmError

COMMANDS = {
    "train": ("cwdm.train", "train a conditional wavelet diffusion model for one target contrast"),
    "sample": ("cwdm.sample", "synthesize the target contrast of every case of a folder (paired mode)"),
    "auto": ("cwdm.auto", "complete case folders that miss one modality (BraSyn use)"),
    "export": ("cwdm.export", "write a bare state_dict in the released format from a training checkpoint"),
    "evaluate": ("cwdm.evaluate", "SSIM / PSNR / MSE of synthesized volumes against references"),
    "dropout": ("cwdm.dropout", "build a pseudo-validation set by dropping one modality per case"),
    "phantom": ("cwdm.phantom", "generate BraTS-like phantom cases from the ICBM152 templates"),
    "check": ("cwdm.check", "validate a data folder and report every bad case"),
    "demo": ("cwdm.demo", "phantom data -> small model -> synthesis -> evaluation report, on CPU"),
}


def build_parser(command: str) -> tuple[argparse.ArgumentParser, object]:
    """Parser for one sub-command and the imported command module."""
    module_name, help_text = COMMANDS[command]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"cwdm {command}", description=getattr(module, "HELP", help_text))
    add_arguments(parser, module.CONFIG, getattr(module, "ALIASES", None))
    return parser, module


def _top_usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: cwdm <command> [flags]   (cwdm <command> --help for its flags)", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {help_text}" for name, (_, help_text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(_top_usage())
        return 0 if argv else 2
    if argv[0] in {"--version", "-V"}:
        print(f"cwdm {__version__}")
        return 0
    command = argv[0]
    if command not in COMMANDS:
        print(f"cwdm: error: unknown command {command!r}\n{_top_usage()}", file=sys.stderr)
        return 2
    parser, module = build_parser(command)
    args = parser.parse_args(argv[1:])
    try:
        cfg = from_args(module.CONFIG, args)
        # which flags the user typed (commands that resume from a stored config need to know)
        object.__setattr__(cfg, "_given", given_fields(args, module.CONFIG))
        status = module.run(cfg)
    except CwdmError as exc:
        print(f"cwdm {command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"cwdm {command}: interrupted", file=sys.stderr)
        return 130
    return int(status or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

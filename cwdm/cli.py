"""``cwdm`` command-line front end.

Each sub-command lives in its own module, which declares everything about it:
a dataclass config ``CONFIG``, a function ``run(cfg) -> int`` (the exit
status), a one-line ``HELP``, an optional ``ALIASES`` dict (extra flag
spellings, e.g. the reference's names) and ``DESTINATIONS``, what it writes
(``(config field, "dir" or "file"[, the alias messages name it by])``). This
module only reads them. Only the module of the chosen command is imported, so
``cwdm phantom`` does not pay for importing the network code (``cwdm --help``
imports them all to list their ``HELP``).

Flags are matched exactly (no abbreviations); ``--data-dir`` is read as
``--data_dir``; an unknown flag is one line with the nearest known one; every
output destination is checked (:func:`cwdm.writes.check_destination`)
before the command starts.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import shlex
import sys
from dataclasses import fields
from typing import List, Optional

from . import __version__
from .config import add_arguments, from_args
from .errors import CwdmError
from .writes import check_destination
from .openmp import configure as configure_openmp

COMMANDS = {
    "train": "cwdm.commands.train",
    "sample": "cwdm.commands.sample",
    "auto": "cwdm.commands.auto",
    "export": "cwdm.commands.export",
    "distill": "cwdm.commands.distill",
    "evaluate": "cwdm.commands.evaluate",
    "dropout": "cwdm.commands.dropout",
    "phantom": "cwdm.commands.phantom",
    "inpaint-data": "cwdm.commands.inpaint_data",
    "check": "cwdm.commands.check",
    "demo": "cwdm.commands.demo",
}
"""Command name -> its module; everything else about a command (help, aliases, outputs) is the module's."""


class UsageError(Exception):
    """A command line argparse cannot read (printed as one line, exit status 2)."""


class CommandParser(argparse.ArgumentParser):
    """``argparse`` without prefix matching whose errors are one line, not a usage dump."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(message)


def build_parser(command: str) -> tuple[argparse.ArgumentParser, object]:
    """Parser for one sub-command and the imported command module."""
    module = importlib.import_module(COMMANDS[command])
    parser = CommandParser(prog=f"cwdm {command}", description=module.HELP)
    add_arguments(parser, module.CONFIG, getattr(module, "ALIASES", None))
    return parser, module


def _flag_names(parser: argparse.ArgumentParser) -> List[str]:
    return [s for a in parser._actions for s in a.option_strings if s.startswith("--")]


def normalize_flags(argv: List[str], known: List[str]) -> List[str]:
    """``--data-dir`` -> ``--data_dir`` (and ``--no-x-y`` -> ``--no-x_y``) when only the latter is a flag."""
    known_set, out = set(known), []
    for token in argv:
        key, eq, value = token.partition("=")
        if token.startswith("--") and len(key) > 2 and key not in known_set:
            plain = "--" + key[2:].replace("-", "_")
            for candidate in (plain, "--no-" + plain[5:] if plain.startswith("--no_") else plain):
                if candidate in known_set:
                    token = candidate + eq + value
                    break
        out.append(token)
    return out


def unknown_flag_message(extras: List[str], known: List[str]) -> str:
    """One line for arguments argparse did not take: the first unknown flag and the nearest known one."""
    flags = [t.partition("=")[0] for t in extras if t.startswith("-") and t != "-"]
    if not flags:
        return f"unexpected argument {extras[0]!r}"
    shown = [k for k in known if not k.startswith("--no-")]
    close = difflib.get_close_matches(flags[0], shown, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]}?" if close else ""
    more = f" (and {len(flags) - 1} more)" if len(flags) > 1 else ""
    return f"unknown flag {flags[0]}{more}{hint}"


def destination_flag(config: type, name: str, alias: Optional[str] = None) -> str:
    """How messages name the output field ``name`` of ``config``: ``OUT`` for a positional argument,
    else ``--<alias>`` or ``--<name>``."""
    by_name = {f.name: f for f in fields(config)}
    if by_name[name].metadata.get("positional"):
        return name.upper()
    return f"--{alias or name}"


def check_destinations(module, cfg) -> None:
    """Refuse (one line, before any work) every output the command ``module`` declares
    (``DESTINATIONS``) that cannot be written."""
    for name, kind, *alias in getattr(module, "DESTINATIONS", ()):
        value = getattr(cfg, name, None)
        if value is not None:
            check_destination(value, destination_flag(module.CONFIG, name, *alias), kind,
                              overwrite=bool(getattr(cfg, "overwrite", True)))


def unknown_command_message(command: str) -> str:
    """One line for a command that does not exist, with the nearest one (``did you mean sample?``)."""
    close = difflib.get_close_matches(command, list(COMMANDS), n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]}?" if close else f" (commands: {', '.join(COMMANDS)})"
    return f"cwdm: error: unknown command {command!r}{hint}"


def _top_usage() -> str:
    """The commands and each one's ``HELP`` (imports every command module)."""
    width = max(map(len, COMMANDS))
    lines = ["usage: cwdm <command> [flags]   (cwdm <command> --help for its flags)", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {importlib.import_module(module).HELP}" for name, module in COMMANDS.items()]
    return "\n".join(lines)


def interrupt_hint(command: str, args: List[str], cfg) -> str:
    """How to go on after Ctrl-C: continue a training run, or rerun a synthesis (done cases are skipped)."""
    if command == "train" and cfg is not None:
        from .training.resume import resume_command

        try:
            run_dir = cfg.run_folder()
        except CwdmError:
            return ""
        return f"; continue from the last saved checkpoint with: {resume_command(run_dir)}"
    if command == "distill" and cfg is not None:
        from .commands.distill import resume_command as distill_resume

        try:
            return f"; continue from the last saved checkpoint with: {distill_resume(cfg.run_folder())}"
        except CwdmError:
            return ""
    if command == "demo":
        again = " ".join(["cwdm", command, *map(shlex.quote, args)])
        return f"; finished parts are kept, training resumes from its last checkpoint; continue with: {again}"
    if command in ("sample", "auto"):
        again = " ".join(["cwdm", command, *map(shlex.quote, args)])
        return f"; to continue, rerun the same command (cases already written are skipped): {again}"
    return ""


def main(argv: Optional[List[str]] = None) -> int:
    configure_openmp()  # before any command module imports torch (cwdm.openmp says why)
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(_top_usage())
        return 0 if argv else 2
    if argv[0] in {"--version", "-V"}:
        print(f"cwdm {__version__}")
        return 0
    command = argv[0]
    if command not in COMMANDS:
        print(unknown_command_message(command), file=sys.stderr)
        return 2
    parser, module = build_parser(command)
    known = _flag_names(parser)
    try:
        args, extras = parser.parse_known_args(normalize_flags(argv[1:], known))
        if extras:
            raise UsageError(unknown_flag_message(extras, known))
    except UsageError as exc:
        print(f"cwdm {command}: error: {exc} (cwdm {command} --help lists the flags)", file=sys.stderr)
        return 2
    cfg = None
    try:
        cfg = from_args(module.CONFIG, args)  # fills a config's given_field with the flags typed
        check_destinations(module, cfg)
        status = module.run(cfg)
    except CwdmError as exc:
        print(f"cwdm {command}: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # last resort (full disk, read-only place...): one line, no traceback
        names = " -> ".join(str(n) for n in (exc.filename, exc.filename2) if n is not None)  # a copy: src -> dst
        where = f"{names}: " if names else ""
        print(f"cwdm {command}: error: {where}{' '.join(str(exc.strerror or exc).split())}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"cwdm {command}: interrupted{interrupt_hint(command, argv[1:], cfg)}", file=sys.stderr)
        return 130
    return int(status or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""Typed dataclass configs turned into command-line flags and back.

Every command has one ``@dataclass`` config. :func:`add_arguments` turns its
fields into ``argparse`` flags (``--field_name``), :func:`from_args` builds the
config from parsed flags, and :func:`to_dict` / :func:`from_dict` store it in
checkpoints and ``config.json`` files.

Flag conventions (compatible with the reference implementation's scripts):

* ``bool`` fields accept ``--flag``, ``--flag=True``/``--flag=False`` and
  ``--no-flag``.
* ``list``/``tuple`` fields take several values (``--channel_mult 1 2 2 4 4``);
  a single comma-separated value (``--channel_mult=1,2,2,4,4``, the
  reference's spelling) is also understood. Fields with metadata
  ``repeatable`` keep commas and collect the values of every occurrence.
* ``Optional[X]`` fields accept ``none`` for ``None``.
* Unknown flags are errors (argparse's default ``parse_args``).
* A field declared with :func:`given_field` is no flag and is not stored:
  :func:`from_args` fills it with the names of the fields whose flags were
  typed (what a command that resumes from stored settings needs to know).
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from pathlib import Path
from typing import Any, Dict, FrozenSet, Optional, Type, TypeVar

T = TypeVar("T")

_TRUE = {"1", "true", "yes", "y", "on", "t"}
_FALSE = {"0", "false", "no", "n", "off", "f"}


def str2bool(text: str) -> bool:
    """Parse ``True``/``False``-like strings; raise ``ArgumentTypeError`` otherwise."""
    if isinstance(text, bool):
        return text
    low = str(text).strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (true/false), got {text!r}")


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin is typing.Union or (hasattr(__import__("types"), "UnionType")
                                  and origin is getattr(__import__("types"), "UnionType")):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _scalar_parser(tp: Any, optional: bool):
    def parse(text: str):
        if optional and str(text).strip().lower() in {"none", "null", ""}:
            return None
        if tp is bool:
            return str2bool(text)
        if tp is Path:
            return Path(text)
        return tp(text)

    parse.__name__ = getattr(tp, "__name__", "value")
    return parse


class _ListAction(argparse.Action):
    """Collect several values; split a single comma-separated value as well.

    A ``repeatable`` flag instead keeps commas and adds the values of every
    occurrence (``--model t1n=a.pt --model t2f=b.pt``).
    """

    def __init__(self, *args, elem_parser=None, repeatable=False, **kwargs):
        self.elem_parser = elem_parser
        self.repeatable = repeatable
        super().__init__(*args, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        items = []
        for v in values:
            parts = [str(v)] if self.repeatable else str(v).split(",")
            items.extend(p for p in parts if p.strip() != "")
        before = list(getattr(namespace, self.dest, [])) if self.repeatable else []
        try:
            setattr(namespace, self.dest, before + [self.elem_parser(p.strip()) for p in items])
        except (TypeError, ValueError) as exc:
            raise argparse.ArgumentError(self, f"invalid value in {values!r}: {exc}")


def add_arguments(parser: argparse.ArgumentParser, cls: Type[Any],
                  aliases: Dict[str, list] | None = None) -> None:
    """Add one flag per field of dataclass ``cls`` to ``parser``.

    Field metadata ``help`` is used as help text. ``aliases`` maps a field name
    to extra flag spellings (e.g. the reference's ``--num_channels``).
    """
    hints = typing.get_type_hints(cls)
    aliases = aliases or {}
    for f in dataclasses.fields(cls):
        if not f.init or f.metadata.get("cli") is False:
            continue
        tp, optional = _unwrap_optional(hints[f.name])
        default = _field_default(f)
        help_text = f.metadata.get("help", "")
        if default is dataclasses.MISSING or (default is None and f.metadata.get("positional")):
            shown = None
        else:
            shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else default
        if shown is not None:
            help_text = f"{help_text} (default: {shown})" if help_text else f"default: {shown}"
        names = [f"--{f.name}"] + [f"--{a}" for a in aliases.get(f.name, [])]
        positional = f.metadata.get("positional", False)
        origin = typing.get_origin(tp)
        if positional:
            parser.add_argument(f.name, type=_scalar_parser(tp, optional), help=help_text,
                                nargs="?" if default is not dataclasses.MISSING else None,
                                default=None if default is dataclasses.MISSING else default)
        elif origin in (list, tuple) or tp in (list, tuple):
            elem = (typing.get_args(tp) or (str,))[0]
            parser.add_argument(*names, dest=f.name, nargs="+", action=_ListAction,
                                elem_parser=_scalar_parser(elem, False),
                                repeatable=bool(f.metadata.get("repeatable")),
                                default=argparse.SUPPRESS, help=help_text,
                                metavar=getattr(elem, "__name__", "V").upper())
        elif tp is bool:
            parser.add_argument(*names, dest=f.name, nargs="?", const=True, type=str2bool,
                                default=argparse.SUPPRESS, help=help_text, metavar="BOOL")
            parser.add_argument(f"--no-{f.name}", dest=f.name, action="store_false",
                                default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        else:
            choices = f.metadata.get("choices")
            parser.add_argument(*names, dest=f.name, type=_scalar_parser(tp, optional),
                                default=argparse.SUPPRESS, help=help_text, choices=choices,
                                required=default is dataclasses.MISSING)


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return dataclasses.MISSING


def given_field() -> Any:
    """A config field for the flags typed on the command line: a frozenset of field names, or None
    (not built from a command line). Not a flag, not stored by :func:`to_dict`, not compared;
    :func:`from_args` fills it."""
    return dataclasses.field(default=None, repr=False, compare=False,
                             metadata={"cli": False, "given": True, "stored": False})


def _is_given_field(f: dataclasses.Field) -> bool:
    return bool(f.metadata.get("given"))


def from_args(cls: Type[T], args: argparse.Namespace, base: T | None = None) -> T:
    """Build ``cls`` from parsed flags; fields not given keep ``base``'s or default values.

    A :func:`given_field` of ``cls`` receives :func:`given_fields` (the flags typed).
    """
    hints = typing.get_type_hints(cls)
    given: Dict[str, Any] = {}
    typed: Optional[FrozenSet[str]] = frozenset(given_fields(args, cls))
    for f in dataclasses.fields(cls):
        if _is_given_field(f):
            given[f.name] = typed
        elif hasattr(args, f.name):
            value = getattr(args, f.name)
            tp, _ = _unwrap_optional(hints[f.name])
            if isinstance(value, list) and (typing.get_origin(tp) is tuple or tp is tuple):
                value = tuple(value)
            given[f.name] = value
    if base is not None:
        return dataclasses.replace(base, **given)
    return cls(**given)


def given_fields(args: argparse.Namespace, cls: Type[Any]) -> set[str]:
    """Names of the fields of ``cls`` that were given explicitly on the command line."""
    return {f.name for f in dataclasses.fields(cls) if hasattr(args, f.name) and not _is_given_field(f)}


def to_dict(cfg: Any) -> Dict[str, Any]:
    """JSON-friendly dict of a dataclass config (paths as strings, tuples as lists; no :func:`given_field`)."""
    out = {}
    for f in dataclasses.fields(cfg):
        if f.metadata.get("stored") is False:
            continue
        v = getattr(cfg, f.name)
        if isinstance(v, Path):
            v = str(v)
        elif isinstance(v, tuple):
            v = list(v)
        out[f.name] = v
    return out


def from_dict(cls: Type[T], data: Dict[str, Any], strict: bool = False) -> T:
    """Rebuild ``cls`` from :func:`to_dict` output; unknown keys are an error if ``strict``."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.metadata.get("stored") is not False}
    unknown = set(data) - names
    if strict and unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
    kwargs = {}
    for k, v in data.items():
        if k not in names:
            continue
        tp, _ = _unwrap_optional(hints[k])
        if v is not None and tp is Path:
            v = Path(v)
        elif v is not None and typing.get_origin(tp) is tuple:
            v = tuple(v)
        kwargs[k] = v
    return cls(**kwargs)

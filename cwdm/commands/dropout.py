"""``cwdm dropout SRC DST``: pseudo-validation set with one modality dropped per case.

The dropped modality is chosen exactly as the reference split does it: case
folders sorted by name, ``numpy.random.seed(seed)`` (123456), one draw
``numpy.random.randint(0, 4, size=n)`` indexing the list (t1c, t1n, t2f, t2w)
(the modality names sorted alphabetically). ``RandomState(seed).randint`` is
used, which draws the same numbers without touching numpy's global state.

SRC is never modified. Every other file of a case folder (the seg file and
non-NIfTI files included; hidden files and sub-folders are skipped) is copied
with ``shutil.copy2`` into ``DST/<case>/``; each case folder is assembled
under a temporary name and renamed into place when complete.
``DST/dropped_modalities.csv`` (``case,dropped``) lists the choice.
"""

from __future__ import annotations

import csv
import os
import shutil
import tempfile
from shlex import quote
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

from ..naming import MODALITIES
from ..data.cases import Case, discover_cases
from ..data.validation import check_cases
from ..errors import CwdmError
from ..writes import atomic_write

HELP = "build a pseudo-validation set by dropping one modality per case"
CSV_NAME = "dropped_modalities.csv"
DEFAULT_SEED = 123456


@dataclass
class DropoutConfig:
    src: Path = field(metadata={"positional": True,
                                "help": "complete data folder (one sub-folder per case); never modified"})
    dst: Path = field(metadata={"positional": True,
                                "help": "output folder for the cases with one modality dropped"})
    seed: int = field(default=DEFAULT_SEED, metadata={"help": "numpy seed of the draw (reference: 123456)"})
    overwrite: bool = field(default=False,
                            metadata={"help": "replace case folders that already exist in DST"})
    modalities: List[str] = field(default_factory=lambda: list(MODALITIES),
                                  metadata={"help": "modality names; the draw indexes them sorted"})


CONFIG = DropoutConfig
# what it writes (checked before it starts): (config field, "dir" or "file")
DESTINATIONS = [("dst", "dir")]


def drop_order(modalities: Sequence[str] = MODALITIES) -> List[str]:
    """The list the draw indexes: modality names sorted (t1c, t1n, t2f, t2w)."""
    return sorted(modalities)


def draw_dropped(n: int, seed: int = DEFAULT_SEED, modalities: Sequence[str] = MODALITIES) -> List[str]:
    """Dropped modality of each of ``n`` cases (sorted by name), as the reference draws it."""
    order = drop_order(modalities)
    try:
        idx = np.random.RandomState(seed).randint(0, len(order), size=n)
    except (ValueError, TypeError) as exc:
        raise CwdmError(f"invalid seed {seed!r}: {exc}") from None
    return [order[i] for i in idx]


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _check_paths(src: Path, dst: Path) -> None:
    s, d = src.resolve(), dst.resolve()
    if s == d:
        raise CwdmError(f"{dst}: output folder is the input folder; SRC is never modified, give another DST")
    if _inside(d, s):
        raise CwdmError(f"{dst}: output folder is inside the input folder {src}; SRC is never modified, "
                        f"give a DST outside it")
    if _inside(s, d):
        raise CwdmError(f"{dst}: output folder contains the input folder {src}; give a separate DST")
    if d.exists() and not d.is_dir():
        raise CwdmError(f"{dst}: exists and is not a folder")


def _existing_outputs(dst: Path, cases: Sequence[Case]) -> List[str]:
    """Entries of DST that a run would replace: case folders and the CSV."""
    if not dst.is_dir():
        return []
    names = {c.name for c in cases}
    found = []
    for p in sorted(dst.iterdir()):
        if p.name.startswith("."):
            continue
        if p.name in names or p.name == CSV_NAME:
            found.append(p.name)
        elif p.is_dir() and any(q.name.lower().endswith((".nii", ".nii.gz")) for q in p.iterdir()):
            found.append(p.name)
    return found


def _copy_case(case: Case, dropped: str, dst: Path, mode: int) -> None:
    """Copy ``case`` without ``dropped`` into ``dst/<case.name>``, via a temporary folder."""
    skip = case.files[dropped]
    tmp = Path(tempfile.mkdtemp(dir=str(dst), prefix=f".{case.name}.", suffix=".tmp"))
    try:
        for p in sorted(case.folder.iterdir()):
            if p == skip or p.name.startswith(".") or not p.is_file():
                continue
            shutil.copy2(p, tmp / p.name)
        os.chmod(tmp, mode)
        final = dst / case.name
        old = None
        if final.exists() or final.is_symlink():
            old = Path(tempfile.mkdtemp(dir=str(dst), prefix=f".{case.name}.", suffix=".old"))
            os.replace(final, old / case.name)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def make_dropout_split(src: Path, dst: Path, seed: int = DEFAULT_SEED, overwrite: bool = False,
                       modalities: Sequence[str] = MODALITIES) -> Dict[str, str]:
    """Copy every case of ``src`` into ``dst`` without one modality.

    Returns:
        case name -> dropped modality, in case order (also written to
        ``dst/dropped_modalities.csv``).

    Raises:
        CwdmError: overlapping SRC/DST, an incomplete or inconsistent SRC case
            (all listed), or DST already holding case folders without ``overwrite``.
    """
    src, dst = Path(src), Path(dst)
    _check_paths(src, dst)
    cases = discover_cases(src, modalities)
    check_cases(cases, list(modalities), read_data=False)
    existing = _existing_outputs(dst, cases)
    if existing and not overwrite:
        shown = ", ".join(existing[:5]) + (f", ... ({len(existing)} in all)" if len(existing) > 5 else "")
        raise CwdmError(f"{dst}: already holds {shown}; use --overwrite to replace them")
    dropped = draw_dropped(len(cases), seed, modalities)
    dst.mkdir(parents=True, exist_ok=True)
    umask = os.umask(0)
    os.umask(umask)
    for case, mod in zip(cases, dropped):
        _copy_case(case, mod, dst, 0o777 & ~umask)
    with atomic_write(dst / CSV_NAME, newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["case", "dropped"])
        writer.writerows([c.name, m] for c, m in zip(cases, dropped))
    return {c.name: m for c, m in zip(cases, dropped)}


def run(cfg: DropoutConfig) -> int:
    """Build the split and print a one-line summary; returns 0."""
    result = make_dropout_split(cfg.src, cfg.dst, cfg.seed, cfg.overwrite, cfg.modalities)
    counts = Counter(result.values())
    per = ", ".join(f"{m}: {counts.get(m, 0)}" for m in drop_order(cfg.modalities))
    print(f"dropout: copied {len(result)} cases from {cfg.src} to {cfg.dst}, dropped {per} "
          f"(seed {cfg.seed}); list in {Path(cfg.dst) / CSV_NAME}; next: cwdm auto --data_dir "
          f"{quote(str(cfg.dst))} --models_dir MODELS_DIR")
    return 0

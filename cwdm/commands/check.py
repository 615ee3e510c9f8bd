"""``cwdm check DATA_DIR``: validate a data folder and report every bad case.

Prints one line per case with the modalities present, then each problem of
that case (one line each, naming the file), and a summary. Exit status 1 when
any case is unusable. ``--label_maps seg=1,2,3`` also checks that every voxel
of those label maps is 0 or a declared label (as ``cwdm train`` does for a
task's label-map conditions).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from shlex import quote
from typing import List, Optional

from ..naming import MODALITIES, SEG
from ..data.cases import discover_cases
from ..data.validation import validate_cases
from ..errors import CwdmError
from ..task import parse_labels

HELP = "validate a data folder and report every bad case"


@dataclass
class CheckConfig:
    data_dir: Path = field(metadata={"positional": True,
                                     "help": "folder with one sub-folder per case"})
    modalities: List[str] = field(default_factory=lambda: list(MODALITIES),
                                  metadata={"help": "modality names, in canonical order"})
    require: List[str] = field(default_factory=list,
                               metadata={"help": "modalities every case must have "
                                                 "(e.g. --require t1n t1c t2w t2f)"})
    divisor: Optional[int] = field(default=None,
                                   metadata={"help": "model size divisor to check shapes against "
                                                     "(32 for the released models); none: skip"})
    label_maps: List[str] = field(default_factory=list, metadata={
        "help": "label maps to check, as NAME=L1,L2,... with the declared non-zero labels (e.g. seg=1,2,3): "
                "every voxel must be 0 or one of them; repeatable", "repeatable": True})
    header_only: bool = field(default=False,
                              metadata={"help": "read headers only (skip the voxel checks: "
                                                "corrupt data, NaN/Inf, empty volumes)"})
    workers: int = field(default=1, metadata={"help": "threads reading files"})


CONFIG = CheckConfig
# what it writes (checked before it starts): nothing
DESTINATIONS = []
ALIASES = {"require": ["required"]}


def run(cfg: CheckConfig) -> int:
    """Validate ``cfg.data_dir``; return 0 if every case is usable, else 1."""
    modalities = list(cfg.modalities)
    unknown = [m for m in cfg.require if m not in modalities]
    if unknown:
        raise CwdmError(f"--require names unknown modalities {unknown}; known: {', '.join(modalities)}")
    labels = parse_labels(cfg.label_maps)
    unknown = [m for m in labels if m not in modalities and m != SEG]
    if unknown:
        raise CwdmError(f"--label_maps names unknown modalities {unknown}; known: {', '.join(modalities)}, {SEG}")
    cases = discover_cases(cfg.data_dir, modalities)
    results = validate_cases(cases, cfg.require, cfg.divisor, read_data=not cfg.header_only,
                             workers=max(1, int(cfg.workers)), labels=labels)
    width = max(len(c.name) for c in cases)
    counts = {m: 0 for m in modalities}
    for case in cases:
        problems = results[case.name]
        shown = [m if m in case.files else ("%s(x%d)" % (m, len(case.duplicates[m])) if m in case.duplicates
                                              else "-" * len(m)) for m in modalities]
        for m in case.files:
            counts[m] += 1
        seg = SEG if case.seg is not None else "---"
        status = "OK" if not problems else f"{len(problems)} problem{'s' * (len(problems) != 1)}"
        print(f"{case.name.ljust(width)}  {' '.join(shown)} {seg}  {status}")
        for p in problems:
            print(f"    {p}")
        for p in case.others:
            print(f"    note: ignored {p.name} (no known modality in its name)")
    bad = sum(1 for p in results.values() if p)
    present = ", ".join(f"{m}: {n}" for m, n in counts.items())
    folder = quote(str(cfg.data_dir))
    after = (f"fix or remove the unusable cases, then run cwdm check {folder} again" if bad else
             f"next: cwdm train --data_dir {folder} --contr t2f --run_dir runs/t2f")
    print(f"{len(cases)} cases in {cfg.data_dir}, {bad} unusable ({present} present); {after}")
    return 1 if bad else 0

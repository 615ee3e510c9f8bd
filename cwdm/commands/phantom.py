"""``cwdm phantom OUT --cases N --seed S [--downsample F]``: BraTS-like phantom cases.

Writes ``OUT/<case>/<case>-{t1n,t1c,t2w,t2f,seg}.nii.gz`` with case names
``BraTS-GLI-<index:05d>-000`` for ``index = start .. start+cases-1``. The
volumes are int16 in scanner-like units (seg: uint8 labels 1 necrotic core,
2 edema, 3 enhancing tumour), 240 x 240 x 155 at 1 mm with the BraTS affine
``diag(-1, -1, 1)``, origin ``(0, 239, 0)``, background exactly 0.

``--downsample F`` samples the same model directly on a coarser grid of
``ceil(240/F) x ceil(240/F) x ceil(155/F)`` voxels of F mm (F=2: 120 x 120 x 78,
F=4: 60 x 60 x 39) whose voxel ``(i, j, k)`` covers the full-size voxels
``F*i .. F*i+F-1``: affine ``diag(-F, -F, F)``, origin
``(-(F-1)/2, 239-(F-1)/2, (F-1)/2)``.

Case ``index`` of seed ``S`` is drawn from ``np.random.default_rng([S, index])``:
the same (seed, index, downsample) always gives byte-identical volumes,
whatever ``--cases`` and ``--start`` are. The anatomy is one real brain (the
ICBM152 2009 average, see ``cwdm/templates/icbm152/COPYING``) moved, warped
and given a synthetic tumour: a phantom set is for pipelines, tests, demos and
relative comparisons, never for claims about patients. The model is described
in :mod:`cwdm.phantom.anatomy`.

``--ambiguous`` (or ``--ambiguous True``) adds, per subject, detail that shows in
one contrast only and is drawn from random streams of its own, so that no
contrast is a function of the other three: the tumour rim enhances only in
patches (seg label 3 where it does; the rest of the rim is label 1) and a few
enhancing vessels on t1c, white-matter hyperintensities on t2f, perivascular
spaces on t2w (:mod:`cwdm.phantom.detail`). Everything else is the plain case
of the same seed and index. ``--detail_draws D`` writes each ambiguous subject D
times with independent detail (case names ending ``-000`` .. ``-<D-1>``): training
data that shows several outcomes of one subject's missing contrast.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from shlex import quote

from ..phantom.geometry import grid_shape
from ..phantom.sets import make_phantom_set

HELP = "generate BraTS-like phantom cases (4 contrasts + tumour seg) from the ICBM152 templates"
# the library names are re-exported: they live in cwdm.phantom.sets and cwdm.phantom.anatomy
__all__ = ["PhantomConfig", "CONFIG", "DESTINATIONS", "HELP", "run"]


@dataclass
class PhantomConfig:
    out: Path = field(metadata={"positional": True, "help": "output folder (one sub-folder per case)"})
    cases: int = field(default=5, metadata={"help": "number of cases"})
    seed: int = field(default=0, metadata={"help": "random seed (non-negative); case i uses rng([seed, i])"})
    downsample: int = field(default=1, metadata={
        "help": "integer factor F: grid ceil(240/F) x ceil(240/F) x ceil(155/F) at F mm"})
    start: int = field(default=0, metadata={"help": "index of the first case (names and random streams)"})
    overwrite: bool = field(default=False, metadata={"help": "replace existing case folders of the same names"})
    ambiguous: bool = field(default=False, metadata={
        "help": "add per-subject detail seen in one contrast only (rim enhancement patches and vessels on t1c, "
                "white-matter hyperintensities on t2f, perivascular spaces on t2w)"})
    detail_draws: int = field(default=1, metadata={
        "help": "with --ambiguous: write each subject this many times with independent detail "
                "(names ...-000, ...-001, ...)"})


CONFIG = PhantomConfig
# what it writes (checked before it starts): (config field, "dir" or "file")
DESTINATIONS = [("out", "dir")]


def run(cfg: PhantomConfig) -> int:
    folders = make_phantom_set(cfg.out, cfg.cases, cfg.seed, cfg.downsample, cfg.start,
                               cfg.overwrite, progress=True, ambiguous=cfg.ambiguous,
                               detail_draws=cfg.detail_draws)
    shape = "x".join(map(str, grid_shape(cfg.downsample)))
    kind = "ambiguous phantom" if cfg.ambiguous else "phantom"
    print(f"wrote {len(folders)} {kind} case(s) to {cfg.out} (grid {shape}, "
          f"{cfg.downsample} mm, seed {cfg.seed}); next: cwdm check {quote(str(cfg.out))}")
    return 0

"""How the CPU's OpenMP threads wait between parallel regions, chosen before torch starts them.

PyTorch's CPU build runs its convolutions on OpenMP threads (GNU libgomp on Linux). Between two
parallel regions an idle libgomp thread spins (by default for 300,000 iterations, a few
milliseconds) before it sleeps. On idle cores that saves a wake-up; on cores shared with other work
the spinning threads take the CPU from the thread that holds the work, and the whole run slows down
several-fold (measured: ``benchmarks/shared_cores.py``, README "Measured"). cwdm therefore shortens
the spin to :data:`SPIN_COUNT` iterations. The wait policy changes no number: only when a thread
sleeps, not what it computes (thread count and reduction order stay as they are).

libgomp reads its environment once, when torch loads it, so :func:`configure` must run before the
first ``import torch``: the command-line entry point calls it first thing. A user's own
``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` always wins; ``CWDM_OPENMP=keep`` leaves the environment as
it is. The Python API does not change a notebook's environment (torch is usually loaded already).
"""

from __future__ import annotations

import os
import sys
from typing import MutableMapping, Optional

SPIN_COUNT = 10000
"""libgomp spin iterations before an idle thread sleeps (libgomp's default: 300000; PASSIVE: 0)."""

USER_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
"""Variables that mean the user chose a wait policy; cwdm then sets nothing."""


def configure(environ: Optional[MutableMapping[str, str]] = None, modules=None) -> Optional[str]:
    """Set cwdm's OpenMP wait policy in ``environ`` (default ``os.environ``) if it is still time.

    Returns the ``NAME=value`` set, or ``None`` when nothing was set: the user chose a policy
    (:data:`USER_VARIABLES`), asked cwdm to keep the environment (``CWDM_OPENMP=keep``), or torch
    is already imported (``modules``, default ``sys.modules``), so libgomp has read its settings.
    """
    environ = os.environ if environ is None else environ
    modules = sys.modules if modules is None else modules
    if "torch" in modules or environ.get("CWDM_OPENMP", "").lower() == "keep":
        return None
    if any(name in environ for name in USER_VARIABLES):
        return None
    environ["GOMP_SPINCOUNT"] = str(SPIN_COUNT)
    return f"GOMP_SPINCOUNT={SPIN_COUNT}"

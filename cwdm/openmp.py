"""How the CPU's OpenMP threads wait between parallel regions, chosen before torch starts them.

PyTorch's CPU build runs its convolutions on OpenMP threads (GNU libgomp on Linux). Between two
parallel regions an idle libgomp thread spins (by default for 300,000 iterations, a few
milliseconds) before it sleeps. On idle cores that saves a wake-up. On cores shared with other work
the spinning threads take the CPU from the thread that holds the work, and the whole run slows down
several-fold (measured: ``benchmarks/shared_cores.py``, README "Measured").

So cwdm looks at the cores before torch loads: when other processes keep at least
:data:`BUSY_CORES` of them busy (sampled over :data:`SAMPLE_SECONDS` from ``/proc/stat``), the
threads sleep at once (``OMP_WAIT_POLICY=PASSIVE``); on idle cores libgomp's default stays. The wait
policy changes no number: only when a thread sleeps, not what it computes (the thread count and the
order of every reduction stay as they are). Load that starts after cwdm did is not seen.

libgomp reads its environment once, when torch loads it, so :func:`configure` must run before the
first ``import torch``: the command-line entry point calls it first thing. A user's own
``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` always wins; ``CWDM_OPENMP=keep`` leaves the environment as
it is, ``CWDM_OPENMP=passive`` asks for the passive policy whatever the load. The Python API does not
change a notebook's environment (torch is usually loaded already).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Callable, MutableMapping, Optional, Tuple

BUSY_CORES = 0.5
"""Cores kept busy by other processes from which cwdm's threads stop spinning."""

SAMPLE_SECONDS = 0.2
"""How long the load of the cores is sampled before deciding."""

USER_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
"""Variables that mean the user chose a wait policy; cwdm then sets nothing."""


def cpu_times(stat_path: str = "/proc/stat") -> Optional[Tuple[float, float]]:
    """``(busy, total)`` jiffies of all cores since boot (Linux), or None where it cannot be read."""
    try:
        with open(stat_path) as fh:
            fields = fh.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    values = [float(v) for v in fields[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0.0)  # idle + iowait
    return sum(values[:8]) - idle, sum(values[:8])


def busy_cores(seconds: float = SAMPLE_SECONDS, times: Callable[[], Optional[Tuple[float, float]]] = cpu_times,
               cores: Optional[int] = None, sleep: Callable[[float], None] = time.sleep) -> Optional[float]:
    """How many cores other processes kept busy during the next ``seconds`` (None: unknown)."""
    start = times()
    if start is None:
        return None
    sleep(seconds)
    end = times()
    if end is None or end[1] <= start[1]:
        return None
    cores = cores or os.cpu_count() or 1
    return cores * (end[0] - start[0]) / (end[1] - start[1])


def configure(environ: Optional[MutableMapping[str, str]] = None, modules=None,
              load: Callable[[], Optional[float]] = busy_cores) -> Optional[str]:
    """Set the OpenMP wait policy in ``environ`` (default ``os.environ``) for the load of the cores.

    Returns the ``NAME=value`` set, or ``None`` when nothing was set: the cores are idle, the user
    chose a policy (:data:`USER_VARIABLES`, ``CWDM_OPENMP=keep``), or torch is already imported
    (``modules``, default ``sys.modules``), so libgomp has read its settings.
    """
    environ = os.environ if environ is None else environ
    modules = sys.modules if modules is None else modules
    asked = environ.get("CWDM_OPENMP", "").lower()
    if "torch" in modules or asked == "keep" or any(name in environ for name in USER_VARIABLES):
        return None
    if asked != "passive":
        busy = load()
        if busy is None or busy < BUSY_CORES:
            return None
    environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return "OMP_WAIT_POLICY=PASSIVE"

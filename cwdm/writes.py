"""How cwdm's writes fail, and what a killed write leaves behind.

* :func:`write_failure`: the one-line :class:`~cwdm.errors.CwdmError` of a
  write the file system refused (full disk, quota, read-only file system, no
  permission, I/O error), naming the destination, the cause and what to do.
* :func:`make_folder`: ``mkdir -p`` whose refusal is such a line.
* :func:`virtual_root`: ``/proc`` or ``/sys`` when a destination lies in the
  kernel's virtual file systems (refused by
  :func:`cwdm.data.nifti_io.check_destination`).
* :func:`temp_name` names the temporary file of an atomic write
  ``.cwdm-tmp-<pid>-<final name>.<random>.tmp<suffix>``;
  :func:`remove_stale_temporaries` removes, with one line, those a killed
  process left (its process is gone and the file is older than this process).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional, Union

from .errors import CwdmError

__all__ = ["TEMP_PREFIX", "write_failure", "is_write_error", "make_folder", "virtual_root", "temp_name",
           "remove_stale_temporaries"]

PathLike = Union[str, "os.PathLike[str]"]

TEMP_PREFIX = ".cwdm-tmp-"
"""How the name of every temporary file of an atomic write starts (then ``<pid>-<final name>.``)."""

_TEMP_RE = re.compile(r"^\.cwdm-tmp-(\d+)-.+\.tmp(\.[A-Za-z0-9.]+)?$")
# the temporaries of cwdm versions before TEMP_PREFIX: ".<name>.<8 random>.tmp<suffix>" (judged by age alone)
_LEGACY_TEMP_RE = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp(\.nii\.gz|\.tar\.gz|\.[A-Za-z0-9]+)?$")

_PROCESS_START = time.time()  # the module is imported when a command starts
_LOOKED_AT: set = set()  # folders this process already searched for stale temporaries

_HINTS = {errno.ENOSPC: "free some space or choose another destination",
          errno.EDQUOT: "free some space or choose another destination",
          errno.EROFS: "choose a writable destination",
          errno.EACCES: "choose a writable destination or fix its permissions",
          errno.EPERM: "choose a writable destination or fix its permissions"}


def _cause(code: Optional[int], exc: BaseException) -> str:
    if code:
        return os.strerror(code) + (f"; {_HINTS[code]}" if code in _HINTS else "")
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def write_failure(path: PathLike, exc: BaseException) -> CwdmError:
    """The one-line error of a write to ``path`` that failed with ``exc``: an OSError, or the
    RuntimeError of ``torch.save`` given a file name (its zip writer hides the errno; a full disk is
    recognised from the free space left)."""
    code = getattr(exc, "errno", None)
    if code is None and isinstance(exc, RuntimeError):
        with contextlib.suppress(OSError):
            code = errno.ENOSPC if os.statvfs(Path(path).parent).f_bavail == 0 else None
    return CwdmError(f"{path}: cannot write ({_cause(code, exc)}); nothing was written there")


def is_write_error(exc: BaseException, tmp: Path) -> bool:
    """Whether ``exc``, raised while writing the temporary file ``tmp``, is the file system refusing
    the write (not, say, a missing input read along the way)."""
    if isinstance(exc, OSError):
        return exc.errno is not None and exc.filename in (None, str(tmp), tmp)
    return isinstance(exc, RuntimeError) and any(k in str(exc) for k in ("PytorchStreamWriter", "inline_container"))


def make_folder(path: PathLike) -> Path:
    """``mkdir -p path``; a refusal of the file system is a one-line :class:`CwdmError`."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CwdmError(f"{path}: cannot create the folder ({_cause(exc.errno, exc)})") from None
    return path


_VIRTUAL_ROOTS = (Path("/proc"), Path("/sys"))


def virtual_root(path: PathLike) -> Optional[Path]:
    """``/proc`` or ``/sys`` when ``path`` (links resolved) lies in one of them, else None."""
    try:
        real = Path(os.path.realpath(path))
    except (OSError, ValueError):
        return None
    return next((root for root in _VIRTUAL_ROOTS if real == root or root in real.parents), None)


def temp_name(path: Path) -> Path:
    """A fresh, empty temporary file next to ``path`` that keeps its suffix (``.nii.gz`` included, so
    nibabel picks the same format), named after this process (see :data:`TEMP_PREFIX`)."""
    name = path.name
    suffix = next((s for s in (".nii.gz", ".tar.gz") if name.lower().endswith(s)), path.suffix)
    fd, tmp = tempfile.mkstemp(dir=str(path.parent), prefix=f"{TEMP_PREFIX}{os.getpid()}-{name}.",
                               suffix=f".tmp{suffix}")
    os.close(fd)
    return Path(tmp)


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    except (OverflowError, ValueError):  # not a process id at all
        return False
    return True


def _is_stale(entry: os.DirEntry) -> bool:
    """A regular file named as a temporary of an atomic write, older than this process, whose
    process is gone (a legacy name carries no process id: its age decides)."""
    match = _TEMP_RE.match(entry.name)
    if match is None and not _LEGACY_TEMP_RE.match(entry.name):
        return False
    try:
        if not entry.is_file(follow_symlinks=False) or entry.stat(follow_symlinks=False).st_mtime >= _PROCESS_START:
            return False
    except OSError:
        return False
    return match is None or not _process_alive(int(match.group(1)))


def remove_stale_temporaries(folder: PathLike, quiet: bool = False, again: bool = False) -> List[Path]:
    """Remove the temporary files killed atomic writes left in ``folder``; one line on stderr says so.

    Every other file stays, and so does a temporary of a live process or one younger than this
    process. A folder is searched once per process (every atomic write calls this), unless ``again``
    (a command starting, e.g. a training run, in a process that may have run others). Returns the
    removed paths.
    """
    folder = Path(folder)
    key = os.path.abspath(folder)
    if key in _LOOKED_AT and not again:
        return []
    _LOOKED_AT.add(key)
    try:
        with os.scandir(folder) as entries:
            stale = sorted(Path(e.path) for e in entries if _is_stale(e))
    except OSError:
        return []
    removed = []
    for path in stale:
        with contextlib.suppress(OSError):
            path.unlink()
            removed.append(path)
    if removed and not quiet:
        names = ", ".join(p.name for p in removed[:3]) + (f" and {len(removed) - 3} more" if len(removed) > 3 else "")
        print(f"cwdm: removed {len(removed)} temporary file{'s' if len(removed) > 1 else ''} an interrupted "
              f"save left in {folder}: {names}", file=sys.stderr)
    return removed

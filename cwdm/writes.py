"""How cwdm's writes fail, and what a killed write leaves behind.

* :func:`write_failure`: the one-line :class:`~cwdm.errors.CwdmError` of a
  write the file system refused (full disk, quota, read-only file system, no
  permission, I/O error), naming the destination, the cause and what to do.
* :func:`make_folder`: ``mkdir -p`` whose refusal is such a line.
* :func:`atomic_write` / :func:`atomic_path`: every file cwdm writes (NIfTI,
  CSV, JSON, PNG, ``torch.save``) goes through a temporary file next to it that
  is renamed into place when complete: either the old file or the complete new
  one is there, never a half-written file, and no temporary file is left
  behind after an error.
* :func:`check_destination` refuses, in one line and before any work, an
  output folder or file that cannot be written (a file where a folder is
  wanted, a parent that is a file, a read-only place, the kernel's ``/proc``
  or ``/sys``: :func:`virtual_root`).
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
from typing import IO, Iterator, List, Optional, Union

from .errors import CwdmError

__all__ = ["TEMP_PREFIX", "write_failure", "is_write_error", "make_folder", "virtual_root", "temp_name",
           "remove_stale_temporaries", "check_target", "check_destination", "atomic_path", "atomic_write"]

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


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_current_umask()


def check_target(path: Path, overwrite: bool) -> None:
    """Raise a one-line :class:`CwdmError` unless the file ``path`` may be written now (its folder exists)."""
    if not path.parent.is_dir():
        raise CwdmError(f"{path}: folder {path.parent} does not exist")
    if path.is_dir():
        raise CwdmError(f"{path}: is a folder, cannot write a file there")
    if path.exists() and not overwrite:
        raise CwdmError(f"{path}: already exists (use --overwrite to replace it)")


def check_destination(path: PathLike, flag: str, kind: str = "dir", overwrite: bool = True) -> None:
    """Raise a one-line :class:`CwdmError` if ``path`` cannot be written; nothing is created.

    ``kind="dir"``: ``path`` is an output folder; it may be missing if it can
    be created (its nearest existing ancestor is a writable folder).
    ``kind="file"``: ``path`` is an output file; its folder must exist and be
    writable, and an existing file is refused unless ``overwrite``.
    ``flag`` names the option in the message (``--output_dir``).
    """
    path = Path(path)
    if kind not in ("dir", "file"):
        raise ValueError(f"kind must be 'dir' or 'file', got {kind!r}")
    virtual = virtual_root(path)
    if virtual is not None:
        raise CwdmError(f"{flag} {path}: {virtual} is the kernel's virtual file system, not a place for "
                        f"files; choose a folder on a disk")
    if kind == "file":
        if path.is_dir():
            raise CwdmError(f"{flag} {path}: is a folder, expected a file name")
        folder = path.parent
        if not folder.is_dir():
            what = "is not a folder" if folder.exists() else "does not exist"
            raise CwdmError(f"{flag} {path}: {folder} {what}")
        if path.exists() and not overwrite:
            raise CwdmError(f"{flag} {path}: already exists (use --overwrite to replace it)")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise CwdmError(f"{flag} {path}: folder {folder} is not writable")
        return
    if path.exists() or path.is_symlink():
        if not path.is_dir():
            raise CwdmError(f"{flag} {path}: is a file (or a dangling link), not a folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise CwdmError(f"{flag} {path}: folder is not writable")
        return
    ancestor = path.absolute().parent
    while not (ancestor.exists() or ancestor.is_symlink()):
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise CwdmError(f"{flag} {path}: cannot create the folder, {ancestor} is a file")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise CwdmError(f"{flag} {path}: cannot create the folder, {ancestor} is not writable")


@contextlib.contextmanager
def atomic_path(path: PathLike, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path``.

    The temporary name ends with ``path``'s suffix (``x.nii.gz`` -> ``...tmp.nii.gz``)
    so libraries that choose a format by extension behave the same. On any
    exception the temporary file is removed and ``path`` is left untouched; a
    write the file system refuses (full disk, read-only, no permission) becomes
    a one-line :class:`CwdmError` naming ``path`` and the cause
    (:func:`write_failure`). Stale temporaries of killed writes in
    the folder are removed first (:func:`remove_stale_temporaries`).

    Args:
        path: final destination; its folder must exist.
        overwrite: if False and ``path`` exists, raise :class:`CwdmError`
            before writing anything (checked again before the rename).
    """
    final = Path(path)
    check_target(final, overwrite)
    remove_stale_temporaries(final.parent)
    try:
        tmp = temp_name(final)
    except OSError as exc:
        raise write_failure(final, exc) from None
    try:
        yield tmp
        if not overwrite and final.exists():
            raise CwdmError(f"{final}: already exists (use --overwrite to replace it)")
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, final)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, (OSError, RuntimeError)) and is_write_error(exc, tmp):
            raise write_failure(final, exc) from None
        raise


@contextlib.contextmanager
def atomic_write(path: PathLike, mode: str = "w", *, overwrite: bool = True,
                 encoding: Optional[str] = None, newline: Optional[str] = None) -> Iterator[IO]:
    """Open a temporary file for writing; on success it atomically replaces ``path``.

    Example::

        with atomic_write(out / "metrics.csv", newline="") as f:
            csv.writer(f).writerows(rows)
        with atomic_write(out / "model.pt", "wb") as f:
            torch.save(state, f)

    Args:
        path: final destination; its folder must exist.
        mode: ``"w"`` (text, UTF-8 unless ``encoding``) or ``"wb"``.
        overwrite: if False and ``path`` exists, raise :class:`CwdmError`.
    """
    if mode not in ("w", "wb", "wt"):
        raise ValueError(f"atomic_write mode must be 'w' or 'wb', got {mode!r}")
    if "b" not in mode and encoding is None:
        encoding = "utf-8"
    with atomic_path(path, overwrite=overwrite) as tmp:
        with open(tmp, mode, encoding=encoding, newline=newline) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())

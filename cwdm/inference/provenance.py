"""How a folder of synthesized volumes was made: ``cwdm_provenance.json``.

``cwdm sample`` and ``cwdm auto`` keep one record per output folder (for
``cwdm auto`` completing cases in place: in the data folder root). It holds

* ``runs``: one entry per run that wrote results (cwdm version, command line,
  device, start / end time, status (``interrupted`` until the run ends, so a
  killed run or one that could not write its end says so; then ``finished`` or
  ``failed``), the result-determining ``settings`` and
  the ``checkpoints`` used: path, sha256, training step);
* ``cases``: for each written volume (path relative to the record's folder)
  the run that made it, its target and the seconds it took.

The record is rewritten atomically after every case (under a lock on the
folder, so the ranks of ``torchrun`` can share it). Before any work a rerun
compares its settings with those of every run that still owns a result in
the folder and refuses, in one line naming what differs, unless the user
asks to redo everything (``--overwrite``) or to add differently made results
on purpose (``--continue_anyway``).

Paths of the record are relative to its folder as seen through symbolic links
(a linked case folder keeps its name), absolute for a file outside it. Every
synthesized volume also says so in its NIfTI header (``descrip``:
:func:`cwdm.data.nifti_io.synthesis_mark`), so a rerun tells acquired from synthesized files
(:func:`cwdm.data.nifti_io.synthesized_target`) even without a record. A record cwdm did not
write (wrong types, a folder, a FIFO, not JSON) or cannot replace is a
one-line error naming it and how to continue.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import stat
import uuid
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

from .. import __version__
from ..errors import CwdmError
from ..model.samplers import get_sampler, registry_options

RECORD_NAME = "cwdm_provenance.json"
FORMAT, VERSION = "cwdm-provenance", 1
GENERAL_KEYS = ("target", "sampler", "sampling_steps", "ensemble", "seed", "clip_denoised", "postprocess",
                "threshold", "ema", "precision")
"""Settings that change the synthesized volumes, besides the samplers' own options (:func:`result_keys`)."""


def result_keys() -> tuple:
    """Every setting that changes the synthesized volumes (compared on a rerun; checkpoints are compared
    by sha256): :data:`GENERAL_KEYS` with each registered sampler option (e.g. ``eta``) after
    ``sampling_steps``. An option a record lacks (older cwdm, another sampler) reads as None."""
    at = GENERAL_KEYS.index("sampling_steps") + 1
    return (*GENERAL_KEYS[:at], *registry_options(), *GENERAL_KEYS[at:])


MOVE_AWAY = "move it away (cwdm then starts a new one)"
"""How to continue past a record cwdm cannot use (in place, where ``--overwrite`` redoes nothing)."""
REDO_ALL = f"{MOVE_AWAY}, or rerun with --overwrite (redoes every case and starts a new record)"
"""How to continue past such a record in an output folder (the default)."""

try:  # POSIX: serialize the read-modify-write of the record between processes
    import fcntl
except ImportError:  # pragma: no cover - Windows: single process only
    fcntl = None


def now() -> str:
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    """sha256 of a file, read in 4 MiB pieces (released checkpoints are 326 MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_entry(path: Path, loaded) -> Dict[str, Any]:
    """What the record says about one checkpoint (hashed here, once per run)."""
    return {"path": str(Path(path).resolve()), "sha256": sha256_file(Path(path)),
            "step": loaded.meta.get("step"), "kind": loaded.kind,
            "task": loaded.task.to_dict() if loaded.task is not None else None}


def result_settings(options, device, *, target: Optional[str], postprocess: bool,
                    threshold: Optional[float], ema: bool) -> Dict[str, Any]:
    """The result-determining settings (:func:`result_keys`), as they act: unused ones are ``None``.

    (``sampling_steps`` only for samplers that take steps, a sampler option only for the samplers
    that declare it, and every ``--precision`` runs float32 on a CPU.)

    Args:
        options: a :class:`cwdm.inference.synthesis.SamplingOptions`.
    """
    sampler = get_sampler(options.sampler)
    settings = {"target": target, "sampler": options.sampler,
                "sampling_steps": options.steps if sampler.uses_steps else None,
                **{name: None for name in registry_options()}, **options.sampler_settings(),
                "ensemble": options.ensemble, "seed": options.seed, "clip_denoised": options.clip_denoised,
                "postprocess": postprocess, "threshold": threshold if postprocess else None, "ema": ema,
                "precision": options.precision if device.type == "cuda" else "fp32"}
    return {key: settings[key] for key in result_keys()}


def record_path(folder: Path, file: Path) -> str:
    """How the record names ``file``: relative to ``folder`` as seen through symbolic links, else absolute."""
    absolute, base = os.path.abspath(file), os.path.abspath(folder)
    if os.path.commonpath([absolute, base]) == base:
        return Path(os.path.relpath(absolute, base)).as_posix()
    return Path(absolute).as_posix()


def read_record(path: Path, how: str = REDO_ALL) -> Optional[Dict[str, Any]]:
    """The record at ``path`` (None when there is none); one-line error for a damaged one.

    A folder, FIFO or other non-file is refused from its ``stat`` (a FIFO is never opened: that would
    block); ``how`` ends each message: how to continue.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CwdmError(f"{path}: cannot read the provenance record ({exc.strerror or exc}); {how}") from None
    if not stat.S_ISREG(mode):
        kind = ("a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "not a regular file")
        raise CwdmError(f"{path}: the provenance record is {kind}; {how}")
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CwdmError(f"{path}: unreadable provenance record ({type(exc).__name__}: {exc}); {how}") from None
    if not (isinstance(data, dict) and data.get("format") == FORMAT and isinstance(data.get("runs"), dict)
            and isinstance(data.get("cases"), dict)):
        raise CwdmError(f"{path}: not a cwdm provenance record (format {FORMAT!r} with 'runs' and 'cases' "
                        f"expected); {how}")
    if not isinstance(data.get("version"), int) or data["version"] > VERSION:
        raise CwdmError(f"{path}: provenance record version {data.get('version')} is newer than this cwdm "
                        f"understands ({VERSION}); upgrade cwdm")
    wrong = _wrong_types(data)
    if wrong:
        raise CwdmError(f"{path}: not what cwdm wrote ({wrong}); {how}")
    return data


def _wrong_types(data: Dict[str, Any]) -> str:
    """What in a record has a type cwdm never writes ("" when nothing)."""
    for rel, case in data["cases"].items():
        if not (isinstance(case, dict) and isinstance(case.get("run"), str)
                and isinstance(case.get("target"), (str, type(None)))
                and isinstance(case.get("inputs", []), list)):
            return f"cases[{rel!r}] is {json.dumps(case)[:60]}"
    for run_id, run in data["runs"].items():
        if not (isinstance(run, dict) and isinstance(run.get("settings", {}), dict)
                and isinstance(run.get("checkpoints", {}), dict)
                and all(isinstance(c, dict) and all(isinstance(c.get(k, ""), str) for k in ("path", "sha256"))
                        for c in run.get("checkpoints", {}).values())):
            return f"runs[{run_id!r}] is {json.dumps(run)[:60]}"
    return ""


def _show(value: Any) -> str:
    return "none" if value is None else str(value)


def differences(old: Dict[str, Any], new: Dict[str, Any]) -> List[str]:
    """What differs between two runs: settings, and checkpoints of a target both used."""
    out = [f"{k} {_show(old['settings'].get(k))} -> {_show(new['settings'].get(k))}"
           for k in result_keys() if old["settings"].get(k) != new["settings"].get(k)]
    for target in sorted(set(old["checkpoints"]) & set(new["checkpoints"])):
        a, b = old["checkpoints"][target], new["checkpoints"][target]
        if a.get("sha256") != b.get("sha256"):
            out.append(f"checkpoint for {target} {Path(a.get('path', '?')).name} (sha256 {str(a.get('sha256'))[:12]})"
                       f" -> {Path(b['path']).name} (sha256 {b['sha256'][:12]})")
    return out


class Provenance:
    """The record of one output folder, as one run of ``command`` sees and updates it."""

    def __init__(self, folder: Path, command: str, settings: Dict[str, Any],
                 checkpoints: Dict[str, Dict[str, Any]], device, rank: int = 0, how: str = REDO_ALL):
        self.folder, self.path, self.how = Path(folder), Path(folder) / RECORD_NAME, how
        self.run_id = f"{datetime.now().strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.run: Dict[str, Any] = {
            "command": command, "argv": list(sys.argv), "cwdm_version": __version__, "device": str(device),
            "rank": rank, "started": now(), "ended": None, "status": "interrupted",
            "settings": settings, "checkpoints": checkpoints}
        self.mine: Dict[str, Dict[str, Any]] = {}

    # -- before any work ----------------------------------------------------------------------------
    def conflicts(self) -> tuple[int, List[str]]:
        """(results made otherwise, what differs) over the runs that still own a file here."""
        data = read_record(self.path, self.how)
        if data is None:
            return 0, []
        owners: Dict[str, int] = {}
        for rel, case in data["cases"].items():
            if isinstance(case, dict) and (self.folder / rel).exists():
                owners[case.get("run")] = owners.get(case.get("run"), 0) + 1
        count, diffs = 0, []
        for run_id, n in owners.items():
            run = data["runs"].get(run_id)
            if not isinstance(run, dict) or "settings" not in run:
                continue
            found = differences({"settings": run["settings"], "checkpoints": run.get("checkpoints", {})}, self.run)
            if found:
                count += n
                diffs += [d for d in found if d not in diffs]
        return count, diffs

    def check(self, *, redo: bool, continue_anyway: bool, redo_hint: str, say) -> None:
        """Refuse (one line) a run whose settings differ from those of results already in the folder,
        or whose record cannot be written there (a read-only folder, a folder in the record's place)."""
        self.check_writable()
        if redo:
            return
        count, diffs = self.conflicts()
        if not count:
            return
        what = "; ".join(diffs)
        if continue_anyway:
            say(f"note: {count} results in {self.folder} were made with other settings ({what}); continuing "
                f"anyway as asked: {self.path.name} records which run made each file")
            return
        raise CwdmError(f"{self.path}: {count} results there were made with other settings ({what}); "
                        f"rerun with the recorded settings, {redo_hint}, --continue_anyway to add "
                        f"differently made results, or choose another output folder")

    def check_writable(self) -> None:
        """One line, before any work, when the record could not be written: its folder cannot take a new
        file (tried: a temporary file is created and removed), a folder stands in its place, or it is
        immutable."""
        from ..writes import check_destination

        if self.path.is_dir():
            raise CwdmError(f"{self.path}: the provenance record is a folder; move it away")
        if not self.folder.is_dir():
            check_destination(self.folder, "output folder")
            return
        probe_folder(self.folder, "the provenance record's folder")
        try:  # an immutable (or append-only) file cannot be renamed over; a mode of 0444 can
            if stat.S_ISREG(os.stat(self.path).st_mode):  # never opened otherwise: a FIFO would block
                os.close(os.open(self.path, os.O_WRONLY | os.O_APPEND))  # writes nothing
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EROFS):
                return
            raise CwdmError(f"{self.path}: cannot replace the provenance record ({exc.strerror or exc}); "
                            f"{self.how}") from None

    # -- during and after the run ------------------------------------------------------------------
    def case_done(self, output: Path, target: str, seconds: float, inputs: Optional[list] = None) -> None:
        """Record one written volume (rewrites the record); ``inputs``: the acquired modalities it was
        synthesized from."""
        rel = record_path(self.folder, Path(output))
        self.mine[rel] = {"run": self.run_id, "target": target, "seconds": round(float(seconds), 3),
                          "finished": now()}
        if inputs is not None:
            self.mine[rel]["inputs"] = list(inputs)
        self._write()

    def finish(self, status: str = "finished", quiet: bool = False) -> None:
        """End time and status of the run (only when it wrote something); ``quiet``: a failure to write
        it is not raised (the run is failing already: its own error is the one to show)."""
        if self.mine:
            self.run.update(ended=now(), status=status)
            try:
                self._write()
            except (CwdmError, OSError):
                if not quiet:
                    raise

    @contextlib.contextmanager
    def session(self) -> Iterator["Provenance"]:
        """Finish the record whatever happens: ``finished``, or ``interrupted`` / ``failed``."""
        try:
            yield self
        except KeyboardInterrupt:
            self.finish("interrupted", quiet=True)
            raise
        except BaseException:
            self.finish("failed", quiet=True)
            raise
        self.finish("finished")

    def _write(self) -> None:
        self.run["updated"] = now()
        self.run["cases_written"] = len(self.mine)
        try:
            with _locked(self.folder):
                self._merge_and_write()
        except OSError as exc:
            raise CwdmError(f"{self.path}: cannot write the provenance record ({exc.strerror or exc}); free space "
                            f"or make the folder writable, or {self.how}, then rerun") from None

    def _merge_and_write(self) -> None:
        """Merge this run into the record on disk and replace it (under the folder's lock)."""
        from ..writes import atomic_write

        try:
            data = read_record(self.path, self.how)
        except CwdmError:
            data = None  # damaged since the start, or being replaced (--overwrite): start over
        if data is None:
            data = {"format": FORMAT, "version": VERSION, "runs": {}, "cases": {}}
        data["cases"].update(self.mine)
        data["cases"] = {rel: c for rel, c in sorted(data["cases"].items()) if (self.folder / rel).exists()}
        data["runs"][self.run_id] = self.run
        owners = {c.get("run") for c in data["cases"].values() if isinstance(c, dict)}
        data["runs"] = {k: v for k, v in data["runs"].items() if k in owners}
        data["updated"] = now()
        with atomic_write(self.path) as fh:
            json.dump(data, fh, indent=1)


def probe_folder(folder: Path, what: str) -> None:
    """Create and remove a temporary file in ``folder``: a one-line error naming it when that fails
    (read-only file system, no permission, full disk), before any work is done."""
    import tempfile

    try:
        fd, name = tempfile.mkstemp(dir=str(folder), prefix=".cwdm-probe-")
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        raise CwdmError(f"{folder}: cannot write into {what} ({exc.strerror or exc}); make it writable, free "
                        f"space, or write elsewhere (--output_dir)") from None


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    if fcntl is None:
        yield
        return
    fd = os.open(str(folder), os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock

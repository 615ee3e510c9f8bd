"""What killed writes leave behind, and how refused writes read (cwdm.writes)."""

import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cwdm import writes
from cwdm.errors import CwdmError
from cwdm.writes import atomic_write, make_folder, remove_stale_temporaries, temp_name

ROOT = Path(__file__).resolve().parents[1]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _old(path: Path, text: str = "x") -> Path:
    path.write_text(text)
    past = writes._PROCESS_START - 3600  # before this process started, however long the session ran
    os.utime(path, (past, past))
    return path


def test_a_killed_save_leaves_a_temporary_the_next_write_removes(tmp_path, capsys, monkeypatch):
    """A process killed between creating its temporary file and the rename leaves it behind."""
    final = str(tmp_path / "ckpt_00000004.pt")
    code = (f"import os, sys; sys.path.insert(0, {str(ROOT)!r}); from pathlib import Path; "
            f"from cwdm.writes import temp_name; temp_name(Path({final!r})).write_bytes(b'PK'); os._exit(9)")
    subprocess.run([sys.executable, "-c", code], check=False)
    [left] = [p.name for p in tmp_path.iterdir()]
    assert left.startswith(writes.TEMP_PREFIX) and "ckpt_00000004.pt" in left
    monkeypatch.setattr(writes, "_PROCESS_START", time.time() + 1)  # this process starts after the killed one
    keep = _old(tmp_path / ".keep-me.tmp.pt")  # hidden, temporary-looking, not cwdm's
    with atomic_write(tmp_path / "config.json") as fh:
        fh.write("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".keep-me.tmp.pt", "config.json"]
    assert keep.read_text() == "x"
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and left in err[0] and str(tmp_path) in err[0] and "interrupted save" in err[0]


def test_only_stale_temporaries_of_gone_processes_are_removed(tmp_path, capsys):
    dead, mine = _dead_pid(), os.getpid()
    stale = _old(tmp_path / f".cwdm-tmp-{dead}-a-t2f.nii.gz.k2j4h1x9.tmp.nii.gz")
    legacy = _old(tmp_path / ".metrics.csv.ab12cd34.tmp.csv")  # the name cwdm used before the prefix
    live = _old(tmp_path / f".cwdm-tmp-{mine}-b.pt.zzzzzzzz.tmp.pt")  # this process: maybe writing it now
    young = tmp_path / f".cwdm-tmp-{dead}-c.pt.yyyyyyyy.tmp.pt"
    young.write_text("x")
    os.utime(young, (time.time() + 60, time.time() + 60))  # newer than this process
    others = [_old(tmp_path / name) for name in (".hidden", ".cwdm-tmp-notes", "a.tmp", ".x.tmp")]
    (tmp_path / f".cwdm-tmp-{dead}-d.pt.qqqqqqqq.tmp.pt").mkdir()  # a folder is never removed
    removed = remove_stale_temporaries(tmp_path)
    assert sorted(removed) == sorted([stale, legacy])
    assert not stale.exists() and not legacy.exists()
    assert live.exists() and young.exists() and all(p.exists() for p in others)
    assert "removed 2 temporary files" in capsys.readouterr().err
    assert remove_stale_temporaries(tmp_path) == []  # a folder is searched once per process


def test_temporary_names_carry_prefix_process_and_suffix(tmp_path):
    tmp = temp_name(tmp_path / "BraTS-t2f.nii.gz")
    assert tmp.name.startswith(f"{writes.TEMP_PREFIX}{os.getpid()}-BraTS-t2f.nii.gz.")
    assert tmp.name.endswith(".tmp.nii.gz") and writes._TEMP_RE.match(tmp.name)


def test_make_folder_refusal_is_one_line(tmp_path, monkeypatch):
    def refuse(self, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(CwdmError, match=r"run/checkpoints: cannot create the folder \(Read-only file system; "
                                        r"choose a writable destination\)"):
        make_folder(tmp_path / "run" / "checkpoints")

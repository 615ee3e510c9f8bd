"""cwdm_provenance.json: how a folder of results was made; reruns never mix results silently."""

import errno
import hashlib
import json
import os
from pathlib import Path

import pytest
import torch

from cwdm import __version__
from cwdm.cli import main as cli
from cwdm.inference.provenance import RECORD_NAME, Provenance, record_path, sha256_file
from cwdm.task import Task
from test_sample import FAST, make_checkpoint

CASES = ["BraTS-GLI-00000-000", "BraTS-GLI-00001-000"]


def out_file(out, case, target="t2f"):
    return out / case / f"{case}-{target}.nii.gz"


def record(folder):
    return json.loads((folder / RECORD_NAME).read_text())


@pytest.fixture
def setup(make_brats_root, tmp_path):
    data = make_brats_root(cases=2)
    ckpt = make_checkpoint(tmp_path / "t2f.pt")
    out = tmp_path / "out"
    base = ["sample", "--data_dir", str(data), "--model_path", str(ckpt), "--output_dir", str(out), *FAST]
    return data, ckpt, out, base


def test_sample_writes_a_record(setup):
    data, ckpt, out, base = setup
    assert cli(base + ["--seed", "3"]) == 0
    rec = record(out)
    assert rec["format"] == "cwdm-provenance" and set(rec["cases"]) == {f"{c}/{c}-t2f.nii.gz" for c in CASES}
    (run_id, run), = rec["runs"].items()
    assert run["cwdm_version"] == __version__ and run["command"] == "sample" and run["status"] == "finished"
    assert run["device"] == "cpu" and run["started"] and run["ended"]
    assert run["settings"] == {"target": "t2f", "sampler": "ddim", "sampling_steps": 2, "eta": 0.0, "ensemble": 1,
                               "seed": 3, "clip_denoised": True, "postprocess": True, "threshold": None,
                               "ema": True, "precision": "fp32"}
    assert run["checkpoints"]["t2f"] == {"path": str(ckpt.resolve()), "step": 1, "kind": "cwdm",
                                         "sha256": hashlib.sha256(ckpt.read_bytes()).hexdigest(),
                                         "task": Task.default("t2f").to_dict()}
    for case in rec["cases"].values():
        assert case["run"] == run_id and case["target"] == "t2f" and case["seconds"] > 0


def test_rerun_with_other_settings_is_refused_in_one_line(setup, capsys):
    data, ckpt, out, base = setup
    assert cli(base) == 0
    out_file(out, CASES[1]).unlink()  # as if interrupted after the first case
    before = (out / RECORD_NAME).read_bytes()
    capsys.readouterr()
    assert cli(base + ["--sampler", "regression", "--seed", "5"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert RECORD_NAME in err and "1 results there were made with other settings" in err
    assert "sampler ddim -> regression" in err and "seed 0 -> 5" in err and "sampling_steps 2 -> none" in err
    assert "--overwrite" in err and "--continue_anyway" in err
    assert not out_file(out, CASES[1]).exists() and (out / RECORD_NAME).read_bytes() == before
    # the same settings continue where the first run stopped
    assert cli(base) == 0 and out_file(out, CASES[1]).exists()
    assert len(record(out)["runs"]) == 2  # one per run that wrote a result


def test_another_checkpoint_is_a_difference(setup, tmp_path, capsys):
    data, ckpt, out, base = setup
    assert cli(base) == 0
    (tmp_path / "other").mkdir()
    other = make_checkpoint(tmp_path / "other" / "t2f.pt", seed=1)
    capsys.readouterr()
    assert cli(base[:4] + [str(other)] + base[5:]) == 1
    err = capsys.readouterr().err
    assert "checkpoint for t2f t2f.pt (sha256 " in err and "2 results" in err


def test_continue_anyway_and_overwrite(setup, capsys):
    data, ckpt, out, base = setup
    assert cli(base) == 0
    out_file(out, CASES[1]).unlink()
    assert cli(base + ["--seed", "7", "--continue_anyway"]) == 0
    assert "continuing anyway" in capsys.readouterr().err
    rec = record(out)
    seeds = {rec["runs"][c["run"]]["settings"]["seed"] for c in rec["cases"].values()}
    assert seeds == {0, 7}  # the record says which run made which file
    assert cli(base + ["--seed", "9", "--overwrite"]) == 0  # redo everything: one run owns every result
    rec = record(out)
    assert len(rec["runs"]) == 1 and next(iter(rec["runs"].values()))["settings"]["seed"] == 9
    assert cli(base + ["--seed", "9"]) == 0


def test_deleted_results_do_not_count(setup):
    data, ckpt, out, base = setup
    assert cli(base) == 0
    for case in CASES:
        out_file(out, case).unlink()
    assert cli(base + ["--sampler", "regression"]) == 0
    rec = record(out)
    assert [r["settings"]["sampler"] for r in rec["runs"].values()] == ["regression"]


def test_damaged_record_is_a_one_line_error(setup, capsys):
    data, ckpt, out, base = setup
    out.mkdir()
    (out / RECORD_NAME).write_text("{not json")
    assert cli(base) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(out / RECORD_NAME) in err and "unreadable provenance record" in err
    assert (out / RECORD_NAME).read_text() == "{not json" and not (out / CASES[0]).exists()


def test_auto_in_place_keeps_the_record_in_the_data_root(make_brats_root, models, capsys):
    data = make_brats_root(cases=2, missing={CASES[0]: ["t2f"], CASES[1]: ["t1c"]})
    args = ["auto", "--data_dir", str(data), "--models_dir", str(models), *FAST]
    assert cli(args) == 0
    rec = record(data)
    assert set(rec["cases"]) == {f"{CASES[0]}/{CASES[0]}-t2f.nii.gz", f"{CASES[1]}/{CASES[1]}-t1c.nii.gz"}
    (run,) = rec["runs"].values()
    assert set(run["checkpoints"]) == {"t2f", "t1c"} and run["settings"]["threshold"] == 0.04
    # an interrupted run: one case still missing; a rerun with another seed would mix
    (data / CASES[1] / f"{CASES[1]}-t1c.nii.gz").unlink()
    capsys.readouterr()
    assert cli(args + ["--seed", "1", "--overwrite"]) == 1  # in place, --overwrite cannot redo the rest
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "seed 0 -> 1" in err and "delete the synthesized files" in err
    assert not (data / CASES[1] / f"{CASES[1]}-t1c.nii.gz").exists()
    assert cli(args) == 0


def test_sha256_is_streamed_and_interruption_recorded(tmp_path):
    blob = tmp_path / "b.bin"
    blob.write_bytes(bytes(range(256)) * 1000)
    assert sha256_file(blob, chunk=1000) == hashlib.sha256(blob.read_bytes()).hexdigest()
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "x.nii.gz").write_bytes(b"x")
    prov = Provenance(tmp_path, "sample", {"target": "t2f"}, {}, torch.device("cpu"))
    with pytest.raises(KeyboardInterrupt), prov.session():
        prov.case_done(tmp_path / "c" / "x.nii.gz", "t2f", 1.5)
        raise KeyboardInterrupt
    (run,) = record(tmp_path)["runs"].values()
    assert run["status"] == "interrupted" and run["ended"] and record(tmp_path)["cases"]["c/x.nii.gz"]["seconds"] == 1.5


# -- full disks, read-only places, symbolic links and records cwdm did not write -----------------------------
def _last_error(capsys, command):
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "error" in line]
    assert len(lines) == 1 and lines[0].startswith(f"cwdm {command}: error: "), err
    return lines[0]


def _hidden(root):
    return [p for p in Path(root).rglob(".*")]


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES], ids=["ENOSPC", "EROFS", "EACCES"])
def test_sample_write_failure_is_one_line_and_leaves_no_partial_case(setup, monkeypatch, capsys, code):
    import nibabel as nib

    data, ckpt, out, base = setup
    real = nib.save

    def save(img, path):  # the volume of the second case fails after its std map was written
        if f"{CASES[1]}-t2f.nii.gz." in str(path):
            Path(path).write_bytes(b"\x1f\x8b half")
            raise OSError(code, os.strerror(code), str(path))
        return real(img, path)

    monkeypatch.setattr(nib, "save", save)
    assert cli(base + ["--ensemble", "2"]) == 1
    line = _last_error(capsys, "sample")
    assert str(out_file(out, CASES[1])) in line and os.strerror(code) in line and "rerun" in line
    assert not (out / CASES[1]).exists() or not any((out / CASES[1]).iterdir())  # no std map, no temporary file
    assert not _hidden(out) and out_file(out, CASES[0]).is_file()
    (run,) = record(out)["runs"].values()
    assert run["status"] == "failed" and set(record(out)["cases"]) == {f"{CASES[0]}/{CASES[0]}-t2f.nii.gz"}
    monkeypatch.setattr(nib, "save", real)
    assert cli(base + ["--ensemble", "2"]) == 0 and out_file(out, CASES[1]).is_file()


def test_auto_in_place_refuses_a_read_only_case_folder_before_any_network_call(make_brats_root, models,
                                                                                monkeypatch, capsys):
    from cwdm.inference.synthesis import Synthesizer

    data = make_brats_root(cases=2, missing={CASES[0]: ["t2f"], CASES[1]: ["t1c"]})
    read_only, real_open, calls = data / CASES[1], os.open, []

    def open_(path, flags, *args, **kwargs):
        if os.path.dirname(os.fspath(path)) == str(read_only) and flags & os.O_CREAT:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", open_)
    monkeypatch.setattr(Synthesizer, "__call__", lambda self, *a, **k: calls.append(a))
    before = sorted(p.name for p in data.rglob("*"))
    capsys.readouterr()
    assert cli(["auto", "--data_dir", str(data), "--models_dir", str(models), *FAST]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(read_only) in err and "Read-only file system" in err, err
    assert not calls and sorted(p.name for p in data.rglob("*")) == before


def test_auto_record_that_cannot_be_finished_is_one_line_and_never_says_running(make_brats_root, models,
                                                                                 monkeypatch, capsys):
    data = make_brats_root(cases=2, missing={CASES[0]: ["t2f"], CASES[1]: ["t1c"]})
    real, replaced = os.replace, []

    def replace(src, dst):  # the disk fills up before the record's last rewrite (the run's end)
        if str(dst).endswith(RECORD_NAME):
            replaced.append(dst)
            if len(replaced) == 3:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    assert cli(["auto", "--data_dir", str(data), "--models_dir", str(models), *FAST]) == 1
    line = _last_error(capsys, "auto")
    assert str(data / RECORD_NAME) in line and "No space left on device" in line
    (run,) = record(data)["runs"].values()
    assert run["status"] == "interrupted" and not _hidden(data)


def test_auto_in_place_with_symlinked_case_folders(make_brats_root, models, tmp_path):
    store = make_brats_root(root=tmp_path / "store", cases=2, missing={CASES[0]: ["t2f"], CASES[1]: ["t1c"]})
    data = tmp_path / "data"
    data.mkdir()
    for case in CASES:
        (data / case).symlink_to(store / case, target_is_directory=True)
    args = ["auto", "--data_dir", str(data), "--models_dir", str(models), *FAST]
    assert cli(args) == 0
    rec = record(data)
    assert set(rec["cases"]) == {f"{CASES[0]}/{CASES[0]}-t2f.nii.gz", f"{CASES[1]}/{CASES[1]}-t1c.nii.gz"}
    assert (store / CASES[0] / f"{CASES[0]}-t2f.nii.gz").is_file() and (data / CASES[0]).is_symlink()
    assert cli(args) == 0 and record(data) == rec  # the rerun has nothing to do
    assert record_path(data, tmp_path / "elsewhere" / "x.nii.gz") == (tmp_path / "elsewhere" / "x.nii.gz").as_posix()
    assert record_path(data, data / CASES[0] / "x.nii.gz") == f"{CASES[0]}/x.nii.gz"


def test_a_std_map_left_without_its_volume_is_redone(setup):
    data, ckpt, out, base = setup
    assert cli(base + ["--ensemble", "2"]) == 0
    std = out / CASES[1] / f"{CASES[1]}-t2f_std.nii.gz"
    before = std.read_bytes()
    out_file(out, CASES[1]).unlink()  # killed between the std map and the volume
    std.write_bytes(before)
    os.utime(std, (0, 0))
    assert cli(base + ["--ensemble", "2"]) == 0
    assert out_file(out, CASES[1]).is_file() and std.stat().st_mtime > 0 and std.read_bytes() == before


MALFORMED = ["case not an object", "settings not an object", "checkpoint path not a string", "folder", "fifo",
             "not json", "cannot be replaced"]


@pytest.mark.parametrize("kind", MALFORMED)
def test_a_record_cwdm_did_not_write_is_one_line_naming_it(setup, monkeypatch, capsys, kind):
    data, ckpt, out, base = setup
    assert cli(base) == 0
    out_file(out, CASES[1]).unlink()
    path, rec = out / RECORD_NAME, record(out)
    if kind == "case not an object":
        rec["cases"][f"{CASES[0]}/{CASES[0]}-t2f.nii.gz"] = ["t2f"]
        path.write_text(json.dumps(rec))
    elif kind == "checkpoint path not a string":
        next(iter(rec["runs"].values()))["checkpoints"]["t2f"]["path"] = 3
        path.write_text(json.dumps(rec))
    elif kind == "settings not an object":
        next(iter(rec["runs"].values()))["settings"] = ["ddim", 2]
        path.write_text(json.dumps(rec))
    elif kind == "folder":
        path.unlink()
        path.mkdir()
    elif kind == "fifo":
        path.unlink()
        os.mkfifo(path)  # opening it for reading would block: cwdm must not
    elif kind == "not json":
        path.write_text('{"format": "cwdm-provenance", ')
    else:
        real_open = os.open

        def open_(p, flags, *args, **kwargs):  # an immutable file: no write access, even for root
            if os.fspath(p) == str(path) and flags & (os.O_WRONLY | os.O_RDWR):
                raise PermissionError(errno.EPERM, os.strerror(errno.EPERM), p)
            return real_open(p, flags, *args, **kwargs)

        monkeypatch.setattr(os, "open", open_)
    capsys.readouterr()
    assert cli(base) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err and "move it away" in err, err
    assert not out_file(out, CASES[1]).exists()
    if kind not in ("folder", "cannot be replaced"):  # --overwrite starts a new record
        assert "--overwrite" in err
        assert cli(base + ["--overwrite"]) == 0
        (run,) = record(out)["runs"].values()
        assert run["status"] == "finished" and path.is_file()


def test_auto_in_place_damaged_record_says_move_it_away(make_brats_root, models, capsys):
    data = make_brats_root(cases=2, missing={CASES[0]: ["t2f"]})
    (data / RECORD_NAME).write_text("[]")
    assert cli(["auto", "--data_dir", str(data), "--models_dir", str(models), *FAST]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(data / RECORD_NAME) in err and "move it away" in err
    assert "--overwrite" not in err and not out_file(data, CASES[0]).exists()


def test_a_record_of_mode_0444_is_still_replaced(setup, monkeypatch):
    data, ckpt, out, base = setup
    assert cli(base) == 0
    out_file(out, CASES[1]).unlink()
    path, real_open = out / RECORD_NAME, os.open

    def open_(p, flags, *args, **kwargs):  # not writable in place, but renaming over it works
        if os.fspath(p) == str(path) and flags & os.O_WRONLY:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), p)
        return real_open(p, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", open_)
    assert cli(base) == 0 and out_file(out, CASES[1]).is_file() and len(record(out)["cases"]) == 2

"""NIfTI reading errors and atomic, non-clobbering writes."""

import errno
import gzip
import json
import os

import nibabel as nib
import numpy as np
import pytest
import torch

from cwdm import writes
from cwdm.data import nifti_io
from cwdm.errors import CwdmError
from cwdm.data.nifti_io import load_header, load_nifti, save_nifti_like
from cwdm.writes import atomic_path, atomic_write, check_destination

SHAPES = [(24, 24, 16), (7, 9, 5)]


def _affine():
    a = np.diag([-1.0, -1.2, 1.5, 1.0])
    a[:3, 3] = [120.0, 118.0, -70.0]
    return a


def _write(path, data, affine=None, qcode=1, scode=1):
    img = nib.Nifti1Image(data, _affine() if affine is None else affine)
    img.set_qform(img.affine, code=qcode)
    img.set_sform(img.affine, code=scode)
    nib.save(img, str(path))
    return path


def _listing(folder):
    return sorted(p.name for p in folder.iterdir())


# --- reading --------------------------------------------------------------------

@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("ext", [".nii.gz", ".nii"])
def test_load_nifti(tmp_path, shape, ext):
    data = np.random.default_rng(0).random(shape).astype(np.float32)
    p = _write(tmp_path / f"a-t1n{ext}", data)
    arr, img = load_nifti(p)
    assert arr.dtype == np.float32 and arr.shape == shape
    np.testing.assert_array_equal(arr, data)
    np.testing.assert_allclose(img.affine, _affine())
    assert load_header(p)[0] == shape


def test_load_int16_applies_scaling(tmp_path):
    data = np.arange(24 * 24 * 16, dtype=np.int16).reshape(24, 24, 16)
    img = nib.Nifti1Image(data, _affine())
    img.header.set_slope_inter(2.0, 1.0)
    nib.save(img, str(tmp_path / "x.nii.gz"))
    arr, _ = load_nifti(tmp_path / "x.nii.gz")
    assert arr.dtype == np.float32
    np.testing.assert_array_equal(arr, data.astype(np.float32) * 2 + 1)


def test_4d_with_singleton_is_squeezed(tmp_path):
    p = _write(tmp_path / "a.nii.gz", np.ones((6, 5, 4, 1), np.float32))
    arr, _ = load_nifti(p)
    assert arr.shape == (6, 5, 4)


@pytest.mark.parametrize("shape", [(6, 5, 4, 2), (6, 5)])
def test_not_3d(tmp_path, shape):
    p = _write(tmp_path / "bad-t1n.nii.gz", np.ones(shape, np.float32))
    with pytest.raises(CwdmError, match=r"bad-t1n\.nii\.gz: not a 3D volume") as err:
        load_nifti(p)
    assert "\n" not in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(CwdmError, match=r"nope-t1n\.nii\.gz: file not found"):
        load_nifti(tmp_path / "nope-t1n.nii.gz")


@pytest.mark.parametrize("name", ["junk-t1c.nii.gz", "junk-t1c.nii"])
def test_garbage_file(tmp_path, name):
    p = tmp_path / name
    p.write_bytes(b"this is not a nifti file at all" * 20)
    with pytest.raises(CwdmError, match="unreadable or corrupt") as err:
        load_nifti(p)
    assert name in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("ext", [".nii.gz", ".nii"])
def test_truncated_file(tmp_path, ext):
    p = _write(tmp_path / f"cut-t2w{ext}", np.random.default_rng(0).random((24, 24, 16)).astype(np.float32))
    raw = p.read_bytes()
    p.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CwdmError, match="unreadable or corrupt") as err:
        load_nifti(p)
    assert f"cut-t2w{ext}" in str(err.value)


# --- save_nifti_like ------------------------------------------------------------

@pytest.mark.parametrize("shape", SHAPES)
def test_save_like_keeps_geometry(tmp_path, shape):
    ref_path = _write(tmp_path / "ref.nii.gz", np.zeros(shape, np.int16), qcode=1, scode=2)
    ref = nib.load(str(ref_path))
    ref.header["descrip"] = b"reference"
    out = np.random.default_rng(0).random(shape).astype(np.float64)
    p = save_nifti_like(out, ref, tmp_path / "out-t1c.nii.gz")
    assert p.read_bytes()[:2] == b"\x1f\x8b"  # gzip-compressed
    img = nib.load(str(p))
    assert img.get_data_dtype() == np.float32
    np.testing.assert_allclose(img.affine, ref.affine)
    assert int(img.header["qform_code"]) == 1 and int(img.header["sform_code"]) == 2
    np.testing.assert_allclose(img.header.get_zooms(), ref.header.get_zooms())
    np.testing.assert_allclose(img.get_fdata(), out.astype(np.float32))
    assert _listing(tmp_path) == ["out-t1c.nii.gz", "ref.nii.gz"]


def test_save_like_codes_zero_kept(tmp_path):
    ref_path = _write(tmp_path / "ref.nii", np.zeros((4, 5, 6), np.float32), qcode=0, scode=1)
    p = save_nifti_like(np.ones((4, 5, 6)), ref_path, tmp_path / "o.nii")  # reference given as a path
    hdr = nib.load(str(p)).header
    assert int(hdr["qform_code"]) == 0 and int(hdr["sform_code"]) == 1
    assert p.read_bytes()[:2] != b"\x1f\x8b"  # .nii stays uncompressed


def test_save_like_dtype(tmp_path):
    ref = nib.load(str(_write(tmp_path / "ref.nii.gz", np.zeros((4, 5, 6), np.float32))))
    lab = np.random.default_rng(0).integers(0, 4, (4, 5, 6))
    p = save_nifti_like(lab, ref, tmp_path / "seg.nii.gz", dtype=np.uint8)
    img = nib.load(str(p))
    assert img.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asanyarray(img.dataobj), lab)


def test_save_like_refuses_existing(tmp_path):
    ref = nib.load(str(_write(tmp_path / "ref.nii.gz", np.zeros((4, 5, 6), np.float32))))
    target = tmp_path / "case-t1c.nii.gz"
    target.write_bytes(b"old content")
    with pytest.raises(CwdmError, match=r"case-t1c\.nii\.gz: already exists"):
        save_nifti_like(np.ones((4, 5, 6)), ref, target)
    assert target.read_bytes() == b"old content"
    assert _listing(tmp_path) == ["case-t1c.nii.gz", "ref.nii.gz"]
    save_nifti_like(np.ones((4, 5, 6)), ref, target, overwrite=True)
    np.testing.assert_array_equal(nib.load(str(target)).get_fdata(), np.ones((4, 5, 6)))


def test_save_like_failure_leaves_nothing(tmp_path, monkeypatch):
    ref = nib.load(str(_write(tmp_path / "ref.nii.gz", np.zeros((4, 5, 6), np.float32))))
    target = tmp_path / "case-t2f.nii.gz"
    target.write_bytes(b"old content")
    seen = []

    def failing_save(img, filename):
        seen.append(filename)
        assert filename.endswith(".nii.gz") and filename != str(target)
        with open(filename, "wb") as fh:
            fh.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(nifti_io.nib, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        save_nifti_like(np.ones((4, 5, 6)), ref, target, overwrite=True)
    with pytest.raises(OSError, match="disk full"):
        save_nifti_like(np.ones((4, 5, 6)), ref, tmp_path / "new-t2f.nii.gz")
    assert len(seen) == 2
    assert target.read_bytes() == b"old content"
    assert _listing(tmp_path) == ["case-t2f.nii.gz", "ref.nii.gz"]


@pytest.mark.parametrize("bad,words", [
    (np.ones((4, 5, 7)), "does not match the reference image shape"),
    (np.full((4, 5, 6), np.nan), "non-finite"),
])
def test_save_like_rejects_bad_arrays(tmp_path, bad, words):
    ref = nib.load(str(_write(tmp_path / "ref.nii.gz", np.zeros((4, 5, 6), np.float32))))
    with pytest.raises(CwdmError, match=words):
        save_nifti_like(bad, ref, tmp_path / "o.nii.gz")
    assert _listing(tmp_path) == ["ref.nii.gz"]


def test_save_like_needs_existing_folder_and_nifti_name(tmp_path):
    ref = nib.load(str(_write(tmp_path / "ref.nii.gz", np.zeros((4, 5, 6), np.float32))))
    with pytest.raises(CwdmError, match="does not exist"):
        save_nifti_like(np.ones((4, 5, 6)), ref, tmp_path / "missing" / "o.nii.gz")
    with pytest.raises(CwdmError, match=".nii.gz or .nii"):
        save_nifti_like(np.ones((4, 5, 6)), ref, tmp_path / "o.png")


# --- atomic_write / atomic_path -----------------------------------------------

def test_atomic_write_text_and_binary(tmp_path):
    with atomic_write(tmp_path / "m.json") as fh:
        json.dump({"a": 1}, fh)
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": 1}
    with atomic_write(tmp_path / "w.pt", "wb") as fh:
        torch.save({"w": torch.arange(3)}, fh)
    assert torch.equal(torch.load(tmp_path / "w.pt", weights_only=True)["w"], torch.arange(3))
    # default overwrites
    with atomic_write(tmp_path / "m.json") as fh:
        fh.write("{}")
    assert (tmp_path / "m.json").read_text() == "{}"
    assert _listing(tmp_path) == ["m.json", "w.pt"]


def test_atomic_write_no_overwrite(tmp_path):
    p = tmp_path / "results.csv"
    p.write_text("old\n")
    with pytest.raises(CwdmError, match=r"results\.csv: already exists"):
        with atomic_write(p, overwrite=False) as fh:
            fh.write("new\n")
    assert p.read_text() == "old\n"
    assert _listing(tmp_path) == ["results.csv"]


def test_atomic_write_failure_keeps_old_and_cleans_up(tmp_path):
    p = tmp_path / "results.csv"
    p.write_text("old\n")
    with pytest.raises(RuntimeError):
        with atomic_write(p) as fh:
            fh.write("partial")
            raise RuntimeError("boom")
    assert p.read_text() == "old\n"
    assert _listing(tmp_path) == ["results.csv"]


def test_atomic_path_keeps_suffix(tmp_path):
    with atomic_path(tmp_path / "x.nii.gz") as tmp:
        assert tmp.name.endswith(".nii.gz") and tmp.parent == tmp_path
        with gzip.open(tmp, "wb") as fh:
            fh.write(b"abc")
    with gzip.open(tmp_path / "x.nii.gz") as fh:
        assert fh.read() == b"abc"
    assert _listing(tmp_path) == ["x.nii.gz"]


# --- writes the file system refuses ---------------------------------------------

WRITE_ERRORS = [(errno.ENOSPC, "No space left on device"), (errno.EROFS, "Read-only file system"),
                (errno.EACCES, "Permission denied"), (errno.EDQUOT, "Disk quota exceeded"),
                (errno.EIO, "Input/output error")]


def _one_line(exc_info, *needles):
    text = str(exc_info.value)
    assert "\n" not in text and "Traceback" not in text
    for needle in needles:
        assert needle in text, text
    return text


@pytest.mark.parametrize("code,cause", WRITE_ERRORS)
def test_failed_write_is_one_line_and_keeps_the_old_file(tmp_path, code, cause):
    p = tmp_path / "metrics.csv"
    p.write_text("old\n")
    with pytest.raises(CwdmError) as info:
        with atomic_write(p, newline="") as fh:
            fh.write("half a ro")
            raise OSError(code, os.strerror(code))  # what fh.write raises on a full disk
    _one_line(info, str(p), os.strerror(code))
    assert p.read_text() == "old\n"
    assert _listing(tmp_path) == ["metrics.csv"]


@pytest.mark.parametrize("step", ["mkstemp", "replace"])
def test_read_only_destination_at_create_or_rename(tmp_path, monkeypatch, step):
    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(args[0] if args else kwargs["dir"]))

    target = {"mkstemp": (writes.tempfile, "mkstemp"), "replace": (writes.os, "replace")}[step]
    monkeypatch.setattr(*target, refuse)
    with pytest.raises(CwdmError) as info:
        with atomic_write(tmp_path / "summary.json") as fh:
            fh.write("{}")
    _one_line(info, str(tmp_path / "summary.json"), "Read-only file system", "writable destination")
    assert _listing(tmp_path) == []


def test_full_disk_while_saving_nifti(tmp_path, monkeypatch):
    ref = _write(tmp_path / "ref.nii.gz", np.zeros((4, 5, 6), np.float32))
    real_save = nib.save

    def full(img, filename):
        real_save(img, filename)  # part of the file is there when the disk fills up
        raise OSError(errno.ENOSPC, "No space left on device", filename)

    monkeypatch.setattr(nib, "save", full)
    with pytest.raises(CwdmError) as info:
        save_nifti_like(np.ones((4, 5, 6)), ref, tmp_path / "out-t2f.nii.gz")
    _one_line(info, "out-t2f.nii.gz", "No space left on device", "free some space")
    assert _listing(tmp_path) == ["ref.nii.gz"]


def test_torch_save_to_a_full_disk_by_name(tmp_path, monkeypatch):
    """torch.save given a file name hides the errno in a RuntimeError: the free space tells."""
    class Full:
        f_bavail = 0

    monkeypatch.setattr(os, "statvfs", lambda path: Full())
    with pytest.raises(CwdmError) as info:
        with atomic_path(tmp_path / "w.pt") as tmp:
            tmp.write_bytes(b"PK")
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
    _one_line(info, "w.pt", "No space left on device")
    assert _listing(tmp_path) == []


def test_other_errors_inside_the_block_are_not_rephrased(tmp_path):
    """An input file missing while writing is not a refusal of the destination."""
    with pytest.raises(FileNotFoundError):
        with atomic_write(tmp_path / "o.json"):
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(tmp_path / "input.nii.gz"))
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(tmp_path / "o.pt"):
            raise RuntimeError("boom")
    assert _listing(tmp_path) == []


@pytest.mark.skipif(not os.path.isdir("/proc") or not os.path.isdir("/sys"), reason="no /proc or /sys")
@pytest.mark.parametrize("dest,kind", [("/proc/cwdm_test_dest", "dir"), ("/proc/cwdm_test_dest.pt", "file"),
                                       ("/sys/foo/bar", "dir"), ("/sys", "dir")])
def test_kernel_virtual_file_systems_are_refused(dest, kind):
    with pytest.raises(CwdmError) as info:
        check_destination(dest, "--output_dir", kind)
    _one_line(info, f"--output_dir {dest}", "virtual file system")

"""The inference library (cwdm.inference.steps, cwdm.inference.completion); the import rules between
modules are in tests/test_layout.py."""


import pytest

from cwdm.errors import CwdmError
from cwdm.inference.completion import completion_paths, find_checkpoints
from cwdm.inference.steps import paired_paths

def test_find_checkpoints_explicit_beats_the_folder(tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    for name in ("brats_t1n_1.pt", "flair_gen.pt", "notes.txt", "unrelated.pt"):
        (folder / name).write_bytes(b"x")
    mine = tmp_path / "mine.pt"
    mine.write_bytes(b"x")
    found = find_checkpoints(folder, {"t2f": mine, "t1c": None}, ("t1n", "t1c", "t2w", "t2f"))
    assert found == {"t1n": folder / "brats_t1n_1.pt", "t2f": mine}
    assert find_checkpoints(None, {"t2w": mine}, ("t1n", "t1c", "t2w", "t2f")) == {"t2w": mine}


def test_find_checkpoints_refusals(tmp_path):
    mods = ("t1n", "t1c", "t2w", "t2f")
    with pytest.raises(CwdmError, match="--models_dir is not a folder"):
        find_checkpoints(tmp_path / "nope", {}, mods)
    with pytest.raises(CwdmError, match="checkpoint for t1c not found"):
        find_checkpoints(None, {"t1c": tmp_path / "gone.pt"}, mods)
    for name in ("t2_gen.pt", "brats_t2w_9.pth"):
        (tmp_path / name).write_bytes(b"x")
    with pytest.raises(CwdmError, match=r"several checkpoints for t2w \(brats_t2w_9.pth, t2_gen.pt\)"):
        find_checkpoints(tmp_path, {}, mods)


def test_result_paths(tmp_path):
    assert paired_paths(tmp_path, "c", "p", "t2f") == {
        "volume": tmp_path / "c" / "p-t2f.nii.gz", "std": tmp_path / "c" / "p-t2f_std.nii.gz", "target": None}
    assert paired_paths(tmp_path, "c", "p", "t2f", save_target=True)["target"] == tmp_path / "c" / "p-t2f_target.nii.gz"
    assert completion_paths(tmp_path / "c-t1n.nii.gz") == {
        "volume": tmp_path / "c-t1n.nii.gz", "std": tmp_path / "c-t1n_std.nii.gz", "target": None}

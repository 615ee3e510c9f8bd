"""The inference library (cwdm.inference) and the modules above it."""

import ast
from pathlib import Path

import pytest

from cwdm.cli import COMMANDS
from cwdm.errors import CwdmError
from cwdm.completion import completion_paths, find_checkpoints
from cwdm.inference import paired_paths

PACKAGE = Path(__file__).resolve().parents[1] / "cwdm"
COMMAND_MODULES = {module.rpartition(".")[2] for module, _ in COMMANDS.values()}


def cwdm_imports(name: str) -> set:
    """The cwdm modules that ``cwdm/<name>.py`` imports (anywhere in the file)."""
    found = set()
    for node in ast.walk(ast.parse((PACKAGE / f"{name}.py").read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            found |= {node.module.split(".")[0]} if node.module else {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("cwdm."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("cwdm.")}
    return found


@pytest.mark.parametrize("name", sorted(COMMAND_MODULES | {"api"}))
def test_no_command_module_imports_another(name):
    others = cwdm_imports(name) & COMMAND_MODULES - {name}
    assert not others, others


def test_sample_auto_api_and_demo_use_the_library():
    for name in ("sample", "auto", "api", "demo"):
        assert "inference" in cwdm_imports(name), name
    assert {"phantom_set", "scoring", "training"} <= cwdm_imports("demo")


LIBRARY_MODULES = sorted({p.stem for p in PACKAGE.glob("*.py")} - COMMAND_MODULES - {"cli"})


@pytest.mark.parametrize("name", LIBRARY_MODULES)
def test_no_library_module_imports_a_command_module(name):
    assert not cwdm_imports(name) & COMMAND_MODULES


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

"""The reference pseudo-validation split (``cwdm dropout``)."""

import csv
import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cwdm.naming import MODALITIES
from cwdm.cli import main as cli_main
from cwdm.commands.dropout import CSV_NAME, draw_dropped, drop_order, make_dropout_split

REPO = Path(__file__).resolve().parents[1]
REFERENCE_ORDER = ["t1c", "t1n", "t2f", "t2w"]


def _reference_draw(n, seed=123456):
    """What the reference does, on numpy's global generator (state restored)."""
    state = np.random.get_state()
    try:
        np.random.seed(seed)
        return np.random.randint(0, 4, size=n)
    finally:
        np.random.set_state(state)


def _snapshot(root):
    """path -> (sha256, mtime_ns, size) of every file under root, plus folder listing."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            st = p.stat()
            out[str(p.relative_to(root))] = (hashlib.sha256(p.read_bytes()).hexdigest(), st.st_mtime_ns, st.st_size)
        else:
            out[str(p.relative_to(root))] = "dir"
    return out


def _read_csv(dst):
    with open(dst / CSV_NAME, newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["case", "dropped"]
    return {r[0]: r[1] for r in rows[1:]}


def test_drop_order_is_the_reference_list():
    assert drop_order() == REFERENCE_ORDER


@pytest.mark.parametrize("n", [1, 5, 37, 1251])
@pytest.mark.parametrize("seed", [123456, 0, 42])
def test_randomstate_equals_global_seed_and_randint(n, seed):
    np.testing.assert_array_equal(np.random.RandomState(seed).randint(0, 4, size=n), _reference_draw(n, seed))
    assert draw_dropped(n, seed) == [REFERENCE_ORDER[i] for i in _reference_draw(n, seed)]


def test_draw_does_not_touch_global_state():
    state = np.random.get_state()
    draw_dropped(10)
    after = np.random.get_state()
    assert state[0] == after[0] and np.array_equal(state[1], after[1]) and state[2:] == after[2:]


@pytest.mark.parametrize("n_cases,shape", [(7, (8, 8, 6)), (3, (5, 6, 7))])
def test_split_matches_reference_draw(make_brats_root, tmp_path, capsys, n_cases, shape):
    names = [f"BraTS-GLI-{i:05d}-000" for i in (12, 3, 40, 7, 1, 99, 5)[:n_cases]]
    src = make_brats_root(cases=names, shape=shape)
    (src / names[0] / "notes.txt").write_text("keep me")
    before = _snapshot(src)
    dst = tmp_path / "out" / "pseudo_val"
    assert cli_main(["dropout", str(src), str(dst)]) == 0
    assert _snapshot(src) == before  # SRC untouched: contents, mtimes, listing

    expected = {name: REFERENCE_ORDER[i] for name, i in zip(sorted(names), _reference_draw(n_cases))}
    assert _read_csv(dst) == expected
    assert list(_read_csv(dst)) == sorted(names)
    for name, dropped in expected.items():
        files = sorted(p.name for p in (dst / name).iterdir())
        want = sorted(p.name for p in (src / name).iterdir() if not p.name.endswith(f"-{dropped}.nii.gz"))
        assert files == want and f"{name}-seg.nii.gz" in files
        assert len([f for f in files if f.endswith(".nii.gz")]) == 4  # 3 modalities + seg
        for f in files:
            assert before[f"{name}/{f}"][0] == hashlib.sha256((dst / name / f).read_bytes()).hexdigest()
            assert (dst / name / f).stat().st_mtime_ns == before[f"{name}/{f}"][1]  # copy2 keeps mtime
    assert sorted(p.name for p in dst.iterdir()) == sorted(names) + [CSV_NAME]  # no temp folders left

    out = capsys.readouterr().out
    counts = {m: list(expected.values()).count(m) for m in REFERENCE_ORDER}
    assert f"copied {n_cases} cases" in out
    assert ", ".join(f"{m}: {c}" for m, c in counts.items()) in out


def test_refuses_existing_cases_then_overwrites(make_brats_root, tmp_path, capsys):
    src = make_brats_root(cases=6)
    dst = tmp_path / "dst"
    first = make_dropout_split(src, dst, seed=1)
    snap = _snapshot(dst)
    assert cli_main(["dropout", str(src), str(dst), "--seed", "2"]) == 1
    err = capsys.readouterr().err
    assert "already holds" in err and "--overwrite" in err and str(dst) in err
    assert _snapshot(dst) == snap
    second = make_dropout_split(src, dst, seed=2, overwrite=True)
    assert second != first
    assert _read_csv(dst) == second
    for name, dropped in second.items():
        present = {p.name.rsplit("-", 1)[1][:-7] for p in (dst / name).iterdir()}
        assert present == (set(MODALITIES) | {"seg"}) - {dropped}  # nothing stale from the first run
    assert sorted(p.name for p in dst.iterdir()) == sorted(second) + [CSV_NAME]


def test_refuses_foreign_case_folders(make_brats_root, tmp_path):
    src = make_brats_root(cases=2)
    dst = make_brats_root(cases=["other-case"])  # a data root already
    assert cli_main(["dropout", str(src), str(dst)]) == 1
    assert sorted(p.name for p in dst.iterdir()) == ["other-case"]


def test_empty_existing_dst_is_fine(make_brats_root, tmp_path):
    src = make_brats_root(cases=2)
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "readme.txt").write_text("x")
    assert cli_main(["dropout", str(src), str(dst)]) == 0


@pytest.mark.parametrize("where,words", [
    ("same", "is the input folder"),
    ("in_case", "inside the input folder"),
    ("in_src", "inside the input folder"),
    ("parent", "contains the input folder"),
])
def test_overlapping_folders_rejected(make_brats_root, capsys, where, words):
    src = make_brats_root(cases=2)
    dst = {"same": src, "in_case": src / "BraTS-GLI-00000-000" / "out", "in_src": src / "out",
           "parent": src.parent}[where]
    before = _snapshot(src)
    assert cli_main(["dropout", str(src), str(dst)]) == 1
    assert words in capsys.readouterr().err
    assert _snapshot(src) == before


def test_incomplete_source_rejected(make_brats_root, tmp_path, capsys):
    src = make_brats_root(cases=3, missing={"BraTS-GLI-00001-000": ["t1c"]})
    assert cli_main(["dropout", str(src), str(tmp_path / "dst")]) == 1
    err = capsys.readouterr().err
    assert "1 of 3 cases are unusable" in err and "BraTS-GLI-00001-000: missing required modality t1c" in err
    assert not (tmp_path / "dst").exists()


def test_other_modalities(make_brats_root, tmp_path):
    src = make_brats_root(cases=5, modalities=("mr", "ct"), seg=False)
    result = make_dropout_split(src, tmp_path / "dst", modalities=("mr", "ct"))
    state = np.random.get_state()
    np.random.seed(123456)
    idx = np.random.randint(0, 2, size=5)
    np.random.set_state(state)
    assert list(result.values()) == [["ct", "mr"][i] for i in idx]


@pytest.mark.parametrize("style", ["flags", "positional"])
def test_reference_script_shim(make_brats_root, tmp_path, style):
    src = make_brats_root(cases=3)
    dst = tmp_path / "shim_out"
    args = ["--input_dir", str(src), "--output_dir", str(dst)] if style == "flags" else [str(src), str(dst)]
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "dropout_modality.py"), *args],
                          capture_output=True, text=True, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "copied 3 cases" in proc.stdout
    expected = {n: REFERENCE_ORDER[i] for n, i in zip(sorted(p.name for p in src.iterdir()), _reference_draw(3))}
    assert _read_csv(dst) == expected


def test_reference_script_without_arguments_uses_the_reference_folders(make_brats_root, tmp_path):
    work = tmp_path / "work"
    make_brats_root(root=work / "datasets" / "BRATS2023" / "validation", cases=2)
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "dropout_modality.py")],
                          capture_output=True, text=True, cwd=str(work))
    assert proc.returncode == 0, proc.stderr
    assert ("no folders given; using the reference's ./datasets/BRATS2023/validation -> "
            "./datasets/BRATS2023/pseudo_validation") in proc.stderr
    assert len(_read_csv(work / "datasets" / "BRATS2023" / "pseudo_validation")) == 2

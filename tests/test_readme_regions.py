"""The README's Inpainting and Tumour insertion sections run as written (only sizes made small).

Each section's ```bash block (its ``cwdm`` lines; other lines, such as the benchmark, are not run)
runs in a temporary folder on the Quick tour's data folders (``data/train``, ``data/val``: phantom
cases 0-3 and 20-21 at ``--downsample 8``) with the Quick tour test's size changes
(:func:`test_readme.small`: an 8-channel network, ``--max_steps`` / 1000, ``--sampling_steps 2``).
The checkpoint of step 2000 is read as the one of step 2 that the small run wrote. Then the
section's ```python block runs as written (``exec``) with ``steps=10`` made ``steps=2``. The insertion section's
inputs that the README leaves to the user (a drawing ``drawings/c-labels.nii.gz`` beside a scan
``healthy/c-t1n.nii.gz``, and the folder ``drawn/`` of such cases) are made here from a held-out case.
"""

import json
import re
import shlex
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from cwdm.cli import main as cli
from test_readme import README, small

pytestmark = pytest.mark.slow


def section(text: str, heading: str) -> str:
    """The README text from ``heading`` to the next heading of the same or a higher level."""
    level = heading.split(" ")[0]
    start = text.index(f"\n{heading}\n")
    ends = [m.start() for m in re.finditer(r"^#{1,%d} " % len(level), text[start + 1:], re.M)][1:]
    return text[start: start + 1 + ends[0]] if ends else text[start:]


def block(text: str, language: str) -> str:
    match = re.search(rf"^```{language}\n(.*?)^```", text, re.S | re.M)
    assert match, f"no ```{language} block"
    return match.group(1)


def cwdm_lines(bash: str) -> list:
    """The argv of each ``cwdm`` line of a bash block (comments dropped)."""
    return [shlex.split(line, comments=True)[1:] for line in bash.splitlines() if line.startswith("cwdm ")]


def run_commands(commands: list, capsys) -> None:
    for argv in commands:
        capsys.readouterr()
        status = cli([a.replace("ckpt_00002000.pt", "ckpt_00000002.pt") for a in small(argv)])
        assert status == 0, f"cwdm {' '.join(argv)} -> exit {status}\n{capsys.readouterr().err[-3000:]}"


def run_python(code: str) -> dict:
    assert code.count("steps=10") == 1 and code.count("ckpt_00002000.pt") == 1, "the example moved; update the test"
    names: dict = {}
    exec(compile(code.replace("steps=10", "steps=2").replace("ckpt_00002000.pt", "ckpt_00000002.pt"),
                 "README.md", "exec"), names)
    return names


@pytest.fixture
def tour_data(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli(["phantom", "data/train", "--cases", "4", "--seed", "0", "--downsample", "8"]) == 0
    assert cli(["phantom", "data/val", "--cases", "2", "--seed", "0", "--downsample", "8", "--start", "20"]) == 0
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield tmp_path
    torch.set_num_threads(threads)


def test_inpainting_section_runs_as_written(tour_data, capsys):
    text = section(README.read_text(), "## Inpainting: healthy tissue in a masked region")
    commands = cwdm_lines(block(text, "bash"))
    assert [c[0] for c in commands] == ["inpaint-data", "inpaint-data", "train", "sample", "evaluate"]
    run_commands(commands, capsys)
    results = sorted(p.name for p in Path("results_inp").glob("*-t1n-inference.nii.gz"))
    assert results == [f"BraTS-GLI-000{i}-000-t1n-inference.nii.gz" for i in (20, 21)]
    assert (Path("results_inp") / "evaluation").is_dir()

    names = run_python(block(text, "python"))
    single = Path("inpainted/BraTS-GLI-00020-000-t1n-inference.nii.gz")
    assert single.is_file() and sorted(names["written"]) == ["BraTS-GLI-00020-000", "BraTS-GLI-00021-000"]
    assert all(p.parent == Path("api_inp") and p.is_file() for p in names["written"].values())
    case = "data/inpaint_val/BraTS-GLI-00020-000/BraTS-GLI-00020-000"
    voided = np.asarray(nib.load(f"{case}-t1n-voided.nii.gz").dataobj)
    mask = np.asarray(nib.load(f"{case}-mask.nii.gz").dataobj) == 1
    filled = np.asarray(nib.load(single).dataobj)
    assert np.array_equal(filled[~mask], voided[~mask])  # the example's promise: only the mask is filled
    record = json.loads(Path("inpainted/cwdm_provenance.json").read_text())
    assert [r["command"] for r in record["runs"].values()] == ["api"]


def test_insertion_section_runs_as_written(tour_data, capsys):
    from cwdm.data.insertion import ball_drawing

    scan = Path("data/val/BraTS-GLI-00020-000/BraTS-GLI-00020-000-t1n.nii.gz")
    img = nib.load(scan)
    brain = np.asarray(img.dataobj) != 0
    centre = np.argwhere(brain).mean(axis=0)
    drawing = nib.Nifti1Image(np.where(brain, ball_drawing(brain.shape, centre, 3.0), 0).astype(np.uint8), img.affine)
    for folder, t1n, labels in (("healthy", "c-t1n", None), ("drawings", None, "c-labels"),
                                ("drawn/c", "c-t1n", "c-labels")):
        Path(folder).mkdir(parents=True)
        if t1n:
            shutil.copy(scan, Path(folder) / f"{t1n}.nii.gz")
        if labels:
            nib.save(drawing, Path(folder) / f"{labels}.nii.gz")

    text = section(README.read_text(), "### Tumour insertion")
    commands = cwdm_lines(block(text, "bash"))
    assert [c[0] for c in commands] == ["train", "sample"]
    run_commands(commands, capsys)
    assert Path("inserted/c/c-t1n-inserted.nii.gz").is_file()

    names = run_python(block(text, "python"))
    single = Path("inserted/c-t1n-inserted.nii.gz")
    assert single.is_file() and names["written"] == {"c": Path("api_inserted/c/c-t1n-inserted.nii.gz")}
    assert names["written"]["c"].is_file()
    before, after = np.asarray(img.dataobj), np.asarray(nib.load(single).dataobj)
    changed = before != after
    assert changed.any() and not changed[~brain].any()  # the tumour is written into the brain only

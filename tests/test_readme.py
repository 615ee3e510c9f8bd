"""The README's Quick tour runs top to bottom as written (only sizes are made small).

bash reads the block itself (loops, variables, quoting) with ``cwdm`` defined as
a shell function that records each command line; every other command of the
block (only ``mkdir`` is allowed) runs for real. The recorded ``cwdm`` commands
then run in order, in this process, in a temporary folder, after the size
changes the README announces: ``--downsample 8``, at most 6 phantom cases, an 8-channel network,
``--max_steps`` divided by 1000 and ``--sampling_steps 2`` (and ``--num_workers 0``, which changes
no result), plus ``--lr 1e-3 --ema_rate 0`` so that 2 training steps leave a network whose syntheses
are not degenerate (all zero), which cwdm refuses to write. Each must exit 0 and end with the command to run next.

Then the README's "Python API" block runs as written (``exec``), in the same folder, on the tour's
checkpoints, with ``steps=10`` made ``steps=2`` like ``--sampling_steps``.
"""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cwdm.cli import main as cli

README = Path(__file__).resolve().parents[1] / "README.md"
NETWORK = ["--num_channels", "8", "--channel_mult", "1", "2", "--num_res_blocks", "1", "--num_groups", "4"]
SHORT_RUN = ["--lr", "1e-3", "--ema_rate", "0"]  # 2 steps at 1e-5 with EMA 0.9999 leave the network untrained
WORKERS = ["--num_workers", "0"]  # no reader processes: each would import torch again (seconds apiece)
APPENDED = {"train": NETWORK + SHORT_RUN + WORKERS, "sample": WORKERS, "auto": WORKERS}  # export keeps the network
REPLACED = {"--downsample": lambda v: "8", "--cases": lambda v: str(min(int(v), 6)), "--max_steps": lambda v: str(max(1, int(v) // 1000)),
            "--sampling_steps": lambda v: "2"}
SIZE_FLAGS = set(REPLACED) | {f for flags in APPENDED.values() for f in flags if f.startswith("--")} - {
    "--num_workers", "--lr", "--ema_rate"}


def tour_block(text: str) -> str:
    match = re.search(r"^## Quick tour\n\n```bash\n(.*?)^```", text, re.S | re.M)
    assert match, "README.md has no ```bash block under '## Quick tour'"
    return match.group(1)


def api_block(text: str) -> str:
    """The README's Python API example, with only its step count made small."""
    match = re.search(r"^### Python API\n.*?```python\n(.*?)^```", text, re.S | re.M)
    assert match, "README.md has no ```python block under '### Python API'"
    block = match.group(1)
    assert block.count("steps=10") == 1, "the API example's step count moved; update the size change"
    return block.replace("steps=10", "steps=2")


def recorded_commands(block: str, folder: Path) -> list:
    """The ``cwdm`` command lines of ``block`` as bash expands them (argv lists, in order)."""
    log = folder / ".tour_commands"
    stub = (f'cwdm() {{ "{sys.executable}" -c "import json, sys; print(json.dumps(sys.argv[1:]))" "$@" '
            f'>> "{log}"; }}\n')
    for name in re.findall(r"^\s*(?:for .*?do\s+)?([\w./-]+)", block, re.M):
        assert name in ("cwdm", "mkdir"), f"the tour runs {name!r}; only cwdm and mkdir are expected"
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", stub + block], cwd=folder, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in log.read_text().splitlines()]


def small(argv: list) -> list:
    """``argv`` with only its sizes changed (see the module docstring)."""
    out = list(argv)
    for i, token in enumerate(out[:-1]):
        if token in REPLACED:
            out[i + 1] = REPLACED[token](out[i + 1])
    return out + APPENDED.get(argv[0], [])


def test_size_changes_touch_only_sizes():
    assert small(["train", "--data_dir", "d", "--max_steps", "2000"]) == ["train", "--data_dir", "d", "--max_steps",
                                                                          "2", *NETWORK, *SHORT_RUN, *WORKERS]
    assert small(["dropout", "a", "b"]) == ["dropout", "a", "b"]
    assert SIZE_FLAGS == {"--downsample", "--cases", "--max_steps", "--sampling_steps", "--num_channels", "--channel_mult",
                          "--num_res_blocks", "--num_groups"}
    assert small(["sample", "--model_path", "m.pt"]) == ["sample", "--model_path", "m.pt", *WORKERS]  # no network flag
    assert small(["auto", "--models_dir", "c"]) == ["auto", "--models_dir", "c", *WORKERS]
    text = README.read_text()
    block = api_block(text)
    assert block.replace("steps=2", "steps=10") in text and "num_groups" not in block


@pytest.mark.slow
def test_quick_tour_runs_top_to_bottom(tmp_path, monkeypatch, capsys):
    if shutil.which("bash") is None:
        pytest.skip("bash is needed to read the tour")
    monkeypatch.chdir(tmp_path)
    commands = recorded_commands(tour_block(README.read_text()), tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny volumes: one thread is as fast, and immune to a busy shared machine
    try:
        run_tour(commands, capsys)
        run_api_block(api_block(README.read_text()))
    finally:
        torch.set_num_threads(threads)


def run_tour(commands, capsys):
    assert [c[0] for c in commands][:3] == ["phantom", "phantom", "check"]
    assert {"train", "export", "sample", "evaluate", "dropout", "auto"} <= {c[0] for c in commands}
    for argv in commands:
        capsys.readouterr()
        status = cli(small(argv))
        captured = capsys.readouterr()
        assert status == 0, f"cwdm {' '.join(argv)} -> exit {status}\n{captured.err[-3000:]}"
        tails = [text.strip().splitlines()[-1] for text in (captured.out, captured.err) if text.strip()]
        assert any("next: " in line for line in tails), tails  # every command ends with the next one
    # the tour's promises hold: results, their evaluation, a completed pseudo-validation set
    assert len(list(Path("results").glob("*/*-t2f.nii.gz"))) == 4
    assert Path("results/cwdm_provenance.json").is_file() and Path("data/pseudo_val/cwdm_provenance.json").is_file()
    assert Path("results/evaluation/summary.json").is_file()
    assert len(list(Path("data/pseudo_val").glob("*/*.nii.gz"))) == 4 * 5  # 4 contrasts + seg again
    assert sorted(p.name for p in Path("checkpoints").iterdir()) == [f"brats_{m}.pt" for m in ("t1c", "t1n", "t2f",
                                                                                               "t2w")]


def recipe_block(text: str) -> str:
    """The README's ```bash block that writes released-architecture weights (Published weights)."""
    blocks = re.findall(r"^```bash\n(.*?)^```", text, re.S | re.M)
    found = [b for b in blocks if "RELEASED_CONFIG" in b]
    assert len(found) == 1, "README.md should hold one block writing released-architecture weights"
    return found[0]


@pytest.mark.slow
def test_released_architecture_recipe_runs_as_written(tmp_path, monkeypatch, capsys):
    """The recipe's python line runs as written; ``cwdm auto --models_dir`` takes its four files."""
    if shutil.which("bash") is None:
        pytest.skip("bash is needed to read the recipe")
    monkeypatch.chdir(tmp_path)
    assert cli(["phantom", "data/val", "--cases", "4", "--seed", "0", "--downsample", "8"]) == 0
    assert cli(["dropout", "data/val", "data/pseudo_val"]) == 0
    log = tmp_path / ".recipe_commands"
    stubs = (f'cwdm() {{ "{sys.executable}" -c "import json, sys; print(json.dumps(sys.argv[1:]))" "$@" '
             f'>> "{log}"; }}\npython() {{ "{sys.executable}" "$@"; }}\n')
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", stubs + recipe_block(README.read_text())], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    try:
        assert proc.returncode == 0, proc.stderr
        names = sorted(p.name for p in Path("checkpoints").iterdir())
        assert names == [f"brats_{m}.pt" for m in ("t1c", "t1n", "t2f", "t2w")]
        commands = [json.loads(line) for line in log.read_text().splitlines()]
        assert [c[:2] for c in commands] == [["auto", "--data_dir"]] and "--models_dir" in commands[0]
        capsys.readouterr()
        assert cli(small(commands[0])) == 0, capsys.readouterr().err[-3000:]
        assert len(list(Path("data/pseudo_val").glob("*/*.nii.gz"))) == 4 * 5  # every case completed
    finally:
        shutil.rmtree(tmp_path / "checkpoints", ignore_errors=True)  # 1.3 GB


def run_api_block(block: str) -> None:
    """Run the README's API example after the tour; it writes what it says, with its provenance."""
    names = {}
    exec(compile(block, "README.md (Python API)", "exec"), names)
    assert names["path"] == Path("api/BraTS-GLI-00020-000-t2f.nii.gz") and names["path"].is_file()
    assert sorted(names["written"]) == [f"BraTS-GLI-000{i}-000" for i in range(20, 24)]
    assert all(p.is_file() and p.parent.parent == Path("completed") for p in names["written"].values())
    for folder, count in (("api", 1), ("completed", 4)):
        record = json.loads((Path(folder) / "cwdm_provenance.json").read_text())
        assert len(record["cases"]) == count and [r["command"] for r in record["runs"].values()] == ["api"]

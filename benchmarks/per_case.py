"""Wall time of ``cwdm sample`` on one full-size phantom case, per sampler and ``--compile`` setting.

Run through ``python benchmarks/bench_inference.py --per_case [--runs_per_case ...]``. Each run is
a fresh ``cwdm sample`` process (model loading, reading, sampling and writing included) on one
phantom case with the released network's configuration and random weights. ``--compile False`` is
the eager path (cwdm's default before ``--compile auto``); ``auto`` is the default now. The runs share
one torch compile cache (``TORCHINDUCTOR_CACHE_DIR`` in a temporary folder, empty at the start); a
run whose COMPILE ends in ``_cold`` empties it first, so the compiling runs after it find its code.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from gpu_check import random_network
from cwdm.model.unet import RELEASED_CONFIG

DEFAULT_RUNS = ("regression 1 auto", "ddim 5 auto", "ddim 10 False", "ddim 10 auto_cold", "ddim 10 auto")
"""``SAMPLER STEPS COMPILE`` per run; ``auto_cold``: ``--compile auto`` with an empty compile cache."""


def _sample(data: Path, model: Path, out: Path, sampler: str, steps: str, mode: str, cache: Path) -> dict:
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=str(cache))
    cmd = [sys.executable, "-m", "cwdm", "sample", "--data_dir", str(data), "--model_path", str(model),
           "--contr", "t2f", "--output_dir", str(out), "--sampler", sampler, "--sampling_steps", steps,
           "--compile", mode.replace("_cold", ""), "--progress", "False"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"cwdm sample failed:\n{proc.stderr[-2000:]}")
    record = json.loads((out / "cwdm_provenance.json").read_text())
    seconds = [c["seconds"] for c in record["cases"].values()]
    said = [line for line in proc.stderr.splitlines() if "network call took" in line or "its first call took" in line]
    return {"sampler": sampler, "steps": int(steps), "compile": mode, "wall_s": round(wall, 1),
            "case_s": round(sum(seconds), 1), "compiled": "compiling the network" in proc.stderr,
            "first_calls": [line.split(":")[0] for line in said]}


def per_case(size, threads: int, runs=DEFAULT_RUNS) -> dict:
    """Run ``runs`` one after the other; print and return the rows."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if list(size) != [224, 224, 160]:
            raise SystemExit("--per_case runs on the full grid only (--size 224 224 160)")
        subprocess.run([sys.executable, "-m", "cwdm", "phantom", str(tmp / "data"), "--cases", "1"], check=True,
                       capture_output=True)
        model = tmp / "brats_t2f_random.pt"
        torch.save(random_network(RELEASED_CONFIG, 0).state_dict(), model)
        cache = tmp / "cache"
        rows = []
        for i, run in enumerate(runs):
            sampler, steps, mode = run.split()
            if mode.endswith("_cold"):
                shutil.rmtree(cache, ignore_errors=True)
            rows.append(_sample(tmp / "data", model, tmp / f"out{i}", sampler, steps, mode, cache))
            print(json.dumps(rows[-1]), flush=True)
    result = {"machine": f"{platform.machine()}, {threads or torch.get_num_threads()} threads, "
                         f"torch {torch.__version__}", "grid": list(size), "rows": rows}
    print(json.dumps(result, indent=1))
    print("\n| sampler | --compile | compiled | wall s (process) | s in the case |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['sampler']} {r['steps']} | {r['compile']} | {r['compiled']} | {r['wall_s']} | {r['case_s']} |")
    return result

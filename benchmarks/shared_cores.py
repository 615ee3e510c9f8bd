"""``cwdm demo`` wall time on idle cores and beside busy processes, per OpenMP wait policy.

Each run is a fresh ``cwdm demo`` process in a new temporary folder. "Busy" processes are plain
Python loops (one core each), started before the demo and stopped when it ends; each stops by
itself after ``--busy_limit`` seconds at the latest. A policy is the OpenMP environment given to the
demo process:

* ``cwdm``: nothing set, so cwdm chooses (see :mod:`cwdm.openmp`);
* ``spin300000``: ``GOMP_SPINCOUNT=300000``, libgomp's own default, i.e. cwdm before it chose;
* ``passive``: ``OMP_WAIT_POLICY=PASSIVE``; ``spinN``: ``GOMP_SPINCOUNT=N``; ``threads1``:
  ``OMP_NUM_THREADS=1`` with cwdm's choice of wait policy.

The demo's SSIM and PSNR are recorded with every run: a policy must not change them.

    python benchmarks/shared_cores.py --busy 0 1 2 --policies spin300000 cwdm --repeats 1
    python benchmarks/shared_cores.py --demo_args --train_cases 4 --test_cases 2 --max_steps 60
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUSY_LOOP = "import time\nend = time.monotonic() + {limit}\nwhile time.monotonic() < end:\n    pass\n"
OPENMP_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS", "CWDM_OPENMP")


def policy_env(policy: str) -> dict:
    """The demo's environment for ``policy`` (the caller's OpenMP variables removed first)."""
    env = {k: v for k, v in os.environ.items() if k not in OPENMP_VARS}
    if policy == "passive":
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    elif policy.startswith("spin"):
        env["GOMP_SPINCOUNT"] = policy[4:]
    elif policy == "threads1":
        env["OMP_NUM_THREADS"] = "1"
    elif policy != "cwdm":
        raise SystemExit(f"unknown policy {policy!r}")
    return env


def cpu_name() -> str:
    """The CPU's model name (Linux), else the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def one_run(demo_args: list, policy: str, busy: int, busy_limit: float) -> dict:
    """Time one demo beside ``busy`` spinning processes; its SSIM / PSNR from ``summary.json``."""
    loops = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP.format(limit=busy_limit)]) for _ in range(busy)]
    try:
        time.sleep(0.5 if busy else 0)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "demo"
            cmd = [sys.executable, "-m", "cwdm", "demo", "--output_dir", str(out), "--progress", "False",
                   *demo_args]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, env=policy_env(policy), capture_output=True, text=True)
            wall = time.perf_counter() - t0
            if proc.returncode:
                raise SystemExit(f"cwdm demo failed ({policy}, busy {busy}):\n{proc.stderr[-3000:]}")
            summary = json.loads((out / "summary.json").read_text())
    finally:
        for p in loops:
            p.kill()
            p.wait()
    said = [line for line in proc.stderr.splitlines() if "OpenMP" in line]
    return {"policy": policy, "busy": busy, "wall_s": round(wall, 1), "ssim": summary["cwdm"]["ssim"],
            "psnr": summary["cwdm"]["psnr"], "openmp": said[0] if said else ""}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--busy", type=int, nargs="+", default=[0, 1, 2], help="numbers of busy processes")
    parser.add_argument("--policies", nargs="+", default=["spin300000", "cwdm"])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--busy_limit", type=float, default=3600.0, help="seconds a busy loop runs at most")
    parser.add_argument("--csv", type=Path, default=None, help="write the rows here")
    parser.add_argument("--demo_args", nargs=argparse.REMAINDER, default=[], help="flags for cwdm demo (last)")
    args = parser.parse_args(argv)
    machine = f"{cpu_name()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    print(f"machine: {machine}", flush=True)
    rows = []
    for _ in range(args.repeats):
        for busy in args.busy:  # interleaved: every policy meets the same machine state
            for policy in args.policies:
                row = one_run(args.demo_args, policy, busy, args.busy_limit)
                rows.append(row)
                print(json.dumps(row), flush=True)
    base = {}
    for r in rows:
        base.setdefault(r["policy"], {}).setdefault(r["busy"], []).append(r["wall_s"])
    print("\n| policy | " + " | ".join(f"busy {b} (s)" for b in args.busy) + " | busy 2 / idle |")
    print("|---|" + "---|" * (len(args.busy) + 1))
    for policy, by_busy in base.items():
        med = {b: sorted(v)[len(v) // 2] for b, v in by_busy.items()}
        ratio = f"{med[2] / med[0]:.2f}" if 0 in med and 2 in med else ""
        print(f"| {policy} | " + " | ".join(f"{med.get(b, float('nan')):.1f}" for b in args.busy) + f" | {ratio} |")
    if args.csv:
        with open(args.csv, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=["machine", *rows[0]])
            writer.writeheader()
            writer.writerows({"machine": machine, **r} for r in rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""cwdm.openmp: the OpenMP wait policy is set before torch loads libgomp, and never over a user's."""

import os
import subprocess
import sys

import pytest

from cwdm.openmp import SPIN_COUNT, configure


def test_sets_the_spin_count_when_nothing_is_chosen():
    env = {"PATH": "/bin"}
    assert configure(env, modules={}) == f"GOMP_SPINCOUNT={SPIN_COUNT}"
    assert env["GOMP_SPINCOUNT"] == str(SPIN_COUNT)
    assert "OMP_WAIT_POLICY" not in env


@pytest.mark.parametrize("env", [{"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "300000"},
                                 {"CWDM_OPENMP": "keep"}, {"CWDM_OPENMP": "KEEP"}])
def test_a_users_choice_wins(env):
    before = dict(env)
    assert configure(env, modules={}) is None
    assert env == before


def test_too_late_once_torch_is_imported():
    env = {}
    assert configure(env, modules={"torch": object()}) is None
    assert env == {}


def _libgomp_settings(extra_env: dict, code: str) -> str:
    """stderr of a fresh interpreter with libgomp asked to print its settings when it loads."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "CWDM_OPENMP")}
    env.update(OMP_DISPLAY_ENV="VERBOSE", **extra_env)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    if "GOMP_SPINCOUNT" not in proc.stderr:
        pytest.skip("torch's OpenMP runtime is not GNU libgomp here")
    return proc.stderr


# the CLI's entry point runs a command whose parser imports torch (export's imports the network)
CLI_THEN_TORCH = ("import contextlib, io\nfrom cwdm.cli import main\n"
                  "with contextlib.redirect_stdout(io.StringIO()):\n"
                  "    try:\n        main(['export', '--help'])\n    except SystemExit:\n        pass\n"
                  "import sys\nassert 'torch' in sys.modules\n")


def test_the_command_line_sets_it_before_torch_loads_libgomp():
    assert f"GOMP_SPINCOUNT = '{SPIN_COUNT}'" in _libgomp_settings({}, CLI_THEN_TORCH)


def test_without_cwdm_libgomp_keeps_its_default():
    assert f"GOMP_SPINCOUNT = '{SPIN_COUNT}'" not in _libgomp_settings({}, "import torch\n")


def test_the_users_setting_reaches_libgomp_unchanged():
    assert "GOMP_SPINCOUNT = '12345'" in _libgomp_settings({"GOMP_SPINCOUNT": "12345"}, CLI_THEN_TORCH)


FORWARD = ("import torch\ntorch.manual_seed(0)\nnet = torch.nn.Conv3d(4, 8, 3, padding=1)\n"
           "x = torch.randn(2, 4, 12, 12, 12)\nwith torch.no_grad():\n    y = net(x).sum(dim=(2, 3, 4))\n"
           "print(' '.join(v.hex() for v in y.flatten().tolist()))\n")


def test_the_wait_policy_changes_no_number():
    outs = []
    for extra in ({"GOMP_SPINCOUNT": str(SPIN_COUNT)}, {"GOMP_SPINCOUNT": "300000"}, {"OMP_WAIT_POLICY": "PASSIVE"}):
        env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
        env.update(extra)
        proc = subprocess.run([sys.executable, "-c", FORWARD], env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        outs.append(proc.stdout.strip())
    assert outs[0] and outs[0] == outs[1] == outs[2]

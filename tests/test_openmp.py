"""cwdm.openmp: the OpenMP wait policy is set before torch loads libgomp, and never over a user's."""

import os
import subprocess
import sys

import pytest

from cwdm.openmp import BUSY_CORES, busy_cores, configure, cpu_times

BUSY = lambda: 1.9  # noqa: E731  (two other processes on two cores)
IDLE = lambda: 0.05  # noqa: E731


def test_busy_cores_sets_the_passive_policy():
    env = {"PATH": "/bin"}
    assert configure(env, modules={}, load=BUSY) == "OMP_WAIT_POLICY=PASSIVE"
    assert env["OMP_WAIT_POLICY"] == "PASSIVE" and "GOMP_SPINCOUNT" not in env


@pytest.mark.parametrize("load", [IDLE, lambda: BUSY_CORES - 0.01, lambda: None])
def test_idle_or_unknown_load_keeps_libgomps_default(load):
    env = {}
    assert configure(env, modules={}, load=load) is None and env == {}


@pytest.mark.parametrize("env", [{"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "300000"},
                                 {"CWDM_OPENMP": "keep"}, {"CWDM_OPENMP": "KEEP"}])
def test_a_users_choice_wins(env):
    before = dict(env)
    assert configure(env, modules={}, load=BUSY) is None
    assert env == before


def test_passive_on_request_without_looking_at_the_load():
    env = {"CWDM_OPENMP": "passive"}
    assert configure(env, modules={}, load=lambda: pytest.fail("the load was sampled")) == "OMP_WAIT_POLICY=PASSIVE"


def test_too_late_once_torch_is_imported():
    env = {}
    assert configure(env, modules={"torch": object()}, load=BUSY) is None
    assert env == {}


def test_busy_cores_from_two_samples_of_the_cpu_times():
    samples = iter([(100.0, 400.0), (250.0, 600.0)])  # 150 of 200 jiffies busy on 4 cores: 3 cores
    assert busy_cores(0.0, times=lambda: next(samples), cores=4, sleep=lambda s: None) == pytest.approx(3.0)
    assert busy_cores(0.0, times=lambda: None) is None


def test_cpu_times_reads_proc_stat(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text("cpu  10 0 5 80 5 0 0 0 0 0\ncpu0 5 0 2 40 3 0 0 0 0 0\n")
    assert cpu_times(str(stat)) == (15.0, 100.0)
    assert cpu_times(str(tmp_path / "missing")) is None
    if cpu_times() is not None:  # Linux: the machine's own counters
        busy, total = cpu_times()
        assert 0 <= busy <= total


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
    assert "GOMP_SPINCOUNT = '0'" in _libgomp_settings({"CWDM_OPENMP": "passive"}, CLI_THEN_TORCH)


def test_without_cwdm_libgomp_keeps_its_default():
    assert "GOMP_SPINCOUNT = '300000'" in _libgomp_settings({"CWDM_OPENMP": "passive"}, "import torch\n")


def test_the_users_setting_reaches_libgomp_unchanged():
    assert "GOMP_SPINCOUNT = '12345'" in _libgomp_settings({"GOMP_SPINCOUNT": "12345"}, CLI_THEN_TORCH)


FORWARD = ("import torch\ntorch.manual_seed(0)\nnet = torch.nn.Conv3d(4, 8, 3, padding=1)\n"
           "x = torch.randn(2, 4, 12, 12, 12)\nwith torch.no_grad():\n    y = net(x).sum(dim=(2, 3, 4))\n"
           "print(' '.join(v.hex() for v in y.flatten().tolist()))\n")


def test_the_wait_policy_changes_no_number():
    outs = []
    for extra in ({"GOMP_SPINCOUNT": "10000"}, {"GOMP_SPINCOUNT": "300000"}, {"OMP_WAIT_POLICY": "PASSIVE"}):
        env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
        env.update(extra)
        proc = subprocess.run([sys.executable, "-c", FORWARD], env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        outs.append(proc.stdout.strip())
    assert outs[0] and outs[0] == outs[1] == outs[2]

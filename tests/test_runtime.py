"""--compile without a working C++ compiler: one line, or the eager fallback said once (cwdm.runtime)."""

import pytest
import torch
from torch._dynamo.exc import BackendCompilerFailed
from torch._inductor.exc import InvalidCxxCompiler

from cwdm.errors import CwdmError
from cwdm.runtime import CompileFailed, EagerFallback, StrictCompiled, compile_network, describe_compile_error


def _no_compiler():
    """What dynamo raises when inductor finds no C++ compiler: the backend's error, wrapped."""
    inner = InvalidCxxCompiler()
    try:
        raise BackendCompilerFailed(lambda *a: None, inner, None)
    except BackendCompilerFailed as exc:
        return exc


def test_the_wrapped_backend_error_is_what_is_said():
    text = describe_compile_error(_no_compiler())
    assert text.startswith("InvalidCxxCompiler: No working C++ compiler found")
    assert "\n" not in text


def test_compile_true_without_a_compiler_is_one_line():
    def broken(*args):
        raise _no_compiler()

    with pytest.raises(CompileFailed) as info:
        StrictCompiled(broken)(torch.ones(1))
    text = str(info.value)
    assert isinstance(info.value, CwdmError) and "\n" not in text
    assert "torch.compile failed (InvalidCxxCompiler: No working C++ compiler" in text
    assert "--compile False" in text


def test_the_networks_own_errors_pass_through_strict_compilation():
    def bad_input(*args):
        raise ValueError("expected 5D input")

    with pytest.raises(ValueError, match="expected 5D input"):
        StrictCompiled(bad_input)(torch.ones(1))


def test_compile_auto_falls_back_once_on_the_strict_error(capsys):
    model = torch.nn.Linear(2, 2)
    calls = []

    def broken(*args):
        calls.append(1)
        raise _no_compiler()

    net = EagerFallback(model, StrictCompiled(broken))
    x = torch.ones(1, 2)
    assert torch.equal(net(x), model(x)) and torch.equal(net(x), model(x))
    assert calls == [1]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "torch.compile failed (InvalidCxxCompiler: No working C++ compiler" in err[0]
    assert "running the network eagerly" in err[0]


def test_compile_network_turns_a_compiler_failure_into_one_line(monkeypatch):
    """The network ``compile_network`` returns (what ``--compile True`` runs) raises CompileFailed."""
    def fake_compile(model, options=None):
        def compiled(*args):
            raise _no_compiler()
        return compiled

    monkeypatch.setattr(torch, "compile", fake_compile)
    net = compile_network(torch.nn.Identity(), torch.device("cpu"))
    with pytest.raises(CompileFailed, match="InvalidCxxCompiler"):
        net(torch.ones(1))


def test_sample_compile_true_without_a_compiler_is_one_line(make_brats_root, tmp_path, monkeypatch, capsys):
    from conftest import FAST, make_checkpoint
    from cwdm.cli import main as cli

    def fake_compile(model, options=None):
        def compiled(*args):
            raise _no_compiler()
        return compiled

    monkeypatch.setattr(torch, "compile", fake_compile)
    data, out = make_brats_root(cases=1), tmp_path / "out"
    ckpt = make_checkpoint(tmp_path / "t2f.pt")
    capsys.readouterr()
    assert cli(["sample", "--data_dir", str(data), "--model_path", str(ckpt), "--output_dir", str(out),
                *FAST, "--compile", "True"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(err)
    assert err[-1].startswith("cwdm sample: error: torch.compile failed (InvalidCxxCompiler")
    assert not list(out.rglob("*.nii.gz"))

"""One record of the sampling settings: SamplingOptions, the flags generated from it, and the sampler
registry as the only place that names a sampler or its options."""

import argparse
import ast
from dataclasses import fields
from pathlib import Path

import pytest
import torch

from cwdm.config import add_arguments, from_args
from cwdm.errors import CwdmError, api_call
from cwdm.inference.flags import SamplingFlags, _sampling_flags
from cwdm.inference.provenance import differences, result_keys, result_settings
from cwdm.inference.synthesis import OPTIONS_FIELD, SamplingOptions, Synthesizer
from cwdm.model.samplers import SAMPLERS, Sampler, SamplerOption, ddim, registry_options, run_sampler
from test_samplers import SHAPE, Recorder, gen
from test_synthesis import CONDS, NAMES, TASK, _loaded

CPU = torch.device("cpu")
FLAGS = ["sampler", "sampling_steps", "eta", "ensemble", "num_samples", "seed", "batch_size", "clip_denoised",
         "postprocess", "ema", "overwrite", "continue_anyway", "num_workers", "device", "precision", "channels_last",
         "compile", "ensemble_batch", "progress"]
"""The synthesis commands' sampling flags before they were generated (names and --help order must stay)."""
RECORD_KEYS = ("target", "sampler", "sampling_steps", "eta", "ensemble", "seed", "clip_denoised", "postprocess",
               "threshold", "ema", "precision")
"""The provenance record's settings as cwdm has always written them (old records must stay comparable)."""


def scaled(denoiser, x, timesteps, *, noise=None, callback=None, schedule=None, gain=1.0):
    """A new sampler with an option of its own: deterministic DDIM, its x0 times ``gain``."""
    return gain * ddim(denoiser, x, timesteps, noise=noise, callback=callback, schedule=schedule)


GAIN = SamplerOption("gain", 1.0, "scale of the final x0", minimum=0)


@pytest.fixture
def with_scaled(monkeypatch):
    """The registry with one more sampler, ``scaled``, taking ``gain`` (nothing else is patched)."""
    monkeypatch.setitem(SAMPLERS, "scaled", Sampler(scaled, SAMPLERS["ddim"].timesteps, options=(GAIN,)))


def test_flags_are_the_options_fields_and_keep_their_names():
    assert [f.name for f in fields(SamplingFlags)] == FLAGS
    flags = {f.name: (f.default, f.metadata.get("help")) for f in fields(SamplingFlags)}
    for f in fields(SamplingOptions):
        if f.name != OPTIONS_FIELD:
            assert flags[f.metadata.get("flag", f.name)] == (f.default, f.metadata["help"]), f.name
    for opt in registry_options().values():
        assert flags[opt.name] == (opt.default, opt.help)
    assert flags["sampling_steps"][0] == 1000 and "steps" not in flags and OPTIONS_FIELD not in flags


def test_flags_choose_the_options():
    chosen = SamplingFlags(sampler="ddim", sampling_steps=7, eta=0.3, seed=4, ensemble=2, compile="False").options()
    assert chosen == SamplingOptions(sampler="ddim", steps=7, sampler_options={"eta": 0.3}, seed=4, ensemble=2,
                                     compile="False")
    assert chosen.sampler_settings() == {"eta": 0.3}
    assert SamplingFlags(sampler="ddpm", eta=0.3).options().sampler_settings() == {}  # ddpm takes no eta
    assert SamplingOptions(sampler="ddim").sampler_settings() == {"eta": 0.0}  # the registry's default


def test_options_are_checked_by_their_declaration():
    with pytest.raises(CwdmError, match=r"^--eta must be >= 0, got -1.0$"):
        SamplingOptions(sampler="ddim", sampler_options={"eta": -1.0}).validate()
    with api_call(), pytest.raises(CwdmError, match=r"^eta= must be >= 0"):
        SamplingOptions(sampler="ddpm", sampler_options={"eta": -1.0}).validate()
    with pytest.raises(CwdmError, match="unknown sampler option 'gain'; the samplers take eta"):
        SamplingOptions(sampler_options={"gain": 2.0}).validate()
    with pytest.raises(CwdmError, match=r"^unknown --sampler 'euler'; choose one of ddpm, ddim, ddim_trailing, regression$"):
        SamplingOptions(sampler="euler").validate()
    with pytest.raises(TypeError, match="no sampler takes: gain"):
        run_sampler("ddim", Recorder(torch.zeros(SHAPE)), SHAPE, gen(), steps=2, gain=2.0)


def test_run_sampler_forwards_only_the_options_the_sampler_declares(monkeypatch):
    seen = []
    fn = SAMPLERS["ddim"].fn
    monkeypatch.setitem(SAMPLERS, "ddim", Sampler(lambda *a, **kw: seen.append(kw) or fn(*a, **kw),
                                                  SAMPLERS["ddim"].timesteps, SAMPLERS["ddim"].options))
    run_sampler("ddim", Recorder(torch.zeros(SHAPE)), SHAPE, gen(), steps=2, eta=0.7)
    run_sampler("ddim", Recorder(torch.zeros(SHAPE)), SHAPE, gen(), steps=2)
    assert [kw["eta"] for kw in seen] == [0.7, 0.0]
    run_sampler("ddpm", Recorder(torch.zeros(SHAPE)), SHAPE, gen(), steps=2, eta=0.7)  # ddpm takes none: ignored


def test_a_sampler_registered_alone_is_usable_and_recorded(with_scaled):
    options = SamplingOptions(sampler="scaled", steps=3, sampler_options={"gain": 2.0})
    options.validate()
    with pytest.raises(CwdmError, match=r"^--gain must be >= 0, got -1$"):
        SamplingOptions(sampler="scaled", sampler_options={"gain": -1}).validate()
    plain, _ = Synthesizer(_loaded(), TASK, CPU, SamplingOptions(sampler="ddim", steps=3))(CONDS, NAMES)
    doubled, _ = Synthesizer(_loaded(), TASK, CPU, options)(CONDS, NAMES)
    same, _ = Synthesizer(_loaded(), TASK, CPU, SamplingOptions(sampler="scaled", steps=3))(CONDS, NAMES)
    assert torch.equal(same, plain)  # gain not given: the declared default 1
    torch.testing.assert_close(doubled, 2 * plain, atol=1e-6, rtol=0)  # the inverse wavelet transform is linear
    assert float(plain.abs().max()) > 1e-3

    settings = result_settings(options, CPU, target="t2f", postprocess=True, threshold=None, ema=True)
    assert settings["sampler"] == "scaled" and settings["gain"] == 2.0 and settings["eta"] is None
    assert tuple(settings) == result_keys() == (*RECORD_KEYS[:4], "gain", *RECORD_KEYS[4:])
    ddim_run = result_settings(SamplingOptions(sampler="ddim", steps=3), CPU, target="t2f", postprocess=True,
                               threshold=None, ema=True)
    assert ddim_run["gain"] is None and ddim_run["eta"] == 0.0
    assert differences({"settings": ddim_run, "checkpoints": {}}, {"settings": settings, "checkpoints": {}}) == [
        "sampler ddim -> scaled", "eta 0.0 -> none", "gain none -> 2.0"]


def test_a_registered_sampler_gets_its_flag_and_choice(with_scaled):
    flags = _sampling_flags()
    parser = argparse.ArgumentParser()
    add_arguments(parser, flags)
    assert [f.name for f in fields(flags)] == [*FLAGS[:3], "gain", *FLAGS[3:]]
    assert "--gain GAIN" in parser.format_help() and "{ddpm,ddim,ddim_trailing,regression,scaled}" in parser.format_help()
    cfg = from_args(flags, parser.parse_args(["--sampler", "scaled", "--gain", "2.5", "--sampling_steps", "3"]))
    assert cfg.options() == SamplingOptions(sampler="scaled", steps=3, sampler_options={"eta": 0.0, "gain": 2.5})
    assert cfg.options().sampler_settings() == {"gain": 2.5}


def test_old_records_with_eta_still_compare():
    assert result_keys() == RECORD_KEYS
    old = {"target": "t2f", "sampler": "ddim", "sampling_steps": 2, "eta": 1.0, "ensemble": 2, "seed": 0,
           "clip_denoised": True, "postprocess": True, "threshold": None, "ema": True, "precision": "fp32"}
    for eta, expected in ((1.0, []), (0.0, ["eta 1.0 -> 0.0"])):
        options = SamplingOptions(sampler="ddim", steps=2, ensemble=2, sampler_options={"eta": eta})
        new = result_settings(options, CPU, target="t2f", postprocess=True, threshold=None, ema=True)
        assert new == {**old, "eta": eta}
        assert differences({"settings": old, "checkpoints": {}}, {"settings": new, "checkpoints": {}}) == expected
    ddpm = result_settings(SamplingOptions(sampler="ddpm", steps=2, ensemble=2, sampler_options={"eta": 1.0}), CPU,
                           target="t2f", postprocess=True, threshold=None, ema=True)
    assert ddpm["eta"] is None  # an option the chosen sampler does not take is not a result setting


@pytest.mark.parametrize("module", ["inference/synthesis.py", "inference/flags.py", "inference/provenance.py"])
def test_no_sampler_or_option_is_named_outside_the_registry(module):
    names = set(SAMPLERS) | set(registry_options())
    tree = ast.parse((Path(__file__).resolve().parents[1] / "cwdm" / module).read_text())
    spelled = {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and node.value in names}
    spelled |= {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute) and node.attr in names}
    assert not spelled, f"{module} names {sorted(spelled)}: declare it in cwdm/model/samplers.py"

"""Synthesizer: batched ensembles, precision choices, post-processing."""

import pytest
import torch

from cwdm.model.checkpoint import LoadedModel
from cwdm.errors import CwdmError
from cwdm.runtime import EagerFallback, compile_mode
from cwdm.inference.synthesis import SamplingOptions, Synthesizer, degenerate, postprocess, run_compiles
from cwdm.task import Task
from cwdm.model.unet import UNet, UNetConfig


def _loaded(seed: int = 0) -> LoadedModel:
    """A tiny 3-condition network whose every layer is random (the zero-initialized ones too)."""
    torch.manual_seed(seed)
    cfg = UNetConfig(model_channels=8, channel_mult=(1, 2), num_res_blocks=1, num_groups=4)
    model = UNet(cfg)
    for m in model.modules():
        if isinstance(m, torch.nn.Conv3d):
            m.reset_parameters()
    return LoadedModel(model=model, config=cfg, kind="released", task=TASK)


def _count_calls(model: torch.nn.Module) -> list:
    batches = []
    model.register_forward_hook(lambda mod, args, out: batches.append(args[0].shape[0]))
    return batches


TASK = Task.default("t2f")
CONDS = torch.rand(2, 3, 8, 8, 8, generator=torch.Generator().manual_seed(3))
NAMES = ["case-a", "case-b"]


@pytest.mark.parametrize("sampler,steps", [("ddim", 3), ("ddpm", 4), ("regression", 1)])
def test_ensemble_is_one_batched_call_per_step_and_matches_member_loop(sampler, steps):
    k = 3
    batched = Synthesizer(_loaded(), TASK, torch.device("cpu"),
                          SamplingOptions(sampler=sampler, steps=steps, ensemble=k, sampler_options={"eta": 0.5}))
    calls = _count_calls(batched.model)
    mean_b, std_b = batched(CONDS, NAMES)
    assert calls == [len(NAMES) * k] * steps  # K members of both cases in each call, `steps` calls
    assert batched.options.calls_per_case == steps

    looped = Synthesizer(_loaded(), TASK, torch.device("cpu"),
                         SamplingOptions(sampler=sampler, steps=steps, ensemble=k, sampler_options={"eta": 0.5},
                                         ensemble_batch=1))
    calls = _count_calls(looped.model)
    mean_l, std_l = looped(CONDS, NAMES)
    assert calls == [len(NAMES)] * (steps * k)
    assert looped.options.calls_per_case == steps * k
    assert mean_b.shape == (2, 8, 8, 8) and std_b.shape == (2, 8, 8, 8)
    torch.testing.assert_close(mean_b, mean_l, atol=1e-5, rtol=0)
    torch.testing.assert_close(std_b, std_l, atol=1e-5, rtol=0)
    assert float(std_b.max()) > 1e-4  # the members really differ, so the comparison means something


def test_case_result_does_not_depend_on_batch_partners():
    synth = Synthesizer(_loaded(), TASK, torch.device("cpu"), SamplingOptions(sampler="ddim", steps=3, ensemble=2))
    both, _ = synth(CONDS, NAMES)
    alone, _ = synth(CONDS[1:], NAMES[1:])
    torch.testing.assert_close(both[1], alone[0], atol=1e-5, rtol=0)


def test_channels_last_gives_the_same_synthesis():
    plain = Synthesizer(_loaded(), TASK, torch.device("cpu"), SamplingOptions(sampler="ddim", steps=3))
    fast = Synthesizer(_loaded(), TASK, torch.device("cpu"), SamplingOptions(sampler="ddim", steps=3,
                                                                              channels_last=True))
    assert fast.format == torch.channels_last_3d and plain.format == torch.contiguous_format
    torch.testing.assert_close(fast(CONDS, NAMES)[0], plain(CONDS, NAMES)[0], atol=1e-4, rtol=0)


def test_precision_is_plain_fp32_on_cpu_and_checked():
    outs = [Synthesizer(_loaded(), TASK, torch.device("cpu"),
                        SamplingOptions(sampler="ddim", steps=2, precision=p))(CONDS, NAMES)[0]
            for p in ("fp32", "tf32", "bf16")]
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])
    with pytest.raises(CwdmError, match="precision"):
        SamplingOptions(precision="fp16").validate()
    with pytest.raises(CwdmError, match="ensemble_batch"):
        SamplingOptions(ensemble_batch=-1).validate()


def test_wrong_number_of_conditions_is_refused():
    with pytest.raises(CwdmError, match=r"takes 32 input channels \(3 condition volumes\).*t1n, t1c gives 24"):
        Synthesizer(_loaded(), Task.default("t2f", ["t1n", "t1c", "t2f"]), torch.device("cpu"),
                    SamplingOptions(sampler="regression"))


def test_postprocess_clamps_masks_and_thresholds():
    vol = torch.tensor([[[-0.5, 0.25, 0.5, 1.5, 0.03]]])
    first = torch.tensor([[[1.0, 1.0, 0.0, 1.0, 1.0]]])
    assert postprocess(vol, first).tolist() == [[[0.0, 0.25, 0.0, 1.0, pytest.approx(0.03)]]]
    out = postprocess(vol, first, threshold=0.04)
    assert out.tolist() == [[[0.0, 0.25, 0.0, 1.0, 0.0]]]
    assert torch.equal(postprocess(vol, first, enabled=False), vol)


@pytest.mark.slow
def test_compiled_path_gives_the_same_synthesis():
    """--compile True (inductor with frozen weights on a CPU) against the eager network, on a tiny network."""
    from torch._dynamo.eval_frame import OptimizedModule
    from torch._dynamo.utils import counters

    opts = dict(sampler="ddim", steps=3, ensemble=2)
    plain = Synthesizer(_loaded(), TASK, torch.device("cpu"), SamplingOptions(**opts, compile="False"))
    fast = Synthesizer(_loaded(), TASK, torch.device("cpu"), SamplingOptions(**opts, compile=True))
    counters.clear()
    mean_f, std_f = fast(CONDS, NAMES)
    assert isinstance(fast._compiled.compiled, OptimizedModule)  # True: no eager fallback (compiler errors:
    assert not isinstance(fast._compiled, EagerFallback)  # one line, runtime.StrictCompiled)
    assert counters["stats"]["unique_graphs"] >= 1  # dynamo really captured the network
    mean_p, std_p = plain(CONDS, NAMES)
    assert plain._compiled is None
    torch.testing.assert_close(mean_f, mean_p, atol=1e-4, rtol=0)
    torch.testing.assert_close(std_f, std_p, atol=1e-4, rtol=0)


@pytest.mark.parametrize("sampler,steps,cases,grid,device,mode,expected", [
    ("ddpm", 1000, 1, (224, 224, 160), "cpu", "auto", True),
    ("ddim", 10, 2, (224, 224, 160), "cpu", "auto", True),  # 20 full-size calls
    ("ddim", 10, 1, (224, 224, 160), "cpu", "auto", False),  # 10: compiling would not pay off
    ("regression", 1, 19, (224, 224, 160), "cpu", "auto", False),
    ("regression", 1, 20, (224, 224, 160), "cpu", "auto", True),
    ("ddim", 10, 100, (56, 56, 40), "cpu", "auto", False),  # the demo's grid
    ("ddpm", 1000, 1, (56, 56, 40), "cpu", "auto", False),  # 85 s per case eager: compiling would not pay
    ("ddpm", 1000, 2, (56, 56, 40), "cpu", "auto", True),
    ("ddpm", 1000, 1, (224, 224, 160), "cuda", "auto", False),  # CUDA keeps the measured eager path
    ("ddim", 10, 1, (224, 224, 160), "cuda", "True", True),
    ("regression", 1, 1, (8, 8, 8), "cpu", "true", True),
    ("ddpm", 1000, 5, (224, 224, 160), "cpu", False, False),
])
def test_auto_compile_decides_by_the_run(sampler, steps, cases, grid, device, mode, expected):
    opts = SamplingOptions(sampler=sampler, steps=steps, compile=mode)
    opts.validate()
    assert run_compiles(opts, torch.device(device), cases, grid) is expected


def test_auto_compile_counts_ensemble_members_and_the_synthesizer_uses_the_run():
    grid = (224, 224, 160)
    assert not run_compiles(SamplingOptions(sampler="ddim", steps=10), torch.device("cpu"), 1, grid)
    assert run_compiles(SamplingOptions(sampler="ddim", steps=10, ensemble=2), torch.device("cpu"), 1, grid)
    assert run_compiles(SamplingOptions(sampler="ddim", steps=10, ensemble=2, ensemble_batch=1),
                        torch.device("cpu"), 1, grid)
    synth = Synthesizer(_loaded(), TASK, torch.device("cpu"), SamplingOptions(sampler="ddim", steps=2))
    synth.run_cases = 10 ** 6  # 8x8x8 volumes: 2e9 calls x voxels would compile ...
    with pytest.MonkeyPatch.context() as mp:
        chosen = []
        mp.setattr(synth, "network", lambda compiled: chosen.append(compiled) or synth.model)
        synth(CONDS, NAMES)
        synth.run_cases = 1  # ... 2 cases of 2 calls would not
        synth(CONDS, NAMES)
    assert chosen == [True, False]


def test_compile_mode_spellings_and_refusal():
    assert [compile_mode(v) for v in ("auto", "AUTO", True, "yes", "1", False, "no", "False")] == \
        ["auto", "auto", "True", "True", "True", "False", "False", "False"]
    with pytest.raises(CwdmError, match=r"unknown --compile 'fast'; choose one of auto, True, False"):
        SamplingOptions(compile="fast").validate()


def test_failed_compilation_falls_back_to_eager_once(capsys):
    from torch._dynamo.exc import TorchDynamoException

    model = torch.nn.Linear(2, 2)
    tried = []

    def broken(*args):
        tried.append(1)
        raise TorchDynamoException("no C++ compiler found\nmore detail")

    net = EagerFallback(model, broken)
    x = torch.ones(1, 2)
    assert torch.equal(net(x), model(x)) and torch.equal(net(x), model(x))
    assert tried == [1]  # not retried after the first failure
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["cwdm: torch.compile failed (TorchDynamoException: no C++ compiler found); running the network "
                   "eagerly (--compile False skips the attempt)"]


def test_errors_of_the_network_itself_are_not_swallowed():
    def bad_input(*args):
        raise CwdmError("network expects input (N, 32, d, h, w)")

    with pytest.raises(CwdmError, match="network expects"):
        EagerFallback(torch.nn.Identity(), bad_input)(torch.ones(1))


def test_degenerate_names_nan_zero_and_constant_volumes():
    torch.manual_seed(0)
    brain = torch.zeros(6, 6, 4)
    brain[1:5, 1:5, 1:3] = 1.0
    good = 0.3 + 0.5 * torch.rand(6, 6, 4)
    assert degenerate(good, brain) is None
    assert degenerate(good, brain, std=torch.rand(6, 6, 4), threshold=0.04) is None
    nan = good.clone()
    nan[2, 2, 2] = float("nan")
    assert degenerate(nan, brain) == "synthesized volume has 1 NaN/Inf voxels of 144"
    inf = good.clone()
    inf[0, 0, 0] = float("inf")  # outside the brain, where post-processing would hide it
    assert "1 NaN/Inf voxels" in degenerate(inf, brain)
    std = torch.zeros(6, 6, 4)
    std[1, 1, 1] = float("nan")
    assert degenerate(good, brain, std=std) == "synthesized ensemble std map has 1 NaN/Inf voxels of 144"
    assert degenerate(torch.zeros(6, 6, 4), brain) == "synthesized volume is all zero"
    assert degenerate(-good, brain) == "synthesized volume is all zero"  # clamped to 0
    assert degenerate(0.03 * good, brain, threshold=0.04) == "synthesized volume is all zero"  # zeroed by auto
    assert degenerate(0.03 * good, brain) is None  # without the threshold it is a (dark) volume
    flat = torch.full((6, 6, 4), 0.5)
    assert degenerate(flat, brain) == "synthesized volume is constant (0.5) inside the brain"
    assert degenerate(flat, torch.ones(6, 6, 4), enabled=False) == "synthesized volume is constant (0.5) inside the brain"
    edge = flat.clone()
    edge[0, 0, 0] = 0.9  # differs only outside the brain: post-processing zeroes it, still constant inside
    assert "constant" in degenerate(edge, brain)

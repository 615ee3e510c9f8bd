import pytest
import torch

from cwdm.model.diffusion import make_denoiser
from cwdm.model.samplers import SAMPLERS, NoiseSource, ddim, ddpm, network_calls, run_sampler
from conftest import tiny_model

SHAPE = (1, 8, 4, 4, 4)


class Recorder:
    """A denoiser that records the timesteps it is called with and returns a fixed x0."""

    def __init__(self, x0):
        self.x0, self.calls = x0, []

    def __call__(self, x_t, t):
        self.calls.append(int(t[0]))
        return self.x0.expand_as(x_t)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("steps,expected", [(5, [999, 749, 500, 250, 0]), (2, [999, 0]), (1, [999])])
def test_ddim_visits_pinned_timesteps_and_returns_last_x0(steps, expected):
    rec = Recorder(torch.full(SHAPE, 0.3))
    out = run_sampler("ddim", rec, SHAPE, gen(), steps=steps)
    assert rec.calls == expected
    torch.testing.assert_close(out, torch.full(SHAPE, 0.3))


@pytest.mark.parametrize("steps,expected", [(1, [999]), (2, [999, 499]), (4, [999, 749, 499, 249])])
def test_ddim_trailing_is_ddim_over_the_trailing_timesteps(steps, expected):
    rec = Recorder(torch.full(SHAPE, 0.3))
    run_sampler("ddim_trailing", rec, SHAPE, gen(), steps=steps)
    assert rec.calls == expected and SAMPLERS["ddim_trailing"].timesteps(1000) == list(range(999, -1, -1))
    den = _tiny_denoiser()
    with torch.no_grad():
        by_name = run_sampler("ddim_trailing", den, SHAPE, gen(3), steps=steps)
        noise = NoiseSource(SHAPE, gen(3))
        assert torch.equal(by_name, ddim(den, noise(), expected))


def test_ddpm_full_visits_every_timestep():
    rec = Recorder(torch.zeros(SHAPE))
    run_sampler("ddpm", rec, SHAPE, gen(), steps=1000)
    assert rec.calls == list(range(999, -1, -1))


def test_ddpm_respaced_calls_model_with_original_timesteps():
    rec = Recorder(torch.zeros(SHAPE))
    run_sampler("ddpm", rec, SHAPE, gen(), steps=4)
    assert rec.calls == [999, 666, 333, 0]


def test_ddpm_exact_x0_recovers_it():
    # a perfect denoiser: x0 known; the final step (t = 0, no noise) returns the posterior mean = x0
    x0 = torch.rand(SHAPE)
    out = run_sampler("ddpm", Recorder(x0), SHAPE, gen(), steps=10)
    torch.testing.assert_close(out, x0, atol=1e-5, rtol=0)


def test_ddpm_with_one_step_runs():
    x0 = torch.rand(SHAPE)
    rec = Recorder(x0)
    out = run_sampler("ddpm", rec, SHAPE, gen(), steps=1)
    assert len(rec.calls) == 1 and torch.isfinite(out).all()


def test_regression_is_one_call_at_last_timestep():
    rec = Recorder(torch.ones(SHAPE))
    out = run_sampler("regression", rec, SHAPE, gen())
    assert rec.calls == [999] and torch.equal(out, torch.ones(SHAPE))
    assert network_calls("regression", 50) == 1 and network_calls("ddim", 50) == 50


@pytest.mark.parametrize("name,steps,eta", [("ddpm", 5, 0.0), ("ddim", 5, 0.0), ("ddim", 5, 1.0), ("regression", 1, 0.0)])
def test_same_seed_bit_identical_different_seed_differs(name, steps, eta):
    model = tiny_model()
    cond = torch.rand(1, 24, 4, 4, 4)
    den = make_denoiser(model, cond)
    with torch.no_grad():
        a = run_sampler(name, den, SHAPE, gen(1), steps=steps, eta=eta)
        b = run_sampler(name, den, SHAPE, gen(1), steps=steps, eta=eta)
        c = run_sampler(name, den, SHAPE, gen(2), steps=steps, eta=eta)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_unknown_sampler():
    with pytest.raises(ValueError, match="unknown sampler"):
        run_sampler("euler", Recorder(torch.zeros(SHAPE)), SHAPE, gen())


def test_per_item_generators_make_items_independent_of_batch():
    model = tiny_model()
    cond = torch.rand(2, 24, 4, 4, 4)
    with torch.no_grad():
        both = run_sampler("ddim", make_denoiser(model, cond), (2, 8, 4, 4, 4), [gen(5), gen(6)], steps=3, eta=1.0)
        second = run_sampler("ddim", make_denoiser(model, cond[1:]), (1, 8, 4, 4, 4), [gen(6)], steps=3, eta=1.0)
    torch.testing.assert_close(both[1:], second, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="generators"):
        run_sampler("ddim", make_denoiser(model, cond), (2, 8, 4, 4, 4), [gen(5)], steps=1)


# --- composable samplers: explicit start, explicit timesteps, step callback -----------------

def _tiny_denoiser(batch=1, seed=0):
    cond = torch.rand(batch, 24, 4, 4, 4, generator=gen(seed))
    return make_denoiser(tiny_model(), cond)


def test_ddim_over_custom_timesteps_from_given_x_equals_manual_steps():
    from cwdm.model.diffusion import ddim_step, linear_schedule

    den, x = _tiny_denoiser(), torch.randn(SHAPE, generator=gen(3))
    noise_a, noise_b = NoiseSource(SHAPE, gen(4)), NoiseSource(SHAPE, gen(4))
    seen = []
    with torch.no_grad():
        out = ddim(den, x, [999, 500, 0], noise=noise_a, eta=0.5, callback=seen.append)
        sched, y = linear_schedule(), x
        for t, s in [(999, 500), (500, 0), (0, None)]:
            y = ddim_step(den, sched, y, t, s, 0.5, noise_b)["sample"]
    assert torch.equal(out, y)
    assert [(d["i"], d["t"]) for d in seen] == [(0, 999), (1, 500), (2, 0)]
    assert torch.equal(seen[-1]["x"], out) and torch.equal(seen[-1]["x0"], out)
    assert not torch.equal(seen[0]["x"], seen[1]["x"])


def test_given_start_is_used_and_callback_sees_every_step():
    rec = Recorder(torch.full(SHAPE, 0.25))
    seen = []
    x = torch.randn(SHAPE, generator=gen(1))
    out = ddpm(rec, x, [999, 700, 300, 10], noise=NoiseSource(SHAPE, gen(2)), callback=seen.append)
    assert rec.calls == [999, 700, 300, 10]
    assert [d["i"] for d in seen] == [0, 1, 2, 3] and [d["t"] for d in seen] == [999, 700, 300, 10]
    assert all(torch.equal(d["x0"], torch.full(SHAPE, 0.25)) for d in seen)
    assert torch.equal(seen[-1]["x"], out)
    # the start is used: the first step's mean mixes x0 with the given x
    moved = []
    ddpm(rec, x + 1, [999, 700, 300, 10], noise=NoiseSource(SHAPE, gen(2)), callback=moved.append)
    assert not torch.equal(seen[0]["x"], moved[0]["x"])


def test_run_sampler_is_the_sampler_from_the_first_noise_draw():
    den = _tiny_denoiser()
    with torch.no_grad():
        by_name = run_sampler("ddpm", den, SHAPE, gen(7), steps=3)
        noise = NoiseSource(SHAPE, gen(7))
        by_hand = ddpm(den, noise(), [999, 500, 0], noise=noise)
    assert torch.equal(by_name, by_hand)


@pytest.mark.parametrize("bad", [[0, 500], [999, 999, 0], []])
def test_timesteps_must_decrease(bad):
    with pytest.raises(ValueError, match="strictly decreasing"):
        ddim(Recorder(torch.zeros(SHAPE)), torch.zeros(SHAPE), bad)


def test_registry_drives_calls_and_options():
    from cwdm.errors import CwdmError
    from cwdm.inference.synthesis import SamplingOptions

    assert set(SAMPLERS) == {"ddpm", "ddim", "ddim_trailing", "regression"}
    for name, sampler in SAMPLERS.items():
        rec = Recorder(torch.zeros(SHAPE))
        run_sampler(name, rec, SHAPE, gen(), steps=7)
        assert len(rec.calls) == network_calls(name, 7) == sampler.network_calls(7)
    SamplingOptions(sampler="regression", steps=0).validate()  # regression ignores --sampling_steps
    with pytest.raises(CwdmError, match="sampling_steps"):
        SamplingOptions(sampler="ddim", steps=0).validate()
    with pytest.raises(CwdmError, match="choose one of ddpm, ddim, ddim_trailing, regression"):
        SamplingOptions(sampler="euler").validate()

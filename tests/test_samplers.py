import pytest
import torch

from cwdm.diffusion import make_denoiser
from cwdm.samplers import ddim, ddpm, network_calls, regression, run_sampler
from refdata import tiny_model

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
    out = ddim(rec, SHAPE, gen(), steps=steps)
    assert rec.calls == expected
    torch.testing.assert_close(out, torch.full(SHAPE, 0.3))


def test_ddpm_full_visits_every_timestep():
    rec = Recorder(torch.zeros(SHAPE))
    ddpm(rec, SHAPE, gen(), steps=1000)
    assert rec.calls == list(range(999, -1, -1))


def test_ddpm_respaced_calls_model_with_original_timesteps():
    rec = Recorder(torch.zeros(SHAPE))
    ddpm(rec, SHAPE, gen(), steps=4)
    assert rec.calls == [999, 666, 333, 0]


def test_ddpm_exact_x0_recovers_it():
    # a perfect denoiser: x0 known; the final step (t = 0, no noise) returns the posterior mean = x0
    x0 = torch.rand(SHAPE)
    out = ddpm(Recorder(x0), SHAPE, gen(), steps=10)
    torch.testing.assert_close(out, x0, atol=1e-5, rtol=0)


def test_regression_is_one_call_at_last_timestep():
    rec = Recorder(torch.ones(SHAPE))
    out = regression(rec, SHAPE, gen())
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
        both = ddim(make_denoiser(model, cond), (2, 8, 4, 4, 4), [gen(5), gen(6)], steps=3, eta=1.0)
        second = ddim(make_denoiser(model, cond[1:]), (1, 8, 4, 4, 4), [gen(6)], steps=3, eta=1.0)
    torch.testing.assert_close(both[1:], second, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="generators"):
        ddim(make_denoiser(model, cond), (2, 8, 4, 4, 4), [gen(5)], steps=1)

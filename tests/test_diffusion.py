import numpy as np
import pytest
import torch

from cwdm.model.diffusion import (clip_x0, ddpm_step, linear_schedule, make_denoiser, q_sample, respace,
                            spaced_timesteps, training_loss)
from cwdm.model.wavelet import dwt3d, from_subbands, to_subbands
from conftest import npz, tiny_model

SCHEDULE_KEYS = ("betas", "alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
                 "posterior_mean_coef1", "posterior_mean_coef2", "fixed_large_variance")


@pytest.mark.parametrize("key", SCHEDULE_KEYS)
def test_schedule_matches_reference(key):
    ref = npz("schedule_linear_1000")
    ours = getattr(linear_schedule(1000), key)
    assert ours.dtype == np.float64
    np.testing.assert_allclose(ours, ref[key], rtol=1e-10, atol=1e-15)


def test_training_loss_matches_reference():
    ref = {k: torch.from_numpy(v) for k, v in npz("training_loss_tiny").items()}
    x0 = to_subbands(ref["t2f"])
    assert (x0 - ref["x_start_wav"]).abs().max() < 1e-5
    cond = to_subbands(torch.cat([ref["t1n"], ref["t1c"], ref["t2w"]], dim=1))
    noise = dwt3d(ref["noise_image"])
    sched = linear_schedule()
    assert (q_sample(sched, x0, ref["t"], noise) - ref["x_t"]).abs().max() < 1e-5
    with torch.no_grad():
        loss, per_subband, pred = training_loss(tiny_model(), sched, x0, cond, ref["t"], noise)
    assert (pred - ref["model_output"]).abs().max() < 1e-4
    assert (per_subband - ref["mse_wav"]).abs().max() < 1e-4
    assert loss.item() == pytest.approx(ref["mse_wav"].mean().item(), rel=1e-5)


@pytest.mark.parametrize("t", [999, 500, 10, 0])
def test_reverse_step_matches_reference(t):
    ref = {k: torch.from_numpy(v) for k, v in npz("reverse_step_tiny").items()}
    assert (to_subbands(ref["cond_images"]) - ref["cond"]).abs().max() < 1e-5
    den = make_denoiser(tiny_model(), ref["cond"])
    with torch.no_grad():
        out = ddpm_step(den, linear_schedule(), ref["x_t"], torch.tensor([t]), ref[f"t{t}_noise"])
    for key in ("pred_xstart", "mean", "log_variance", "sample"):
        assert (out[key] - ref[f"t{t}_{key}"]).abs().max() < 1e-4, key


def test_clip_x0_clamps_in_image_space():
    img = torch.linspace(-1, 2, 4 * 4 * 4).view(1, 1, 4, 4, 4)
    clipped = from_subbands(clip_x0(to_subbands(img)))
    torch.testing.assert_close(clipped, img.clamp(0, 1), atol=1e-6, rtol=0)


def test_spaced_timesteps_pinned():
    np.testing.assert_array_equal(spaced_timesteps(1000, 5), [0, 250, 500, 749, 999])
    np.testing.assert_array_equal(spaced_timesteps(1000, 1), [999])
    np.testing.assert_array_equal(spaced_timesteps(1000, 2), [0, 999])
    np.testing.assert_array_equal(spaced_timesteps(1000, 1000), np.arange(1000))
    ts = spaced_timesteps(1000, 100)
    assert len(np.unique(ts)) == 100 and ts[0] == 0 and ts[-1] == 999
    with pytest.raises(ValueError):
        spaced_timesteps(1000, 0)
    with pytest.raises(ValueError):
        spaced_timesteps(1000, 1001)


def test_respace_keeps_alpha_bar_at_kept_steps():
    base = linear_schedule()
    ts = spaced_timesteps(1000, 10)
    sp = respace(base, ts)
    np.testing.assert_allclose(sp.alphas_cumprod, base.alphas_cumprod[ts], rtol=1e-12)
    np.testing.assert_array_equal(sp.timestep_map, ts)
    assert respace(base, range(1000)) is base

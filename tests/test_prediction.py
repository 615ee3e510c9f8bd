"""The network's output parameterization (cwdm.model.prediction): the x0 default changes nothing, the edm
coefficients are the best linear guess from x_t with a unit-scale target, and an edm model is a normal
checkpoint that sampling reads without flags."""

import pytest
import torch

from cwdm.commands.export import export_state_dict
from cwdm.errors import CwdmError
from cwdm.model.checkpoint import load_model, read_checkpoint
from cwdm.model.diffusion import linear_schedule, make_denoiser, q_sample, training_loss, clip_x0
from cwdm.model.prediction import X0, Prediction, subband_rms
from cwdm.training.loop import sample_timesteps, train
from cwdm.training.state import checkpoint_files
from test_train import cfg_for

ABAR = linear_schedule().alphas_cumprod
SIGMA = (0.3, 0.09, 0.09, 0.04, 0.1, 0.04, 0.04, 0.03)


class Zero(torch.nn.Module):
    """A 'network' whose output is 0: the edm estimate is then c_skip x_t."""

    def forward(self, x, t):
        return torch.zeros(x.shape[0], 8, *x.shape[2:], dtype=x.dtype)


@pytest.mark.parametrize("t", [0, 10, 250, 999])
@pytest.mark.parametrize("sigma", [SIGMA, (0.5,)])
def test_edm_skip_is_the_best_linear_guess_and_the_target_has_unit_scale(t, sigma):
    gen = torch.Generator().manual_seed(t)
    s = torch.tensor(sigma * (8 if len(sigma) == 1 else 1)).view(1, 8, 1, 1, 1)
    x0 = torch.randn((64, 8, 6, 6, 6), generator=gen, dtype=torch.float64) * s
    x_t = q_sample(linear_schedule(), x0, torch.full((64,), t), torch.randn(x0.shape, generator=gen, dtype=x0.dtype))
    skip, out, inp = Prediction("edm", sigma).coefficients(ABAR, torch.full((64,), t), x0)
    # the least squares slope of x0 on x_t per subband is c_skip, within 4 standard errors
    dims = (0, 2, 3, 4)
    slope = (x0 * x_t).sum(dim=dims) / (x_t * x_t).sum(dim=dims)
    resid = x0 - slope.view(1, 8, 1, 1, 1) * x_t
    se = (resid.pow(2).mean(dim=dims) / (x_t * x_t).sum(dim=dims)).sqrt()
    assert torch.all((slope - skip[0].flatten()).abs() < 4 * se + 1e-12)
    target = (x0 - skip * x_t) / out
    assert torch.allclose(target.std(dim=(0, 2, 3, 4)), torch.ones(8, dtype=x0.dtype), rtol=0.06)
    assert torch.allclose((inp * x_t).std(dim=(0, 2, 3, 4)), torch.ones(8, dtype=x0.dtype), rtol=0.06)


def test_edm_limits_and_x0_identity():
    t = torch.tensor([0, 999])
    like = torch.zeros(2, 8, 1, 1, 1)
    skip, out, inp = Prediction("edm", SIGMA).coefficients(ABAR, t, like)
    assert torch.all(skip[0] > 0.85) and torch.all(out[0] < 0.04)  # low noise: follow x_t
    assert torch.all(skip[1] < 0.03) and torch.allclose(out[1].flatten(), torch.tensor(SIGMA), rtol=1e-3)
    assert torch.allclose(inp[1], torch.ones(8, 1, 1, 1), atol=1e-3)
    skip, out, inp = X0.coefficients(ABAR, t, like)
    assert torch.all(skip == 0) and torch.all(out == 1) and torch.all(inp == 1)


def test_edm_denoiser_and_loss_use_the_coefficients():
    gen = torch.Generator().manual_seed(0)
    x_t = torch.randn((2, 8, 4, 4, 4), generator=gen)
    cond = torch.zeros((2, 0, 4, 4, 4))
    t = torch.tensor([5, 500])
    p = Prediction("edm", SIGMA)
    skip, _, _ = p.coefficients(ABAR, t, x_t)
    assert torch.allclose(make_denoiser(Zero(), cond, prediction=p)(x_t, t), clip_x0(skip * x_t))
    assert torch.equal(make_denoiser(Zero(), cond)(x_t, t), clip_x0(torch.zeros_like(x_t)))
    x0 = torch.rand((2, 8, 4, 4, 4), generator=gen) * 0.1
    noise = torch.randn(x0.shape, generator=gen)
    loss, per, est = training_loss(Zero(), linear_schedule(), x0, cond, t, noise, p)
    skip, out, _ = p.coefficients(ABAR, t, x0)
    x_t = q_sample(linear_schedule(), x0, t, noise)
    assert torch.allclose(est, skip * x_t)
    assert torch.allclose(per, (((x0 - skip * x_t) / out) ** 2).mean(dim=(0, 2, 3, 4)))


@pytest.mark.parametrize("bad", [dict(kind="v"), dict(kind="edm"), dict(kind="edm", sigma_data=(0.1, 0.2)),
                                 dict(kind="edm", sigma_data=(0.0,))])
def test_bad_predictions_are_one_line(bad):
    with pytest.raises(CwdmError):
        Prediction(**bad)


def test_subband_rms():
    v = torch.ones(2, 8, 2, 2, 2) * torch.arange(1, 9, dtype=torch.float32).view(1, 8, 1, 1, 1)
    assert subband_rms([v, -v]) == tuple(float(i) for i in range(1, 9))


def test_timestep_power_one_is_the_uniform_draw_and_three_favours_low_noise():
    a = sample_timesteps(1000, 64, torch.Generator().manual_seed(3), torch.device("cpu"))
    b = torch.randint(0, 1000, (64,), generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    t = sample_timesteps(1000, 200_000, torch.Generator().manual_seed(3), torch.device("cpu"), power=3.0)
    assert t.min() >= 0 and t.max() <= 999
    assert abs((t < 100).double().mean().item() - 0.1 ** (1 / 3)) < 0.005  # 0.464


def test_an_edm_run_measures_sigma_data_and_its_checkpoint_samples_without_flags(brats_root, tmp_path, capsys):
    from cwdm.cli import main as cli

    run = tmp_path / "run"
    assert train(cfg_for(brats_root, run, max_steps=2, prediction="edm")) == 0
    ckpt = checkpoint_files(run)[-1]
    stored = read_checkpoint(ckpt)
    assert stored["prediction"]["kind"] == "edm" and len(stored["prediction"]["sigma_data"]) == 8
    assert stored["train_config"]["sigma_data"] == stored["prediction"]["sigma_data"]
    assert "sigma_data per subband measured" in capsys.readouterr().err
    loaded = load_model(ckpt)
    assert loaded.prediction == Prediction("edm", tuple(stored["prediction"]["sigma_data"]))
    out = tmp_path / "out"
    assert cli(["sample", "--data_dir", str(brats_root), "--model_path", str(ckpt), "--output_dir", str(out),
                "--sampler", "ddim", "--sampling_steps", "2", "--progress", "False", "--num_workers", "0"]) == 0
    assert len(list(out.rglob("*-t2f.nii.gz"))) == len(list(brats_root.iterdir()))
    exported = export_state_dict(ckpt, tmp_path / "e.pt", format="auto")
    assert load_model(exported).prediction == loaded.prediction
    with pytest.raises(CwdmError, match="predicts edm"):
        export_state_dict(ckpt, tmp_path / "bare.pt", format="state_dict")
    with pytest.raises(CwdmError, match="prediction"):  # a resume may not change what the output means
        train(cfg_for(brats_root, run, max_steps=3, resume="auto", prediction="x0",
                      flags_given=frozenset({"prediction", "max_steps", "resume"})))


def test_x0_checkpoints_store_no_prediction_entry(brats_root, tmp_path):
    run = tmp_path / "run"
    assert train(cfg_for(brats_root, run, max_steps=1)) == 0
    assert "prediction" not in read_checkpoint(checkpoint_files(run)[-1])
    assert load_model(checkpoint_files(run)[-1]).prediction == X0

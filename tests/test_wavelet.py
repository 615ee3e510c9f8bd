import numpy as np
import pytest
import pywt
import torch

from cwdm.model.wavelet import LLL_SCALE, dwt3d, from_subbands, idwt3d, to_subbands
from conftest import npz

PYWT_KEYS = ("aaa", "aad", "ada", "add", "daa", "dad", "dda", "ddd")


def test_matches_reference_dwt():
    ref = npz("haar_dwt")
    bands = dwt3d(torch.from_numpy(ref["x"]))
    assert bands.shape == (2, 8, 6, 6, 4)
    assert (bands - torch.from_numpy(ref["bands"])).abs().max() < 1e-5


def test_matches_reference_idwt():
    ref = npz("haar_dwt")
    out = idwt3d(torch.from_numpy(ref["idwt_in"]))
    assert (out - torch.from_numpy(ref["idwt_out"])).abs().max() < 1e-5


@pytest.mark.parametrize("shape", [(4, 6, 8), (10, 4, 2), (2, 12, 6), (8, 8, 8)])
@pytest.mark.parametrize("channels", [1, 3])
def test_matches_pywavelets_on_non_cubic_shapes(shape, channels):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, channels, *shape))
    bands = dwt3d(torch.from_numpy(x)).numpy()
    for b in range(2):
        for c in range(channels):
            coeffs = pywt.dwtn(x[b, c], "haar")
            for k, key in enumerate(PYWT_KEYS):
                np.testing.assert_allclose(bands[b, 8 * c + k], coeffs[key], atol=1e-12)


@pytest.mark.parametrize("shape", [(2, 2, 2), (6, 10, 4), (12, 12, 8)])
def test_round_trip_and_energy(shape):
    x = torch.randn(3, 2, *shape, dtype=torch.float64)
    bands = dwt3d(x)
    assert bands.shape == (3, 16, shape[0] // 2, shape[1] // 2, shape[2] // 2)
    torch.testing.assert_close(idwt3d(bands), x, rtol=0, atol=1e-12)
    torch.testing.assert_close((bands ** 2).sum(), (x ** 2).sum())


def test_model_domain_scales_lll_only():
    x = torch.rand(1, 2, 4, 6, 8, dtype=torch.float64)
    raw, scaled = dwt3d(x), to_subbands(x)
    torch.testing.assert_close(scaled[:, 0], raw[:, 0] / LLL_SCALE)
    torch.testing.assert_close(scaled[:, 8], raw[:, 8] / LLL_SCALE)
    torch.testing.assert_close(scaled[:, 1:8], raw[:, 1:8])
    torch.testing.assert_close(from_subbands(scaled), x)


def test_constant_image_puts_energy_in_lll():
    x = torch.ones(1, 1, 4, 4, 4)
    bands = dwt3d(x)
    assert torch.allclose(bands[:, 0], torch.full_like(bands[:, 0], 2 * np.sqrt(2)))
    assert bands[:, 1:].abs().max() < 1e-6


@pytest.mark.parametrize("shape", [(3, 4, 4), (4, 5, 4), (4, 4, 7)])
def test_odd_sizes_raise(shape):
    with pytest.raises(ValueError, match="even"):
        dwt3d(torch.zeros(1, 1, *shape))


def test_wrong_rank_and_channels_raise():
    with pytest.raises(ValueError, match="5D"):
        dwt3d(torch.zeros(4, 4, 4))
    with pytest.raises(ValueError, match="multiple of 8"):
        idwt3d(torch.zeros(1, 7, 2, 2, 2))


def test_gradients_flow():
    x = torch.randn(1, 1, 4, 4, 4, requires_grad=True)
    w = torch.randn(1, 8, 2, 2, 2)
    (to_subbands(x) * w).sum().backward()
    # the gradient of the linear map x -> S W x is W^T S w (W orthonormal, S scales LLL by 1/3)
    scaled_w = w.clone()
    scaled_w[:, 0] /= LLL_SCALE
    assert x.grad is not None and x.grad.abs().sum() > 0
    torch.testing.assert_close(x.grad, idwt3d(scaled_w))

import json

import pytest
import torch

from cwdm.errors import CwdmError
from cwdm.model.unet import RELEASED_CONFIG, UNet, UNetConfig, condition_volumes_of, in_channels_for, timestep_embedding
from conftest import REF, npz, tiny_config, tiny_model


def test_released_layout_key_for_key():
    layout = json.loads((REF / "unet_full_layout.json").read_text())
    sd = UNet(RELEASED_CONFIG).state_dict()
    assert list(sd) == list(layout)
    for key, shape in layout.items():
        assert list(sd[key].shape) == shape, key
    assert sum(v.numel() for v in sd.values()) == 81_511_048


def test_tiny_reference_output():
    ref = npz("unet_tiny_io")
    with torch.no_grad():
        y = tiny_model()(torch.from_numpy(ref["x"]), torch.from_numpy(ref["t"]))
    assert (y - torch.from_numpy(ref["y"])).abs().max() < 1e-4


def test_in_channels_follow_conditions():
    assert in_channels_for(3) == 32 == RELEASED_CONFIG.in_channels
    assert in_channels_for(1) == 16 and in_channels_for(4, identity_channels=4) == 44
    assert condition_volumes_of(32) == 3 and condition_volumes_of(44, identity_channels=4) == 4
    model = UNet(UNetConfig(model_channels=8, channel_mult=(1, 2), num_res_blocks=1, in_channels=in_channels_for(1),
                             num_groups=4))
    assert model(torch.zeros(1, 16, 4, 4, 4), torch.tensor([3])).shape == (1, 8, 4, 4, 4)


@pytest.mark.parametrize("channel_mult,spatial", [((1, 2), (4, 6, 8)), ((1, 2, 2), (8, 4, 12)), ((1,), (3, 5, 7))])
@pytest.mark.parametrize("additive", [False, True])
def test_any_divisible_size_works(channel_mult, spatial, additive):
    model = UNet(UNetConfig(model_channels=8, channel_mult=channel_mult, num_res_blocks=1, in_channels=16,
                            additive_skips=additive, num_groups=4))
    out = model(torch.randn(2, 16, *spatial), torch.tensor([0, 999]))
    assert out.shape == (2, 8, *spatial)


def test_indivisible_size_raises_clearly():
    model = UNet(UNetConfig(model_channels=8, channel_mult=(1, 2, 2), num_res_blocks=1, in_channels=16, num_groups=4))
    with pytest.raises(CwdmError, match="not divisible by 4"):
        model(torch.zeros(1, 16, 8, 8, 6), torch.tensor([1]))
    with pytest.raises(CwdmError, match="expects input"):
        model(torch.zeros(1, 24, 8, 8, 8), torch.tensor([1]))


def test_additive_skips_are_smaller():
    concat = UNet(UNetConfig(model_channels=16, channel_mult=(1, 2, 4), num_res_blocks=2, in_channels=32,
                             num_groups=8))
    additive = UNet(UNetConfig(model_channels=16, channel_mult=(1, 2, 4), num_res_blocks=2, in_channels=32,
                               num_groups=8, additive_skips=True))
    assert sum(p.numel() for p in additive.parameters()) < sum(p.numel() for p in concat.parameters())


def test_gradient_checkpointing_gives_same_gradients():
    torch.manual_seed(0)
    cfg = UNetConfig(**tiny_config())
    plain, ckpt = UNet(cfg), UNet(cfg, use_checkpoint=True)
    ckpt.load_state_dict(plain.state_dict())
    for p in plain.parameters():  # non-zero weights everywhere so every gradient is informative
        torch.nn.init.normal_(p, std=0.05)
    ckpt.load_state_dict(plain.state_dict())
    x, t = torch.randn(1, 32, 4, 4, 4), torch.tensor([5])
    plain(x, t).square().sum().backward()
    ckpt.train()(x, t).square().sum().backward()
    for (name, a), b in zip(plain.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=name)


def test_timestep_embedding_layout():
    emb = timestep_embedding(torch.tensor([0, 10]), 8)
    assert emb.shape == (2, 8)
    torch.testing.assert_close(emb[0], torch.tensor([1.0] * 4 + [0.0] * 4))
    assert emb[1, 0] == pytest.approx(torch.cos(torch.tensor(10.0)).item())


def test_group_divisibility_checked():
    with pytest.raises(CwdmError, match="num_groups"):
        UNet(UNetConfig(model_channels=12, channel_mult=(1,), num_groups=8))


def test_config_divisors():
    assert RELEASED_CONFIG.subband_divisor == 16 and RELEASED_CONFIG.image_divisor == 32
    assert UNetConfig(channel_mult=(1, 2)).image_divisor == 4
    for levels, divisor in [(1, 2), (2, 4), (3, 8), (5, 32)]:  # Haar once, then every downsampling
        assert UNetConfig(channel_mult=(1,) * levels).image_divisor == divisor
    with pytest.raises(CwdmError, match="at least one level"):
        UNetConfig(channel_mult=()).image_divisor


def test_random_network_synthesizes_noise_not_zeros_and_is_seeded():
    from cwdm.model.unet import random_network

    cfg = UNetConfig(model_channels=8, channel_mult=(1, 2), num_res_blocks=1, num_groups=4)
    x, t = torch.randn(1, cfg.in_channels, 8, 8, 8), torch.tensor([10])
    with torch.no_grad():
        assert not UNet(cfg)(x, t).abs().sum()  # a fresh network's output layers start at zero
        before = torch.random.get_rng_state()
        a, b = random_network(cfg, seed=3)(x, t), random_network(cfg, seed=3)(x, t)
        assert torch.equal(torch.random.get_rng_state(), before)  # the caller's generator is left alone
        assert a.abs().sum() > 0 and torch.equal(a, b)
        assert not torch.equal(a, random_network(cfg, seed=4)(x, t))
